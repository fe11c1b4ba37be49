"""The reader's knowledge of Sentinel-2 files, on every shipped layout: band-file names, `detect_layout`, headers
read without pixels, product names."""

import glob
import os
import shutil

import numpy as np
import pytest
from affine import Affine

from sentinel2_samples import L2A_GRANULE, L2A_PREFIX, MAJOR_TOM_CROP, SHARED, write_safe_l1c, write_safe_l2a
from spectral_llava.processing.sentinel2_io import (CANONICAL_BANDS, PRODUCT_NAME_RE, SPECTRALGPT_BANDS, BandFile,
                                                    detect_layout, parse_band_file_name, product_id, read_header,
                                                    read_image)
from testing_utils import DATA

EUROSAT_FILE = os.path.join(DATA, "eurosat-ms", "River", "River_1.tif")
BEN_V1 = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")
BEN_V2 = os.path.join(DATA, "bigearthnet-v2", "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP",
                      "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43")
SSL4EO_L2A = glob.glob(os.path.join(DATA, "ssl4eo-s12", "s2a", "*", "*"))[0]
SSL4EO_L1C = sorted(glob.glob(os.path.join(SHARED, "ssl4eo-s12", "s2c", "*", "*")))
needs_l1c = pytest.mark.skipif(not SSL4EO_L1C, reason="needs ../shared/data/ssl4eo-s12/s2c (Level-1C with B10)")
SSL4EO_NAME = {band: f"B{int(band[1:])}.tif" if band != "B8A" else "B8A.tif" for band in CANONICAL_BANDS}


@pytest.mark.parametrize("name,expected", [
    ("B02.tif", BandFile("", "B02", None)),
    ("B2.TIF", BandFile("", "B02", None)),
    ("b8a.tiff", BandFile("", "B8A", None)),
    ("B1.tif", BandFile("", "B01", None)),
    ("S2A_MSIL2A_20170613T101031_87_48_B8A.tif", BandFile("S2A_MSIL2A_20170613T101031_87_48", "B8A", None)),
    ("T21JUK_20231217T135659_B11_20m.jp2", BandFile("T21JUK_20231217T135659", "B11", 20)),
    ("T33UUU_20170216T102101_B02.jp2", BandFile("T33UUU_20170216T102101", "B02", None)),
    ("/some/folder/patch-B03.tif", BandFile("patch", "B03", None)),
    ("cloud_mask.tif", None), ("B02.png", None), ("B13.tif", None), ("B9A.tif", None), ("TCI_10m.jp2", None),
])
def test_band_file_names_parse_to_canonical_bands(name, expected):
    assert parse_band_file_name(name) == expected


def layout_summary(layout):
    """(kind, prefix, {band: file name}) of a SourceLayout, bands in the order it lists them."""
    return layout.kind, layout.prefix, {band: os.path.basename(path) for band, path in layout.files.items()}


def test_multiband_file_layout_leaves_the_bands_to_the_header():
    layout = detect_layout(EUROSAT_FILE)
    assert (layout.kind, layout.path, layout.files, layout.prefix) == ("file", EUROSAT_FILE, {}, None)
    assert read_header(EUROSAT_FILE).band_names() == read_image(EUROSAT_FILE).band_names


@pytest.mark.parametrize("folder", [BEN_V1, BEN_V2], ids=["bigearthnet-v1", "bigearthnet-v2"])
def test_bigearthnet_patch_folders(folder):
    patch = os.path.basename(folder)
    assert layout_summary(detect_layout(folder)) == (
        "band_folder", patch, {band: f"{patch}_{band}.tif" for band in SPECTRALGPT_BANDS})


def test_major_tom_folder_leaves_out_the_cloud_mask():
    assert os.path.isfile(os.path.join(MAJOR_TOM_CROP, "cloud_mask.tif"))
    assert layout_summary(detect_layout(MAJOR_TOM_CROP)) == (
        "band_folder", "", {band: f"{band}.tif" for band in SPECTRALGPT_BANDS})


def test_ssl4eo_folders_without_zero_padding():
    assert layout_summary(detect_layout(SSL4EO_L2A)) == (
        "band_folder", "", {band: SSL4EO_NAME[band] for band in SPECTRALGPT_BANDS})


@needs_l1c
def test_ssl4eo_level_1c_folder_keeps_b10():
    assert layout_summary(detect_layout(SSL4EO_L1C[0])) == (
        "band_folder", "", {band: SSL4EO_NAME[band] for band in CANONICAL_BANDS})


