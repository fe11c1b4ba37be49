"""Readers and SpectralImageProcessor on the real Sentinel-2 samples in tests/data."""

import glob
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.warp import Resampling, reproject
from torch.utils.data import DataLoader

from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.sentinel2_io import EUROSAT_FILE_ORDER, SPECTRALGPT_BANDS, canonical_band_name, read_image
from testing_utils import DATA

EUROSAT = os.path.join(DATA, "eurosat-ms")
BEN_V1 = os.path.join(DATA, "bigearthnet-v1")
BEN_PATCH = "S2A_MSIL2A_20170613T101031_87_48"
BEN_FOLDER = os.path.join(BEN_V1, BEN_PATCH)
BEN_V2_FOLDER = glob.glob(os.path.join(DATA, "bigearthnet-v2", "*", "*_75_43"))[0]
SSL4EO_FOLDER = glob.glob(os.path.join(DATA, "ssl4eo-s12", "s2a", "*", "*"))[0]
MAJOR_TOM_FOLDER = glob.glob(os.path.join(DATA, "major-tom-s2l2a", "*", "*", "*"))[0]


def band(image, name):
    return image.data[image.band_names.index(name)]


def recipe(values, name):
    """SpectralGPT normalisation of one band, written out from the published recipe."""
    index = SPECTRALGPT_BANDS.index(name)
    processor = SpectralImageProcessor()
    low = processor.band_mean[index] - 2 * processor.band_std[index]
    high = processor.band_mean[index] + 2 * processor.band_std[index]
    scaled = np.clip((values.astype(np.float64) - low) / (high - low) * 255, 0, 255).astype(np.uint8)
    return scaled.astype(np.float32) / 255


@pytest.mark.parametrize("alias,canonical", [("B2", "B02"), ("b02", "B02"), ("B02", "B02"), ("B8a", "B8A"),
                                             ("8A", "B8A"), ("b8A", "B8A"), ("B10", "B10"), ("12", "B12"),
                                             (" B1 ", "B01")])
def test_band_aliases_canonicalise(alias, canonical):
    assert canonical_band_name(alias) == canonical


@pytest.mark.parametrize("name", ["B13", "B00", "B8B", "B9A", "NIR", "", "B123"])
def test_unknown_band_name_is_a_clear_error(name):
    with pytest.raises(ValueError, match="unknown Sentinel-2 band name"):
        canonical_band_name(name)
    with pytest.raises(ValueError, match=repr(name).replace("\\", "\\\\")):
        SpectralImageProcessor(band_names=list(SPECTRALGPT_BANDS[:-1]) + [name])


def test_eurosat_layout_and_b8a_lands_in_channel_8():
    path = os.path.join(EUROSAT, "Forest", "Forest_1.tif")
    image = read_image(path)
    assert image.band_names == list(EUROSAT_FILE_ORDER)
    with rasterio.open(path) as dataset:
        b8a_in_file = dataset.read(13).astype(np.float32)  # B8A is the file's last band
        b09_in_file = dataset.read(9).astype(np.float32)
    out = SpectralImageProcessor(image_size=64)(path)
    pixel_values = out["pixel_values"][0].numpy()
    assert SPECTRALGPT_BANDS[8] == "B8A"
    np.testing.assert_array_equal(pixel_values[8], recipe(b8a_in_file, "B8A"))
    np.testing.assert_array_equal(pixel_values[9], recipe(b09_in_file, "B09"))
    assert out["band_mask"].all()


def test_sealake_nir_is_darker_than_red():
    image = read_image(os.path.join(EUROSAT, "SeaLake", "SeaLake_1.tif"))
    assert band(image, "B08").mean() < band(image, "B04").mean()


@pytest.mark.parametrize("number", range(1, 11))
def test_forest_ndvi_is_high(number):
    image = read_image(os.path.join(EUROSAT, "Forest", f"Forest_{number}.tif"))
    nir, red = band(image, "B08"), band(image, "B04")
    assert ((nir - red) / (nir + red)).mean() > 0.5


