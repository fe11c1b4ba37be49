"""Reading real bands: SAFE products (JPEG2000, L1C and L2A naming) and windowed reads of the 10 m grid (SceneReader)
equal to the whole-scene reads. Band-file names and layouts: test_layouts.py."""

import glob
import os
import shutil

import numpy as np
import pytest
import rasterio

from sentinel2_samples import (L2A_GRANULE, L2A_PRODUCT, MAJOR_TOM, MAJOR_TOM_CROP, SHARED, copy_band, write_safe_l1c,
                               write_safe_l2a)
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import product_id, read_image, safe_band_files
from testing_utils import DATA

SSL4EO_L1C = sorted(glob.glob(os.path.join(SHARED, "ssl4eo-s12", "s2c", "*", "*")))
needs_shared = pytest.mark.skipif(not os.path.isdir(MAJOR_TOM), reason="needs ../shared/data (the full cells)")


def test_jpeg2000_driver_is_available():
    with rasterio.Env() as env:
        assert "JP2OpenJPEG" in env.drivers()


@pytest.fixture(scope="module")
def safe_l2a(tmp_path_factory):
    return write_safe_l2a(tmp_path_factory.mktemp("safe"), MAJOR_TOM_CROP)


def test_l2a_safe_levels_all_find_the_finest_band_files(safe_l2a):
    img_data = os.path.join(safe_l2a, "GRANULE", L2A_GRANULE, "IMG_DATA")
    expected = {"B02": "R10m", "B03": "R10m", "B04": "R10m", "B08": "R10m", "B05": "R20m", "B06": "R20m",
                "B07": "R20m", "B8A": "R20m", "B11": "R20m", "B12": "R20m", "B01": "R60m", "B09": "R60m"}
    for path in (safe_l2a, os.path.dirname(img_data), img_data):
        found = safe_band_files(path)
        assert {band: os.path.basename(os.path.dirname(file)) for band, file in found.items()} == expected
        assert os.path.basename(found["B02"]) == "T21JUK_20231217T135659_B02_10m.jp2"
    r20m = safe_band_files(os.path.join(img_data, "R20m"))
    assert sorted(r20m) == ["B02", "B03", "B04", "B05", "B06", "B07", "B11", "B12", "B8A"]
    assert all(file.endswith("_20m.jp2") for file in r20m.values())
    assert safe_band_files(MAJOR_TOM_CROP) is None


def test_l2a_safe_reads_the_same_pixels_as_the_geotiff_bands(safe_l2a):
    safe, reference = read_image(safe_l2a), read_image(MAJOR_TOM_CROP)
    assert safe.band_names == reference.band_names
    np.testing.assert_array_equal(safe.data, reference.data)  # JPEG2000 written losslessly
    assert safe.metadata["crs"] == reference.metadata["crs"]
    assert safe.metadata["transform"] == reference.metadata["transform"]
    img_data = os.path.join(safe_l2a, "GRANULE", L2A_GRANULE, "IMG_DATA")
    np.testing.assert_array_equal(read_image(img_data).data, reference.data)
    assert product_id(img_data) == L2A_PRODUCT


@pytest.mark.skipif(not SSL4EO_L1C, reason="needs ../shared/data/ssl4eo-s12/s2c (Level-1C with B10)")
def test_l1c_safe_drops_b10_and_matches_the_source_bands(tmp_path):
    safe = write_safe_l1c(tmp_path, SSL4EO_L1C[0])
    assert os.path.isfile(glob.glob(os.path.join(safe, "GRANULE", "*", "IMG_DATA", "*_B10.jp2"))[0])
    found = safe_band_files(safe)
    assert "B10" not in found and len(found) == 12
    image, reference = read_image(safe), read_image(SSL4EO_L1C[0])
    assert "B10" not in image.band_names and "B10" in reference.band_names
    channels = [reference.band_names.index(band) for band in image.band_names]
    np.testing.assert_array_equal(image.data, reference.data[channels])  # NaN where reprojection has no source


def test_safe_with_several_granules_is_refused(tmp_path, safe_l2a):
    copy = tmp_path / os.path.basename(safe_l2a)
    shutil.copytree(safe_l2a, copy)
    shutil.copytree(copy / "GRANULE" / L2A_GRANULE, copy / "GRANULE" / "L2A_T21JUK_A035414_20231217T999999")
    with pytest.raises(ValueError, match="2 granules; pass one granule's IMG_DATA folder"):
        read_image(str(copy))


def test_corrupt_jpeg2000_names_the_file(tmp_path, safe_l2a):
    copy = tmp_path / os.path.basename(safe_l2a)
    shutil.copytree(safe_l2a, copy)
    bad = glob.glob(str(copy / "GRANULE" / "*" / "IMG_DATA" / "R20m" / "*_B05_20m.jp2"))[0]
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 3)
    with pytest.raises(ValueError, match="B05_20m.jp2"):
        read_image(str(copy))
    with open(bad, "wb") as f:
        f.write(b"not a JPEG2000 codestream" * 10)
    with pytest.raises(ValueError, match=r"B05_20m\.jp2: not a readable JPEG2000"):
        SceneReader(str(copy))


