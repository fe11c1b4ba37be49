"""The one reader of a Spectral-Inst build, used by training and evaluation.

A build's rows name their GeoTIFFs as ``image_path = "<source>/<path under that source's root>"``;
``build_info.json["image_roots"]`` maps each source to its root, and :func:`resolve_image_path` joins them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SUBSETS = ("patches", "alignment", "instructions")


def resolve_image_path(image_path: str, image_roots: dict[str, str]) -> str:
    """Absolute path of a dataset ``image_path`` (``<source>/<path under that source's root>``)."""
    source, _, relative = image_path.partition("/")
    if source not in image_roots:
        raise ValueError(f"image_path {image_path!r}: unknown source {source!r}; known: {sorted(image_roots)}")
    return os.path.join(image_roots[source], relative)


def load_build_info(dataset_dir: str | os.PathLike) -> dict:
    path = Path(dataset_dir) / "build_info.json"
    if not path.is_file():
        raise FileNotFoundError(f"--dataset {dataset_dir}: no build_info.json; it must be a "
                                "`spectral-llava build-dataset` output")
    return json.loads(path.read_text())


def dataset_band_names(dataset_dir: str | os.PathLike) -> list[str] | None:
    """The band names the build gave its multi-band files (`build-dataset --band-names`), which training and
    evaluation read the images with; None when the files named their own bands."""
    return load_build_info(dataset_dir).get("band_names")


def load_split(dataset_dir: str | os.PathLike, subset: str, split: str | None = "train"):
    """(datasets.Dataset, image_roots) of ``DATASET_DIR/<subset>``, split `split`: one name, several separated by
    commas ("validation,test", concatenated in that order), or None for every split."""
    from datasets import concatenate_datasets, load_from_disk

    if subset not in SUBSETS:
        raise ValueError(f"subset {subset!r}: expected one of {SUBSETS}")
    image_roots = load_build_info(dataset_dir)["image_roots"]
    path = Path(dataset_dir) / subset
    if not path.is_dir():
        raise FileNotFoundError(f"--dataset {dataset_dir}: no {subset}/ folder; it must be a "
                                "`spectral-llava build-dataset` output")
    splits = load_from_disk(str(path))
    names = list(splits) if split is None else [name.strip() for name in split.split(",")]
    for name in names:
        if name not in splits:
            raise ValueError(f"--split {name!r}: {path} has the splits {sorted(splits)}")
    data = splits[names[0]] if len(names) == 1 else concatenate_datasets([splits[name] for name in names])
    return data, image_roots


def load_patches(dataset_dir: str | os.PathLike, split: str | None = "test", max_samples: int | None = None):
    """Rows (dicts) of the ``patches`` subset with the absolute image ``path`` added; `split` as in `load_split`."""
    patches, roots = load_split(dataset_dir, "patches", split)
    if max_samples is not None:
        patches = patches.select(range(min(max_samples, len(patches))))
    return [dict(row, path=resolve_image_path(row["image_path"], roots)) for row in patches]
