"""The reading options of the commands that read images, defined once: the radiometric handling (caption, classify,
evaluate, build-dataset, map, app) and the names of an unnamed multi-band file's bands (caption, classify, map,
build-dataset, app); a dataclass whose field metadata holds the help text, parsed by transformers'
`HfArgumentParser`. `RadiometryOptions.radiometry` is the one object the rest of the code takes, a frozen
`processing.radiometry_settings.RadiometrySettings` (see README "Inputs"): raw values become `(raw + offset) * scale`
= reflectance x 10000; `BandNamesOptions.names` is the reader's `band_names=`. Not remote code, and it imports
nothing heavy: `--help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .radiometry_settings import EXPECTED, RadiometrySettings, out_of_range
from .sentinel2_bands import canonical_band_names


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


@dataclass(kw_only=True)
class BandNamesOptions:
    """The bands of a multi-band file whose header does not name them (a 3- or 4-band export), in file order; the
    reader's `band_names=`. Band folders and SAFE products are named by their files and ignore it."""

    band_names: str | None = field(default=None, metadata={
        "help": "band names of multi-band files without Sentinel-2 band descriptions, in file order, comma-separated "
                "(e.g. B02,B03,B04,B08); missing model bands are filled and masked", "metavar": "B02,B03,..."})

    def __post_init__(self):
        self.names  # validates --band-names

    @property
    def names(self) -> list[str] | None:
        """The canonical band names (`B2` -> `B02`), or None when not given."""
        if self.band_names is None:
            return None
        parts = [part.strip() for part in str(self.band_names).split(",") if part.strip()]
        flag = f"--band-names {self.band_names}"
        try:
            return canonical_band_names(parts, argument=flag)
        except ValueError as err:
            raise ValueError(str(err) if str(err).startswith(flag) else f"{flag}: {err}") from None
