"""Uploads -> one image path: single files, several band files, zips (safely unpacked), size and format limits."""

import shutil
import stat
import zipfile

import numpy as np
import pytest

from spectral_llava.processing.sentinel2_io import read_image
from spectral_llava.webapp.inputs import (InputError, InputLimits, available_samples, find_image, resolve_upload,
                                          safe_extract_zip)


@pytest.mark.parametrize("spellings", [("B1", "B2", "B3", "B8A"), ("B01", "B02", "B03", "B8A"),
                                       ("b1", "B02", "b03", "b8a")])
def test_uploaded_band_files_are_named_as_the_reader_names_them(tmp_path, data, spellings):
    """Band files uploaded as B1/B01/b8a... are read by the reader under the same canonical names, from the same
    pixels, as the Major-TOM folder they came from."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for spelling, band in zip(spellings, ("B01", "B02", "B03", "B8A")):
        shutil.copyfile(data.major_tom / f"{band}.tif", uploads / f"{spelling}.tif")
    source = resolve_upload(sorted(uploads.iterdir()), tmp_path / "work")
    assert source.name == "bands"
    image, reference = read_image(str(source)), read_image(str(data.major_tom), select_bands=["B01", "B02", "B03",
                                                                                               "B8A"])
    assert image.band_names == reference.band_names == ["B01", "B02", "B03", "B8A"]
    np.testing.assert_array_equal(image.data, reference.data)


def test_one_band_in_two_spellings_is_uploaded_twice(tmp_path, data):
    shutil.copyfile(data.major_tom / "B02.tif", tmp_path / "B2.tif")
    with pytest.raises(InputError, match=r"band B02 uploaded twice: B02\.tif and B2\.tif"):
        resolve_upload([data.major_tom / "B02.tif", tmp_path / "B2.tif"], tmp_path / "work")


def test_one_geotiff_is_used_in_place(tmp_path, data):
    assert resolve_upload([str(data.forest)], tmp_path) == data.forest


def test_several_band_files_become_one_patch_folder(tmp_path, data):
    files = sorted(data.ben_patch.glob("*_B*.tif"))
    source = resolve_upload([str(f) for f in files], tmp_path)
    assert source.is_dir() and source.name == data.ben_patch.name and source.parent.parent == tmp_path
    assert sorted(p.name for p in source.iterdir()) == sorted(f.name for f in files)
    np.testing.assert_array_equal(read_image(str(source)).data, read_image(str(data.ben_patch)).data)


def test_a_band_uploaded_twice_or_an_unnamed_file_is_refused(tmp_path, data):
    b02 = data.ben_patch / f"{data.ben_patch.name}_B02.tif"
    with pytest.raises(InputError, match="band B02 uploaded twice"):
        resolve_upload([str(b02), str(data.major_tom / "B02.tif")], tmp_path)
    with pytest.raises(InputError, match="cloud_mask.tif: several files were uploaded"):
        resolve_upload([str(b02), str(data.major_tom / "cloud_mask.tif")], tmp_path)


def test_what_is_not_sentinel2_input_gets_the_readers_message(tmp_path, data):
    """A text file, an RGB PNG, alone or among band files: the message the reader (and so the command line) gives."""
    from PIL import Image

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    picture = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(picture)
    for upload in ([notes], [picture], [data.major_tom / "B02.tif", picture]):
        bad = upload[-1]
        with pytest.raises(ValueError) as reader:
            read_image(str(bad))
        with pytest.raises(InputError) as app:
            resolve_upload([str(p) for p in upload], tmp_path)
        assert str(app.value) == str(reader.value)
        assert str(app.value).startswith(f"{bad} is not a Sentinel-2 multispectral input: ")


def test_corrupt_geotiff_is_refused_before_reading(tmp_path, data):
    corrupt = tmp_path / "scene.tif"
    corrupt.write_bytes(data.forest.read_bytes()[:300])
    with pytest.raises(InputError, match=r"cannot read .*scene\.tif: not a readable GeoTIFF"):
        resolve_upload([str(corrupt)], tmp_path)


def test_scene_over_the_pixel_limit_is_refused_from_headers(tmp_path, data):
    with pytest.raises(InputError, match=r"^Forest_1\.tif declares 64 x 64 pixels, over the limit of this server "
                                         r"\(spectral-llava app --max-scene-pixels\): 4,000 pixels; use `spectral-llava "
                                         r"map` on the command line for whole scenes$"):
        resolve_upload([str(data.forest)], tmp_path, InputLimits(max_scene_pixels=4000))
    assert resolve_upload([str(data.forest)], tmp_path, InputLimits(max_scene_pixels=64 * 64)) == data.forest


def test_zip_of_a_patch_folder_resolves_to_the_folder(tmp_path, data):
    archive = data.zip_folder(data.ben_patch, tmp_path / "patch.zip")
    source = resolve_upload([str(archive)], tmp_path / "work")
    assert source.name == data.ben_patch.name
    np.testing.assert_array_equal(read_image(str(source)).data, read_image(str(data.ben_patch)).data)


def test_zip_of_one_geotiff_and_of_a_safe_layout(tmp_path, data):
    with zipfile.ZipFile(tmp_path / "one.zip", "w") as bundle:
        bundle.write(data.forest, "nested/Forest_1.tif")
    assert resolve_upload([str(tmp_path / "one.zip")], tmp_path / "w1").name == "Forest_1.tif"

    product = "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419.SAFE"
    with zipfile.ZipFile(tmp_path / "safe.zip", "w") as bundle:
        bundle.writestr(f"{product}/MTD_MSIL2A.xml", "<xml/>")
        for band in ("B02", "B03", "B04", "B08"):
            bundle.write(data.major_tom / f"{band}.tif",
                         f"{product}/GRANULE/L2A_T33NZA/IMG_DATA/R10m/T33NZA_20220706T085611_{band}_10m.tif")
    assert resolve_upload([str(tmp_path / "safe.zip")], tmp_path / "w2").name == product


def _zip_with(path, name, data=b"x", attributes=None):
    with zipfile.ZipFile(path, "w") as bundle:
        info = zipfile.ZipInfo(name)
        if attributes is not None:
            info.external_attr = attributes
        bundle.writestr(info, data)
    return path


@pytest.mark.parametrize("name", ["../evil.tif", "/etc/evil.tif", "a/../../evil.tif", "C:/evil.tif"])
def test_zip_entries_outside_the_folder_are_refused(tmp_path, name):
    archive = _zip_with(tmp_path / "evil.zip", name)
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(InputError, match="points outside the archive"):
        safe_extract_zip(archive, destination)
    assert not (tmp_path / "evil.tif").exists() and not any(destination.rglob("*.tif"))


def test_zip_symlinks_are_refused(tmp_path):
    archive = _zip_with(tmp_path / "link.zip", "B02.tif", b"/etc/passwd", attributes=(stat.S_IFLNK | 0o777) << 16)
    with pytest.raises(InputError, match="symbolic link"):
        safe_extract_zip(archive, tmp_path)


def test_zip_size_and_entry_limits(tmp_path, data):
    archive = _zip_with(tmp_path / "big.zip", "B02.tif", b"\0" * 10_000)
    with pytest.raises(InputError, match="unpacks to 10,000 bytes, over the limit of 5,000 bytes"):
        safe_extract_zip(archive, tmp_path, InputLimits(max_unpacked_bytes=5_000))
    with pytest.raises(InputError, match="13 entries, more than the limit of 1"):
        safe_extract_zip(data.zip_folder(data.ben_patch, tmp_path / "p.zip"), tmp_path / "o", InputLimits(max_members=1))


def test_not_a_zip_and_an_empty_zip(tmp_path):
    fake = tmp_path / "broken.zip"
    fake.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match=r"broken\.zip: not a readable zip archive"):
        resolve_upload([str(fake)], tmp_path / "w")
    empty = _zip_with(tmp_path / "empty.zip", "readme.txt", b"hello")
    with pytest.raises(InputError, match="holds no GeoTIFF, JPEG2000 band file or SAFE product"):
        resolve_upload([str(empty)], tmp_path / "w")


def test_zip_of_two_patches_is_ambiguous(tmp_path, data):
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as bundle:
        for patch in ("a", "b"):
            bundle.write(data.ben_patch / f"{data.ben_patch.name}_B02.tif", f"{patch}/B02.tif")
    destination = tmp_path / "out"
    destination.mkdir()
    safe_extract_zip(tmp_path / "two.zip", destination)
    with pytest.raises(InputError, match="band files in 2 folders"):
        find_image(destination, "two.zip")


def test_shipped_samples_exist():
    samples = available_samples()
    assert len(samples) >= 8
    assert all(path.exists() for path in samples.values())


def test_stac_items_are_refused_with_a_pointer_to_map(tmp_path):
    item = tmp_path / "S2B_33UXP_20250302_0_L2A.json"
    item.write_text('{"type": "Feature", "stac_version": "1.0.0", "assets": {"red": {"href": "/etc/passwd"}}}')
    with pytest.raises(InputError, match=r"S2B_33UXP_20250302_0_L2A\.json: STAC items are not taken by the app .* "
                                         r"`spectral-llava map ITEM"):
        resolve_upload([str(item)], tmp_path / "work")
