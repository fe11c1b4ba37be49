"""The refusal of inputs that one answer would squash: far larger than the model's footprint."""

from __future__ import annotations

from typing import Sequence

from spectral_llava.processing.image_processing_spectral_llava import MAX_FOOTPRINT_RATIO, footprint_ratio
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import WHOLE_IMAGE_LIMIT, detect_layout


def refuse_squashed_inputs(paths: Sequence[str], image_processor, model_dir: str, band_names=None) -> None:
    """Refuse inputs whose ground extent exceeds the model's footprint more than MAX_FOOTPRINT_RATIO times in either
    direction: one answer for a whole scene squashed into the model's image size is not what the user wants.
    Inputs declaring more than WHOLE_IMAGE_LIMIT are refused first (headers only), as the processor would.
    `band_names`: the bands of multi-band files whose header does not name them (band folders ignore it)."""
    size = image_processor.image_size
    for path in paths:
        named = band_names if detect_layout(path).kind == "file" else None
        with SceneReader(path, select_bands=image_processor.band_names, band_names=named,
                         limit=WHOLE_IMAGE_LIMIT) as reader:  # headers only
            height, width = reader.height, reader.width
            if getattr(image_processor, "do_center_crop", False):
                height, width = min(height, image_processor.crop_size), min(width, image_processor.crop_size)
            ratio = footprint_ratio(size, height, width, reader.transform, reader.crs)
        if ratio > MAX_FOOTPRINT_RATIO:
            raise ValueError(f"{path} covers {ratio:.1f}x the model's footprint ({size} px x 10 m) and would be "
                             f"squashed into one {size}x{size} image; map it tile by tile with `spectral-llava map "
                             f"{path} --model {model_dir} --output tiles.parquet`, or pass --resize-whole-image to "
                             "answer for the whole image anyway")
