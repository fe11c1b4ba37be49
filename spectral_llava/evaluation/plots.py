"""The figures of the evaluation (paper Fig. 3 and 4, confusion matrix), written atomically as PNG."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from spectral_llava.utils.fileio import write_file_atomically

FEATURE_TITLES = {"vision": "vision-only (SpectralGPT tower, mean-pooled)",
                  "grounded": "language-grounded (projector output, mean-pooled)"}


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    fig.tight_layout()
    write_file_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    pyplot().close(fig)


def plot_linear_probe(result: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """Fig. 4: test accuracy (mean +/- std over folds) against the train ratio, one line per feature kind."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, by_ratio in result["results"].items():
        keys = sorted(by_ratio, key=float)
        x = [100 * float(k) for k in keys]
        mean = np.array([100 * by_ratio[k]["mean"] for k in keys])
        std = np.array([100 * by_ratio[k]["std"] for k in keys])
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=FEATURE_TITLES.get(kind, kind))
    ax.set_xlabel("train split (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"Linear probe, EuroSAT ({result['num_samples']} images, {result['protocol']['folds']} folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_tsne(embedded: dict, labels, class_names: Sequence[str], path) -> None:
    """Fig. 3: one scatter per feature kind, side by side, points coloured by class."""
    plt = pyplot()
    labels = np.asarray(labels)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(embedded), figsize=(5.2 * len(embedded) + 2.0, 5.0), squeeze=False)
    for ax, (kind, points) in zip(axes[0], embedded.items()):
        for index, name in enumerate(class_names):
            chosen = labels == index
            ax.scatter(points[chosen, 0], points[chosen, 1], s=12, color=colours(index % colours.N), label=name)
        ax.set_title(FEATURE_TITLES.get(kind, kind), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), markerscale=1.5)
    save_figure(fig, path)


def plot_confusion(metrics: dict, path, title: str = "EuroSAT classification from generated text") -> None:
    plt = pyplot()
    cm = metrics["confusion_matrix"]
    counts = np.asarray(cm["counts"])
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(cm["columns_predicted"])), cm["columns_predicted"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(cm["rows_true"])), cm["rows_true"], fontsize=8)
    for (row, col), value in np.ndenumerate(counts):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > counts.max() / 2 else "black")
    ax.set_xlabel("predicted (first parsed label)")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {100 * metrics['accuracy']:.1f}% on {metrics['num_images']} images", fontsize=9)
    save_figure(fig, path)
