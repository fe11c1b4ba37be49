"""Constants that remote code has to repeat, because a saved model dir holds processing/ and modeling_spectral_llava/
files side by side and each may import only its own siblings: the copies must agree."""

import inspect

from spectral_llava.modeling_spectral_llava import configuration_spectral_llava as configuration
from spectral_llava.modeling_spectral_llava.tools.build import SPECIAL_TOKENS
from spectral_llava.processing import image_processing_spectral_llava as image_processing
from spectral_llava.processing import pipeline_spectral_llava as pipeline
from spectral_llava.processing import processing_spectral_llava as processing
from spectral_llava.processing import sentinel2_io
from spectral_llava.spectral_inst.records import CAPTION_QUESTIONS, CLASSIFICATION_QUESTIONS


def test_band_order_is_the_same_everywhere():
    bands = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")  # SpectralGPT's
    assert tuple(sentinel2_io.SPECTRALGPT_BANDS) == tuple(configuration.SPECTRALGPT_BANDS) == bands
    assert tuple(configuration.SpectralGPTConfig().band_names) == bands
    assert tuple(image_processing.SpectralImageProcessor().band_names) == bands
    assert len(image_processing.SPECTRALGPT_MEAN) == len(image_processing.SPECTRALGPT_STD) == len(bands)
    assert sentinel2_io.KNOWN_LAYOUTS[12] == sentinel2_io.SPECTRALGPT_BANDS


def test_image_token_is_the_same_everywhere():
    default = inspect.signature(processing.SpectralLlavaProcessor.__init__).parameters["image_token"].default
    assert pipeline.IMAGE_TOKEN == default == SPECIAL_TOKENS[0] == "<image>"


def test_task_prompts_are_phrased_as_the_training_records():
    for task, questions in (("caption", CAPTION_QUESTIONS), ("classification", CLASSIFICATION_QUESTIONS)):
        token, instruction = processing.TASK_PROMPTS[task].split(" ", 1)
        assert token == f"[{task}]" and token in SPECIAL_TOKENS
        assert instruction in questions
