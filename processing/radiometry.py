"""Radiometric offset and scale of Sentinel-2 inputs: the same ground reaches the model as the same numbers.

Remote code: copied flat into saved model directories; imports only its siblings `radiometry_settings`,
`sentinel2_io` and `sentinel2_stac` and third-party libraries.

SpectralGPT expects reflectance x 10000. An input value `raw` becomes `(raw + offset) * scale`, per band. The
first rule that applies decides (its name is the `source` recorded in the metadata):

- explicit: `RadiometrySettings(input_offset=, input_scale=)` (the image processor's `radiometry=` or its
  `input_offset=` / `input_scale=`; CLI `--input-offset` / `--input-scale`); an omitted one is 0 / 1.
- stac: a STAC item's own statements (`sentinel2_stac.StacItem`), first that applies: a catalogue flag that the
  baseline-04.00 offset was already removed (`earthsearch:boa_offset_applied` true: Earth Search's COGs then hold
  reflectance x 10000, offset 0, scale 1, whatever `raster:bands` says); the band assets' `raster:bands` scale /
  offset (physical = raw * s + o, converted as for GeoTIFF tags below: Earth Search's 0.0001 / -0.1 give offset
  -1000, scale 1); `s2:processing_baseline` (offset -1000 from 04.00 on, else 0). An item that says none of these
  falls through to its COGs' GeoTIFF tags, then none.
- product_metadata: `MTD_MSIL1C.xml` / `MTD_MSIL2A.xml` beside the input or up to 4 folders above it (never above a
  `.SAFE` folder): offset `RADIO_ADD_OFFSET` / `BOA_ADD_OFFSET` per band (band ids named by its
  Spectral_Information list; 0 when absent), scale 10000 / `QUANTIFICATION_VALUE` (`BOA_QUANTIFICATION_VALUE`).
- geotiff_tags: rasterio's `dataset.scales` / `dataset.offsets` where not (1, 0); GDAL's physical = raw * s + o
  gives offset o / s and scale s * 10000 when s <= 0.01 (physical values are reflectance), else s.
- product_name: the nearest path component that starts with a product name (`sentinel2_bands.PRODUCT_NAME_RE`,
  `S2[A-D]_MSIL1C|MSIL2A_<date>_Nxxyy_Rooo_Txxxxx[_<date>]`): offset -1000 from processing baseline 04.00 on,
  0 before it and for N9999 (reprocessed products: BigEarthNet, some Major-TOM cells), scale 1.
- float_reflectance: float data with at most 1 % of its valid values above 1.5, when only the product-name rule (or
  none) applied: offset 0, scale 10000, warned once per file.
- none (EuroSAT, BigEarthNet v1, SSL4EO, arrays): offset 0, scale 1.

No-data (non-finite values, the processor's `nodata_value` 0 and the file's declared no-data) is found on the raw
values, before any offset. After offset and scale each band is checked (`check_plausibility`); an implausible
band gives a `RadiometryWarning` naming the file and band, or a ValueError with `strict=True`.

Two kinds of object, two names: `RadiometrySettings` is what the user asked for (explicit values or None for the
rules above, and `strict`), one frozen object from the command-line flag to the image processor;
`ResolvedRadiometry` is what those settings and the rules gave for one input (offset and scale per band, the rule).
"""

import functools
import os
import warnings
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .radiometry_settings import RULES_VERSION, RadiometrySettings
from .sentinel2_io import (PRODUCT_NAME_RE, SpectralImage, canonical_band_name, is_safe_product,
                           read_scale_offset_tags)
from .sentinel2_stac import StacItem, is_remote, is_stac_source, load_item

SOURCES = ("explicit", "stac", "product_metadata", "geotiff_tags", "product_name", "float_reflectance", "none")
PRODUCT_METADATA_FILES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
# An image file lies at most this many folders below its SAFE root (GRANULE/<granule>/IMG_DATA/R10m/<file>).
MAX_FOLDERS_UP = 4
# Band ids of the product metadata when it has no Spectral_Information list (ESA order).
MTD_BAND_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
BASELINE_OFFSET = -1000.0  # reflectance = (DN - 1000) / 10000 since processing baseline 04.00
FIRST_OFFSET_BASELINE = 400  # N0400
REPROCESSED_BASELINE = 9999  # N9999: reprocessed products (BigEarthNet, some Major-TOM cells) carry no offset
REFLECTANCE_UNIT_MAX_SCALE = 0.01  # GeoTIFF scale tags at or below this give physical values in reflectance
FLOAT_REFLECTANCE_MAX = 1.5  # 99 % of float data in reflectance units lie at or below it
# Plausibility of reflectance x 10000 after offset and scale.
PLAUSIBLE_MEDIAN_MAX = 20000.0  # reflectance 2.0: no natural surface, far above every SpectralGPT window
NEGATIVE_LIMIT = -500.0  # reflectance -0.05: beyond the noise of dark pixels in baseline >= 04.00 products
NEGATIVE_SHARE_MAX = 0.1
TINY_P99_MAX = 2.0  # reflectance 0.0002: a band this dark everywhere is reflectance 0..1 read as x 10000


