"""Discovery: the patches of each source (reBEN, BigEarthNet v1, EuroSAT) with what their metadata says."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from spectral_llava.inference.labels import BEN43_DROPPED, BEN43_TO_19

from .geo import parse_acquisition_date


SPLITS = ("train", "validation", "test")
SOURCES = ("reben", "bigearthnet-v1", "eurosat")
EUROSAT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


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


def v1_labels(folder: Path) -> tuple[list[str], dict]:
    path = folder / f"{folder.name}_labels_metadata.json"
    try:
        meta = json.loads(path.read_text())
        labels43 = list(meta["labels"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: unreadable BigEarthNet v1 label file: {error}") from error
    unknown = [label for label in labels43 if label not in BEN43_TO_19 and label not in BEN43_DROPPED]
    if unknown:
        raise ValueError(f"{path}: unknown BigEarthNet v1 labels {unknown}")
    return sorted({BEN43_TO_19[label] for label in labels43 if label in BEN43_TO_19}), meta


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


def list_eurosat(root: str | os.PathLike, max_per_class: int | None = None) -> dict[str, list[Path]]:
    """The one EuroSAT listing: {class: sorted GeoTIFFs} of the class folders ``ROOT/<Class>/*.tif(f)``, classes
    sorted by name, folders without GeoTIFFs left out; ``max_per_class`` keeps the first N files of each class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--eurosat: no such folder: {root}")
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if files:
            classes[folder.name] = files[:max_per_class]
    if not classes:
        raise FileNotFoundError(f"--eurosat {root}: no <Class>/<file>.tif GeoTIFFs found")
    return classes


def discover_eurosat(root: str | os.PathLike, seed: int) -> tuple[list[PatchTask], list[dict]]:
    """EuroSAT class folders of GeoTIFFs; a seeded split stratified by class (80/10/10)."""
    root = Path(root)
    files = [path for paths in list_eurosat(root).values() for path in paths]
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
