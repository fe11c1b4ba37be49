"""Moved to the `evaluation` package; this module re-exports it (and the old helper names) for one release."""

from evaluation import *  # noqa: F401,F403
from evaluation import __all__  # noqa: F401
from evaluation.data import eurosat_samples as list_eurosat  # noqa: F401
from modeling_spectral_llava.loading import load_model_and_processor as load_model  # noqa: F401
from spectral_inst.dataset import load_patches  # noqa: F401