class RadiometryWarning(UserWarning):
    """An input's radiometry was guessed from its values or looks implausible."""


@dataclass
class ResolvedRadiometry:
    """How one input's raw values become reflectance x 10000: `(raw + offset) * scale`, per band.

    `offset`/`scale` apply to every band except those listed in `band_offsets`/`band_scales`; `source` is the rule
    that decided (one of SOURCES), `detail` says what it found.
    """

    offset: float = 0.0
    scale: float = 1.0
    source: str = "none"
    detail: str = "no product metadata, GeoTIFF scale/offset tags or Sentinel-2 product name"
    band_offsets: dict = field(default_factory=dict)
    band_scales: dict = field(default_factory=dict)

    def offset_of(self, band: str) -> float:
        return self.band_offsets.get(band, self.offset)

    def scale_of(self, band: str) -> float:
        return self.band_scales.get(band, self.scale)

    def apply(self, band: str, values: np.ndarray) -> np.ndarray:
        """float64 reflectance x 10000 of one band's raw values."""
        offset, scale = self.offset_of(band), self.scale_of(band)
        corrected = np.asarray(values, dtype=np.float64)
        if offset == 0 and scale == 1:
            return corrected
        return (corrected + offset) * scale

    def as_dict(self) -> dict:
        return {"offset": float(self.offset), "scale": float(self.scale), "source": self.source,
                "detail": self.detail, "band_offsets": {b: float(v) for b, v in self.band_offsets.items()},
                "band_scales": {b: float(v) for b, v in self.band_scales.items()}}


def _per_band(values: dict, neutral: float) -> tuple[float, dict]:
    """(the value most bands share, {band: value} of the others)."""
    if not values:
        return neutral, {}
    common = Counter(values.values()).most_common(1)[0][0]
    return common, {band: value for band, value in values.items() if value != common}


def resolve_radiometry(source, radiometry: RadiometrySettings | None = None) -> ResolvedRadiometry:
    """The radiometry an input's explicit settings, product metadata, GeoTIFF tags or product name give, before
    looking at its values (the float-reflectance rule needs them: `apply_radiometry`).

    source: a path or URL (GeoTIFF, band folder, `<dir>/<patch>` prefix, a SAFE folder or its MTD file), a STAC
    item (anything `sentinel2_stac.is_stac_source` accepts), a `SpectralImage` (its metadata's "stac" item, "source"
    path and "scale_offset_tags" are used), or anything else (an array: only explicit settings apply).
    `radiometry`: the user's settings (default: the rules alone).
    """
    if radiometry is not None and radiometry.explicit:
        offset = 0.0 if radiometry.input_offset is None else radiometry.input_offset
        scale = 1.0 if radiometry.input_scale is None else radiometry.input_scale
        return ResolvedRadiometry(offset, scale, "explicit", "input_offset/input_scale given")
    item = None
    if isinstance(source, SpectralImage):
        path, tags = source.metadata.get("source"), source.metadata.get("scale_offset_tags", {})
        item = source.metadata.get("stac")
    elif is_stac_source(source):
        path, tags, item = None, None, load_item(source)
    elif isinstance(source, (str, os.PathLike)):
        path, tags = os.fspath(source), None
    else:
        return ResolvedRadiometry(detail="an array without a path: no product information")
    if item is not None:
        return _item_radiometry(item, tags)
    if path is None:
        return ResolvedRadiometry(detail="an array without a path: no product information")
    path = os.fspath(path)
    metadata_file = None if is_remote(path) else find_product_metadata(path)
    if metadata_file is not None:
        return product_metadata_radiometry(metadata_file)
    if tags is None:
        tags = read_scale_offset_tags(path)
    if tags:
        return _tags_radiometry(tags)
    named = product_name_radiometry(path)
    return named if named is not None else ResolvedRadiometry()


