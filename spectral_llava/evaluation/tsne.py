"""t-SNE (paper Fig. 3) of both feature kinds, coloured by class, side by side."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spectral_llava.utils.fileio import atomic_write_json

from .data import eurosat_features
from .options import FeatureOptions, TsneOptions, split_options
from .plots import plot_tsne

logger = logging.getLogger(__name__)


def tsne_embeddings(features: dict, seed: int = TsneOptions.seed, perplexity: float = TsneOptions.perplexity) -> dict:
    """2-D t-SNE (scikit-learn, PCA init) of each feature kind; the perplexity is capped at (N - 1) / 3."""
    from sklearn.manifold import TSNE

    embedded = {}
    for kind, values in features.items():
        n = len(values)
        if n < 5:
            raise ValueError(f"t-SNE needs at least 5 images, got {n}")
        tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed)
        embedded[kind] = tsne.fit_transform(np.asarray(values, dtype=np.float64))
    return embedded


def run_tsne(model_dir, eurosat_root, output_dir, model=None, processor=None, radiometry=None, **options) -> dict:
    """Write OUTPUT/tsne.png and OUTPUT/tsne.json (the 2-D points); returns the JSON dict.

    `options`: the fields of `TsneOptions` and `evaluation.data.FeatureOptions`; `radiometry` (a
    `RadiometrySettings`) is how the images are read.
    """
    tsne, feature_options = split_options(options, TsneOptions, FeatureOptions)
    output_dir = Path(output_dir)
    features, labels, class_names, paths = eurosat_features(model_dir, eurosat_root, output_dir, feature_options,
                                                            model, processor, radiometry)
    embedded = tsne_embeddings(features, tsne.seed, tsne.perplexity)
    plot_tsne(embedded, labels, class_names, output_dir / "tsne.png")
    result = {"model": str(model_dir), "eurosat": str(eurosat_root), "seed": tsne.seed, "class_names": class_names,
              "images": paths, "labels": labels.tolist(),
              "points": {kind: points.round(4).tolist() for kind, points in embedded.items()}}
    atomic_write_json(output_dir / "tsne.json", result)
    logger.info("t-SNE: %s and %s", output_dir / "tsne.png", output_dir / "tsne.json")
    return result
