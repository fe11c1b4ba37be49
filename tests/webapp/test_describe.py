"""What the page shows about an input: renderings, bands found/missing/resampled, radiometry, CRS and footprint."""

import shutil

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

from spectral_llava.processing.rendering import FALSE_COLOUR, TRUE_COLOUR, stretch_rgb
from spectral_llava.processing.sentinel2_io import read_image
from spectral_llava.webapp.app import bands_markdown, footprint_markdown, radiometry_markdown
from spectral_llava.webapp.describe import band_rows, composite, describe_input, input_footprint_ratio


@pytest.fixture(scope="module")
def image_processor(app_session):
    return app_session.image_processor


def rows_by_band(report):
    return {row["band"]: row for row in report.bands}


def test_band_folder_reports_resampled_bands_crs_and_footprint(image_processor, data):
    report = describe_input(data.ben_patch, image_processor)
    rows = rows_by_band(report)
    assert {band for band, row in rows.items() if row["status"] == "found"} == {"B02", "B03", "B04", "B08"}
    assert {band for band, row in rows.items() if row["status"] == "resampled"} == \
        {"B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"}
    assert rows["B05"]["native pixel"] == "20 m" and rows["B01"]["native pixel"] == "60 m"
    assert rows["B01"]["handling"] == "resampled onto the 10 m grid"
    with rasterio.open(next(data.ben_patch.glob("*_B02.tif"))) as band:
        assert report.crs == band.crs.to_string()
        expected = transform_bounds(band.crs, "EPSG:4326", *band.bounds, densify_pts=21)
    np.testing.assert_allclose(report.lonlat_bounds, expected, atol=1e-9)
    assert report.extent_m == pytest.approx((1200.0, 1200.0))
    assert (report.height, report.width, report.tile_px) == (120, 120, 64)
    assert report.larger_than_one_tile and report.tiles == (2, 2)
    assert report.footprint_ratio == pytest.approx(1200 / 640)
    text = footprint_markdown(report)
    assert "120 x 120 px (1.20 km x 1.20 km)" in text and "2 x 2 tiles" in text and report.crs in text
    table = bands_markdown(report)
    assert "| B8A | resampled | 20 m | resampled onto the 10 m grid |" in table


def test_eurosat_file_drops_b10_and_fits_one_tile(image_processor, data):
    report = describe_input(data.forest, image_processor)
    rows = rows_by_band(report)
    assert all(rows[band]["status"] == "found" for band in image_processor.band_names)
    assert rows["B10"]["status"] == "not used"
    assert not report.larger_than_one_tile and report.tiles == (1, 1)
    assert "fits one tile" in footprint_markdown(report)


def test_missing_bands_are_listed(image_processor, data, tmp_path):
    for band in ("B02", "B03", "B04"):
        shutil.copy(data.major_tom / f"{band}.tif", tmp_path)
    report = describe_input(tmp_path, image_processor)
    rows = rows_by_band(report)
    assert {band for band, row in rows.items() if row["status"] == "missing"} == \
        set(image_processor.band_names) - {"B02", "B03", "B04"}
    assert rows["B08"]["handling"] == "filled with the dataset mean, masked out"
    assert report.true_colour is not None and report.false_colour is None
    assert "no false colour (B08/B04/B03) rendering: a band it needs is missing" in report.notes


