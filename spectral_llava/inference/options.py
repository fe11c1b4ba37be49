"""The options of `spectral-llava caption` and `classify` (and the generation settings the evaluations extend),
defined once: dataclasses whose field metadata holds the help text, parsed by transformers' `HfArgumentParser`. No
torch import here: `--help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def check_positive(options, *names) -> None:
    """A ValueError naming the flag when one of the integer fields `names` of `options` is set and below 1."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive integer")


@dataclass
class GenerationOptions:
    batch_size: int = field(default=4, metadata={"help": "images per generate() call"})
    max_new_tokens: int = field(default=64, metadata={"help": "longest answer, in tokens"})

    def __post_init__(self):
        check_positive(self, "batch_size", "max_new_tokens")


@dataclass
class FootprintOptions:
    """What `spectral-llava caption` and `classify` do with an input far larger than the model's footprint."""

    resize_whole_image: bool = field(default=False, metadata={
        "help": "answer for inputs more than twice the model's footprint (e.g. a 10 km scene) by resizing the whole "
                "image to the model's size; without it they are refused, see `spectral-llava map`"})


@dataclass
class CaptionOptions(GenerationOptions):
    """What `spectral-llava caption` asks about each image."""

    task: Literal["caption", "classification"] = field(default="caption", metadata={
        "help": "task token put before the instruction"})
    prompt: str | None = field(default=None, metadata={"help": "instruction replacing the task's default one"})
