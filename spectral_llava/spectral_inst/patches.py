"""Per-patch processing: read the bands, bring them to reflectance (``processing.radiometry.apply_radiometry``:
product offsets, or the build's explicit ``RadiometrySettings``), compute the spectral summary, render
the RGB PNG, cache the record.

Records are cached atomically as ``OUTPUT/.work/records/<hh>/<id>.json`` and PNGs as
``OUTPUT/rgb/<source>/<hh>/<id>.png``, so a re-run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np

from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.processing.rendering import TRUE_COLOUR, stretch_rgb
from spectral_llava.utils.fileio import atomic_write_bytes, atomic_write_json

from .geo import countries_containing, patch_centre_latlon, season_of
from .sources import PatchTask, v1_labels

logger = logging.getLogger(__name__)


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
SUMMARY_BANDS = ("B02", "B03", "B04", "B08", "B11")
RECORD_VERSION = 1  # bump when the record's content changes, so cached records are recomputed


def bucket(patch_id: str) -> str:
    """Two hex characters that spread per-patch files over 256 folders."""
    return hashlib.sha1(patch_id.encode("utf-8")).hexdigest()[:2]


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


def record_path(output_dir: str | os.PathLike, patch_id: str) -> Path:
    return Path(output_dir) / ".work" / "records" / bucket(patch_id) / f"{patch_id}.json"


def rgb_relpath(task: PatchTask) -> str:
    return f"rgb/{task.source}/{bucket(task.id)}/{task.id}.png"


def read_patch_bands(task: PatchTask, radiometry: RadiometrySettings | None = None, band_names=None):
    """(reflectance bands {B02, B03, B04, B08, B11} on the 10 m grid, valid-pixel mask, image metadata, the
    `processing.radiometry.ResolvedRadiometry` applied). `radiometry`: the build's settings for `apply_radiometry`
    (default: the automatic rules, implausible values warn); `band_names`: the bands of multi-band files whose
    header does not name them (band folders ignore it)."""
    from spectral_llava.processing.radiometry import apply_radiometry
    from spectral_llava.processing.sentinel2_io import read_image

    named = band_names if os.path.isfile(task.path) else None
    image = read_image(task.path, band_names=named, select_bands=list(SUMMARY_BANDS))
    names, mask = list(image.band_names), image.metadata.get("band_mask") or [True] * len(image.band_names)
    missing = [name for name in SUMMARY_BANDS if name not in names or not mask[names.index(name)]]
    if missing:
        raise ValueError(f"{task.path}: bands {missing} are missing (needed for RGB and indices)")
    corrected = apply_radiometry(image, list(SUMMARY_BANDS), radiometry)
    data = np.stack([corrected.values[name].astype(np.float32) for name in SUMMARY_BANDS])
    valid = np.all([corrected.valid[name] for name in SUMMARY_BANDS], axis=0)
    bands = {name: data[index] / 10000.0 for index, name in enumerate(SUMMARY_BANDS)}
    if image.metadata.get("crs") is None or image.metadata.get("transform") is None:
        raise ValueError(f"{task.path}: no georeference (CRS/transform) to locate the patch")
    return bands, valid, image.metadata, corrected.resolved


def _labels_place_and_date(task: PatchTask, latitude: float, longitude: float) -> dict:
    """Labels (v1: mapped from the 43 classes), country (metadata, else the one bounding box holding the centre)
    and acquisition date of a patch."""
    labels, country, acquisition_date = task.labels, task.country, task.acquisition_date
    if task.label_source == "bigearthnet-v1-43-to-19":
        labels, v1_meta = v1_labels(Path(task.path))
        acquisition_date = str(v1_meta.get("acquisition_date", ""))[:10] or acquisition_date
    country_source = "metadata" if country else None
    if country is None and task.source != "eurosat":
        candidates = countries_containing(latitude, longitude)  # BigEarthNet covers these ten countries
        if len(candidates) == 1:
            country, country_source = candidates[0], "bounding-box"
    return {"labels": list(labels or []), "label_source": task.label_source, "country": country,
            "country_source": country_source, "acquisition_date": acquisition_date,
            "season": season_of(acquisition_date, latitude)}


def process_patch(task: PatchTask, output_dir: str | os.PathLike,
                  radiometry: RadiometrySettings | None = None, band_names=None) -> dict:
    """Read one patch (with the radiometric handling `radiometry` and `band_names`, see `read_patch_bands`), write
    its RGB PNG and its cached metadata record; return the record."""
    from PIL import Image

    output_dir = Path(output_dir)
    radiometry = radiometry if radiometry is not None else RadiometrySettings()
    bands, valid, metadata, applied = read_patch_bands(task, radiometry, band_names)
    summary = spectral_summary(bands, valid)
    height, width = valid.shape
    latitude, longitude = patch_centre_latlon(metadata["crs"], metadata["transform"], height, width)
    rgb_path = rgb_relpath(task)
    rgb = stretch_rgb(np.stack([bands[name] for name in TRUE_COLOUR]), valid)
    atomic_write_bytes(output_dir / rgb_path, _png_bytes(Image.fromarray(rgb)))
    snow = task.snow if task.snow is not None else summary["snow_fraction"] > FLAG_FRACTION
    cloud = task.cloud if task.cloud is not None else summary["cloud_fraction"] > FLAG_FRACTION
    record = {
        "record_version": RECORD_VERSION, "id": task.id, "source": task.source, "image_path": task.image_path,
        "rgb_path": rgb_path, **_labels_place_and_date(task, latitude, longitude),
        "latitude": latitude, "longitude": longitude, "crs": str(metadata["crs"]),
        "height": int(height), "width": int(width), "snow": bool(snow), "cloud": bool(cloud),
        "flag_source": "metadata" if task.snow is not None else "spectral", "reben_patch_id": task.reben_patch_id,
        "radiometry": applied.as_dict(),
        "radiometry_settings": radiometry.cache_key(),
        **({"band_names": list(band_names)} if band_names else {}),
        **summary,
    }
    atomic_write_json(record_path(output_dir, task.id), record)
    return record


def _png_bytes(image) -> bytes:
    handle = io.BytesIO()
    image.save(handle, format="PNG", optimize=False)
    return handle.getvalue()


def _process_safely(args: tuple[PatchTask, str, RadiometrySettings | None, list | None]) -> tuple[str, dict]:
    task, output_dir, radiometry, band_names = args
    try:
        return "ok", process_patch(task, output_dir, radiometry, band_names)
    except Exception as error:  # one bad patch must not stop a 500k-patch build; it is reported instead
        return "error", {"id": task.id, "path": task.path, "reason": f"{type(error).__name__}: {error}"}


def load_cached_record(output_dir: str | os.PathLike, task: PatchTask,
                       radiometry: RadiometrySettings | None = None, band_names=None) -> dict | None:
    """The cached record of ``task`` when it and its PNG exist and are readable and it was made with the same
    radiometric handling and band names (``radiometry``, ``band_names`` as for ``process_patch``), else None."""
    path = record_path(output_dir, task.id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    settings = (radiometry if radiometry is not None else RadiometrySettings()).cache_key()
    if (record.get("record_version") != RECORD_VERSION or record.get("image_path") != task.image_path
            or record.get("radiometry_settings") != settings
            or record.get("band_names") != (list(band_names) if band_names else None)
            or not (Path(output_dir) / record["rgb_path"]).is_file()):
        return None
    return record


def read_record(output_dir: str | os.PathLike, patch_id: str) -> dict:
    return json.loads(record_path(output_dir, patch_id).read_text())


def _init_worker() -> None:
    """One intra-op thread per worker: N workers x several torch threads oversubscribe the cores."""
    import torch

    torch.set_num_threads(1)


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def process_all(tasks: list[PatchTask], output_dir: str, num_proc: int = 1,
                radiometry: RadiometrySettings | None = None, band_names=None) -> tuple[list[PatchTask], list[dict]]:
    """Make sure every task has a cached record (reused, or processed with ``num_proc`` workers, the radiometric
    handling ``radiometry`` and ``band_names``, see ``process_patch``).

    Returns the tasks that have a record and the error entries of the patches that failed. Records stay on
    disk, so memory does not grow with the archive.
    """
    from tqdm.auto import tqdm

    done, errors, todo = set(), [], []
    for task in tasks:
        cached = load_cached_record(output_dir, task, radiometry, band_names)
        (done.add(task.id) if cached is not None else todo.append(task))
    logger.info("%d patches cached, %d to process with %d process(es)", len(done), len(todo), num_proc)
    if todo:
        import spectral_llava.processing.sentinel2_io  # noqa: F401  (imported once, before workers fork)

        jobs = [(task, output_dir, radiometry, band_names) for task in todo]
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
