"""Spectral-Inst: the instruction dataset builder (paper section IV).

Pipeline, per patch (BigEarthNet v2 "reBEN", BigEarthNet v1, EuroSAT):

1. read the bands with ``processing.read_image`` (10 m grid), bring them to reflectance with
   ``processing.radiometry.apply_radiometry`` (product offsets; ``input_offset``/``input_scale``/``strict`` of
   the config), render an RGB PNG and compute a metadata record (labels, country, date, season, WGS84 centre, snow/cloud flags, spectral summary). The record
   is cached atomically as ``OUTPUT/.work/records/<hh>/<id>.json``, so a re-run resumes where it stopped.
2. caption the record with a captioner (``template``, ``llm:...``, ``hf:...``); model captions are cached
   in ``OUTPUT/.work/captions/<captioner>/<hh>/<id>.json`` together with their prompt.
3. assemble ``OUTPUT/patches``, ``OUTPUT/alignment`` and ``OUTPUT/instructions`` (``datasets.DatasetDict``
   saved with ``save_to_disk``, keyed by split), ``OUTPUT/README.md`` (dataset card),
   ``OUTPUT/build_info.json`` (image roots, thresholds, radiometric handling) and ``OUTPUT/report.json`` (skipped patches).

Classification answers use ONE format, produced by :func:`format_labels` and read back by
:func:`parse_labels`: ``"Labels: " + "; ".join(sorted(labels))`` (semicolons, because reBEN names contain
commas; alphabetical order, which is also the order of the reBEN parquet).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------
# Vocabularies and reference tables
# ----------------------------------------------------------------------------------------------------------

# The 19-class BigEarthNet nomenclature (Sumbul et al. 2021), in its official order; reBEN uses it.
BEN19_LABELS = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

# CORINE level-3 names of BigEarthNet v1 (43 classes) -> the 19-class nomenclature. Classes that the
# 19-class nomenclature drops (roads, ports, airports, mines, dumps, construction, green urban, sport,
# bare rock, burnt areas, intertidal flats) map to nothing. Used only for v1 patches without a reBEN row.
BEN43_TO_19 = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Pastures": "Pastures",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}

_BEN43_DROPPED = frozenset({
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities", "Bare rock",
    "Burnt areas", "Intertidal flats",
})

EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)

# Rough WGS84 bounding boxes (lon_min, lat_min, lon_max, lat_max) of the ten reBEN countries, mainland
# only, rounded outward to 0.1 degree from the Natural Earth 1:10m admin-0 extents
# (https://www.naturalearthdata.com/downloads/10m-cultural-vectors/). Boxes of neighbours overlap, so
# they only test plausibility or pick a country when exactly one box contains a point.
COUNTRY_BOUNDS = {
    "Austria": (9.5, 46.3, 17.2, 49.1),
    "Belgium": (2.5, 49.4, 6.5, 51.6),
    "Finland": (20.5, 59.7, 31.6, 70.1),
    "Ireland": (-10.7, 51.4, -5.9, 55.4),
    "Kosovo": (20.0, 41.8, 21.8, 43.3),
    "Lithuania": (20.9, 53.8, 26.9, 56.5),
    "Luxembourg": (5.7, 49.4, 6.6, 50.2),
    "Portugal": (-9.6, 36.9, -6.1, 42.2),
    "Serbia": (18.8, 42.2, 23.1, 46.2),
    "Switzerland": (5.9, 45.8, 10.5, 47.9),
}

# Spectral indices (reflectance = DN / 10000) and the thresholds of the "fraction of pixels" summaries.
INDEX_DEFINITIONS = {
    "ndvi": "(B08 - B04) / (B08 + B04)  (Rouse et al. 1974)",
    "ndwi": "(B03 - B08) / (B03 + B08)  (McFeeters 1996)",
    "ndbi": "(B11 - B08) / (B11 + B08)  (Zha et al. 2003)",
    "ndsi": "(B03 - B11) / (B03 + B11)  (Hall et al. 1995)",
}
THRESHOLDS = {
    "vegetation": "NDVI > 0.3",
    "water": "NDWI > 0 and not snow",
    "built": "NDBI > 0",
    "snow": "NDSI > 0.4 and B08 > 0.11 (MODIS SNOMAP-style test)",
    "cloud": "mean(B02, B03, B04) > 0.3 and not snow (bright pixels; a crude haze/cloud indicator)",
    "snow_flag": "snow_fraction > 0.1 when the source metadata has no snow flag",
    "cloud_flag": "cloud_fraction > 0.1 when the source metadata has no cloud flag",
}
FLAG_FRACTION = 0.1
RGB_PERCENTILES = (2.0, 98.0)  # joint stretch over the three channels, keeps the colour balance
SUMMARY_BANDS = ("B02", "B03", "B04", "B08", "B11")
EUROSAT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
SPLITS = ("train", "validation", "test")
SOURCES = ("reben", "bigearthnet-v1", "eurosat")
RECORD_VERSION = 1  # bump when the record's content changes, so cached records are recomputed

# ----------------------------------------------------------------------------------------------------------
# Label format shared with training and evaluation
# ----------------------------------------------------------------------------------------------------------

LABEL_PREFIX = "Labels:"
LABEL_SEPARATOR = "; "


def format_labels(labels: Iterable[str]) -> str:
    """The one classification answer format: ``"Labels: A; B"``, labels sorted alphabetically, unique."""
    unique = sorted({label.strip() for label in labels if label and label.strip()})
    for label in unique:
        if ";" in label or "\n" in label:
            raise ValueError(f"label {label!r} contains ';' or a newline and cannot be formatted")
    return f"{LABEL_PREFIX} {LABEL_SEPARATOR.join(unique)}".rstrip()


def parse_labels(text: str, vocabulary: Sequence[str] | None = None) -> list[str]:
    """Read a :func:`format_labels` answer back into a sorted list of labels.

    The text after the first ``Labels:`` (case-insensitive) up to the end of that line is split on ``;``;
    without the prefix the first non-empty line is used. With ``vocabulary``, labels are matched
    case-insensitively to it (canonical spelling returned) and unknown ones are dropped.
    """
    match = re.search(re.escape(LABEL_PREFIX), text, flags=re.IGNORECASE)
    if match:
        line = text[match.end():].split("\n", 1)[0]
    else:
        line = next((ln for ln in text.splitlines() if ln.strip()), "")
    labels = {part.strip().rstrip(".").strip() for part in line.split(";")}
    labels.discard("")
    if vocabulary is not None:
        canonical = {name.lower(): name for name in vocabulary}
        labels = {canonical[label.lower()] for label in labels if label.lower() in canonical}
    return sorted(labels)


# ----------------------------------------------------------------------------------------------------------
# Small helpers: atomic writes, ids, dates, seasons, geography
# ----------------------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _bucket(patch_id: str) -> str:
    """Two hex characters that spread per-patch files over 256 folders."""
    return hashlib.sha1(patch_id.encode("utf-8")).hexdigest()[:2]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def parse_acquisition_date(name: str) -> str | None:
    """ISO date from a Sentinel-2 product or patch name (``..._20170613T101031_...``), else None."""
    match = re.search(r"_(\d{8})T\d+", name)
    if not match:
        return None
    try:
        return date(int(match[1][:4]), int(match[1][4:6]), int(match[1][6:])).isoformat()
    except ValueError:
        return None


def season_of(acquisition_date: str | None, latitude: float | None) -> str | None:
    """Meteorological season (DJF winter, MAM spring, JJA summer, SON autumn), flipped south of the equator."""
    if not acquisition_date or latitude is None:
        return None
    seasons = ("winter", "spring", "summer", "autumn")
    index = (int(acquisition_date[5:7]) % 12) // 3
    if latitude < 0:
        index = (index + 2) % 4
    return seasons[index]


def patch_centre_latlon(crs, transform, height: int, width: int) -> tuple[float, float]:
    """WGS84 (latitude, longitude) of the patch centre, from its own CRS and affine transform."""
    from rasterio.warp import transform as warp_transform

    x, y = transform @ (width / 2.0, height / 2.0)
    lons, lats = warp_transform(crs, "EPSG:4326", [x], [y])
    return float(lats[0]), float(lons[0])


def countries_containing(latitude: float, longitude: float) -> list[str]:
    return [
        name for name, (lon0, lat0, lon1, lat1) in COUNTRY_BOUNDS.items()
        if lon0 <= longitude <= lon1 and lat0 <= latitude <= lat1
    ]


def resolve_image_path(image_path: str, image_roots: dict[str, str]) -> str:
    """Absolute path of a dataset ``image_path`` (``<source>/<path under that source's root>``)."""
    source, _, relative = image_path.partition("/")
    if source not in image_roots:
        raise ValueError(f"image_path {image_path!r}: unknown source {source!r}; known: {sorted(image_roots)}")
    return os.path.join(image_roots[source], relative)


# ----------------------------------------------------------------------------------------------------------
# Spectral summary and RGB rendering
# ----------------------------------------------------------------------------------------------------------


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (a - b) / np.where(total != 0, total, 1), 0.0)