def test_renderings_stretch_each_band_and_ignore_offsets(image_processor, data):
    image = read_image(str(data.major_tom))
    rgb = composite(image, TRUE_COLOUR)
    channel = {band: index for index, band in enumerate(image.band_names)}
    red = image.data[channel["B04"]]
    low, high = np.percentile(red[np.all(image.data[[channel[b] for b in TRUE_COLOUR]] != 0, axis=0)], [2, 98])
    np.testing.assert_array_equal(rgb[..., 0], np.round(np.clip((red - low) / (high - low), 0, 1) * 255))
    shifted = stretch_rgb(np.stack([image.data[channel[b]] - 1000 for b in FALSE_COLOUR]),
                          np.ones(image.data.shape[1:], bool), per_band=True)
    plain = stretch_rgb(np.stack([image.data[channel[b]] for b in FALSE_COLOUR]), np.ones(image.data.shape[1:], bool),
                        per_band=True)
    np.testing.assert_array_equal(shifted, plain)
    report = describe_input(data.forest, image_processor)
    assert report.true_colour.shape[0] >= 256 and report.true_colour.shape[0] % 64 == 0  # enlarged, pixel-exact


def test_radiometry_shown_as_the_processor_reports_it(image_processor, data):
    metadata = image_processor(str(data.major_tom), return_metadata=True)["metadata"][0]
    report = describe_input(data.major_tom, image_processor)
    assert report.radiometry == metadata["radiometry"]
    assert (metadata["radiometry"]["source"], metadata["radiometry"]["offset"]) == ("product_name", -1000.0)  # N0400
    text = radiometry_markdown(report)
    assert text.startswith("**Radiometry** reflectance x 10000 = (raw + -1000.0) x 1.0, from product_name (")
    assert "N0400" in text


def test_footprint_ratio_from_headers(image_processor, data):
    assert input_footprint_ratio(data.ben_patch, image_processor) == pytest.approx(1200 / 640)
    assert input_footprint_ratio(data.ssl4eo, image_processor) == pytest.approx(2640 / 640)  # EPSG:4326: 10 m px


def test_zipped_safe_product_is_described_from_its_jpeg2000_bands(image_processor, safe_zip, tmp_path):
    from spectral_llava.webapp.inputs import resolve_upload

    source = resolve_upload([str(safe_zip)], tmp_path)
    assert source.name.endswith(".SAFE")
    report = describe_input(source, image_processor)
    rows = rows_by_band(report)
    assert rows["B02"]["status"] == "found" and rows["B02"]["native pixel"] == "10 m"
    assert rows["B11"]["status"] == "resampled" and rows["B11"]["native pixel"] == "20 m"
    assert rows["B09"]["native pixel"] == "60 m" and report.crs == "EPSG:32633"
    assert (report.height, report.width) == (120, 120)


def test_radiometry_line_follows_the_processor_contract(image_processor, data):
    report = describe_input(data.forest, image_processor)
    report.radiometry = {"offset": -1000.0, "scale": 1.0, "source": "product_metadata",
                         "detail": "BOA_ADD_OFFSET in MTD_MSIL2A.xml", "band_offsets": {}, "band_scales": {},
                         "implausible": ["B01"]}
    text = radiometry_markdown(report)
    assert text.startswith("**Radiometry** reflectance x 10000 = (raw + -1000.0) x 1.0, from product_metadata "
                           "(BOA_ADD_OFFSET in MTD_MSIL2A.xml)")
    assert text.endswith("implausible: ['B01']") and "band offsets" not in text


def test_ssl4eo_band_aliases_are_listed_once(image_processor, data):
    """SSL4EO names its files B1.tif..B9.tif: each is its model band (B01..B09), listed once, not again as an unused
    band (issue 20); an alias spelling in the reader's report changes nothing either."""
    report = describe_input(data.ssl4eo, image_processor)
    assert [row["band"] for row in report.bands] == list(image_processor.band_names)
    assert "not used" not in {row["status"] for row in report.bands}
    metadata = {"band_names": ["B1", "B2", "B8a", "B10"], "band_mask": [True] * 12}
    rows = band_rows(metadata, ["B01", "B02", "B8A"], {"B1": 60.0, "B02": 10.0, "8A": 20.0, "B10": 60.0}, False)
    assert [(row["band"], row["status"]) for row in rows] == [("B01", "resampled"), ("B02", "found"),
                                                               ("B8A", "resampled"), ("B10", "not used")]