def find_product_metadata(path: str) -> str | None:
    """`MTD_MSIL2A.xml` / `MTD_MSIL1C.xml` of the product holding `path`: `path` itself, or the file in its folder or
    up to MAX_FOLDERS_UP folders above, stopping at a `.SAFE` folder."""
    path = os.path.abspath(path)
    if os.path.basename(path) in PRODUCT_METADATA_FILES and os.path.isfile(path):
        return path
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for _ in range(MAX_FOLDERS_UP + 1):
        for name in PRODUCT_METADATA_FILES:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
        parent = os.path.dirname(folder)
        if is_safe_product(folder) or parent == folder:
            return None
        folder = parent
    return None


def product_metadata_radiometry(metadata_file: str) -> ResolvedRadiometry:
    """Offsets (per band) and quantification value of a SAFE product metadata file."""
    stat = os.stat(metadata_file)
    offsets, quantification, baseline = _parse_product_metadata(metadata_file, stat.st_mtime_ns, stat.st_size)
    offset, band_offsets = _per_band(offsets, 0.0)
    detail = (f"{metadata_file}: processing baseline {baseline or '?'}, quantification value {quantification:g}, "
              + (f"add offset {offset:g}" if offsets else "no add offsets"))
    return ResolvedRadiometry(offset, 10000.0 / quantification, "product_metadata", detail, band_offsets)


@functools.lru_cache(maxsize=64)
def _parse_product_metadata(path: str, mtime_ns: int, size: int):
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise ValueError(f"cannot read the product metadata {path}: {err}") from err
    band_of_id, offsets_by_id, quantification, baseline = {}, {}, None, None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        text = (element.text or "").strip()
        try:
            if tag == "Spectral_Information" and "bandId" in element.attrib:
                band_of_id[element.attrib["bandId"]] = canonical_band_name(element.attrib["physicalBand"])
            elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
                offsets_by_id[element.attrib["band_id"]] = float(text)
            elif tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
                quantification = float(text)
            elif tag == "PROCESSING_BASELINE":
                baseline = text
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: unreadable {tag} element ({err})") from err
    if quantification is None or quantification <= 0:
        raise ValueError(f"{path}: no positive QUANTIFICATION_VALUE / BOA_QUANTIFICATION_VALUE; cannot scale the "
                         "digital numbers to reflectance (pass input_scale=)")
    if not band_of_id:
        band_of_id = {str(index): band for index, band in enumerate(MTD_BAND_ORDER)}
    unknown = sorted(set(offsets_by_id) - set(band_of_id))
    if unknown:
        raise ValueError(f"{path}: add offsets for band id(s) {unknown} that its Spectral_Information list lacks")
    offsets = {band_of_id[band_id]: value for band_id, value in offsets_by_id.items()}
    return offsets, quantification, baseline


def _physical_scale_offset(pairs: dict, source: str, detail: str, what: str) -> ResolvedRadiometry:
    """The radiometry of declared {band: (s, o)} with physical = raw * s + o: offset o / s, scale s * 10000 when
    s <= REFLECTANCE_UNIT_MAX_SCALE (physical values are reflectance), else s."""
    offsets, scales = {}, {}
    for band, (scale, offset) in pairs.items():
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"band {band}: {what} {scale} is not a positive number")
        offsets[band] = offset / scale
        scales[band] = scale * 10000.0 if scale <= REFLECTANCE_UNIT_MAX_SCALE else scale
    offset, band_offsets = _per_band(offsets, 0.0)
    scale, band_scales = _per_band(scales, 1.0)
    detail += ", ".join(f"{band} {s:g}/{o:g}" for band, (s, o) in sorted(pairs.items()))
    return ResolvedRadiometry(offset, scale, source, detail, band_offsets, band_scales)


def _tags_radiometry(tags: dict) -> ResolvedRadiometry:
    return _physical_scale_offset(tags, "geotiff_tags", "GeoTIFF scale/offset tags ", "GeoTIFF scale tag")