def spectral_summary(bands: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, float]:
    """Mean NDVI/NDWI/NDBI/NDSI and threshold fractions (see ``THRESHOLDS``) over the valid pixels.

    ``bands`` maps B02, B03, B04, B08, B11 to reflectance arrays (DN / 10000) on one grid.
    """
    count = int(valid.sum())
    if count == 0:
        raise ValueError("patch has no valid pixels (all no-data)")
    b02, b03, b04, b08, b11 = (bands[name][valid] for name in SUMMARY_BANDS)
    ndvi, ndwi, ndbi, ndsi = _ratio(b08, b04), _ratio(b03, b08), _ratio(b11, b08), _ratio(b03, b11)
    snow = (ndsi > 0.4) & (b08 > 0.11)
    bright = (b02 + b03 + b04) / 3.0 > 0.3
    return {
        "ndvi_mean": float(ndvi.mean()),
        "ndwi_mean": float(ndwi.mean()),
        "ndbi_mean": float(ndbi.mean()),
        "ndsi_mean": float(ndsi.mean()),
        "vegetation_fraction": float((ndvi > 0.3).mean()),
        "water_fraction": float(((ndwi > 0) & ~snow).mean()),
        "built_fraction": float((ndbi > 0).mean()),
        "snow_fraction": float(snow.mean()),
        "cloud_fraction": float((bright & ~snow).mean()),
        "valid_fraction": count / valid.size,
    }


def render_rgb(red: np.ndarray, green: np.ndarray, blue: np.ndarray, valid: np.ndarray,
               percentiles: tuple[float, float] = RGB_PERCENTILES) -> np.ndarray:
    """(H, W, 3) uint8 true-colour image: one 2-98 % percentile stretch shared by B04/B03/B02 (valid pixels)."""
    stack = np.stack([red, green, blue], axis=-1).astype(np.float32)
    values = stack[valid]
    low, high = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
    if high <= low:
        high = low + 1e-6
    scaled = np.clip((stack - low) / (high - low), 0.0, 1.0) * 255.0
    scaled[~valid] = 0.0
    return np.round(scaled).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Discovery: the patches to process, with what the source metadata already says about them
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PatchTask:
    id: str
    source: str  # one of SOURCES
    path: str  # absolute patch folder (BigEarthNet) or GeoTIFF (EuroSAT)
    image_path: str  # "<source>/<path relative to that source's root>"
    labels: list[str] | None = None
    label_source: str = ""
    country: str | None = None
    split: str | None = None
    snow: bool | None = None
    cloud: bool | None = None
    acquisition_date: str | None = None
    reben_patch_id: str | None = None


def load_reben_metadata(paths: str | os.PathLike | Sequence[str | os.PathLike]):
    """The reBEN metadata parquet(s) as one pandas DataFrame (errors name the file).

    reBEN ships its snow/cloud/shadow patches with a second parquet; pass both to cover all 549,488 patches.
    """
    import pandas as pd

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    columns = ["patch_id", "labels", "split", "country", "s2v1_name",
               "contains_seasonal_snow", "contains_cloud_or_shadow"]
    frames = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"--metadata: no such parquet file: {path}")
        try:
            frames.append(pd.read_parquet(path, columns=columns))
        except Exception as error:  # pyarrow raises several types for bad files / missing columns
            raise ValueError(f"--metadata {path}: cannot read the reBEN columns {columns}: {error}") from error
    frame = pd.concat(frames, ignore_index=True)
    duplicated = frame["patch_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"--metadata {[str(p) for p in paths]}: patch_id {frame['patch_id'][duplicated].iloc[0]} "
                         "appears more than once")
    return frame


def _meta_fields(row) -> dict:
    return {
        "labels": sorted(str(label) for label in row["labels"]),
        "country": str(row["country"]),
        "split": str(row["split"]),
        "snow": bool(row["contains_seasonal_snow"]),
        "cloud": bool(row["contains_cloud_or_shadow"]),
        "reben_patch_id": str(row["patch_id"]),
    }


def _band_folders(root: Path) -> Iterator[Path]:
    """Folders under ``root`` that hold ``<folder name>_B02.tif``/``.tiff`` (BigEarthNet patch layout)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        name = os.path.basename(dirpath)
        if f"{name}_B02.tif" in filenames or f"{name}_B02.tiff" in filenames:
            dirnames.clear()  # a patch folder holds no further patches
            yield Path(dirpath)


def discover_reben(root: str | os.PathLike, metadata) -> tuple[list[PatchTask], list[dict]]:
    """reBEN patch folders (tile/patch or flat) joined with the parquet; folders without a row are reported."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--bigearthnet: no such folder: {root}")
    by_id = {row["patch_id"]: row for row in metadata.to_dict("records")}
    tasks, skipped = [], []
    for folder in _band_folders(root):
        patch_id = folder.name
        if patch_id not in by_id:
            skipped.append({"id": patch_id, "path": str(folder), "reason": "no row in the reBEN metadata"})
            continue
        fields = _meta_fields(by_id[patch_id])
        tasks.append(PatchTask(
            id=patch_id, source="reben", path=str(folder),
            image_path=f"reben/{folder.relative_to(root).as_posix()}", label_source="reben",
            acquisition_date=parse_acquisition_date(patch_id), **fields,
        ))
    return tasks, skipped


