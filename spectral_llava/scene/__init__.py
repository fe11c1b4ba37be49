"""Scene mapping: tile a Sentinel-2 scene or SAFE product, label and caption every tile, write georeferenced rows.

`map_scene(source, model, processor, output, MapOptions(...))` is the API (`spectral-llava map` wraps it, parsing
the same `scene.options.MapOptions`); see docs/scene_mapping.md. The names below are imported on first use, so that
`scene.options` (what the command line parses) does not load torch.
"""

import importlib

_EXPORTS = {
    "map_scene": "mapping", "MapResult": "mapping", "EDGE_RULE": "mapping", "NODATA_RULE": "mapping",
    "read_tiles": "outputs", "OUTPUT_FORMATS": "outputs", "MapOptions": "options", "TASKS": "options",
    "ENGINES": "options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