def stac_radiometry(item: StacItem) -> ResolvedRadiometry | None:
    """What a STAC item's own metadata says about its values (the "stac" rule, see the module), or None when it says
    nothing: no offset-applied flag, no `raster:bands` scale/offset, no processing baseline."""
    where = f"STAC item {item.id}"
    if item.boa_offset_applied:
        return ResolvedRadiometry(0.0, 1.0, "stac", f"{where}: boa_offset_applied true: the baseline-04.00 offset "
                                                    "was already removed from the values (raster:bands offset ignored)")
    flag = ", boa_offset_applied false" if item.boa_offset_applied is False else ""
    declared = {band: (asset.scale, asset.offset) for band, asset in item.bands.items() if asset.scale is not None}
    if declared:
        return _physical_scale_offset(declared, "stac", f"{where}{flag}: raster:bands scale/offset ",
                                      "raster:bands scale")
    baseline = item.processing_baseline
    try:
        number = round(float(baseline) * 100) if baseline is not None else None
    except ValueError:
        raise ValueError(f"{where}: unreadable processing baseline {baseline!r}") from None
    if number is None:
        return None
    if number == REPROCESSED_BASELINE:
        return ResolvedRadiometry(0.0, 1.0, "stac", f"{where}: processing baseline {baseline}, a reprocessed product "
                                                    "without offset")
    if number >= FIRST_OFFSET_BASELINE:
        return ResolvedRadiometry(BASELINE_OFFSET, 1.0, "stac",
                                  f"{where}{flag}: processing baseline {baseline} >= 04.00")
    return ResolvedRadiometry(0.0, 1.0, "stac", f"{where}{flag}: processing baseline {baseline} < 04.00")


def _item_radiometry(item: StacItem, tags: dict | None) -> ResolvedRadiometry:
    resolved = stac_radiometry(item)
    if resolved is not None:
        return resolved
    tags = read_scale_offset_tags(item) if tags is None else tags
    if tags:
        return _tags_radiometry(tags)
    return ResolvedRadiometry(detail=f"STAC item {item.id}: no offset flag, raster:bands scale/offset, processing "
                                     "baseline or GeoTIFF scale/offset tags")


def product_name_radiometry(path: str) -> ResolvedRadiometry | None:
    """Offset from the processing baseline in the nearest Sentinel-2 product name among the path's components."""
    for component in reversed(os.path.abspath(path).split(os.sep)):
        match = PRODUCT_NAME_RE.match(component)
        if match is None:
            continue
        baseline = int(match.group("baseline"))
        if baseline == REPROCESSED_BASELINE:
            return ResolvedRadiometry(0.0, 1.0, "product_name",
                                      f"{component}: N9999, a reprocessed product without offset")
        if baseline >= FIRST_OFFSET_BASELINE:
            return ResolvedRadiometry(BASELINE_OFFSET, 1.0, "product_name",
                                      f"{component}: processing baseline {baseline / 100:05.2f} >= 04.00")
        return ResolvedRadiometry(0.0, 1.0, "product_name",
                                  f"{component}: processing baseline {baseline / 100:05.2f} < 04.00")
    return None


def valid_pixels(values: np.ndarray, nodata_value=0, declared_nodata=None) -> np.ndarray:
    """True where a raw value is data: finite, not `nodata_value` (the 0 fill of L1C/L2A) and not the file's
    declared no-data value. Computed before any offset, so the fill never turns into a value."""
    valid = np.isfinite(values)
    for fill in (nodata_value, declared_nodata):
        if fill is not None and np.isfinite(fill):
            valid &= values != fill
    return valid


def is_float_reflectance(image: SpectralImage, valid: dict) -> bool:
    """Float data whose valid values lie in reflectance range (99 % of them <= FLOAT_REFLECTANCE_MAX)."""
    dtype = image.metadata.get("dtype")
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        return False
    channel = {band: index for index, band in enumerate(image.band_names)}
    count = sum(int(mask.sum()) for mask in valid.values())
    above = sum(int(np.count_nonzero(image.data[channel[band]][mask] > FLOAT_REFLECTANCE_MAX))
                for band, mask in valid.items())
    return count > 0 and above <= 0.01 * count


@dataclass
class CorrectedBands:
    """Reflectance x 10000 (float64) and validity (raw-value no-data) per band, and the radiometry applied."""

    values: dict
    valid: dict
    resolved: ResolvedRadiometry
    implausible: dict


