"""The options of both training stages, defined once: dataclasses whose field metadata holds the help text, parsed
by transformers' `HfArgumentParser` (`--max-steps` and `--max_steps` both work) for `python -m spectral_llava.train.align`,
`accelerate launch -m spectral_llava.train.finetune` and `spectral-llava train align|finetune`, and built directly by the Python API
(`run_alignment(model, dataset, output, max_steps=10)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# alignment targets: the `variant` of the build-dataset `alignment` records
TEXT_VARIANTS = {"class-labels": "labels", "scene-description": "description"}


@dataclass
class StagePaths:
    """Where a stage reads and writes."""

    model: str = field(metadata={"help": "Spectral-LLaVA model dir to start from (stage 2: stage 1's OUTPUT/model)",
                                 "metavar": "DIR"})
    dataset: str = field(metadata={"help": "a `spectral-llava build-dataset` output", "metavar": "DIR"})
    output: str = field(metadata={"help": "checkpoints, logs and exported model(s)", "metavar": "DIR"})


@dataclass
class TrainOptions:
    """Options common to both stages; the defaults are the alignment stage's (paper: effective batch 8, Adam)."""

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; overrides --epochs"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training records"})
    batch_size: int = field(default=8, metadata={"help": "records per device and micro-step"})
    grad_accum: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (Adam, cosine decay)"})
    save_steps: int = field(default=500, metadata={"help": "checkpoint every N optimizer steps"})
    seed: int = field(default=0, metadata={"help": "model init of new parts, data order, dropout"})
    resume: bool = field(default=False, metadata={
        "help": "continue from the last checkpoint in --output (a larger --max-steps extends the run)"})
    overwrite: bool = field(default=False, metadata={
        "help": "delete the earlier run in --output (checkpoints, logs, models) and start again"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute LLM activations"})
    cache_features: str | None = field(default=None, metadata={
        "help": "encode every image once with the frozen tower into DIR and train from it", "metavar": "DIR"})
    split: str = field(default="train", metadata={"help": "dataset split to train on"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "linear warm-up fraction of the steps"})
    logging_steps: int = field(default=1, metadata={"help": "log the loss every N optimizer steps"})

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "save_steps", "logging_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive integer")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup-ratio {self.warmup_ratio}: expected a fraction in [0, 1)")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --output, --overwrite deletes it: pass one of them")


@dataclass
class AlignOptions(TrainOptions):
    """Stage 1: the projector learns, tower and LLM frozen."""

    text: Literal["class-labels", "scene-description"] = field(default="scene-description", metadata={
        "help": "alignment targets: class-label text or scene descriptions"})


@dataclass
class FinetuneOptions(TrainOptions):
    """Stage 2: LoRA on the LLM plus the projector (paper: effective batch 64, Adam)."""

    grad_accum: int = field(default=8, metadata={"help": "micro-steps per optimizer step"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate (Adam, cosine decay)"})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (the paper's 128)"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    load_in_8bit: bool = field(default=False, metadata={
        "help": "frozen LLM weights in 8 bit (bitsandbytes, CUDA only); LoRA and projector in float32"})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "frozen LLM weights in 4-bit NF4, i.e. QLoRA (bitsandbytes, CUDA only)"})

    def __post_init__(self):
        super().__post_init__()
        if self.load_in_8bit and self.load_in_4bit:
            raise ValueError("pass --load-in-8bit or --load-in-4bit, not both")
