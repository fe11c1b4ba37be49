"""Moved to the `spectral_inst` package (the dataset builder); this module re-exports it for one release."""

from spectral_inst import *  # noqa: F401,F403
from spectral_inst import __all__  # noqa: F401