def apply_radiometry(image: SpectralImage, bands=None, radiometry: RadiometrySettings | None = None,
                     nodata_value=0, resolved: ResolvedRadiometry | None = None, window_top: dict | None = None,
                     where: str | None = None) -> CorrectedBands:
    """Resolve the user's `radiometry` settings for `image` (unless `resolved` is given, e.g. once per scene) and
    apply the result to `image`'s `bands` (default all).

    No-data is found on the raw values first (`valid_pixels`); float reflectance is recognised; each band is then
    checked by `check_plausibility` (warning, or ValueError with the settings' `strict`). `window_top` (band -> the
    top of the model's input window) adds the saturated share to the messages.
    """
    radiometry = radiometry if radiometry is not None else RadiometrySettings()
    where = where or image.metadata.get("source") or "the input array"
    channel = {band: index for index, band in enumerate(image.band_names)}
    bands = [band for band in (bands if bands is not None else image.band_names) if band in channel]
    declared = image.metadata.get("nodata")
    valid = {band: valid_pixels(image.data[channel[band]], nodata_value, declared) for band in bands}
    if resolved is None:
        resolved = resolve_radiometry(image, radiometry)
        if resolved.source in ("product_name", "none") and is_float_reflectance(image, valid):
            named = resolved.source == "product_name"
            ignored = f"; product name rule ignored ({resolved.detail})" if named else ""
            resolved = ResolvedRadiometry(0.0, 10000.0, "float_reflectance",
                                          f"float values in reflectance range (99 % <= {FLOAT_REFLECTANCE_MAX:g})"
                                          + ignored)
            warnings.warn(f"{where}: float values in reflectance range 0..{FLOAT_REFLECTANCE_MAX:g}; scaled by 10000 "
                          "to reflectance x 10000 (pass input_scale= / --input-scale to override)",
                          RadiometryWarning, stacklevel=2)
    values = {band: resolved.apply(band, image.data[channel[band]]) for band in bands}
    implausible = check_plausibility(values, valid, resolved, where, strict=radiometry.strict, window_top=window_top)
    return CorrectedBands(values, valid, resolved, implausible)


def check_plausibility(values: dict, valid: dict, resolved: ResolvedRadiometry, where: str, strict: bool = False,
                       window_top: dict | None = None) -> dict:
    """{band: reason} for bands whose valid reflectance x 10000 is implausible for Sentinel-2: a median above
    reflectance 2.0 (such a band saturates the model window), more than 10 % of pixels below reflectance -0.05,
    or a 99th percentile below reflectance 0.0002 (reflectance 0..1 read as x 10000). Warns naming the file and
    bands (RadiometryWarning), or raises ValueError when `strict`."""
    reasons = {}
    for band, band_values in values.items():
        data = band_values[valid[band]]
        if data.size == 0:
            continue
        # shares instead of percentiles: the same thresholds, without sorting every band of every image
        negative = np.count_nonzero(data < NEGATIVE_LIMIT) / data.size
        if np.count_nonzero(data > PLAUSIBLE_MEDIAN_MAX) > data.size / 2:
            reason = f"median {float(np.median(data)):.6g} above reflectance x 10000 = {PLAUSIBLE_MEDIAN_MAX:g}"
            if window_top is not None and band in window_top:
                reason += f", {np.mean(data >= window_top[band]):.0%} of pixels saturate the SpectralGPT window"
        elif negative > NEGATIVE_SHARE_MAX:
            reason = f"{negative:.0%} of pixels below reflectance x 10000 = {NEGATIVE_LIMIT:g} (negative reflectance)"
        elif np.count_nonzero(data >= TINY_P99_MAX) < 0.01 * data.size:
            reason = (f"99th percentile {float(np.percentile(data, 99)):.3g} below reflectance x 10000 = "
                      f"{TINY_P99_MAX:g} (reflectance 0..1 without input_scale=10000?)")
        else:
            continue
        reasons[band] = reason
    if reasons:
        message = (f"{where}: implausible Sentinel-2 values after offset {resolved.offset:g} and scale "
                   f"{resolved.scale:g} (source {resolved.source}): "
                   + "; ".join(f"band {band}: {reason}" for band, reason in reasons.items())
                   + ". Check the input's units; set input_offset= / input_scale= (--input-offset / --input-scale)")
        if strict:
            raise ValueError(message)
        warnings.warn(message, RadiometryWarning, stacklevel=3)
    return reasons


__all__ = ["RadiometrySettings", "ResolvedRadiometry", "RadiometryWarning", "CorrectedBands", "resolve_radiometry",
           "apply_radiometry", "check_plausibility", "find_product_metadata", "product_metadata_radiometry",
           "stac_radiometry",
           "product_name_radiometry", "valid_pixels", "is_float_reflectance", "RULES_VERSION", "SOURCES"]
