"""Scene mapping: tile a Sentinel-2 scene or SAFE product, label and caption every tile, write georeferenced rows.

`map_scene(source, model, processor, output, ...)` is the API (`spectral-llava map` wraps it); see
docs/scene_mapping.md.
"""

from .mapping import EDGE_RULE, ENGINES, NODATA_RULE, MapResult, map_scene
from .outputs import OUTPUT_FORMATS, read_tiles
from .inference import TASKS

__all__ = ["map_scene", "MapResult", "read_tiles", "TASKS", "ENGINES", "OUTPUT_FORMATS", "EDGE_RULE", "NODATA_RULE"]
