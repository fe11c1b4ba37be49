"""Scores of classifiers that rank classes: top-1 accuracy (single-label) and average precision (multi-label), with
scikit-learn's definitions."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def top1_accuracy(labels, scores) -> float:
    """Share of rows whose highest-scoring class is the true class index."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return float((scores.argmax(axis=1) == labels).mean()) if len(labels) else math.nan


def average_precision(targets, scores, class_names: Sequence[str]) -> dict:
    """Multi-label ranking scores of `scores` (N, C) against 0/1 `targets` (N, C), scikit-learn definitions:
    ``micro_map`` = ``average_precision_score(average="micro")`` (every (image, class) pair ranked together);
    ``macro_map`` = the mean of the per-class APs over the classes with at least one positive (AP is undefined
    without positives: those classes are listed under ``classes_without_positives``); ``per_class_ap``."""
    from sklearn.metrics import average_precision_score

    targets, scores = np.asarray(targets, dtype=int), np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape or targets.ndim != 2 or targets.shape[1] != len(class_names):
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, {len(class_names)})")
    present = np.flatnonzero(targets.sum(axis=0))
    per_class = {class_names[i]: float(average_precision_score(targets[:, i], scores[:, i])) for i in present}
    return {"micro_map": float(average_precision_score(targets, scores, average="micro")) if len(present) else math.nan,
            "macro_map": float(np.mean(list(per_class.values()))) if per_class else math.nan,
            "per_class_ap": per_class,
            "classes_without_positives": [name for i, name in enumerate(class_names) if i not in set(present)]}


def probe_headline(entry: dict) -> str:
    """The test metric of one probe result: "accuracy 97.6 +/- 0.1%" (single-label) or "micro mAP 0.771 +/- 0.002,
    macro mAP 0.650 +/- 0.003" (multi-label); the +/- is the std over the probe's seeds."""
    if entry["task"] == "single-label":
        return f"accuracy {100 * entry['accuracy']:.1f} +/- {100 * entry['accuracy_std']:.1f}%"
    return (f"micro mAP {entry['micro_map']:.3f} +/- {entry['micro_map_std']:.3f}, macro mAP "
            f"{entry['macro_map']:.3f} +/- {entry['macro_map_std']:.3f}")
