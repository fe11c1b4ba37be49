"""Sentinel-2 band names, band-file names, product names and the layouts that hold band files (no pixels read).

Remote code: copied flat into saved model directories next to `sentinel2_io`, which re-exports every public name
here as part of the one reading API; imports only the standard library.

- `canonical_band_name(s)`: `B2`, `b02`, `B8a`, `8A` -> `B02`, `B8A`.
- `parse_band_file_name(name)`: `BandFile(prefix, band, resolution)` of `B02.tif`, `B2.tif`, `<patch>_B02.tif`,
  `T33UUU_20170216T102101_B02.jp2`, `T21JUK_20231217T135659_B02_10m.jp2`, else None.
- `detect_path_layout(path, select_bands=None)`: which layout a local path is (`LAYOUTS`) and which band files it
  holds (`sentinel2_io.detect_layout` adds STAC items and raster URLs).
- `safe_band_files(path)`, `is_safe_product(path)`, `product_id(source)`, `PRODUCT_NAME_RE`.
"""

import glob
import os
import re
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlparse

CANONICAL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
# SpectralGPT's 12 bands in model order (B10, cirrus, dropped).
SPECTRALGPT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# Band order inside an EuroSAT-MS GeoTIFF: B8A is stored last.
EUROSAT_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
# Unnamed inputs are accepted only for these band counts.
KNOWN_LAYOUTS = {12: SPECTRALGPT_BANDS, 13: EUROSAT_FILE_ORDER}
RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2")
# What `detect_layout` tells apart: one raster file (a multi-band GeoTIFF / COG such as EuroSAT's, or one band), a
# folder of one file per band (BigEarthNet v1/v2 `<patch>_B02.tif`, Major-TOM `B02.tif`, SSL4EO `B2.tif`), a path
# prefix `<folder>/<patch>` of one patch's band files in a flat folder, a SAFE product or a part of one, a STAC item
# whose band assets are the band files (`sentinel2_stac`).
LAYOUTS = ("file", "band_folder", "path_prefix", "safe", "stac")
_BAND_NAME_RE = re.compile(r"^B?0*(\d{1,2})(A?)$", re.IGNORECASE)
# A band file's stem ends in its band name: "B02", "B2", "B8A", "<patch>_B02", or, in Level-2A SAFE products,
# "<tile>_<datetime>_B02_10m" (band then resolution).
_BAND_FILE_RE = re.compile(r"^(?P<prefix>.*?)(?:^|[_\-.])(?P<band>B\d{1,2}A?)(?:_(?P<resolution>\d{2})m)?$",
                           re.IGNORECASE)
_SAFE_RESOLUTION_FOLDER_RE = re.compile(r"^R(10|20|60)m$")
# A Sentinel-2 product name, e.g. S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419 (mission, level,
# sensing time, processing baseline, relative orbit, tile, product generation time). reBEN's tile folders and patch
# names carry it without the generation time (S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43).
PRODUCT_NAME_RE = re.compile(r"S2[A-D]_MSIL(?:1C|2A)_\d{8}T\d{6}_N(?P<baseline>\d{4})_R\d{3}_T[0-9A-Z]{5}"
                             r"(?P<generation>_\d{8}T\d{6})?", re.IGNORECASE)


def canonical_band_name(name: str) -> str:
    """Map a Sentinel-2 band alias (`B2`, `b02`, `B8a`, `8A`, `2`) to its canonical name (`B02`, `B8A`)."""
    match = _BAND_NAME_RE.match(str(name).strip())
    if match is not None:
        number, suffix = int(match.group(1)), match.group(2).upper()
        if suffix and number == 8:
            return "B8A"
        if not suffix and 1 <= number <= 12:
            return f"B{number:02d}"
    raise ValueError(f"unknown Sentinel-2 band name {name!r}; expected one of {', '.join(CANONICAL_BANDS)} "
                     "(aliases such as B2, b02, B8a are accepted)")


def canonical_band_names(names, argument: str = "band_names") -> list[str]:
    """Canonicalise a list of band names, refusing duplicates."""
    if isinstance(names, str):
        raise ValueError(f"{argument} must be a list of band names, got the string {names!r}")
    canonical = [canonical_band_name(name) for name in names]
    duplicates = sorted({band for band in canonical if canonical.count(band) > 1})
    if duplicates:
        raise ValueError(f"{argument} names band(s) {duplicates} more than once: {list(names)}")
    return canonical