def test_hand_computed_normalisation():
    # Per band: min = mean - 2 std, max = mean + 2 std, uint8(clip((x - min) / (max - min) * 255)) / 255.
    # B01: min 103.888, x = 50 -> below min -> 0.
    # B02: min -116.1860919, max 2484.9510169, x = 1000 -> 1116.1860919 / 2601.1371088 * 255 = 109.42 -> 109.
    # B04: max 3066.7226 , x = 5000 -> above max -> 255.
    # B8A: x = mean 1972.62420416 -> exactly 127.5 -> 127;  B12: min -927.2854614, max 3423.1228638,
    # x = 100 -> 1027.2854614 / 4350.4083252 * 255 = 60.21 -> 60.  Every other band at its mean -> 127.
    processor = SpectralImageProcessor(image_size=16)
    values = {name: mean for name, mean in zip(processor.band_names, processor.band_mean)}
    values.update(B01=50.0, B02=1000.0, B04=5000.0, B12=100.0)
    expected = {name: 127 for name in SPECTRALGPT_BANDS}
    expected.update(B01=0, B02=109, B04=255, B12=60)
    array = np.stack([np.full((16, 16), values[name], dtype=np.float32) for name in SPECTRALGPT_BANDS])
    pixel_values = processor(array)["pixel_values"][0]
    for index, name in enumerate(SPECTRALGPT_BANDS):
        assert torch.all(pixel_values[index] == np.float32(expected[name]) / np.float32(255)), name


def test_resampled_20m_band_lines_up_with_the_10m_grid():
    image = read_image(BEN_FOLDER)
    assert image.band_names == list(SPECTRALGPT_BANDS)
    assert image.data.shape == (12, 120, 120)
    with rasterio.open(os.path.join(BEN_FOLDER, f"{BEN_PATCH}_B02.tif")) as b02, \
            rasterio.open(os.path.join(BEN_FOLDER, f"{BEN_PATCH}_B05.tif")) as b05:
        assert image.metadata["transform"] == b02.transform
        assert image.metadata["crs"] == b02.crs
        assert tuple(image.metadata["bounds"]) == tuple(b02.bounds)
        assert b05.shape == (60, 60)
        gdal = np.zeros((120, 120), dtype=np.float32)
        reproject(b05.read(1).astype(np.float32), gdal, src_transform=b05.transform, src_crs=b05.crs,
                  dst_transform=b02.transform, dst_crs=b02.crs, resampling=Resampling.bilinear)
        np.testing.assert_allclose(band(image, "B05"), gdal, rtol=1e-5, atol=1e-2)
        # nearest: each 20 m pixel covers exactly 2 x 2 pixels of the 10 m grid
        nearest = read_image(BEN_FOLDER, resampling="nearest")
        np.testing.assert_array_equal(band(nearest, "B05")[::2, ::2], b05.read(1))
        np.testing.assert_array_equal(band(nearest, "B05")[1::2, 1::2], b05.read(1))
    with pytest.raises(ValueError, match="resampling='bicubicc'"):
        read_image(BEN_FOLDER, resampling="bicubicc")


