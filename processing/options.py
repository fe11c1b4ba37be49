"""The radiometric-handling options of every command that reads images (caption, classify, evaluate, build-dataset,
map, app), defined once: a dataclass whose field metadata holds the help text, parsed by transformers'
`HfArgumentParser`. `RadiometryOptions.radiometry` is the one object the rest of the code takes, a frozen
`processing.radiometry_settings.RadiometrySettings` (see README "Inputs"): raw values become `(raw + offset) * scale`
= reflectance x 10000. Not remote code, and it imports nothing heavy: `--help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .radiometry_settings import EXPECTED, RadiometrySettings, out_of_range


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
        wrong = out_of_range(self.input_offset, self.input_scale)
        if wrong is not None:
            raise ValueError(f"--{wrong.replace('_', '-')} {getattr(self, wrong)}: expected {EXPECTED[wrong]}")

    @property
    def radiometry(self) -> RadiometrySettings:
        """These options as the `RadiometrySettings` every layer down to the image processor takes."""
        return RadiometrySettings(self.input_offset, self.input_scale, self.strict)
