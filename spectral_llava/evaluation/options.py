"""The options of every evaluation, defined once: dataclasses whose field metadata holds the help text, parsed by
transformers' `HfArgumentParser` for `spectral-llava evaluate ...` and built from keyword arguments by the Python API
(`run_linear_probe(model, eurosat, output, epochs=10)`). No torch import here: `--help` stays fast. The generation
settings they extend (`GenerationOptions`) live with the generation code, in `inference.options`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from spectral_llava.inference.options import GenerationOptions, check_positive

TRAIN_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def split_options(options: dict, *classes) -> list:
    """One instance of each options dataclass in `classes`, from the keyword `options` (each name goes to the class
    that declares it; unknown names are refused)."""
    names = [{f.name for f in dataclasses.fields(cls)} for cls in classes]
    unknown = set(options) - set().union(*names)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; expected some of {sorted(set().union(*names))}")
    return [cls(**{k: v for k, v in options.items() if k in fields}) for cls, fields in zip(classes, names)]


@dataclass
class FeatureOptions:
    """Which EuroSAT images and where their tower features are cached (linear probe and t-SNE)."""

    max_per_class: int | None = field(default=None, metadata={"help": "first N images of each class",
                                                              "metavar": "N"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "pooled tower-feature cache (default OUTPUT/feature-cache); reused across projectors",
        "metavar": "DIR"})
    tower_cache: str | None = field(default=None, metadata={
        "help": "a training feature cache (align/finetune --cache-features) to read and extend", "metavar": "DIR"})
    feature_batch_size: int = field(default=8, metadata={"help": "images per tower pass"})

    def __post_init__(self):
        check_positive(self, "max_per_class", "feature_batch_size")


@dataclass
class ProbeOptions:
    """The probe protocol (paper: Adam lr 1e-4, batch 100, 100 epochs, 5 folds, train ratios 0.1..0.9)."""

    ratios: list[float] = field(default_factory=lambda: list(TRAIN_RATIOS),
                                metadata={"help": "train ratios, each strictly between 0 and 1"})
    folds: int = field(default=5, metadata={"help": "seeded stratified folds per ratio"})
    epochs: int = field(default=100, metadata={"help": "passes over the training features"})
    batch_size: int = field(default=100, metadata={"help": "features per Adam step"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate"})
    seed: int = field(default=0, metadata={"help": "seed of the folds, the initialisation and the shuffling"})

    def __post_init__(self):
        if not all(0 < ratio < 1 for ratio in self.ratios):
            raise ValueError(f"--ratios {self.ratios}: every ratio must lie strictly between 0 and 1")
        check_positive(self, "folds", "epochs", "batch_size")


@dataclass
class TsneOptions:
    seed: int = field(default=0, metadata={"help": "t-SNE random state"})
    perplexity: float = field(default=30.0, metadata={"help": "t-SNE perplexity (capped at (N - 1) / 3)"})


@dataclass
class ClassifyOptions(GenerationOptions):
    """Which images `run_classify_eval` classifies: EuroSAT class folders and/or a Spectral-Inst split."""

    eurosat: str | None = field(default=None, metadata={"help": "EuroSAT-MS class folders <Class>/*.tif",
                                                        "metavar": "ROOT"})
    max_per_class: int | None = field(default=None, metadata={"help": "first N images of each EuroSAT class",
                                                              "metavar": "N"})
    dataset: str | None = field(default=None, metadata={"help": "a build-dataset output: its patches of --split",
                                                        "metavar": "DIR"})
    split: str = field(default="test", metadata={"help": "split(s) of --dataset, e.g. test or validation,test"})
    max_samples: int | None = field(default=None, metadata={"help": "first N patches of --dataset", "metavar": "N"})
    tower_cache: str | None = field(default=None, metadata={"help": "a training feature cache to read and extend",
                                                            "metavar": "DIR"})

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "max_per_class", "max_samples")


@dataclass
class QualityOptions(GenerationOptions):
    """What `run_quality` captions and how it judges the captions."""

    max_new_tokens: int = field(default=128, metadata={"help": "longest caption, in tokens"})
    split: str = field(default="test", metadata={"help": "split(s) of --dataset, e.g. test or validation,test"})
    max_samples: int | None = field(default=None, metadata={"help": "first N patches of --split", "metavar": "N"})
    judge: str | None = field(default=None, metadata={
        "help": "judge LLM: smollm2 | DIR | hf:MODEL_ID (omit for label consistency only)", "metavar": "SPEC"})
    judge_max_new_tokens: int = field(default=64, metadata={"help": "longest judge reply, in tokens"})
    tower_cache: str | None = field(default=None, metadata={"help": "a training feature cache to read and extend",
                                                            "metavar": "DIR"})

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "max_samples", "judge_max_new_tokens")


@dataclass
class EncoderOptions:
    """What `evaluate encoder` probes (at least one source) and the probe protocol (see docs/evaluation.md)."""

    eurosat: str | None = field(default=None, metadata={"help": "EuroSAT-MS class folders <Class>/*.tif (split: "
                                                                "build-dataset's, seeded by --split-seed)",
                                                        "metavar": "ROOT"})
    dataset: str | None = field(default=None, metadata={
        "help": "a build-dataset output: its patches, splits and labels", "metavar": "DIR"})
    bigearthnet: list[str] | None = field(default=None, metadata={
        "help": "BigEarthNet v1 and/or v2 patch folders (reBEN's official split from --metadata)", "metavar": "DIR"})
    metadata: list[str] | None = field(default=None, metadata={"help": "reBEN metadata parquet(s) for --bigearthnet",
                                                               "metavar": "PARQUET"})
    geobench: list[str] | None = field(default=None, metadata={
        "help": "GEO-Bench classification task folders, e.g. classification_v1.0/m-eurosat", "metavar": "DIR"})
    geobench_band_names: Literal["auto", "stored"] = field(default="auto", metadata={
        "help": "auto: correct m-eurosat's mislabelled band names (GEO-Bench issue #28); stored: trust them"})
    split_seed: int = field(default=0, metadata={"help": "seed of the EuroSAT split (build-dataset's --seed)"})
    pooling: Literal["mean", "visual_tokens"] = field(default="mean", metadata={
        "help": "mean: the tower output mean-pooled; visual_tokens: the mean of the visual tokens the projector "
                "consumes (layout + spatial pool; Spectral-LLaVA model dirs only)"})
    learning_rates: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1], metadata={
        "help": "AdamW learning rates tried (selected on validation)"})
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-2], metadata={
        "help": "AdamW weight decays tried (selected on validation)"})
    epochs: int = field(default=100, metadata={"help": "passes over the training features"})
    batch_size: int = field(default=256, metadata={"help": "features per AdamW step"})
    seeds: int = field(default=5, metadata={"help": "probes retrained with the selected setting; mean and std "
                                                    "reported"})
    seed: int = field(default=0, metadata={"help": "first seed of the probes' initialisation and shuffling"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "pooled tower-feature cache (default OUTPUT/feature-cache)", "metavar": "DIR"})
    feature_batch_size: int = field(default=8, metadata={"help": "images per tower pass"})

    def __post_init__(self):
        if not any((self.eurosat, self.dataset, self.bigearthnet, self.geobench)):
            raise ValueError("give at least one of --eurosat ROOT, --dataset DIR, --bigearthnet DIR --metadata "
                             "PARQUET, --geobench DIR")
        if self.bigearthnet and not self.metadata:
            raise ValueError("--bigearthnet needs --metadata PARQUET (reBEN's metadata.parquet) for the official "
                             "splits")
        if not self.learning_rates or not self.weight_decays:
            raise ValueError("--learning-rates and --weight-decays need at least one value each")
        if min(self.learning_rates) <= 0 or min(self.weight_decays) < 0:
            raise ValueError(f"--learning-rates {self.learning_rates} must be > 0 and --weight-decays "
                             f"{self.weight_decays} >= 0")
        check_positive(self, "epochs", "batch_size", "seeds", "feature_batch_size")
