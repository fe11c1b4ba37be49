"""`spectral-llava quickstart --output DIR` (`make demo`): the whole system on the repository's real samples.

On tests/data (EuroSAT-MS, 10 patches per class, and the BigEarthNet v1/v2 patches; `--data DIR` elsewhere) it
builds Spectral-Inst, composes the default model (SpectralGPT ViT-B/8 at 128x128, randomly initialised unless
`--spectralgpt-checkpoint` is given, + SmolLM2-135M-Instruct or `--llm DIR|ORG/NAME`), runs stage 1 (projector
alignment on class-label text) and stage 2 (LoRA + projector) for a few steps, evaluates the result (linear probe, t-SNE,
classification from generated text, caption quality) and writes:

    DIR/report.md      numbers, plots, sample captions and what was untrained or random
    DIR/metrics.json   every number of the report
    DIR/*.png          linear_probe.png, tsne.png, confusion_matrix.png, loss curves
    DIR/model/         the merged final model; pipeline("image-text-to-text", model=DIR/model, trust_remote_code=True)
    DIR/work/          dataset, base model, stage outputs, feature caches, raw evaluation outputs

The tower runs once per image: every image is encoded into one feature cache that both training stages and
all evaluations read. The visual-token layout (spectral_mean, spatial pool 4: 16 tokens per image) keeps the
LLM sequences short enough for 2 CPU cores. Each phase below is one short function of `Quickstart`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import add_command, options_of
from .quickstart_report import headline, render_report, timing_table, untrained_parts

logger = logging.getLogger(__name__)

# the samples ship with the repository (tests/data), not with an installed wheel
REPO_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"


@dataclass
class QuickstartConfig:
    """The quickstart's options. The training recipe is benchmarks/train_acceptance.py's, sized to a 15-minute
    budget (about 8 min on 2 idle cores): stage 1 ~19 epochs of the 85 class-label records, stage 2 ~2 epochs of
    the 170 instructions."""

    output: str = field(metadata={"help": "output folder (report, metrics, plots, model/, work/)", "metavar": "DIR"})
    spectralgpt_checkpoint: str | None = field(default=None, metadata={
        "help": "official SpectralGPT .pth (or converted tower dir) instead of the random tower", "metavar": "PATH"})
    llm: str = field(default="smollm2", metadata={"help": "LLM dir or Hub id instead of the embedded SmolLM2",
                                                  "metavar": "DIR|ORG/NAME"})
    data: str | None = field(default=None, metadata={
        "help": "folder with eurosat-ms/ and optionally bigearthnet-v1/, bigearthnet-v2/ (+ metadata.parquet); "
                "default: the repository's tests/data", "metavar": "DIR"})
    image_size: int = field(default=128, metadata={"help": "model input size"})
    layout: str = field(default="spectral_mean", metadata={"help": "visual-token layout"})
    spatial_pool: int = field(default=4, metadata={"help": "spatial pooling of the patch grid"})
    tower_bf16: bool = field(default=True, metadata={
        "help": "frozen-tower features under bfloat16 autocast where the CPU computes bf16 natively (2x faster)"})
    align_steps: int = field(default=200, metadata={"help": "stage 1 optimizer steps"})
    align_text: str = field(default="class-labels", metadata={"help": "stage 1 targets"})
    finetune_steps: int = field(default=40, metadata={"help": "stage 2 optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "records per step (both stages)"})
    lr_align: float = field(default=5e-3, metadata={"help": "stage 1 learning rate"})
    lr_finetune: float = field(default=5e-4, metadata={"help": "stage 2 learning rate"})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha"})
    probe_epochs: int = field(default=100, metadata={"help": "linear probe epochs"})
    eval_split: str = field(default="validation,test", metadata={"help": "splits classified and captioned"})
    classify_tokens: int = field(default=48, metadata={"help": "longest classification answer"})
    caption_tokens: int = field(default=64, metadata={"help": "longest caption"})
    num_sample_captions: int = field(default=4, metadata={"help": "captions shown in the report"})
    judge: str | None = field(default=None, metadata={"help": "judge LLM of the caption quality (smollm2 | DIR)"})
    seed: int = field(default=0, metadata={"help": "seed of the dataset split, the model and training"})


def data_folder(data: str | None) -> Path:
    """The sample folder a run reads: `data`, else the repository's tests/data."""
    if data is not None:
        return Path(data)
    if not REPO_DATA.is_dir():
        raise FileNotFoundError(
            "the sample data (tests/data) ships with the repository, not with the installed package: pass "
            "--data DIR, a folder holding eurosat-ms/<Class>/*.tif and optionally bigearthnet-v1/ and "
            "bigearthnet-v2/ with metadata.parquet (e.g. tests/data of a clone)")
    return REPO_DATA


