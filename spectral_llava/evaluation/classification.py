"""Classification from generated text: the ``[classification]`` answers read back with
``inference.parse_labels``; EuroSAT accuracy + confusion matrix, BigEarthNet-19 micro/macro F1."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from spectral_llava.utils.fileio import atomic_write_json, atomic_write_text, strict_json
from spectral_llava.inference.generation import classify_images
from spectral_llava.inference.labels import BEN19_LABELS, EUROSAT_CLASSES
from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
from spectral_llava.spectral_inst.dataset import dataset_band_names, load_patches

from .data import eurosat_samples
from .options import ClassifyOptions
from .plots import plot_confusion

logger = logging.getLogger(__name__)


NO_LABEL = "(none)"


def eurosat_metrics(true: Sequence[str], predictions: Sequence[Sequence[str]], class_names=EUROSAT_CLASSES) -> dict:
    """Accuracy of the first (most likely) EuroSAT class of each prediction; no EuroSAT class counts as wrong
    and lands in the confusion matrix's extra last column "(none)". Rows: true classes, columns: predicted."""
    class_names = list(class_names)
    columns = class_names + [NO_LABEL]
    matrix = np.zeros((len(class_names), len(columns)), dtype=int)
    for truth, labels in zip(true, predictions):
        predicted = next((label for label in labels if label in class_names), NO_LABEL)
        matrix[class_names.index(truth), columns.index(predicted)] += 1
    total = int(matrix.sum())
    return {"accuracy": float(np.trace(matrix[:, :len(class_names)]) / total) if total else math.nan,
            "num_images": total, "no_label": int(matrix[:, -1].sum()),
            "confusion_matrix": {"rows_true": class_names, "columns_predicted": columns, "counts": matrix.tolist()}}


def multilabel_f1(true: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]],
                  classes: Sequence[str] = BEN19_LABELS) -> dict:
    """Micro F1 over all (image, class) decisions and macro F1 averaged over the classes that occur in `true`
    (a class absent from the ground truth has no defined recall); labels outside `classes` are ignored."""
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=list(classes))
    known = set(classes)
    y_true = binarizer.fit_transform([[c for c in labels if c in known] for labels in true])
    y_pred = binarizer.transform([[c for c in labels if c in known] for labels in predictions])
    present = np.flatnonzero(y_true.sum(0))
    per_class = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(per_class[present].mean()) if len(present) else math.nan,
        "num_images": len(true), "classes_in_truth": [classes[i] for i in present],
        "per_class_f1": {classes[i]: float(per_class[i]) for i in present},
    }


def write_jsonl(path, rows) -> None:
    """One strict JSON object per line (NaN, e.g. the recall of an image without labels, becomes null)."""
    atomic_write_text(path, "".join(json.dumps(strict_json(row), allow_nan=False) + "\n" for row in rows))


def run_classify_eval(model_dir, output_dir, model=None, processor=None, radiometry=None, **options) -> dict:
    """Classify EuroSAT class folders (`eurosat`) and/or the patches of a Spectral-Inst `split` (`dataset`):
    EuroSAT accuracy + OUTPUT/confusion_matrix.png, BigEarthNet-19 micro/macro F1. Also writes
    OUTPUT/classification.json and OUTPUT/classification_predictions.jsonl. `options`: `ClassifyOptions` fields;
    `radiometry` (a `RadiometrySettings`) is how the images are read."""
    options = ClassifyOptions(**options)
    if options.eurosat is None and options.dataset is None:
        raise ValueError("give --eurosat ROOT and/or --dataset DIR")
    output_dir = Path(output_dir)
    eurosat, patches = [], []  # (path, source, true labels)
    if options.eurosat is not None:
        paths, labels, class_names = eurosat_samples(options.eurosat, options.max_per_class)
        eurosat = [(path, "eurosat", [class_names[i]]) for path, i in zip(paths, labels)]
    if options.dataset is not None:
        patches = [(row["path"], row["source"], list(row["labels"]))
                   for row in load_patches(options.dataset, options.split, options.max_samples)]
    if model is None:
        model, processor = load_model_and_processor(model_dir)
    # the dataset's images are read with the band names its build recorded, if any (then apart from EuroSAT's)
    band_names = dataset_band_names(options.dataset) if options.dataset is not None else None
    predicted, items = [], eurosat + patches
    for group, names in [(eurosat, None), (patches, band_names)] if band_names else [(items, None)]:
        predicted += classify_images(model, processor, [path for path, _, _ in group], batch_size=options.batch_size,
                                     max_new_tokens=options.max_new_tokens, tower_cache=options.tower_cache,
                                     radiometry=radiometry, band_names=names) if group else []
    rows = [dict(p, source=source, true=truth) for p, (_, source, truth) in zip(predicted, items)]
    result = {"model": str(model_dir), "eurosat": options.eurosat, "dataset": options.dataset,
              "split": options.split if options.dataset else None,
              "prompt": processor.build_prompt("classification"), "parse": "spectral_inst.parse_labels"}
    euro = [row for row in rows if row["source"] == "eurosat"]
    ben = [row for row in rows if row["source"] != "eurosat"]
    if euro:
        result["eurosat_classification"] = eurosat_metrics([r["true"][0] for r in euro], [r["labels"] for r in euro])
        plot_confusion(result["eurosat_classification"], output_dir / "confusion_matrix.png")
    if ben:
        result["bigearthnet19"] = multilabel_f1([r["true"] for r in ben], [r["labels"] for r in ben])
    atomic_write_json(output_dir / "classification.json", result)
    write_jsonl(output_dir / "classification_predictions.jsonl", rows)
    logger.info("classification: %s, %s%s", output_dir / "classification.json",
                output_dir / "classification_predictions.jsonl",
                f", {output_dir / 'confusion_matrix.png'}" if euro else "")
    return result
