"""Scene-mapping fixtures; they and the data helpers live in scene_data.py, which tests import by name."""

from scene_data import tiny_map_model, tiny_map_model_dir  # noqa: F401  (fixtures)
