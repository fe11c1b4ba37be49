"""The radiometry flags reach the image processor as one unchanged `RadiometrySettings` from every entry point
(caption, classify, map, evaluate, build-dataset, the web app's session), and give the pixel values of the
processor called with that settings object."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch

from spectral_llava.processing import image_processing_spectral_llava, radiometry
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.processing.sentinel2_io import read_image
from testing_utils import DATA

CROP = os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R",
                    "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
# explicit values near the crop's own rule (product name: -1000, 1): plausible, and other pixel values
FLAGS = ["--input-offset", "-900", "--input-scale", "1.1"]
SETTINGS = RadiometrySettings(input_offset=-900, input_scale=1.1)
# EuroSAT has no offset: plausible explicit values there
EUROSAT_FLAGS = ["--input-offset", "100", "--input-scale", "0.9"]
EUROSAT_SETTINGS = RadiometrySettings(input_offset=100, input_scale=0.9)


@pytest.fixture
def reads(monkeypatch):
    """What reaches the image processing of this process: "settings", the `RadiometrySettings` of every image
    corrected (`apply_radiometry`), and "pixels", every batch of pixel values resized."""
    seen = {"settings": [], "pixels": []}
    apply = radiometry.apply_radiometry
    resize = SpectralImageProcessor.resize

    def recording_apply(image, bands=None, settings=None, *args, **kwargs):
        seen["settings"].append(settings)
        return apply(image, bands, settings, *args, **kwargs)

    def recording_resize(self, images):
        pixels = resize(self, images)
        seen["pixels"].append(pixels)
        return pixels

    monkeypatch.setattr(image_processing_spectral_llava, "apply_radiometry", recording_apply)
    monkeypatch.setattr(radiometry, "apply_radiometry", recording_apply)
    monkeypatch.setattr(SpectralImageProcessor, "resize", recording_resize)
    return seen


def run_cli(argv) -> str:
    from spectral_llava.cli import main

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return stdout.getvalue()


@pytest.fixture(scope="module")
def expected_pixels(tiny_model):
    pixels = tiny_model[1].image_processor(CROP, radiometry=SETTINGS)["pixel_values"]
    assert not torch.equal(pixels, tiny_model[1].image_processor(CROP)["pixel_values"])  # the flags matter
    return pixels


@pytest.mark.parametrize("command", ["caption", "classify"])
def test_caption_and_classify(command, tiny_model_dir, reads, expected_pixels):
    output = run_cli([command, "--model", tiny_model_dir, CROP, "--max-new-tokens", "2", "--resize-whole-image",
                      *FLAGS])
    lines = [json.loads(line) for line in output.splitlines()]
    assert reads["settings"] == [SETTINGS]
    assert torch.equal(reads["pixels"][0], expected_pixels)
    assert (lines[0]["radiometry"]["offset"], lines[0]["radiometry"]["scale"]) == (-900.0, 1.1)


def test_map(tiny_model_dir, tiny_model, reads, tmp_path):
    run_cli(["map", CROP, "--model", tiny_model_dir, "--output", str(tmp_path / "tiles.parquet"), "--tile-size",
             "60", "--batch-size", "4", "--workers", "0", "--max-new-tokens", "2", "--no-overview", *FLAGS])
    assert reads["settings"] == [SETTINGS] * 4  # one per tile, read in this process (--workers 0)
    whole = read_image(CROP)
    crops = [whole.data[:, y:y + 60, x:x + 60] for x in (0, 60) for y in (0, 60)]  # column by column
    expected = tiny_model[1].image_processor(crops, band_names=whole.band_names, radiometry=SETTINGS)
    # windows are resampled on their own: a value within 0.02 DN of a uint8 step may land one step away
    assert (reads["pixels"][0] - expected["pixel_values"]).abs().max() <= 1 / 255 + 1e-6
    from spectral_llava.scene import read_tiles

    _, metadata = read_tiles(tmp_path / "tiles.parquet")
    assert (metadata["radiometry"]["source"], metadata["radiometry"]["offset"]) == ("explicit", -900.0)


def test_evaluate(tiny_model_dir, small_eurosat, reads, tmp_path):
    run_cli(["evaluate", "classify", "--model", tiny_model_dir, "--eurosat", small_eurosat, "--max-per-class", "1",
             "--output", str(tmp_path), "--max-new-tokens", "2", *EUROSAT_FLAGS, "--strict"])
    assert reads["settings"] == [RadiometrySettings(100, 0.9, strict=True)] * 3


def test_build_dataset(small_eurosat, reads, tmp_path):
    run_cli(["build-dataset", "--output", str(tmp_path), "--eurosat", small_eurosat, *EUROSAT_FLAGS])
    assert len(reads["settings"]) == 12 and set(reads["settings"]) == {EUROSAT_SETTINGS}
    info = json.loads((tmp_path / "build_info.json").read_text())["radiometry"]
    assert RadiometrySettings(info["input_offset"], info["input_scale"], info["strict"]) == EUROSAT_SETTINGS


def test_web_app_session(tiny_model_dir, reads, expected_pixels):
    from spectral_llava.webapp import ModelSession
    from spectral_llava.webapp.options import AppOptions

    options = AppOptions(model=tiny_model_dir, input_offset=-900, input_scale=1.1)
    session = ModelSession(options.model, max_new_tokens=2, device="cpu", radiometry=options.radiometry)
    session.caption(CROP)
    assert reads["settings"] == [SETTINGS] and torch.equal(reads["pixels"][0], expected_pixels)
    assert session.map_options("both").radiometry == SETTINGS
    answer = "".join(session.chat_stream(CROP, [], "What is there?"))
    assert isinstance(answer, str) and reads["settings"] == [SETTINGS] * 2
    assert np.array_equal(reads["pixels"][1].numpy(), expected_pixels.numpy())
