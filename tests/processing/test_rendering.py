"""The one RGB stretch (`processing.rendering.stretch_rgb`: the web app's renderings, the scene overview and the
Spectral-Inst PNGs) on a real patch: joint and per-band ranges, gamma, no-data."""

import numpy as np
import pytest

from sentinel2_samples import MAJOR_TOM_CROP
from spectral_llava.processing.rendering import TRUE_COLOUR, stretch_rgb
from spectral_llava.processing.sentinel2_io import read_image


@pytest.fixture(scope="module")
def rgb_bands():
    image = read_image(MAJOR_TOM_CROP, select_bands=list(TRUE_COLOUR))
    return image.data[[image.band_names.index(band) for band in TRUE_COLOUR]]


def test_joint_stretch_shares_one_range_and_keeps_the_colour_balance(rgb_bands):
    valid = np.ones(rgb_bands.shape[1:], bool)
    valid[:10] = False
    low, high = np.percentile(rgb_bands[:, valid], [2, 98])
    expected = np.round(np.clip((rgb_bands - low) / (high - low), 0, 1) * 255)
    rgb = stretch_rgb(rgb_bands, valid)
    assert rgb.shape == (120, 120, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[10:], np.moveaxis(expected, 0, -1)[10:])
    assert not rgb[:10].any()  # no-data is black


def test_per_band_stretch_and_gamma(rgb_bands):
    valid = np.ones(rgb_bands.shape[1:], bool)
    rgb = stretch_rgb(rgb_bands, valid, per_band=True, gamma=2.0)
    for channel, band in enumerate(rgb_bands):
        low, high = np.percentile(band, [2, 98])
        expected = np.round(np.clip((band - low) / (high - low), 0, 1) ** 0.5 * 255)
        np.testing.assert_array_equal(rgb[..., channel], expected)
    # an offset and a scale applied to all three bands change nothing
    np.testing.assert_array_equal(stretch_rgb(rgb_bands * 0.5 - 1000, valid, per_band=True, gamma=2.0), rgb)


def test_per_value_mask_and_nothing_valid(rgb_bands):
    bands = rgb_bands.copy()
    bands[1, :5] = np.nan  # one band missing in some rows: only that channel goes black there
    rgb = stretch_rgb(bands, np.isfinite(bands))
    assert not rgb[:5, :, 1].any() and rgb[:5, :, 0].any()
    assert not stretch_rgb(bands, np.zeros(bands.shape[1:], bool)).any()
