"""The labelled images of the frozen-encoder benchmark, each with its official train/validation/test split.

- EuroSAT-MS class folders: the Spectral-Inst builder's seeded 80/10/10 split stratified by class
  (`spectral_inst.sources.discover_eurosat`), so the numbers agree with the rest of the evaluation.
- a `build-dataset` output: its patches with their splits and labels, one probe set per label vocabulary
  (EuroSAT classes; BigEarthNet-19).
- BigEarthNet v1 / v2 (reBEN) patch folders: reBEN's official split and 19-class labels from its metadata parquet
  (v2 folders by `patch_id`, v1 folders by `s2v1_name`); patches without a parquet row have no official split and
  are skipped (listed in the result).
- GEO-Bench task folders (`evaluation.geobench`): `default_partition.json`, labels from the sample files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from spectral_llava.inference.labels import BEN19_LABELS, EUROSAT_CLASSES

from . import geobench

SPLITS = ("train", "validation", "test")


@dataclass
class ProbeItem:
    key: str  # the feature-cache key: unique across probe sets ("<set>:<id>")
    split: str  # train | validation | test
    path: str
    target: int | list[int]  # the class index, or the indices of the positive classes (multi-label)


@dataclass
class ProbeSet:
    name: str
    source: str
    class_names: list[str]
    multilabel: bool
    items: list[ProbeItem]
    reader: str = "file"  # "file": the image processor reads the path; "geobench": an HDF5 sample
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[ProbeItem]:
        return [item for item in self.items if item.split == name]

    def targets(self, items) -> np.ndarray:
        """Class indices (N,) or 0/1 rows (N, C) of `items`."""
        if not self.multilabel:
            return np.asarray([item.target for item in items], dtype=np.int64)
        rows = np.zeros((len(items), len(self.class_names)), dtype=np.int64)
        for row, item in zip(rows, items):
            row[item.target] = 1
        return rows


def _indices(labels, class_names, where: str) -> list[int]:
    unknown = [label for label in labels if label not in class_names]
    if unknown:
        raise ValueError(f"{where}: labels {unknown} are not in the vocabulary {list(class_names)}")
    return sorted(class_names.index(label) for label in labels)


def eurosat_set(root, seed: int = 0) -> ProbeSet:
    """EuroSAT-MS class folders with the builder's split (seed 0 = build-dataset's default)."""
    from spectral_llava.spectral_inst.sources import discover_eurosat

    tasks, _ = discover_eurosat(root, seed)
    class_names = sorted({task.labels[0] for task in tasks})
    items = [ProbeItem(f"eurosat:{task.id}", task.split, task.path, class_names.index(task.labels[0]))
             for task in tasks]
    return ProbeSet("eurosat", str(root), class_names, False, items,
                    notes=[f"split: build-dataset's seeded 80/10/10 split stratified by class (seed {seed})"])


def dataset_sets(dataset_dir) -> list[ProbeSet]:
    """The patches of a build-dataset output: EuroSAT (single-label) and BigEarthNet-19 (multi-label) sets."""
    from spectral_llava.spectral_inst.dataset import load_patches

    rows = load_patches(dataset_dir, split=None)
    sets = []
    eurosat = [row for row in rows if row["source"] == "eurosat"]
    if eurosat:
        names = [name for name in EUROSAT_CLASSES if any(row["labels"][0] == name for row in eurosat)]
        items = [ProbeItem(f"eurosat:{row['id']}", row["split"], row["path"],
                           _indices(row["labels"][:1], names, f"--dataset {dataset_dir} patch {row['id']}")[0])
                 for row in eurosat]
        sets.append(ProbeSet("dataset-eurosat", str(dataset_dir), names, False, items))
    ben = [row for row in rows if row["source"] != "eurosat"]
    if ben:
        items = [ProbeItem(f"bigearthnet:{row['id']}", row["split"], row["path"],
                           _indices(row["labels"], BEN19_LABELS, f"--dataset {dataset_dir} patch {row['id']}"))
                 for row in ben]
        sets.append(ProbeSet("dataset-bigearthnet19", str(dataset_dir), list(BEN19_LABELS), True, items,
                             notes=["splits and labels as the dataset records them (reBEN's official split for "
                                    "patches with a reBEN row)"]))
    if not sets:
        raise ValueError(f"--dataset {dataset_dir}: no patches")
    return sets


def bigearthnet_set(folders, metadata) -> ProbeSet:
    """BigEarthNet v1 and/or v2 patch folders under `folders`, split and labelled by the reBEN parquet(s)."""
    from spectral_llava.spectral_inst.sources import discover_bigearthnet_v1, discover_reben, load_reben_metadata

    if not metadata:
        raise ValueError("--bigearthnet needs --metadata PARQUET (reBEN's metadata.parquet) for the official splits")
    frame = load_reben_metadata(metadata)
    tasks, skipped = [], {}
    for folder in folders:
        reben, not_v2 = discover_reben(folder, frame)
        v1, _ = discover_bigearthnet_v1(folder, frame)
        tasks += reben + [task for task in v1 if task.label_source == "reben"]
        skipped.update({entry["path"]: entry for entry in not_v2})
    for task in tasks:
        skipped.pop(task.path, None)
    if not tasks:
        raise ValueError(f"--bigearthnet {list(map(str, folders))}: no patch folder has a row in {metadata}")
    items = [ProbeItem(f"bigearthnet:{task.id}", task.split, task.path,
                       _indices(task.labels, BEN19_LABELS, f"patch {task.path}")) for task in tasks]
    skipped = [dict(entry, reason="no reBEN row (by patch_id or s2v1_name): no official split")
               for entry in skipped.values()]
    return ProbeSet("bigearthnet19", ", ".join(map(str, folders)), list(BEN19_LABELS), True, items,
                    skipped=skipped, notes=["reBEN's official split and 19-class labels (metadata parquet)"])


def geobench_set(root, band_names: str = "auto") -> ProbeSet:
    """A GEO-Bench classification task folder (`band_names`: "auto" corrects m-eurosat's band names, "stored"
    trusts them)."""
    samples = geobench.list_samples(root)
    labels = [geobench.read_label(sample.path) for sample in samples]
    name = os.path.basename(os.path.abspath(root))
    multilabel = isinstance(labels[0], np.ndarray) and labels[0].ndim == 1
    if multilabel:
        num_classes = len(labels[0])
        bad = [s.name for s, label in zip(samples, labels) if np.shape(label) != (num_classes,)]
        targets = [np.flatnonzero(label).tolist() for label in labels]
    else:
        num_classes = len(geobench.CLASS_NAMES.get(name, [])) or max(labels) + 1
        bad = [s.name for s, label in zip(samples, labels) if not (isinstance(label, int) and 0 <= label < num_classes)]
        targets = labels
    if bad:
        raise ValueError(f"--geobench {root}: samples {bad[:5]} have labels unlike the first sample's")
    items = [ProbeItem(f"geobench-{name}:{sample.name}", sample.split, sample.path, target)
             for sample, target in zip(samples, targets)]
    fix = band_names == "auto" and name == "m-eurosat"
    notes = ["splits: the task's default_partition.json (train / valid / test)"]
    if fix:
        notes.append("m-eurosat band names corrected: GEO-Bench 1.0 stores the EuroSAT file order (B8A last) under "
                     "ESA-order names (GEO-Bench issue #28)")
    return ProbeSet(f"geobench-{name}", str(root), geobench.class_names_of(root, num_classes), multilabel, items,
                    reader="geobench-fixed" if fix else "geobench", notes=notes)
