"""No silent squashing: inputs more than twice the model's footprint are warned about by the processor and the
pipeline, and refused by `spectral-llava caption` / `classify` unless --resize-whole-image."""

import contextlib
import io
import logging
import os
import sys

import pytest
from transformers import pipeline

from sentinel2_samples import MAJOR_TOM
from testing_utils import DATA
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor, footprint_ratio

BEN = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")  # 120 px = 1.2 km
EUROSAT = os.path.join(DATA, "eurosat-ms", "Pasture", "Pasture_1.tif")  # 64 px = 640 m


def squash_warnings(caplog):
    return [record.getMessage() for record in caplog.records if "squashed" in record.getMessage()]


def test_footprint_ratio_uses_the_ground_extent():
    assert footprint_ratio(128, 1068, 1068) == pytest.approx(1068 / 128)  # arrays: 10 m pixels
    assert footprint_ratio(32, 120, 60) == pytest.approx(120 / 32)


@pytest.mark.skipif(not os.path.isdir(MAJOR_TOM), reason="needs ../shared/data (the full Major-TOM cell)")
def test_processor_warns_for_a_major_tom_cell_once(caplog):
    processor = SpectralImageProcessor(image_size=128)
    with caplog.at_level(logging.WARNING):
        processor(MAJOR_TOM)
        processor(MAJOR_TOM)
        processor([BEN, EUROSAT])
    messages = squash_warnings(caplog)
    assert len(messages) == 1
    assert messages[0].startswith(f"{MAJOR_TOM}: 10.68 km x 10.68 km is 8.3x the model's footprint (128 px x 10 m")
    assert "`spectral-llava map`" in messages[0]


def test_pipeline_warns(tiny_map_model_dir, caplog):
    pipe = pipeline("image-text-to-text", model=tiny_map_model_dir, trust_remote_code=True)
    sys.modules[type(pipe.processor.image_processor).__module__]._WARNED_SQUASHED.clear()
    with caplog.at_level(logging.WARNING):
        pipe(images=EUROSAT, max_new_tokens=2)  # 2.0x the tiny model's 320 m: not more than 2x
        assert squash_warnings(caplog) == []
        pipe(images=BEN, max_new_tokens=2)
    assert len(squash_warnings(caplog)) == 1 and "3.8x" in squash_warnings(caplog)[0]


@pytest.mark.parametrize("command", ["caption", "classify"])
def test_caption_and_classify_refuse_with_a_pointer_to_map(tiny_map_model_dir, command):
    from spectral_llava.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main([command, "--model", tiny_map_model_dir, EUROSAT, BEN, "--max-new-tokens", "2"]) == 2
    message = stderr.getvalue()
    assert f"{BEN} covers 3.8x the model's footprint (32 px x 10 m)" in message
    assert f"spectral-llava map {BEN} --model {tiny_map_model_dir}" in message and "--resize-whole-image" in message
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([command, "--model", tiny_map_model_dir, EUROSAT, BEN, "--max-new-tokens", "2",
                     "--resize-whole-image"]) == 0
    assert len(stdout.getvalue().splitlines()) == 2