class BandFile(NamedTuple):
    """A band file's name, parsed: `prefix` (the patch or `<tile>_<datetime>` before the band, "" for `B02.tif`),
    `band` (canonical), `resolution` (metres, from a SAFE Level-2A `_10m` suffix, else None)."""

    prefix: str
    band: str
    resolution: int | None


def parse_band_file_name(name) -> BandFile | None:
    """The `BandFile` of a raster file name or path whose stem ends in a Sentinel-2 band name, else None."""
    stem, extension = os.path.splitext(os.path.basename(os.fspath(name)))
    if extension.lower() not in RASTER_EXTENSIONS:
        return None
    match = _BAND_FILE_RE.match(stem)
    if match is None:
        return None
    try:
        band = canonical_band_name(match.group("band"))
    except ValueError:
        return None
    resolution = match.group("resolution")
    return BandFile(match.group("prefix"), band, int(resolution) if resolution else None)


@dataclass(frozen=True)
class SourceLayout:
    """What `detect_layout` found: `kind` (one of LAYOUTS), `path` (the raster file for "file", the item's file or
    URL (or id) for "stac", else the path given), `files` ({band: file or href} in canonical order; {} for "file",
    whose header names its bands), `prefix` (the text before the band in the band files' names: the patch of
    `<patch>_B02.tif`, "" for `B02.tif`; None for "file" and "stac") and `item` (the `sentinel2_stac.StacItem` of a
    "stac" layout, else None)."""

    kind: str
    path: str
    files: dict = field(default_factory=dict)
    prefix: str | None = None
    item: object = None

    def describe(self, band: str) -> str:
        """What error messages call the file of `band`: its path, or a STAC item's asset key, band and href."""
        return self.item.describe(band) if self.item is not None else self.files[band]


def _in_band_order(found: dict) -> dict:
    return {band: found[band] for band in CANONICAL_BANDS if band in found}


def select_band_files(found: dict, select_bands, where: str) -> dict:
    """{band: file} of `found` in canonical order, only `select_bands` when given; none found is a ValueError."""
    if not found:
        raise ValueError(f"{where}: no band files found (expected GeoTIFFs or JPEG2000s named like B02.tif, B2.tif, "
                         "<patch>_B02.tif or T33UUU_20170216T102101_B02.jp2, or a Sentinel-2 .SAFE product)")
    if select_bands is None:
        return _in_band_order(found)
    wanted = set(canonical_band_names(select_bands, argument="select_bands"))
    return _in_band_order({band: path for band, path in found.items() if band in wanted})


def _band_folder(folder: str, select_bands) -> SourceLayout:
    by_prefix: dict[str, dict[str, str]] = {}
    for name in sorted(os.listdir(folder)):
        parsed = parse_band_file_name(name)
        if parsed is not None:
            by_prefix.setdefault(parsed.prefix, {})[parsed.band] = os.path.join(folder, name)
    if len(by_prefix) > 1:
        raise ValueError(f"{folder} holds band files of {len(by_prefix)} patches ({', '.join(sorted(by_prefix))}); "
                         "pass one patch as the path prefix <folder>/<patch>")
    prefix, found = next(iter(by_prefix.items()), ("", {}))
    return SourceLayout("band_folder", folder, select_band_files(found, select_bands, folder), prefix)


def _path_prefix(path: str, select_bands) -> SourceLayout | None:
    folder, patch = os.path.split(path)
    if not os.path.isdir(folder or "."):
        return None
    found = {}
    for name in os.listdir(folder or "."):
        parsed = parse_band_file_name(name)
        if parsed is not None and parsed.prefix == patch:
            found[parsed.band] = os.path.join(folder, name)
    return SourceLayout("path_prefix", path, select_band_files(found, select_bands, path), patch) if found else None


def detect_path_layout(source, select_bands=None) -> SourceLayout:
    """Which layout the local path `source` is (see LAYOUTS) and which band files it holds, from names alone (nothing
    is opened).

    A folder is a SAFE product (the `.SAFE` folder, a granule, its `IMG_DATA` or an `IMG_DATA/R10m|R20m|R60m`
    folder, see `safe_band_files`) or else a band folder; a path that does not exist is tried as a path prefix.
    `select_bands`: keep only these bands' files. Errors name the path: no band files, band files of several
    patches in one folder (pass `<folder>/<patch>`), nothing at that path.
    """
    path = os.fspath(source)
    if os.path.isdir(path):
        safe = safe_band_files(path)
        if safe is None:
            return _band_folder(path, select_bands)
        files = select_band_files(safe, select_bands, path)
        prefixes = {parse_band_file_name(file).prefix for file in safe.values()}
        return SourceLayout("safe", path, files, prefixes.pop() if len(prefixes) == 1 else "")
    if os.path.isfile(path):
        return SourceLayout("file", path)
    layout = _path_prefix(path, select_bands)
    if layout is None:
        raise FileNotFoundError(f"no such image file or band folder: {path}")
    return layout