def sample_sources(data: str | None) -> dict:
    """The build-dataset sources found in `data` (default: the repository's samples)."""
    data = data_folder(data)
    sources = {"eurosat": data / "eurosat-ms", "bigearthnet_v1": data / "bigearthnet-v1",
               "bigearthnet": data / "bigearthnet-v2", "metadata": data / "bigearthnet-v2" / "metadata.parquet"}
    if not sources["eurosat"].is_dir():
        raise FileNotFoundError(f"--data {data}: no eurosat-ms/ folder (the repository's tests/data holds one)")
    found = {key: str(path) for key, path in sources.items() if path.exists()}
    if "bigearthnet" in found and "metadata" not in found:
        del found["bigearthnet"]
    return found


class Quickstart:
    """The quickstart's phases, run in order by `run`; results accumulate on the instance."""

    def __init__(self, config: QuickstartConfig, vision_overrides: dict | None = None):
        self.config = config
        self.vision_overrides = vision_overrides  # e.g. a tiny tower for tests
        self.output = Path(config.output).resolve()
        self.work = self.output / "work"
        self.sources = sample_sources(config.data)
        self.dataset_dir = str(self.work / "dataset")
        self.tower_cache = str(self.work / "tower-features")
        self.pooled_cache = str(self.work / "pooled-features")
        self.evaluation_dir = self.work / "evaluation"
        self.timings: dict[str, float] = {}
        self.results: dict = {}
        self.model = self.processor = None  # the final model, loaded for the evaluations

    @contextmanager
    def phase(self, name: str):
        logger.info("quickstart: %s ...", name)
        started = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - started
        logger.info("quickstart: %s done in %.1f s", name, self.timings[name])

    def build_dataset(self) -> None:
        from spectral_llava.spectral_inst import BuildConfig, build_dataset

        report = build_dataset(BuildConfig(output=self.dataset_dir, seed=self.config.seed, **self.sources))
        self.results["dataset"] = report
        splits = [name for name in self.config.eval_split.split(",") if name in report["sizes"]["patches"]]
        if not splits:
            raise ValueError(f"the dataset built from {self.config.data} has none of the splits "
                             f"{self.config.eval_split!r}")
        self.eval_split = ",".join(splits)

    def build_model(self) -> None:
        from spectral_llava.modeling_spectral_llava.tools.build import build_model

        config = self.config
        build_model(self.work / "base", vision=config.spectralgpt_checkpoint or "random", llm=config.llm,
                    image_size=config.image_size, layout=config.layout, spatial_pool=config.spatial_pool,
                    seed=config.seed, vision_overrides=self.vision_overrides)

    def encode_images(self) -> None:
        """Every image of the dataset and the EuroSAT folder through the frozen tower, once, into one cache."""
        import torch

        from spectral_llava.evaluation import eurosat_samples
        from spectral_llava.inference import native_bf16, open_tower_cache
        from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
        from spectral_llava.spectral_inst import load_patches

        bf16 = self.config.tower_bf16 and native_bf16(torch.device("cpu"))
        self.results["tower_precision"] = "bfloat16 autocast" if bf16 else "float32"
        model, processor = load_model_and_processor(self.work / "base")
        self.rows = load_patches(self.dataset_dir, split=None)
        eurosat_paths, _, _ = eurosat_samples(self.sources["eurosat"])
        images = sorted({row["path"] for row in self.rows} | set(eurosat_paths))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            open_tower_cache(self.tower_cache, model, processor.image_processor, images, self.config.batch_size)

    def align(self) -> None:
        from spectral_llava.train.align import run_alignment

        config = self.config
        common = {"batch_size": config.batch_size, "grad_accum": 1, "seed": config.seed,
                  "cache_features": self.tower_cache, "save_steps": 10**6, "overwrite": True}
        self.results["align"] = run_alignment(self.work / "base", self.dataset_dir, self.work / "align",
                                              max_steps=config.align_steps, lr=config.lr_align,
                                              text=config.align_text, **common)

    def finetune(self) -> None:
        from spectral_llava.utils.fileio import copy_dir_atomically
        from spectral_llava.train.finetune import run_finetune

        config = self.config
        result = run_finetune(self.results["align"]["outputs"]["model"], self.dataset_dir, self.work / "finetune",
                              max_steps=config.finetune_steps, batch_size=config.batch_size, grad_accum=1,
                              lr=config.lr_finetune, seed=config.seed, lora_r=config.lora_r,
                              lora_alpha=config.lora_alpha, cache_features=self.tower_cache, save_steps=10**6,
                              overwrite=True)
        self.results["finetune"] = result
        copy_dir_atomically(result["outputs"]["merged"], self.output / "model")

    def _shared(self) -> dict:
        """What every evaluation shares: the tower cache and the final model, loaded once."""
        from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

        if self.model is None:
            self.model, self.processor = load_model_and_processor(self.output / "model")
        return {"tower_cache": self.tower_cache, "model": self.model, "processor": self.processor}

    def probe(self) -> None:
        from spectral_llava.evaluation import run_linear_probe, run_tsne

        model_dir, eurosat, seed = self.output / "model", self.sources["eurosat"], self.config.seed
        self.results["probe"] = run_linear_probe(model_dir, eurosat, self.output, epochs=self.config.probe_epochs,
                                                 seed=seed, cache_dir=self.pooled_cache, **self._shared())
        run_tsne(model_dir, eurosat, self.output, seed=seed, cache_dir=self.pooled_cache, **self._shared())

    def classify(self) -> None:
        from spectral_llava.evaluation import run_classify_eval
        from spectral_llava.utils.fileio import copy_file_atomically

        self.results["classification"] = run_classify_eval(
            self.output / "model", self.evaluation_dir, dataset=self.dataset_dir, split=self.eval_split,
            max_new_tokens=self.config.classify_tokens, **self._shared())
        confusion = self.evaluation_dir / "confusion_matrix.png"
        if confusion.is_file():
            copy_file_atomically(confusion, self.output / "confusion_matrix.png")

    def caption(self) -> None:
        from spectral_llava.evaluation import run_quality

        self.results["quality"] = run_quality(self.output / "model", self.dataset_dir, self.evaluation_dir,
                                              split=self.eval_split, judge=self.config.judge,
                                              max_new_tokens=self.config.caption_tokens, **self._shared())
        self.model = self.processor = None

    def check_pipeline(self) -> None:
        """Caption one image through `transformers.pipeline`, proving that the exported dir loads on its own."""
        from transformers import pipeline

        sample = next(row for row in self.rows if row["split"] in self.eval_split.split(","))
        pipe = pipeline("image-text-to-text", model=str(self.output / "model"), trust_remote_code=True)
        generated = pipe(images=sample["path"],
                         generate_kwargs={"max_new_tokens": self.config.caption_tokens, "do_sample": False})
        generated = generated[0]["generated_text"]
        text = generated[-1]["content"] if isinstance(generated, list) else generated  # chat input -> messages
        self.results["pipeline_caption"] = {"image": sample["path"], "text": text}

    def write_card(self) -> None:
        from spectral_llava.evaluation import render_card
        from spectral_llava.utils.fileio import atomic_write_text, copy_file_atomically

        for stage in ("align", "finetune"):
            curve = Path(self.results[stage]["outputs"]["loss_curve"])
            if curve.is_file():
                copy_file_atomically(curve, self.output / f"loss_{stage}.png")
        card = render_card(self.output / "model", [self.output, self.evaluation_dir],
                           note="Numbers from `spectral-llava quickstart` on the repository's sample patches.")
        atomic_write_text(self.output / "model" / "README.md", card)

    def metrics(self) -> dict:
        results, config = self.results, self.config
        probe = results["probe"]
        return {
            "config": asdict(config),
            "dataset": {"sizes": results["dataset"]["sizes"]["patches"], "captioner": results["dataset"]["captioner"]},
            "untrained": untrained_parts(config, data_folder(config.data)),
            "tower_precision": results["tower_precision"],
            "training": {stage: {k: results[stage][k] for k in ("first_loss", "final_loss", "steps", "records",
                                                                "seconds")} for stage in ("align", "finetune")},
            "linear_probe": {kind: {ratio: {"mean": r["mean"], "std": r["std"]} for ratio, r in by_ratio.items()}
                             for kind, by_ratio in probe["results"].items()},
            "linear_probe_notes": probe["notes"],
            "classification": {key: headline(value) for key, value in results["classification"].items()
                               if key in ("eurosat_classification", "bigearthnet19")},
            "caption_quality": {key: results["quality"][key]
                                for key in ("num_images", "label_consistency", "caption_metrics", "judge")
                                if key in results["quality"]},
            "pipeline_caption": results["pipeline_caption"],
            "timings_seconds": {name: round(seconds, 1) for name, seconds in self.timings.items()},
            "outputs": {"report": str(self.output / "report.md"), "model": str(self.output / "model"),
                        "work": str(self.work)},
        }

    def write_report(self) -> dict:
        from spectral_llava.utils.fileio import atomic_write_json, atomic_write_text

        metrics = self.metrics()
        captions = [json.loads(line) for line in (self.evaluation_dir / "captions.jsonl").read_text().splitlines()]
        atomic_write_json(self.output / "metrics.json", metrics)
        atomic_write_text(self.output / "report.md", render_report(metrics, captions[:self.config.num_sample_captions]))
        return metrics

    PHASES = (("build dataset", "build_dataset"), ("build model", "build_model"), ("tower features", "encode_images"),
              ("stage 1 (alignment)", "align"), ("stage 2 (instruction tuning)", "finetune"),
              ("linear probe + t-SNE", "probe"), ("classification", "classify"), ("captions", "caption"),
              ("pipeline check", "check_pipeline"))

    def run(self) -> dict:
        """Run every phase; returns the metrics written to OUTPUT/metrics.json."""
        started = time.perf_counter()
        self.work.mkdir(parents=True, exist_ok=True)
        for name, method in self.PHASES:
            with self.phase(name):
                getattr(self, method)()
        self.write_card()
        self.timings["total"] = time.perf_counter() - started
        metrics = self.write_report()
        print(timing_table(self.timings))
        logger.info("quickstart outputs: report %s, metrics %s, plots %s/*.png, model %s (pipeline-ready), "
                    "intermediate files %s", self.output / "report.md", self.output / "metrics.json", self.output,
                    self.output / "model", self.work)
        return metrics


def run_quickstart(config: QuickstartConfig, vision_overrides: dict | None = None) -> dict:
    """Run every phase of the quickstart; returns the metrics written to OUTPUT/metrics.json."""
    return Quickstart(config, vision_overrides).run()


def run(args) -> None:
    config = options_of(args, QuickstartConfig)
    if config.spectralgpt_checkpoint and not os.path.exists(config.spectralgpt_checkpoint):
        raise FileNotFoundError(f"--spectralgpt-checkpoint {config.spectralgpt_checkpoint}: no such file")
    run_quickstart(config)


def add_parser(subparsers):
    return add_command(subparsers, "quickstart", [QuickstartConfig], run,
                       help="build data, train both stages briefly, evaluate and report (about 15 min on 2 CPU cores)",
                       description="Builds Spectral-Inst from the sample patches, composes the default model (random "
                                   "ViT-B/8 tower unless --spectralgpt-checkpoint, SmolLM2-135M-Instruct unless "
                                   "--llm), trains stage 1 and 2 for a few steps, evaluates, and writes "
                                   "OUTPUT/report.md, metrics.json, PNG plots and OUTPUT/model.")