def test_every_level_of_a_level_2a_safe_product(tmp_path):
    safe = write_safe_l2a(tmp_path, MAJOR_TOM_CROP)
    granule = os.path.join(safe, "GRANULE", L2A_GRANULE)
    img_data = os.path.join(granule, "IMG_DATA")
    finest = {band: f"{L2A_PREFIX}_{band}_{resolution}m.jp2" for band, resolution in
              (("B01", 60), ("B02", 10), ("B03", 10), ("B04", 10), ("B05", 20), ("B06", 20), ("B07", 20),
               ("B08", 10), ("B8A", 20), ("B09", 60), ("B11", 20), ("B12", 20))}
    for path in (safe, granule, img_data):
        layout = detect_layout(path)
        assert layout_summary(layout) == ("safe", L2A_PREFIX, finest) and layout.path == path
    assert layout_summary(detect_layout(os.path.join(img_data, "R10m"))) == (
        "safe", L2A_PREFIX, {band: f"{L2A_PREFIX}_{band}_10m.jp2" for band in ("B02", "B03", "B04", "B08")})
    assert layout_summary(detect_layout(safe, select_bands=["b8a", "2"])) == (
        "safe", L2A_PREFIX, {"B02": finest["B02"], "B8A": finest["B8A"]})


@needs_l1c
def test_level_1c_safe_product_drops_b10(tmp_path):
    safe = write_safe_l1c(tmp_path, SSL4EO_L1C[0])
    kind, prefix, files = layout_summary(detect_layout(safe))
    assert (kind, prefix) == ("safe", "T43RCP_20200823T054639")
    assert files == {band: f"T43RCP_20200823T054639_{band}.jp2" for band in SPECTRALGPT_BANDS}


def test_flat_folder_of_patches_needs_a_path_prefix(tmp_path):
    patches = ("S2A_MSIL2A_20170613T101031_87_48", "S2B_MSIL2A_20170924T93020_69_24")
    for patch in patches:
        for band in ("B02", "B03", "B8A"):
            shutil.copy(os.path.join(DATA, "bigearthnet-v1", patch, f"{patch}_{band}.tif"), tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path} holds band files of 2 patches .*pass one patch as the path "
                                         "prefix <folder>/<patch>"):
        detect_layout(tmp_path)
    layout = detect_layout(tmp_path / patches[1], select_bands=["B8A", "B02"])
    assert layout_summary(layout) == ("path_prefix", patches[1], {band: f"{patches[1]}_{band}.tif"
                                                                  for band in ("B02", "B8A")})
    np.testing.assert_array_equal(read_image(tmp_path / patches[1]).data,
                                  read_image(os.path.join(DATA, "bigearthnet-v1", patches[1]),
                                             select_bands=["B02", "B03", "B8A"]).data)


def test_layout_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no such image file or band folder: {tmp_path / 'nothing'}"):
        detect_layout(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("not a band")
    with pytest.raises(ValueError, match=f"{tmp_path}: no band files found"):
        detect_layout(tmp_path)
    with pytest.raises(ValueError, match="unknown Sentinel-2 band name 'B13'"):
        detect_layout(MAJOR_TOM_CROP, select_bands=["B13"])


def test_header_matches_the_pixels_read():
    band_file = os.path.join(BEN_V1, "S2A_MSIL2A_20170613T101031_87_48_B05.tif")
    header = read_header(band_file)
    assert (header.count, header.height, header.width, header.dtype, header.nodata) == (1, 60, 60, "uint16", None)
    assert header.transform.a == 20.0 and header.crs.to_epsg() == 32633
    assert header.band_names() == ["B05"]  # from the file name
    image = read_image(BEN_V1)  # on the 10 m grid of the same origin
    assert (image.metadata["crs"], image.metadata["transform"]) == (header.crs, header.transform @ Affine.scale(0.5))
    with pytest.raises(ValueError, match=r"band_names \(--band-names\) has 2 names but .*_B05\.tif has 1 bands"):
        header.band_names(["B05", "B06"])
    with pytest.raises(ValueError, match=r"River_1\.tif should hold the single band B06 but has 13 bands"):
        read_header(EUROSAT_FILE).check_single_band("B06")


def test_unreadable_header_names_the_file(tmp_path):
    broken = tmp_path / "B02.tif"
    broken.write_bytes(b"not a GeoTIFF")
    with pytest.raises(ValueError, match=f"cannot read {broken}: not a readable GeoTIFF"):
        read_header(broken)


@pytest.mark.parametrize("name,baseline,full", [
    ("S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419", "0400", True),  # Major-TOM product folder
    ("S2A_MSIL1C_20200823T054639_N0209_R105_T43RCP_20200823T054639.SAFE", "0209", True),
    ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43", "9999", False),  # reBEN patch: no generation time
    ("s2b_msil2a_20200223t032739_n9999_r018_t48que_20230924t183543", "9999", True),
])
def test_one_product_name_pattern(name, baseline, full):
    match = PRODUCT_NAME_RE.match(name)
    assert match.group("baseline") == baseline and bool(match.group("generation")) == full
    assert product_id(os.path.join("/data", name, "B02.tif")) == (match.group(0) if full else "B02")


@pytest.mark.parametrize("name", ["S2B_MSIL2A_20170924T93020_69_24", "S2A_MSIL2A_20220706T085611_N0400_",
                                  "LC08_L2SP_196024_20220706", "S2A_MSIL3A_20220706T085611_N0400_R007_T33NZA"])
def test_names_that_are_not_product_names(name):
    assert PRODUCT_NAME_RE.match(name) is None
