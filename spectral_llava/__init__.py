"""Spectral-LLaVA: a Hugging Face-native vision-language model for multispectral Sentinel-2 imagery.

One import package. The repository keeps the folders its design fixes (`processing/`, `train/`,
`modeling_spectral_llava/`) at its top level, and setuptools installs them inside this package
(`package_dir` in setup.cfg), so that they are always imported as `spectral_llava.processing`,
`spectral_llava.train` and `spectral_llava.modeling_spectral_llava`.
"""

import os

__version__ = "0.1.0"

# From a source checkout that is not installed (benchmarks/, scripts/, a GPU machine with only torch and
# transformers), find those three folders beside this package, where the repository keeps them.
_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_HERE)
if not os.path.isdir(os.path.join(_HERE, "processing")) and os.path.isfile(
        os.path.join(_CHECKOUT, "processing", "processing_spectral_llava.py")):
    __path__.append(_CHECKOUT)