def discover_bigearthnet_v1(root: str | os.PathLike, metadata=None) -> tuple[list[PatchTask], list[dict]]:
    """v1 patch folders; labels from the reBEN row found by ``s2v1_name``, else mapped from the 43 classes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--bigearthnet-v1: no such folder: {root}")
    by_v1 = {row["s2v1_name"]: row for row in metadata.to_dict("records")} if metadata is not None else None
    tasks, skipped = [], []
    for folder in _band_folders(root):
        name = folder.name
        label_json = folder / f"{name}_labels_metadata.json"
        task = PatchTask(id=name, source="bigearthnet-v1", path=str(folder),
                         image_path=f"bigearthnet-v1/{folder.relative_to(root).as_posix()}",
                         acquisition_date=parse_acquisition_date(name))
        if by_v1 is not None and name in by_v1:
            for key, value in _meta_fields(by_v1[name]).items():
                setattr(task, key, value)
            task.label_source = "reben"
        elif not label_json.is_file():
            skipped.append({"id": name, "path": str(label_json),
                            "reason": "no reBEN row and no _labels_metadata.json"})
            continue
        else:
            task.label_source = "bigearthnet-v1-43-to-19"  # labels read with the json in the worker
        tasks.append(task)
    return tasks, skipped


def stratified_split(ids: Sequence[str], strata: Sequence[str], seed: int,
                     fractions: dict[str, float] = EUROSAT_FRACTIONS) -> dict[str, str]:
    """Seeded stratified split: within each stratum ids are shuffled, then cut by ``fractions``."""
    by_stratum: dict[str, list[str]] = {}
    for patch_id, stratum in zip(ids, strata):
        by_stratum.setdefault(stratum, []).append(patch_id)
    assignment = {}
    for stratum, members in sorted(by_stratum.items()):
        members = sorted(members)
        random.Random(f"{seed}:{stratum}").shuffle(members)
        n_val = int(round(len(members) * fractions["validation"]))
        n_test = int(round(len(members) * fractions["test"]))
        for index, patch_id in enumerate(members):
            if index < n_test:
                assignment[patch_id] = "test"
            elif index < n_test + n_val:
                assignment[patch_id] = "validation"
            else:
                assignment[patch_id] = "train"
    return assignment


def discover_eurosat(root: str | os.PathLike, seed: int) -> tuple[list[PatchTask], list[dict]]:
    """EuroSAT class folders of GeoTIFFs; a seeded split stratified by class (80/10/10)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--eurosat: no such folder: {root}")
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise FileNotFoundError(f"--eurosat {root}: no <Class>/<file>.tif GeoTIFFs found")
    ids = [p.stem for p in files]
    if len(set(ids)) != len(ids):
        raise ValueError(f"--eurosat {root}: file names are not unique across class folders")
    splits = stratified_split(ids, [p.parent.name for p in files], seed)
    tasks = [
        PatchTask(id=p.stem, source="eurosat", path=str(p), image_path=f"eurosat/{p.relative_to(root).as_posix()}",
                  labels=[p.parent.name], label_source="eurosat", split=splits[p.stem])
        for p in files
    ]
    return tasks, []


def assign_missing_splits(tasks: list[PatchTask], seed: int) -> None:
    """Patches without an official split (v1 without a reBEN row) get a seeded split, stratified by source."""
    missing = [t for t in tasks if t.split is None]
    if missing:
        splits = stratified_split([t.id for t in missing], [t.source for t in missing], seed)
        for task in missing:
            task.split = splits[task.id]


# ----------------------------------------------------------------------------------------------------------
# Per-patch processing (runs in worker processes)
# ----------------------------------------------------------------------------------------------------------


def record_path(output_dir: str | os.PathLike, patch_id: str) -> Path:
    return Path(output_dir) / ".work" / "records" / _bucket(patch_id) / f"{patch_id}.json"


def rgb_relpath(task: PatchTask) -> str:
    return f"rgb/{task.source}/{_bucket(task.id)}/{task.id}.png"