@pytest.mark.parametrize("source", [
    pytest.param(MAJOR_TOM, marks=needs_shared, id="major-tom-1068"),
    pytest.param(MAJOR_TOM_CROP, id="major-tom-crop"),
    pytest.param(glob.glob(os.path.join(DATA, "ssl4eo-s12", "s2a", "*", "*"))[0], id="ssl4eo-epsg4326"),
    pytest.param(glob.glob(os.path.join(DATA, "bigearthnet-v1", "*"))[0], id="bigearthnet"),
    pytest.param(os.path.join(DATA, "eurosat-ms", "River", "River_1.tif"), id="eurosat-multiband"),
])
def test_windows_equal_crops_of_the_whole_scene(source):
    whole = read_image(source)
    reader = SceneReader(source)
    assert (reader.height, reader.width) == whole.data.shape[1:]
    channels = [whole.band_names.index(band) for band in reader.band_names]
    rng = np.random.default_rng(0)
    windows = [(0, 0, 16, 16), (reader.height - 16, reader.width - 16, 16, 16)]
    for _ in range(12):
        height, width = int(rng.integers(1, min(100, reader.height))), int(rng.integers(1, min(100, reader.width)))
        windows.append((int(rng.integers(0, reader.height - height + 1)),
                        int(rng.integers(0, reader.width - width + 1)), height, width))
    for row, col, height, width in windows:
        window = reader.read(row, col, height, width)
        expected = whole.data[channels, row:row + height, col:col + width]
        # float32 rounding of the bilinear weights: < 0.02 DN on values in the thousands
        np.testing.assert_allclose(window.data, expected, rtol=0, atol=0.02)
        assert np.array_equal(np.isnan(window.data), np.isnan(expected))
        assert window.metadata["transform"] == whole.metadata["transform"] @ rasterio.Affine.translation(col, row)
    with pytest.raises(ValueError, match="lies outside"):
        reader.read(reader.height - 4, 0, 8, 8)


def test_windows_with_a_declared_nodata_value_go_through_reproject(tmp_path):
    folder = tmp_path / "patch"
    for band in ("B02", "B03", "B04", "B08", "B05", "B11"):
        copy_band(os.path.join(MAJOR_TOM_CROP, f"{band}.tif"), folder / f"{band}.tif", nodata=0)
    with rasterio.open(folder / "B05.tif", "r+") as dataset:  # a no-data hole in a 20 m band
        data = dataset.read(1)
        data[10:20, 10:30] = 0
        dataset.write(data, 1)
    whole, reader = read_image(str(folder)), SceneReader(str(folder))
    for row, col in ((0, 0), (8, 16), (40, 40), (88, 88)):
        window = reader.read(row, col, 32, 32).data
        expected = whole.data[:, row:row + 32, col:col + 32]
        np.testing.assert_allclose(window, expected, rtol=0, atol=0.02)
        assert np.array_equal(np.isnan(window), np.isnan(expected))
    assert np.isnan(reader.read(20, 20, 40, 40).data[reader.band_names.index("B05")]).any()


def test_reader_survives_pickling_into_another_process():
    import multiprocessing
    import pickle

    reader = SceneReader(MAJOR_TOM_CROP)
    first = reader.read(10, 20, 32, 32).data
    with multiprocessing.get_context("fork").Pool(1) as pool:  # as DataLoader workers start
        again = pool.apply(_read_in_child, (pickle.dumps(reader),))
    np.testing.assert_array_equal(first, again)


def _read_in_child(payload):
    import pickle

    return pickle.loads(payload).read(10, 20, 32, 32).data


def test_overview_is_decimated_rgb():
    reader = SceneReader(MAJOR_TOM_CROP)
    rgb = reader.read_overview(("B04", "B03", "B02"), max_size=30)
    assert rgb.shape == (3, 30, 30)
    whole = read_image(MAJOR_TOM_CROP)
    red = whole.data[whole.band_names.index("B04")].reshape(30, 4, 30, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(rgb[0], red, rtol=0, atol=0.5)  # GDAL rounds the uint16 means


def test_product_ids():
    assert product_id(MAJOR_TOM_CROP) == "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
    assert product_id(os.path.join(MAJOR_TOM_CROP, "B02.tif")) == \
        "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
    assert product_id(os.path.join(DATA, "eurosat-ms", "River", "River_1.tif")) == "River_1"
    assert product_id(np.zeros(3)) is None


def test_what_is_not_sentinel2_input_gets_one_message(tmp_path):
    """A text file, an 8-bit RGB GeoTIFF (a rendering): the reader says it is not Sentinel-2 input and why; the
    band-name hint names what a user can pass (Python argument, command-line flag, app field)."""
    from spectral_llava.processing.options import BandNamesOptions
    from spectral_llava.processing.sentinel2_io import BAND_NAMES_HINT

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ValueError) as raised:
        read_image(str(notes))
    assert str(raised.value) == (f"{notes} is not a Sentinel-2 multispectral input: a .txt file that is no image GDAL "
                                 "reads; the model reads Sentinel-2 bands from a GeoTIFF (.tif, .tiff), JPEG2000 band "
                                 "files (.jp2), a folder of band files or a SAFE product")
    rendering = tmp_path / "rendering.tif"
    with rasterio.open(rendering, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8") as out:
        out.write(np.full((3, 8, 8), 100, np.uint8))
    with pytest.raises(ValueError, match="rendering.tif is not a Sentinel-2 multispectral input: 3 band.s. of uint8 "
                                         "values .*a picture such as an RGB rendering; if they are Sentinel-2 bands"):
        read_image(str(rendering))
    assert "--band-names B02,B03,..." in BAND_NAMES_HINT and "'band names' field" in BAND_NAMES_HINT
    assert BandNamesOptions(band_names="b2, B3,4,8a").names == ["B02", "B03", "B04", "B8A"]
    with pytest.raises(ValueError, match=r"^--band-names B2,B02 names band\(s\) \['B02'\] more than once"):
        BandNamesOptions(band_names="B2,B02")
    with pytest.raises(ValueError, match="^--band-names B2,X: unknown Sentinel-2 band name 'X'"):
        BandNamesOptions(band_names="B2,X")