def is_safe_product(path) -> bool:
    """True for a Sentinel-2 SAFE product folder: named `*.SAFE`, or holding a `GRANULE` folder."""
    path = os.path.normpath(os.fspath(path))
    return path.upper().endswith(".SAFE") or os.path.isdir(os.path.join(path, "GRANULE"))


def _safe_image_folders(path: str) -> list[str] | None:
    """The IMG_DATA resolution folders (or the IMG_DATA folder) a SAFE path reads from, or None for a non-SAFE path."""
    if is_safe_product(path):
        img_data = sorted(glob.glob(os.path.join(glob.escape(path), "GRANULE", "*", "IMG_DATA")))
        if not img_data:
            raise ValueError(f"{path}: a SAFE product without GRANULE/<granule>/IMG_DATA")
        if len(img_data) > 1:
            raise ValueError(f"{path} holds {len(img_data)} granules; pass one granule's IMG_DATA folder "
                             f"(e.g. {img_data[0]})")
        path = img_data[0]
    elif os.path.isdir(os.path.join(path, "IMG_DATA")):
        path = os.path.join(path, "IMG_DATA")
    name = os.path.basename(path)
    if name == "IMG_DATA":
        folders = [os.path.join(path, r) for r in ("R10m", "R20m", "R60m") if os.path.isdir(os.path.join(path, r))]
        return folders or [path]
    if _SAFE_RESOLUTION_FOLDER_RE.match(name) and os.path.basename(os.path.dirname(path)) == "IMG_DATA":
        return [path]
    return None


def safe_band_files(path) -> dict | None:
    """{band: file} of a Sentinel-2 SAFE product, or None when `path` is not part of one.

    `path` is the `.SAFE` folder (one granule), a granule folder, its `IMG_DATA` folder, or one of a Level-2A
    product's `IMG_DATA/R10m`, `R20m`, `R60m` folders (that resolution only). Level-1C files are named
    `T33UUU_20170216T102101_B02.jp2`, Level-2A files `T21JUK_20231217T135659_B02_10m.jp2`; where a band exists
    at several resolutions the finest is taken. B10 (cirrus, not among SpectralGPT's bands) is dropped.
    """
    folders = _safe_image_folders(os.path.normpath(os.fspath(path)))
    if folders is None:
        return None
    finest: dict[str, tuple[int, str]] = {}
    for folder in folders:
        for file_name in sorted(os.listdir(folder)):
            parsed = parse_band_file_name(file_name)
            if parsed is None or parsed.band == "B10":
                continue
            resolution = parsed.resolution or 0
            if parsed.band not in finest or resolution < finest[parsed.band][0]:
                finest[parsed.band] = (resolution, os.path.join(folder, file_name))
    return _in_band_order({band: file for band, (_, file) in finest.items()})


def product_id(source) -> str | None:
    """The full Sentinel-2 product name in a path or URL (the `.SAFE` folder, a Major-TOM product folder), else the
    file or folder name without extension (a reBEN patch name, whose product name lacks the generation time); None
    for arrays."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = os.fspath(source)
    url = "://" in path
    path = urlparse(path).path if url else os.path.abspath(path)
    for part in reversed(path.split("/" if url else os.sep)):
        match = PRODUCT_NAME_RE.search(part)
        if match is not None and match.group("generation"):
            return match.group(0)
    return os.path.splitext(os.path.basename(path))[0]


__all__ = ["CANONICAL_BANDS", "SPECTRALGPT_BANDS", "EUROSAT_FILE_ORDER", "KNOWN_LAYOUTS", "RASTER_EXTENSIONS",
           "LAYOUTS", "PRODUCT_NAME_RE", "canonical_band_name", "canonical_band_names", "BandFile",
           "parse_band_file_name", "SourceLayout", "detect_path_layout", "select_band_files", "is_safe_product",
           "safe_band_files", "product_id"]
