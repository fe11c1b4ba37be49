"""The evaluation images: EuroSAT class folders (through the builder's one EuroSAT listing) and their features."""

from __future__ import annotations

import logging
import os

import numpy as np

from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
from spectral_llava.spectral_inst.sources import list_eurosat

from .features import probe_features
from .options import FeatureOptions

logger = logging.getLogger(__name__)


def eurosat_samples(root: str | os.PathLike, max_per_class: int | None = None):
    """(paths, labels, class_names) of EuroSAT class folders ``ROOT/<Class>/*.tif``: classes sorted by name, labels
    their indices; ``max_per_class`` keeps the first N files (sorted by name) of each class."""
    classes = list_eurosat(root, max_per_class)
    if len(classes) < 2:
        raise FileNotFoundError(f"--eurosat {root}: expected at least two <Class>/<file>.tif folders")
    paths = [str(path) for files in classes.values() for path in files]
    labels = np.repeat(np.arange(len(classes)), [len(files) for files in classes.values()])
    return paths, labels, list(classes)


def eurosat_features(model_dir, eurosat_root, output_dir, options: FeatureOptions, model=None, processor=None,
                     radiometry=None):
    """(features {"vision", "grounded"}, labels, class_names, paths) of the EuroSAT images, read with the
    radiometric handling `radiometry` (a `RadiometrySettings`; default the image processor's own); the pooled
    cache defaults to OUTPUT/feature-cache."""
    paths, labels, class_names = eurosat_samples(eurosat_root, options.max_per_class)
    if model is None:
        model, processor = load_model_and_processor(model_dir)
    logger.info("features of %d EuroSAT images (%d classes) from %s", len(paths), len(class_names), eurosat_root)
    cache_dir = options.cache_dir if options.cache_dir is not None else os.path.join(output_dir, "feature-cache")
    features = probe_features(model, processor.image_processor, paths, cache_dir, options.tower_cache,
                              options.feature_batch_size, radiometry)
    return features, labels, class_names, paths