def _v1_labels(folder: Path) -> tuple[list[str], dict]:
    path = folder / f"{folder.name}_labels_metadata.json"
    try:
        meta = json.loads(path.read_text())
        labels43 = list(meta["labels"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: unreadable BigEarthNet v1 label file: {error}") from error
    unknown = [label for label in labels43 if label not in BEN43_TO_19 and label not in _BEN43_DROPPED]
    if unknown:
        raise ValueError(f"{path}: unknown BigEarthNet v1 labels {unknown}")
    return sorted({BEN43_TO_19[label] for label in labels43 if label in BEN43_TO_19}), meta


def process_patch(task: PatchTask, output_dir: str | os.PathLike, radiometry: dict | None = None) -> dict:
    """Read one patch, write its RGB PNG and its cached metadata record; return the record.

    `radiometry`: {"input_offset", "input_scale", "strict"} for `processing.radiometry.apply_radiometry`
    (default: the automatic rules, implausible values warn)."""
    from PIL import Image

    from processing.radiometry import apply_radiometry, radiometry_settings
    from processing.sentinel2_io import read_image

    output_dir = Path(output_dir)
    radiometry = dict(radiometry or {})
    image = read_image(task.path, select_bands=list(SUMMARY_BANDS))
    names, mask = list(image.band_names), image.metadata.get("band_mask") or [True] * len(image.band_names)
    missing = [name for name in SUMMARY_BANDS if name not in names or not mask[names.index(name)]]
    if missing:
        raise ValueError(f"{task.path}: bands {missing} are missing (needed for RGB and indices)")
    corrected = apply_radiometry(image, list(SUMMARY_BANDS), **radiometry)
    data = np.stack([corrected.values[name].astype(np.float32) for name in SUMMARY_BANDS])
    bands = {name: data[index] / 10000.0 for index, name in enumerate(SUMMARY_BANDS)}
    valid = np.all([corrected.valid[name] for name in SUMMARY_BANDS], axis=0)
    summary = spectral_summary(bands, valid)

    crs, transform = image.metadata.get("crs"), image.metadata.get("transform")
    if crs is None or transform is None:
        raise ValueError(f"{task.path}: no georeference (CRS/transform) to locate the patch")
    height, width = data.shape[1:]
    latitude, longitude = patch_centre_latlon(crs, transform, height, width)

    labels, country, acquisition_date = task.labels, task.country, task.acquisition_date
    if task.label_source == "bigearthnet-v1-43-to-19":
        labels, v1_meta = _v1_labels(Path(task.path))
        acquisition_date = str(v1_meta.get("acquisition_date", ""))[:10] or acquisition_date
    country_source = "metadata" if country else None
    if country is None and task.source != "eurosat":
        candidates = countries_containing(latitude, longitude)  # BigEarthNet covers these ten countries
        if len(candidates) == 1:
            country, country_source = candidates[0], "bounding-box"

    rgb = render_rgb(bands["B04"], bands["B03"], bands["B02"], valid)
    buffer = _png_bytes(Image.fromarray(rgb))
    rgb_path = rgb_relpath(task)
    atomic_write_bytes(output_dir / rgb_path, buffer)

    snow = task.snow if task.snow is not None else summary["snow_fraction"] > FLAG_FRACTION
    cloud = task.cloud if task.cloud is not None else summary["cloud_fraction"] > FLAG_FRACTION
    record = {
        "record_version": RECORD_VERSION,
        "id": task.id,
        "source": task.source,
        "image_path": task.image_path,
        "rgb_path": rgb_path,
        "labels": list(labels or []),
        "label_source": task.label_source,
        "country": country,
        "country_source": country_source,
        "acquisition_date": acquisition_date,
        "season": season_of(acquisition_date, latitude),
        "latitude": latitude,
        "longitude": longitude,
        "crs": str(crs),
        "height": int(height),
        "width": int(width),
        "snow": bool(snow),
        "cloud": bool(cloud),
        "flag_source": "metadata" if task.snow is not None else "spectral",
        "reben_patch_id": task.reben_patch_id,
        "radiometry": corrected.radiometry.as_dict(),
        "radiometry_settings": radiometry_settings(radiometry.get("input_offset"), radiometry.get("input_scale")),
        **summary,
    }
    atomic_write_json(record_path(output_dir, task.id), record)
    return record


def _png_bytes(image) -> bytes:
    handle = io.BytesIO()
    image.save(handle, format="PNG", optimize=False)
    return handle.getvalue()


def _process_safely(args: tuple[PatchTask, str, dict | None]) -> tuple[str, dict]:
    task, output_dir, radiometry = args
    try:
        return "ok", process_patch(task, output_dir, radiometry)
    except Exception as error:  # one bad patch must not stop a 500k-patch build; it is reported instead
        return "error", {"id": task.id, "path": task.path, "reason": f"{type(error).__name__}: {error}"}


def load_cached_record(output_dir: str | os.PathLike, task: PatchTask, radiometry: dict | None = None) -> dict | None:
    """The cached record of ``task`` when it and its PNG exist and are readable and it was made with the same
    radiometric handling (``radiometry`` as for ``process_patch``), else None."""
    from processing.radiometry import radiometry_settings

    path = record_path(output_dir, task.id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    settings = radiometry_settings((radiometry or {}).get("input_offset"), (radiometry or {}).get("input_scale"))
    if (record.get("record_version") != RECORD_VERSION or record.get("image_path") != task.image_path
            or record.get("radiometry_settings") != settings
            or not (Path(output_dir) / record["rgb_path"]).is_file()):
        return None
    return record


# ----------------------------------------------------------------------------------------------------------
# Captioners
# ----------------------------------------------------------------------------------------------------------


def _percent(fraction: float) -> str:
    return f"{round(100 * fraction)}%"


EUROSAT_PHRASES = {
    "AnnualCrop": "annual cropland", "Forest": "forest", "HerbaceousVegetation": "herbaceous vegetation",
    "Highway": "a highway", "Industrial": "industrial buildings", "Pasture": "pasture",
    "PermanentCrop": "permanent crops", "Residential": "residential buildings", "River": "a river",
    "SeaLake": "a sea or lake",
}


def _label_phrase(labels: Sequence[str]) -> str:
    names = [EUROSAT_PHRASES.get(label, label.lower()) for label in labels]
    if not names:
        return "unlabelled land cover"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _place_phrase(record: dict) -> str:
    hemisphere_lat = "N" if record["latitude"] >= 0 else "S"
    hemisphere_lon = "E" if record["longitude"] >= 0 else "W"
    coords = (f"{abs(record['latitude']):.2f}\u00b0{hemisphere_lat}, "
              f"{abs(record['longitude']):.2f}\u00b0{hemisphere_lon}")
    return f"{record['country']} ({coords})" if record.get("country") else coords


def metadata_facts(record: dict) -> str:
    """The facts a model captioner is conditioned on (labels, place, date, spectral summary, flags), one per line."""
    lines = [f"- Land cover: {'; '.join(record['labels']) or 'unknown'}", f"- Location: {_place_phrase(record)}"]
    if record.get("acquisition_date"):
        lines.append(f"- Date: {record['acquisition_date']} ({record['season']})")
    lines += [
        f"- Vegetation: {_percent(record['vegetation_fraction'])} of the pixels have NDVI > 0.3 "
        f"(mean NDVI {record['ndvi_mean']:.2f})",
        f"- Water: {_percent(record['water_fraction'])} of the pixels (mean NDWI {record['ndwi_mean']:.2f}); "
        f"built-up or bare: {_percent(record['built_fraction'])} (mean NDBI {record['ndbi_mean']:.2f})",
        f"- Snow: {_percent(record['snow_fraction'])} of the pixels (mean NDSI {record['ndsi_mean']:.2f}); "
        f"seasonal snow: {'yes' if record['snow'] else 'no'}; cloud or shadow: {'yes' if record['cloud'] else 'no'}",
    ]
    return "\n".join(lines)


def _scene_size(record: dict) -> str:
    return f"{record['width'] * 10} m x {record['height'] * 10} m"


def metadata_prompt(record: dict) -> str:
    """The prompt of image-text-to-text captioners: an instruction plus :func:`metadata_facts`."""
    return (f"Describe this {_scene_size(record)} Sentinel-2 satellite image in two or three sentences for a "
            "land-cover analyst: the land cover, the season and what the spectral indices indicate. Use only "
            "these facts and what you see; do not invent objects.\n" + metadata_facts(record))


LLM_SYSTEM_PROMPT = ("You describe Sentinel-2 satellite images for land-cover analysts. Use only the facts you "
                     "are given; do not invent objects, events or numbers.")
# One worked example (a made-up Serbian patch) keeps small text LLMs on task and in format.
_LLM_EXAMPLE_RECORD = {
    "labels": ["Arable land", "Broad-leaved forest"], "country": "Serbia", "latitude": 45.3, "longitude": 20.1,
    "acquisition_date": "2017-08-10", "season": "summer", "vegetation_fraction": 0.64, "ndvi_mean": 0.48,
    "water_fraction": 0.0, "ndwi_mean": -0.45, "built_fraction": 0.21, "ndbi_mean": -0.1, "snow_fraction": 0.0,
    "ndsi_mean": -0.4, "snow": False, "cloud": False, "width": 120, "height": 120,
}
_LLM_EXAMPLE_DESCRIPTION = (
    "A summer Sentinel-2 view of farmland in Serbia: arable fields, some of them bare after the harvest, "
    "bordered by patches of broad-leaved forest. About two thirds of the scene is green vegetation, and there "
    "is no water, snow or cloud."
)


def llm_messages(record: dict) -> list[dict]:
    """Chat messages of the text-LLM captioner: system prompt, the worked example, then the record's facts."""
    def ask(facts_of: dict) -> dict:
        return {"role": "user", "content": f"Facts about a {_scene_size(facts_of)} Sentinel-2 image:\n"
                                           f"{metadata_facts(facts_of)}\nDescribe the image in two sentences."}

    return [{"role": "system", "content": LLM_SYSTEM_PROMPT}, ask(_LLM_EXAMPLE_RECORD),
            {"role": "assistant", "content": _LLM_EXAMPLE_DESCRIPTION}, ask(record)]


class TemplateCaptioner:
    """Deterministic descriptions from labels, metadata and indices; phrasing seeded by patch id and seed."""

    name = "template"
    cacheable = False

    _OPENINGS = (
        "This Sentinel-2 scene{where}{when} shows {labels}.",
        "A multispectral Sentinel-2 patch{where}{when}, covering {labels}.",
        "The image{when} captures {labels}{where}.",
        "Seen from Sentinel-2{when}, this area{where} is dominated by {labels}.",
        "Satellite view{where}{when}: the land cover consists of {labels}.",
    )
    _VEGETATION = (
        "Vegetation is dense: {veg} of the pixels have an NDVI above 0.3 (mean NDVI {ndvi}).",
        "Green vegetation covers about {veg} of the scene, with a mean NDVI of {ndvi}.",
        "The mean NDVI of {ndvi} and {veg} vegetated pixels point to healthy plant cover.",
    )
    _SPARSE = (
        "Vegetation is sparse (mean NDVI {ndvi}, {veg} of the pixels above 0.3).",
        "Little active vegetation is visible: the mean NDVI is only {ndvi}.",
    )
    _WATER = (
        "Open water occupies about {water} of the patch (NDWI above 0).",
        "Water surfaces make up roughly {water} of the pixels.",
    )
    _BUILT = (
        "Built-up or bare surfaces account for about {built} of the area (NDBI above 0).",
        "Around {built} of the pixels have a positive NDBI, typical of built-up or bare ground.",
    )
    _SNOW = (
        "Snow covers about {snow} of the scene (NDSI above 0.4).",
        "Seasonal snow is present, detected on roughly {snow} of the pixels.",
    )
    _CLOUD = (
        "Clouds or haze partly obscure the ground.",
        "Part of the view is affected by clouds or their shadows.",
    )

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.cache_key = "template"

    def prompt(self, record: dict) -> str:
        return f"template(seed={self.seed})"

    def caption(self, record: dict) -> str:
        rng = random.Random(f"{self.seed}:{record['id']}")
        where = f" in {record['country']}" if record.get("country") else ""
        when = ""
        if record.get("season") and record.get("acquisition_date"):
            month = date.fromisoformat(record["acquisition_date"]).strftime("%B %Y")
            when = rng.choice((f" acquired in {month}", f" from {record['season']} ({month})",
                               f" taken in {record['season']} {month[-4:]}"))
        values = {
            "veg": _percent(record["vegetation_fraction"]), "ndvi": f"{record['ndvi_mean']:.2f}",
            "water": _percent(record["water_fraction"]), "built": _percent(record["built_fraction"]),
            "snow": _percent(record["snow_fraction"]),
        }
        sentences = [rng.choice(self._OPENINGS).format(where=where, when=when,
                                                       labels=_label_phrase(record["labels"]))]
        if record["snow"] and record["snow_fraction"] > 0:
            sentences.append(rng.choice(self._SNOW).format(**values))
        elif record["vegetation_fraction"] >= 0.5:
            sentences.append(rng.choice(self._VEGETATION).format(**values))
        else:
            sentences.append(rng.choice(self._SPARSE).format(**values))
        if record["water_fraction"] >= 0.05:
            sentences.append(rng.choice(self._WATER).format(**values))
        if record["built_fraction"] >= 0.1:
            sentences.append(rng.choice(self._BUILT).format(**values))
        if record["cloud"]:
            sentences.append(rng.choice(self._CLOUD))
        return " ".join(sentences)

    def caption_batch(self, records: list[dict], output_dir: str | os.PathLike) -> list[tuple[str, str]]:
        return [(self.caption(record), self.prompt(record)) for record in records]


def trim_to_sentence(text: str) -> str:
    """Drop an unfinished last sentence (generation stopped at max_new_tokens); keep text without any stop."""
    text = " ".join(text.split())
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    if text.endswith((".", "!", "?")) or end < 0:
        return text
    return text[: end + 1]


def _generation_device(model) -> str:
    return str(next(model.parameters()).device)


class LLMCaptioner:
    """A text LLM writes the description from :func:`llm_messages` (greedy decoding, mild repetition penalty).

    The stored prompt is the JSON list of chat messages.
    """

    cacheable = True

    def __init__(self, spec: str, max_new_tokens: int = 96):
        self.spec = spec
        self.name = f"llm:{spec}"
        self.cache_key = "llm-" + _safe_name(spec)[-60:] + "-" + hashlib.sha1(spec.encode()).hexdigest()[:8]
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = 1.15  # greedy small LLMs otherwise loop on one sentence
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is None:
            self._model, self._tokenizer = _load_text_llm(self.spec)
            self._model.eval()
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._tokenizer.padding_side = "left"
        return self._model, self._tokenizer

    def caption_batch(self, records: list[dict], output_dir: str | os.PathLike) -> list[tuple[str, str]]:
        import torch

        model, tokenizer = self._load()
        conversations = [llm_messages(record) for record in records]
        prompts = [json.dumps(messages, ensure_ascii=False) for messages in conversations]
        texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                 for messages in conversations]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(_generation_device(model))
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    repetition_penalty=self.repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        captions = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [(trim_to_sentence(caption), prompt) for caption, prompt in zip(captions, prompts)]


def _load_text_llm(spec: str):
    """``smollm2`` or a model folder -> (causal LM, tokenizer), through ``modeling_spectral_llava.build.load_llm``."""
    from modeling_spectral_llava.build import load_llm

    return load_llm(spec)


class HFImageTextCaptioner:
    """Any HF image-text-to-text model captions the RGB rendering, prompted with :func:`metadata_prompt`."""

    cacheable = True

    def __init__(self, spec: str, max_new_tokens: int = 96):
        self.spec = spec
        self.name = f"hf:{spec}"
        self.cache_key = "hf-" + _safe_name(spec)[-60:] + "-" + hashlib.sha1(spec.encode()).hexdigest()[:8]
        self.max_new_tokens = max_new_tokens
        self._model = self._processor = None

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.spec)
            self._model = AutoModelForImageTextToText.from_pretrained(self.spec).eval()
        return self._model, self._processor

    def caption_batch(self, records: list[dict], output_dir: str | os.PathLike) -> list[tuple[str, str]]:
        import torch
        from PIL import Image

        model, processor = self._load()
        results = []
        for record in records:  # one at a time: image-token counts may differ between images
            prompt = metadata_prompt(record)
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            with Image.open(Path(output_dir) / record["rgb_path"]) as image:
                inputs = processor(images=image.convert("RGB"), text=text, return_tensors="pt")
            inputs = inputs.to(_generation_device(model))
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = output[0, inputs["input_ids"].shape[1]:]
            results.append((trim_to_sentence(processor.decode(new_tokens, skip_special_tokens=True)), prompt))
        return results


def make_captioner(spec: str, seed: int = 0, max_new_tokens: int = 96):
    """``template`` | ``llm:smollm2`` | ``llm:DIR`` | ``hf:MODEL_ID_OR_DIR``."""
    if spec == "template":
        return TemplateCaptioner(seed)
    kind, _, target = spec.partition(":")
    if kind == "llm" and target:
        return LLMCaptioner(target, max_new_tokens)
    if kind == "hf" and target:
        return HFImageTextCaptioner(target, max_new_tokens)
    raise ValueError(f"--captioner {spec!r}: expected template, llm:smollm2, llm:DIR or hf:MODEL_ID_OR_DIR")


def caption_path(output_dir: str | os.PathLike, captioner, patch_id: str) -> Path:
    return Path(output_dir) / ".work" / "captions" / captioner.cache_key / _bucket(patch_id) / f"{patch_id}.json"


# ----------------------------------------------------------------------------------------------------------
# Records: alignment (two variants) and instructions (LLaVA conversations with task tokens)
# ----------------------------------------------------------------------------------------------------------

ALIGNMENT_PROMPTS = (
    "Describe this image.",
    "What does this satellite image show?",
    "Give a short description of the scene.",
    "Summarise the content of this image.",
)
CAPTION_QUESTIONS = (
    "Describe this multispectral satellite image.",
    "Write a description of this Sentinel-2 scene.",
    "What can you see in this image? Describe the scene.",
    "Provide a detailed description of the land cover in this image.",
    "Describe the scene captured by this satellite patch.",
)
CLASSIFICATION_QUESTIONS = (
    "Which land-cover classes are present in this image?",
    "Classify this Sentinel-2 patch into its land-cover classes.",
    "List the land-cover labels of this scene.",
    "What land-cover categories does this image contain?",
    "Assign the land-cover labels to this multispectral image.",
)


def _conversation(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def alignment_records(row: dict, seed: int = 0) -> list[dict]:
    """Two stage-1 records per patch: ``variant`` "labels" (format_labels text) and "description"."""
    records = []
    for variant, answer in (("labels", format_labels(row["labels"])), ("description", row["caption"])):
        rng = random.Random(f"{seed}:{row['id']}:align:{variant}")
        records.append({
            "id": f"{row['id']}-align-{variant}", "patch_id": row["id"], "variant": variant,
            "image": row["image_path"], "rgb_path": row["rgb_path"],
            "conversations": _conversation(rng.choice(ALIGNMENT_PROMPTS), answer),
        })
    return records


def instruction_records(row: dict, seed: int = 0) -> list[dict]:
    """Two stage-2 records per patch: ``[caption]`` -> description, ``[classification]`` -> format_labels."""
    records = []
    for task, questions, answer in (
        ("caption", CAPTION_QUESTIONS, row["caption"]),
        ("classification", CLASSIFICATION_QUESTIONS, format_labels(row["labels"])),
    ):
        rng = random.Random(f"{seed}:{row['id']}:{task}")
        records.append({
            "id": f"{row['id']}-{task}", "patch_id": row["id"], "task": task,
            "image": row["image_path"], "rgb_path": row["rgb_path"],
            "conversations": _conversation(f"[{task}] {rng.choice(questions)}", answer),
        })
    return records


def _features():
    from datasets import Features, List, Value

    conversation = List({"from": Value("string"), "value": Value("string")})
    string, number, flag = Value("string"), Value("float64"), Value("bool")
    patches = Features({
        "id": string, "source": string, "split": string, "image_path": string, "rgb_path": string,
        "labels": List(string), "label_source": string, "country": string, "country_source": string,
        "acquisition_date": string, "season": string, "latitude": number, "longitude": number,
        "crs": string, "height": Value("int32"), "width": Value("int32"), "snow": flag, "cloud": flag,
        "flag_source": string, "reben_patch_id": string,
        "ndvi_mean": number, "ndwi_mean": number, "ndbi_mean": number, "ndsi_mean": number,
        "vegetation_fraction": number, "water_fraction": number, "built_fraction": number,
        "snow_fraction": number, "cloud_fraction": number, "valid_fraction": number,
        "caption": string, "caption_prompt": string, "captioner": string,
    })
    alignment = Features({"id": string, "patch_id": string, "variant": string, "image": string,
                          "rgb_path": string, "conversations": conversation})
    instructions = Features({"id": string, "patch_id": string, "task": string, "image": string,
                             "rgb_path": string, "conversations": conversation})
    return {"patches": patches, "alignment": alignment, "instructions": instructions}


# ----------------------------------------------------------------------------------------------------------
# The build
# ----------------------------------------------------------------------------------------------------------


@dataclass
class BuildConfig:
    output: str
    bigearthnet: str | None = None
    metadata: str | list[str] | None = None  # one or more reBEN parquets
    bigearthnet_v1: str | None = None
    eurosat: str | None = None
    splits: list[str] | None = None
    countries: list[str] | None = None
    max_patches: int | None = None
    skip_snow: bool = False
    skip_cloud: bool = False
    captioner: str = "template"
    num_proc: int = 1
    seed: int = 0
    shard: tuple[int, int] | None = None  # (index, count): process only this shard, do not assemble
    max_new_tokens: int = 96
    caption_batch_size: int = 8
    push_to_hub: str | None = None
    hub_dry_run: bool = False
    hub_private: bool = False
    input_offset: float | None = None  # radiometric handling (processing.radiometry); None: the automatic rules
    input_scale: float | None = None
    strict: bool = False  # implausible values skip the patch (reported) instead of warning

    @property
    def radiometry(self) -> dict:
        return {"input_offset": self.input_offset, "input_scale": self.input_scale, "strict": self.strict}


def _keep(item: dict, config: BuildConfig, final: bool) -> str | None:
    """Why a patch is filtered out, or None. Unknown fields (None) pass until the final check."""
    if config.splits and item.get("split") not in config.splits:
        return "split"
    country = item.get("country")
    if config.countries and (country is not None or final) and country not in config.countries:
        return "country"
    if config.skip_snow and item.get("snow"):
        return "snow"
    if config.skip_cloud and item.get("cloud"):
        return "cloud"
    return None


def discover(config: BuildConfig) -> tuple[list[PatchTask], list[dict], dict[str, str]]:
    """All tasks of the configured sources (sorted, filtered, sampled), skipped entries and image roots."""
    if not (config.bigearthnet or config.bigearthnet_v1 or config.eurosat):
        raise ValueError("give at least one of --bigearthnet, --bigearthnet-v1, --eurosat")
    if config.bigearthnet and not config.metadata:
        raise ValueError("--bigearthnet needs --metadata (the reBEN parquet holds the labels and splits)")
    for name in config.splits or []:
        if name not in SPLITS:
            raise ValueError(f"--split {name!r}: expected one of {SPLITS}")
    metadata = load_reben_metadata(config.metadata) if config.metadata else None
    tasks, skipped, roots = [], [], {}
    if config.bigearthnet:
        found, bad = discover_reben(config.bigearthnet, metadata)
        tasks += found
        skipped += bad
        roots["reben"] = str(Path(config.bigearthnet).resolve())
    if config.bigearthnet_v1:
        found, bad = discover_bigearthnet_v1(config.bigearthnet_v1, metadata)
        reben_ids = {t.id for t in tasks if t.source == "reben"}
        for task in found:
            if task.reben_patch_id in reben_ids:
                skipped.append({"id": task.id, "path": task.path,
                                "reason": f"duplicate of reBEN patch {task.reben_patch_id}"})
            else:
                tasks.append(task)
        skipped += bad
        roots["bigearthnet-v1"] = str(Path(config.bigearthnet_v1).resolve())
    if config.eurosat:
        found, bad = discover_eurosat(config.eurosat, config.seed)
        tasks += found
        skipped += bad
        roots["eurosat"] = str(Path(config.eurosat).resolve())
    counts = Counter(t.id for t in tasks)
    if len(counts) != len(tasks):
        duplicates = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise ValueError(f"patch ids are not unique across the sources, e.g. {duplicates}")
    assign_missing_splits(tasks, config.seed)
    tasks = [t for t in tasks if _keep(vars(t), config, final=False) is None]
    tasks.sort(key=lambda t: (SOURCES.index(t.source), t.id))
    if config.max_patches is not None and len(tasks) > config.max_patches:
        sample = random.Random(config.seed).sample(range(len(tasks)), config.max_patches)
        tasks = [tasks[i] for i in sorted(sample)]
    return tasks, skipped, roots


def _in_shard(patch_id: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    index, count = shard
    return int(hashlib.sha1(patch_id.encode()).hexdigest(), 16) % count == index


def _init_worker() -> None:
    """One intra-op thread per worker: N workers x several torch threads oversubscribe the cores."""
    import torch

    torch.set_num_threads(1)


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def process_all(tasks: list[PatchTask], output_dir: str, num_proc: int = 1,
                radiometry: dict | None = None) -> tuple[list[PatchTask], list[dict]]:
    """Make sure every task has a cached record (reused, or processed with ``num_proc`` workers and the
    radiometric handling ``radiometry``, see ``process_patch``).

    Returns the tasks that have a record and the error entries of the patches that failed. Records stay on
    disk, so memory does not grow with the archive.
    """
    from tqdm.auto import tqdm

    done, errors, todo = set(), [], []
    for task in tasks:
        (done.add(task.id) if load_cached_record(output_dir, task, radiometry) is not None else todo.append(task))
    logger.info("%d patches cached, %d to process with %d process(es)", len(done), len(todo), num_proc)
    if todo:
        import processing.sentinel2_io  # noqa: F401  (imported once, before workers fork)

        jobs = [(task, output_dir, radiometry) for task in todo]
        with tqdm(total=len(jobs), desc="patches", unit="patch") as progress:
            if num_proc > 1:
                with _pool_context().Pool(num_proc, initializer=_init_worker) as pool:
                    results = pool.imap_unordered(_process_safely, jobs, chunksize=16)
                    for status, value in results:
                        (done.add(value["id"]) if status == "ok" else errors.append(value))
                        progress.update()
            else:
                for job in jobs:
                    status, value = _process_safely(job)
                    (done.add(value["id"]) if status == "ok" else errors.append(value))
                    progress.update()
    return [task for task in tasks if task.id in done], errors


def _read_record(output_dir: str | os.PathLike, patch_id: str) -> dict:
    return json.loads(record_path(output_dir, patch_id).read_text())


def _cached_caption(output_dir: str | os.PathLike, captioner, patch_id: str) -> tuple[str, str] | None:
    try:
        cached = json.loads(caption_path(output_dir, captioner, patch_id).read_text())
        return cached["caption"], cached["prompt"]
    except (OSError, ValueError, KeyError):
        return None


def caption_all(tasks: list[PatchTask], captioner, output_dir: str, batch_size: int = 8) -> int:
    """Generate and cache (one JSON per patch, with its prompt) the model captions still missing.

    The template captioner is cheap and deterministic: its captions are computed during assembly instead.
    Returns the number of captions generated.
    """
    from tqdm.auto import tqdm

    if not captioner.cacheable:
        return 0
    todo = [task for task in tasks if _cached_caption(output_dir, captioner, task.id) is None]
    logger.info("%d captions cached, %d to generate with %s", len(tasks) - len(todo), len(todo), captioner.name)
    for start in tqdm(range(0, len(todo), batch_size), desc=f"captions ({captioner.name})", unit="batch"):
        batch = [_read_record(output_dir, task.id) for task in todo[start:start + batch_size]]
        for record, (caption, prompt) in zip(batch, captioner.caption_batch(batch, output_dir)):
            if not caption:
                raise RuntimeError(f"captioner {captioner.name} returned an empty caption for {record['id']}")
            atomic_write_json(caption_path(output_dir, captioner, record["id"]),
                              {"id": record["id"], "captioner": captioner.name, "caption": caption, "prompt": prompt})
    return len(todo)


def caption_of(record: dict, captioner, output_dir: str | os.PathLike) -> tuple[str, str]:
    """(caption, prompt) of a record: computed (template) or read from the caption cache (models)."""
    if not captioner.cacheable:
        return captioner.caption(record), captioner.prompt(record)
    cached = _cached_caption(output_dir, captioner, record["id"])
    if cached is None:
        path = caption_path(output_dir, captioner, record["id"])
        raise FileNotFoundError(f"{path}: caption missing; re-run the build")
    return cached


def _rows_generator(path: str):
    """Rows from a JSON-lines spool file (lets ``Dataset.from_generator`` write Arrow shards streaming)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _save_dataset_dict(spools: dict[str, str], features, target: Path, scratch: Path) -> dict[str, int]:
    """Stream every split's spool into Arrow, save the DatasetDict next to ``target`` and swap it in."""
    from datasets import Dataset, DatasetDict

    splits = {}
    for split, spool in sorted(spools.items(), key=lambda item: SPLITS.index(item[0])):
        splits[split] = Dataset.from_generator(_rows_generator, features=features, gen_kwargs={"path": spool},
                                               cache_dir=str(scratch / "cache" / target.name / split))
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict(splits).save_to_disk(str(staging))
    _swap_dir(staging, target)
    return {split: len(ds) for split, ds in splits.items()}


def _swap_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _with_task_metadata(record: dict, task: PatchTask) -> dict:
    """The record with the split and, for reBEN-labelled patches, the parquet's current labels, country and
    flags (the metadata is authoritative and may have been added or updated since the record was cached)."""
    row = dict(record, split=task.split)
    if task.label_source == "reben":
        row.update(labels=list(task.labels), label_source="reben", country=task.country, country_source="metadata",
                   snow=task.snow, cloud=task.cloud, flag_source="metadata", reben_patch_id=task.reben_patch_id)
    return row


def assemble(tasks: list[PatchTask], captioner, config: BuildConfig) -> tuple[dict, dict[str, int]]:
    """Write OUTPUT/patches, OUTPUT/alignment, OUTPUT/instructions from the cached records of ``tasks``.

    Rows are streamed: records are read one at a time into per-split JSON-lines spools, which
    ``Dataset.from_generator`` turns into Arrow shards. Returns the split sizes and the filter counts.
    """
    output = Path(config.output)
    features = _features()
    filtered: dict[str, int] = {}
    scratch = Path(tempfile.mkdtemp(prefix=".assemble-", dir=output / ".work"))
    try:
        handles, spools = {}, {name: {} for name in features}
        for task in tasks:  # sorted order: stable row order across re-runs
            row = _with_task_metadata(_read_record(output, task.id), task)
            reason = _keep(row, config, final=True)
            if reason:
                filtered[reason] = filtered.get(reason, 0) + 1
                continue
            row["caption"], row["caption_prompt"] = caption_of(row, captioner, output)
            row["captioner"] = captioner.name
            outputs = {"patches": [row], "alignment": alignment_records(row, config.seed),
                       "instructions": instruction_records(row, config.seed)}
            for name, rows in outputs.items():
                key = (name, task.split)
                if key not in handles:
                    spools[name][task.split] = str(scratch / f"{name}-{task.split}.jsonl")
                    handles[key] = open(spools[name][task.split], "w", encoding="utf-8")
                for item in rows:
                    handles[key].write(json.dumps({k: item.get(k) for k in features[name]}) + "\n")
        for handle in handles.values():
            handle.close()
        if not spools["patches"]:
            raise ValueError(f"no patch survived processing and filters (filtered: {filtered}); nothing to write")
        sizes = {name: _save_dataset_dict(spools[name], features[name], output / name, scratch)
                 for name in features}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sizes, filtered


def build_dataset(config: BuildConfig) -> dict:
    """Run the whole build (resumable) and return the report that is also written to OUTPUT/report.json."""
    output = Path(config.output)
    (output / ".work").mkdir(parents=True, exist_ok=True)
    captioner = make_captioner(config.captioner, config.seed, config.max_new_tokens)
    started = time.perf_counter()
    from processing.radiometry import radiometry_settings

    tasks, skipped, roots = discover(config)
    tasks = [t for t in tasks if _in_shard(t.id, config.shard)]
    logger.info("discovered %d patches to build into %s", len(tasks), output)
    ready, errors = process_all(tasks, str(output), config.num_proc, config.radiometry)
    processing_seconds = time.perf_counter() - started
    report = {
        "output": str(output.resolve()),
        "captioner": captioner.name,
        "patches_requested": len(tasks),
        "patches_ok": len(ready),
        "skipped": sorted(skipped + errors, key=lambda item: item["id"]),
        "processing_seconds": round(processing_seconds, 3),
        "shard": list(config.shard) if config.shard else None,
    }
    if config.shard is not None:
        atomic_write_json(output / ".work" / f"report-shard-{config.shard[0]}-of-{config.shard[1]}.json", report)
        logger.info("shard %s done: %d records cached under %s/.work; run without --shard to assemble",
                    config.shard, len(ready), output)
        return report
    report["captions_generated"] = caption_all(ready, captioner, str(output), config.caption_batch_size)
    sizes, filtered = assemble(ready, captioner, config)
    report.update({"filtered_after_processing": filtered, "sizes": sizes,
                   "total_seconds": round(time.perf_counter() - started, 3)})
    build_info = {
        "image_roots": roots,
        "image_path": "'<source>/<path under image_roots[source]>'; resolve with resolve_image_path()",
        "rgb_root": "the folder of this file (rgb_path is relative to it)",
        "rgb_stretch": f"B04/B03/B02, one joint {RGB_PERCENTILES[0]:g}-{RGB_PERCENTILES[1]:g} percentile stretch "
                       "over the valid pixels of the patch, no-data black",
        "label_format": "format_labels(): 'Labels: ' + '; '.join(sorted(labels))",
        "indices": INDEX_DEFINITIONS,
        "thresholds": THRESHOLDS,
        "radiometry": {**radiometry_settings(config.input_offset, config.input_scale), "strict": config.strict,
                       "rules": "processing/radiometry.py; each record's `radiometry` says what was applied"},
        "captioner": captioner.name,
        "seed": config.seed,
        "filters": {"splits": config.splits, "countries": config.countries, "max_patches": config.max_patches,
                    "skip_snow": config.skip_snow, "skip_cloud": config.skip_cloud},
        "sizes": sizes,
    }
    atomic_write_json(output / "build_info.json", build_info)
    atomic_write_bytes(output / "README.md", dataset_card(build_info, report).encode("utf-8"))
    atomic_write_json(output / "report.json", report)
    logger.info("wrote %s (patches %s); report: %s", output, sizes["patches"], output / "report.json")
    if config.push_to_hub:
        report["hub"] = push_to_hub(str(output), config.push_to_hub, dry_run=config.hub_dry_run,
                                    private=config.hub_private)
    return report


# ----------------------------------------------------------------------------------------------------------
# Dataset card and Hub upload
# ----------------------------------------------------------------------------------------------------------


def dataset_card(build_info: dict, report: dict) -> str:
    licence = "mit" if set(build_info["image_roots"]) == {"eurosat"} else (
        "cdla-permissive-1.0" if "eurosat" not in build_info["image_roots"] else "other")
    lines = ["---", f"license: {licence}", "task_categories:", "- image-text-to-text",
             "- image-classification", "tags:", "- remote-sensing", "- sentinel-2", "- multispectral", "configs:"]
    for name, sizes in build_info["sizes"].items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in sizes:
            lines += [f"  - split: {split}", f"    path: {name}/{split}/*.arrow"]
    lines.append("---")
    table = "\n".join(f"| {name} | " + ", ".join(f"{s}: {n}" for s, n in sizes.items()) + " |"
                      for name, sizes in build_info["sizes"].items())
    thresholds = "\n".join(f"- `{key}`: {value}" for key, value in build_info["thresholds"].items())
    indices = "\n".join(f"- `{key}` = {value}" for key, value in build_info["indices"].items())
    roots = "\n".join(f"- `{source}`: `{root}`" for source, root in build_info["image_roots"].items())
    return "\n".join(lines) + f"""

# Spectral-Inst

Multispectral Sentinel-2 instruction data for Spectral-LLaVA, built by `spectral-llava build-dataset`
(captioner `{build_info['captioner']}`, seed {build_info['seed']}).

| config | rows per split |
|---|---|
{table}

- `patches`: one row per patch: `id`, `source` (reben | bigearthnet-v1 | eurosat), `split`, `image_path`
  (`<source>/<path>` under the source root listed in `build_info.json`), `rgb_path` (PNG in this repo),
  `labels` (reBEN 19 classes or the EuroSAT class), `country`, `acquisition_date`, `season`
  (meteorological, hemisphere-aware), `latitude`/`longitude` (WGS84 centre from the patch georeference),
  `snow`/`cloud` flags, spectral summary, `caption` and the `caption_prompt` it was generated from.
- `alignment`: two LLaVA records per patch, `variant` = `labels` (class-label text) or `description`.
- `instructions`: two LLaVA records per patch, `task` = `caption` (`[caption]` -> description) or
  `classification` (`[classification]` -> labels).

Image roots of this build (`image_path` = `<source>/<path under the root>`; also in `build_info.json`):
{roots}

Records use the LLaVA form `{{"id", "image", "conversations": [{{"from": "human", "value": "<image>\\n..."}},
{{"from": "gpt", "value": ...}}]}}`. Classification answers are always `Labels: A; B; C` with the labels sorted
alphabetically (`train.spectral_inst.format_labels` / `parse_labels`).

RGB renderings: {build_info['rgb_stretch']}.

Spectral indices (reflectance = DN / 10000):
{indices}

Thresholds of the pixel fractions and flags:
{thresholds}

Captions are model- or template-generated pseudo-labels (the paper treats them as pseudo-data).
Skipped patches of the last build: {len(report['skipped'])} (see `report.json`).

Sources and licences: reBEN / BigEarthNet (Clasen et al. 2024; Sumbul et al. 2019), CDLA-Permissive-1.0;
EuroSAT (Helber et al. 2019), MIT. Contains modified Copernicus Sentinel data.
"""


HUB_IGNORE_PATTERNS = [".work/**", "**/.*.tmp", ".*"]


def push_to_hub(output_dir: str, repo_id: str, dry_run: bool = False, private: bool = False,
                token: str | None = None, endpoint: str | None = None) -> dict:
    """Upload OUTPUT (without .work) to a Hub dataset repo; ``dry_run`` returns the planned calls only.

    The card's ``configs`` make ``load_dataset(repo_id, "patches")`` read the saved Arrow files.
    """
    output = Path(output_dir)
    if not (output / "README.md").is_file():
        raise FileNotFoundError(f"{output}: no dataset card README.md; build the dataset before pushing")
    plan = {
        "create_repo": {"repo_id": repo_id, "repo_type": "dataset", "private": private, "exist_ok": True},
        "upload_folder": {"repo_id": repo_id, "repo_type": "dataset", "folder_path": str(output.resolve()),
                          "ignore_patterns": HUB_IGNORE_PATTERNS,
                          "commit_message": "Upload Spectral-Inst (spectral-llava build-dataset)"},
    }
    if dry_run:
        logger.info("dry run, would call HfApi.create_repo(%s) and HfApi.upload_folder(%s)",
                    plan["create_repo"], plan["upload_folder"])
        return {"dry_run": True, **plan}
    from huggingface_hub import HfApi

    api = HfApi(token=token, endpoint=endpoint)
    try:
        api.create_repo(**plan["create_repo"])
        commit = api.upload_folder(**plan["upload_folder"])
    except Exception as error:  # network, auth and Hub errors all end the push the same way
        raise RuntimeError(f"--push-to-hub {repo_id}: upload of {output} failed: {type(error).__name__}: "
                           f"{error}") from error
    return {"dry_run": False, "commit_url": str(getattr(commit, "commit_url", commit)), **plan}
