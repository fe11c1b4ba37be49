"""Processing for Spectral-LLaVA: Sentinel-2 readers, radiometry, SpectralGPT image processor, processor, pipeline."""

from .image_processing_spectral_llava import SpectralImageProcessor
from .radiometry import RadiometryWarning, resolve_radiometry
from .sentinel2_io import SpectralImage, canonical_band_name, read_image
from .processing_spectral_llava import SpectralLlavaProcessor

__all__ = ["RadiometryWarning", "SpectralImage", "SpectralImageProcessor", "SpectralLlavaProcessor",
           "canonical_band_name", "read_image", "resolve_radiometry"]
