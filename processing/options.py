"""The radiometric-handling options of every command that reads images (caption, classify, evaluate, build-dataset,
map), defined once: a dataclass whose field metadata holds the help text, parsed by transformers'
`HfArgumentParser`. They map onto the image processor's `input_offset`, `input_scale` and `strict` (see
`processing/radiometry.py` and README "Inputs"): raw values become `(raw + offset) * scale` = reflectance x 10000.
Not remote code, and it imports nothing heavy: `--help` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class RadiometryOptions:
    """Keyword-only, so that option dataclasses with required fields can extend it."""

    input_offset: float | None = field(default=None, metadata={
        "help": "added to every raw value before scaling, e.g. -1000 for processing baseline >= 04.00 products; "
                "overrides the automatic rules (product metadata, GeoTIFF tags, product name, float reflectance); "
                "0 if only --input-scale is given", "metavar": "DN"})
    input_scale: float | None = field(default=None, metadata={
        "help": "multiplies (raw + offset) into reflectance x 10000, e.g. 10000 for reflectance 0..1; overrides the "
                "automatic rules; 1 if only --input-offset is given", "metavar": "FACTOR"})
    strict: bool = field(default=False, metadata={
        "help": "implausible values after offset and scale are an error naming the file and band (default: a "
                "warning)"})

    def __post_init__(self):
        if self.input_offset is not None and not math.isfinite(self.input_offset):
            raise ValueError(f"--input-offset {self.input_offset}: expected a finite number")
        if self.input_scale is not None and not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"--input-scale {self.input_scale}: expected a positive finite number")

    @property
    def radiometry(self) -> dict:
        """The image processor's keyword arguments: {"input_offset", "input_scale", "strict"}."""
        return {"input_offset": self.input_offset, "input_scale": self.input_scale, "strict": self.strict}

    def configure(self, image_processor):
        """Make these the defaults of a loaded image processor (every later call uses them)."""
        for name, value in self.radiometry.items():
            setattr(image_processor, name, value)
        return image_processor