def test_ssl4eo_geographic_grids_are_warped_by_georeferencing():
    image = read_image(SSL4EO_FOLDER)
    assert image.band_names == list(SPECTRALGPT_BANDS)  # s2a has no B10
    with rasterio.open(os.path.join(SSL4EO_FOLDER, "B2.tif")) as b2, \
            rasterio.open(os.path.join(SSL4EO_FOLDER, "B5.tif")) as b5:
        assert image.data.shape[1:] == b2.shape
        assert image.metadata["crs"].to_epsg() == 4326 and image.metadata["transform"] == b2.transform
        # the 20 m grid's origin is offset by half a 10 m pixel: the generic reproject path handles it
        assert b5.transform.c != b2.transform.c
        gdal = np.full(b2.shape, np.nan, dtype=np.float32)
        reproject(b5.read(1).astype(np.float32), gdal, src_transform=b5.transform, src_crs=b5.crs,
                  dst_transform=b2.transform, dst_crs=b2.crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    np.testing.assert_allclose(band(image, "B05"), gdal, equal_nan=True)
    assert np.isfinite(band(image, "B05")).mean() > 0.95


def test_major_tom_and_reben_v2_folders():
    image = read_image(MAJOR_TOM_FOLDER)  # B02.tif naming, cloud_mask.tif ignored
    assert image.band_names == list(SPECTRALGPT_BANDS) and image.data.shape == (12, 120, 120)
    with rasterio.open(os.path.join(MAJOR_TOM_FOLDER, "B02.tif")) as b02:
        assert image.metadata["crs"] == b02.crs and image.metadata["transform"] == b02.transform
    v2 = read_image(BEN_V2_FOLDER)
    assert v2.band_names == list(SPECTRALGPT_BANDS) and v2.data.shape == (12, 120, 120)
    assert v2.metadata["crs"].to_epsg() == 32633


def test_tiff_extension_and_flat_folder_of_several_patches(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for folder in sorted(glob.glob(os.path.join(BEN_V1, "*")))[:2]:
        for path in glob.glob(os.path.join(folder, "*.tif")):
            shutil.copy(path, flat / (os.path.basename(path)[:-4] + ".tiff"))
    with pytest.raises(ValueError, match="2 patches"):
        read_image(str(flat))
    first = os.path.basename(sorted(glob.glob(os.path.join(BEN_V1, "*")))[0])
    from_prefix = read_image(str(flat / first))
    np.testing.assert_array_equal(from_prefix.data, read_image(os.path.join(BEN_V1, first)).data)


def test_crs_and_metadata_travel_outside_the_tensors():
    processor = SpectralImageProcessor(image_size=32)
    out = processor([BEN_FOLDER, os.path.join(EUROSAT, "River", "River_1.tif")], return_metadata=True)
    assert set(out.keys()) == {"pixel_values", "band_mask", "metadata"}
    assert out["pixel_values"].shape == (2, 12, 32, 32) and out["pixel_values"].dtype == torch.float32
    ben, eurosat = out["metadata"]
    assert ben["crs"].to_epsg() == 32633 and ben["source"] == BEN_FOLDER
    with rasterio.open(os.path.join(EUROSAT, "River", "River_1.tif")) as dataset:
        assert eurosat["crs"] == dataset.crs and eurosat["transform"] == dataset.transform
    assert ben["valid_mask"].shape == (12, 120, 120) and ben["valid_mask"].all()


def test_arrays_tensors_and_layouts_agree():
    image = read_image(os.path.join(EUROSAT, "Highway", "Highway_1.tif"))
    processor = SpectralImageProcessor(image_size=64)
    reference = processor(image.data)["pixel_values"]  # 13 unnamed channels: EuroSAT order
    hwc = np.moveaxis(image.data, 0, -1)
    aliases = ["B1", "b2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "b8a"]
    np.testing.assert_array_equal(processor(hwc, band_names=aliases)["pixel_values"], reference)
    tensor = torch.from_numpy(image.data.astype(np.int32))
    np.testing.assert_array_equal(processor(tensor, band_names=aliases)["pixel_values"], reference)
    # a 12-band array in the model order, and a 4-D batch
    twelve = image.data[[EUROSAT_FILE_ORDER.index(name) for name in SPECTRALGPT_BANDS]]
    np.testing.assert_array_equal(processor(twelve)["pixel_values"], reference)
    batch = processor(np.stack([twelve, twelve]))["pixel_values"]
    assert batch.shape == (2, 12, 64, 64) and torch.equal(batch[1], reference[0])
    # band order of the input does not matter, names do
    order = np.random.default_rng(0).permutation(12)
    shuffled = processor(twelve[order], band_names=[SPECTRALGPT_BANDS[i] for i in order])["pixel_values"]
    np.testing.assert_array_equal(shuffled, reference)


def test_resize_is_torch_bicubic_and_centre_crop():
    image = read_image(BEN_FOLDER)
    processor = SpectralImageProcessor(image_size=128)
    native = SpectralImageProcessor(image_size=120)(BEN_FOLDER)["pixel_values"]
    resized = processor(BEN_FOLDER)["pixel_values"]
    expected = F.interpolate(native, size=(128, 128), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)
    cropped = SpectralImageProcessor(image_size=64, do_center_crop=True, crop_size=64)(image)["pixel_values"]
    torch.testing.assert_close(cropped, native[:, :, 28:92, 28:92], rtol=0, atol=0)


def test_nodata_is_filled_with_the_band_mean_and_masked():
    image = read_image(BEN_FOLDER)
    data = image.data.copy()
    data[3, :10, :] = 0  # B04: ten rows of L2A no-data
    data[4, :, :] = np.nan  # B05: entirely no-data
    processor = SpectralImageProcessor(image_size=120)
    out = processor(data, return_metadata=True)
    assert out["band_mask"][0].tolist() == [i != 4 for i in range(12)]
    filled = data[3].copy()
    filled[:10] = data[3, 10:].mean(dtype=np.float64)
    np.testing.assert_array_equal(out["pixel_values"][0, 3].numpy(), recipe(filled, "B04"))
    assert torch.all(out["pixel_values"][0, 4] == np.float32(127) / np.float32(255))
    valid = out["metadata"][0]["valid_mask"]
    assert not valid[3, :10].any() and valid[3, 10:].all() and not valid[4].any()


def test_missing_band_is_filled_masked_and_warned_once(tmp_path, caplog):
    folder = tmp_path / "patch"
    shutil.copytree(BEN_FOLDER, folder)
    os.remove(folder / f"{BEN_PATCH}_B01.tif")
    processor = SpectralImageProcessor(image_size=32)
    with caplog.at_level(logging.WARNING):
        first = processor(str(folder))
        processor(str(folder))
    assert first["band_mask"][0].tolist() == [False] + [True] * 11
    torch.testing.assert_close(first["pixel_values"][0, 0], torch.full((32, 32), 127 / 255), rtol=0, atol=1e-6)
    warnings = [record for record in caplog.records if "B01" in record.getMessage()]
    assert len(warnings) == 1 and "missing" in warnings[0].getMessage()


def test_image_processor_round_trip(tmp_path):
    from transformers import AutoImageProcessor

    processor = SpectralImageProcessor(image_size=48, resampling="nearest", patch_size=16)
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "SpectralImageProcessor" and loaded.band_names == list(SPECTRALGPT_BANDS)
    assert (loaded.image_size, loaded.resampling, loaded.patch_size) == (48, "nearest", 16)
    assert loaded.band_mean == processor.band_mean and loaded.band_std == processor.band_std
    torch.testing.assert_close(loaded(BEN_FOLDER)["pixel_values"], processor(BEN_FOLDER)["pixel_values"])


def test_dataloader_with_workers():
    class Folders(torch.utils.data.Dataset):
        def __init__(self):
            self.folders = sorted(glob.glob(os.path.join(BEN_V1, "*"))) * 2
            self.processor = SpectralImageProcessor(image_size=32)

        def __len__(self):
            return len(self.folders)

        def __getitem__(self, index):
            out = self.processor(self.folders[index])
            return out["pixel_values"][0], out["band_mask"][0]

    batches = list(DataLoader(Folders(), batch_size=4, num_workers=2))
    pixel_values = torch.cat([b[0] for b in batches])
    assert pixel_values.shape == (12, 12, 32, 32)
    torch.testing.assert_close(pixel_values[0], pixel_values[6])
    assert -0.1 <= pixel_values.min() and pixel_values.max() <= 1.1  # bicubic may overshoot [0, 1] slightly


# ---- errors: each names the file, band or argument ------------------------------------------------------------

def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(b"this is not a GeoTIFF" * 50)
    with pytest.raises(ValueError, match=f"cannot read {path}"):
        read_image(str(path))


def test_truncated_file(tmp_path):
    source = os.path.join(EUROSAT, "Forest", "Forest_1.tif")
    path = tmp_path / "Forest_1.tif"
    path.write_bytes(Path(source).read_bytes()[: os.path.getsize(source) // 2])
    with pytest.raises(ValueError, match=f"{path}.*truncated"):
        read_image(str(path))


def test_truncated_band_file_in_a_folder(tmp_path):
    folder = tmp_path / "patch"
    shutil.copytree(BEN_FOLDER, folder)
    b08 = folder / f"{BEN_PATCH}_B08.tif"
    b08.write_bytes(b08.read_bytes()[:5000])
    with pytest.raises(ValueError, match=str(b08)):
        SpectralImageProcessor()(str(folder))


def test_missing_path_and_folder_without_band_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tif"):
        read_image(str(tmp_path / "nowhere.tif"))
    (tmp_path / "notes.txt").write_text("no rasters here")
    (tmp_path / "cloud_mask.tif").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path}: no band files"):
        read_image(str(tmp_path))


def test_unnamed_array_of_unknown_layout():
    with pytest.raises(ValueError, match="band_names"):
        read_image(np.ones((5, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="band_names has 3 names"):
        read_image(np.ones((5, 32, 32), dtype=np.float32), band_names=["B02", "B03", "B04"])


def test_all_nodata_image():
    with pytest.raises(ValueError, match="the input array: every pixel of every band is no-data"):
        SpectralImageProcessor()(np.zeros((12, 32, 32), dtype=np.uint16))


def test_image_smaller_than_one_patch():
    processor = SpectralImageProcessor(patch_size=8)
    with pytest.raises(ValueError, match="7x7 pixels, smaller than one 8x8 patch.*patch_size"):
        processor(np.full((12, 7, 7), 1000, dtype=np.uint16))
    folder_error = SpectralImageProcessor(patch_size=200)
    with pytest.raises(ValueError, match=f"{BEN_FOLDER}: the image is 120x120"):
        folder_error(BEN_FOLDER)


def test_band_names_for_a_folder_is_refused():
    with pytest.raises(ValueError, match="select_bands"):
        read_image(BEN_FOLDER, band_names=list(SPECTRALGPT_BANDS))


def test_downsampling_is_antialiased_torch_bicubic():
    native = SpectralImageProcessor(image_size=264)(SSL4EO_FOLDER)["pixel_values"]
    resized = SpectralImageProcessor(image_size=128)(SSL4EO_FOLDER)["pixel_values"]
    expected = F.interpolate(native, size=(128, 128), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)


def test_band_descriptions_name_the_bands_of_a_multiband_file(tmp_path):
    source = os.path.join(EUROSAT, "Residential", "Residential_1.tif")
    path = tmp_path / "rgb.tif"
    with rasterio.open(source) as dataset:
        profile = dict(dataset.profile, count=3)
        rgb = dataset.read([4, 3, 2])  # B04 B03 B02
    with rasterio.open(path, "w", **profile) as out:
        out.write(rgb)
        out.descriptions = ("B4", "B3 green", "b02")
    image = read_image(str(path))
    assert image.band_names == ["B04", "B03", "B02"]
    np.testing.assert_array_equal(band(image, "B03"), rgb[1])
    out = SpectralImageProcessor(image_size=64)(str(path))
    assert out["band_mask"][0].tolist() == [name in ("B02", "B03", "B04") for name in SPECTRALGPT_BANDS]
    np.testing.assert_array_equal(out["pixel_values"][0, 3].numpy(), recipe(rgb[0], "B04"))
    renamed = read_image(str(path), band_names=["B8A", "B03", "B02"])  # band_names= overrides descriptions
    assert renamed.band_names == ["B8A", "B03", "B02"]


def test_declared_nodata_is_not_blended_when_resampling(tmp_path):
    folder = tmp_path / "patch"
    shutil.copytree(BEN_FOLDER, folder)
    b05 = folder / f"{BEN_PATCH}_B05.tif"
    with rasterio.open(b05) as dataset:
        profile, values = dict(dataset.profile, nodata=0), dataset.read(1)
    values[:20, :20] = 0  # a declared no-data block in the 20 m band
    with rasterio.open(b05, "w", **profile) as out:
        out.write(values, 1)
    image = read_image(str(folder))
    resampled = band(image, "B05")
    assert np.isnan(resampled[:38, :38]).all()  # 10 m pixels fed only by no-data stay no-data
    assert np.isfinite(resampled[42:, 42:]).all() and resampled[42:, 42:].min() > 0
    out = SpectralImageProcessor(image_size=120)(image, return_metadata=True)
    valid = out["metadata"][0]["valid_mask"][SPECTRALGPT_BANDS.index("B05")]
    assert not valid[:38, :38].any() and valid[42:, 42:].all()
