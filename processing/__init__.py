"""Processing for Spectral-LLaVA: Sentinel-2 readers, radiometry, SpectralGPT image processor, processor, pipeline.

The names below are imported on first use, so that `processing.options` (what the command line parses) does not
load torch or rasterio.
"""

import importlib

_EXPORTS = {
    "SpectralImageProcessor": "image_processing_spectral_llava",
    "RadiometryWarning": "radiometry", "resolve_radiometry": "radiometry", "ResolvedRadiometry": "radiometry",
    "RadiometrySettings": "radiometry_settings",
    "SpectralImage": "sentinel2_io", "canonical_band_name": "sentinel2_io", "read_image": "sentinel2_io",
    "detect_layout": "sentinel2_io", "read_header": "sentinel2_io", "check_declared_size": "sentinel2_io",
    "SceneReader": "scene_reader",
    "SpectralLlavaProcessor": "processing_spectral_llava",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
