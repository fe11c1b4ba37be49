"""Radiometry (processing/radiometry.py): offsets and scales decided per input, on real Sentinel-2 samples.

Products other than the ones in tests/data are written in each test from real pixels: the Major-TOM baseline
04.00 crop re-encoded as a pre-04.00 product or inside a SAFE layout, EuroSAT tiles as float reflectance, x1000
values or with GeoTIFF scale/offset tags.
"""

import contextlib
import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.radiometry import (RULES_VERSION, RadiometryWarning, find_product_metadata,
                                                  product_metadata_radiometry, resolve_radiometry)
from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.processing.sentinel2_io import read_image

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
MAJOR_TOM = glob.glob(os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R", "*_N0400_*"))[0]
PRODUCT = os.path.basename(MAJOR_TOM)  # S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419
MTD = os.path.join(DATA, "sentinel2-safe-metadata", "MTD_MSIL2A.xml")
EUROSAT_TIF = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
BEN_V2 = glob.glob(os.path.join(DATA, "bigearthnet-v2", "*", "*_75_43"))[0]
ONE_LEVEL = 1 / 255 + 1e-6

# sha256[:16] of the uint8 levels of `normalise()` on these samples, computed with main's image processor before
# radiometry existed (18091ae): the samples must keep exactly these values.
TODAYS_LEVELS = {
    "bigearthnet-v1/S2A_MSIL2A_20170613T101031_87_48": "ef0e252555d10e1b",
    "bigearthnet-v1/S2B_MSIL2A_20180204T94161_57_38": "d23b9c027eccf3c4",
    "bigearthnet-v2/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43":
        "8280a8b51aaffd3c",
    "ssl4eo-s12/s2a/0000200/20200604T054639_20200604T054831_T43RCP": "8c847074c84dcbf4",
    "eurosat-ms/Forest/Forest_1.tif": "9931c991a8cecf21",
    "eurosat-ms/SeaLake/SeaLake_1.tif": "d644628c6109c169",
    "eurosat-ms/Industrial/Industrial_1.tif": "ca63cb92dc13a427",
}


@pytest.fixture
def processor():
    return SpectralImageProcessor()


def copy_raster(src, dst, transform=lambda a: a, dtype=None, **update):
    """Write `transform(pixels of src)` to `dst` with src's georeferencing; `update` amends the profile (e.g.
    nodata) and `scales`/`offsets` set GeoTIFF tags."""
    scales, offsets = update.pop("scales", None), update.pop("offsets", None)
    with rasterio.open(src) as ds:
        profile, data, descriptions = ds.profile, ds.read(), ds.descriptions
    profile.update(dtype=dtype or profile["dtype"], **update)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(transform(data).astype(profile["dtype"]))
        out.descriptions = descriptions
        if scales is not None:
            out.scales, out.offsets = scales, offsets
    return dst


def copy_bands(folder, dst, transform=lambda a: a, name=lambda band: f"{band}.tif", **update):
    for path in sorted(glob.glob(os.path.join(folder, "B*.tif"))):
        copy_raster(path, os.path.join(dst, name(os.path.splitext(os.path.basename(path))[0])), transform, **update)
    return str(dst)


def without_offset(data):
    """A baseline 04.00 product's DNs as a pre-04.00 product stores them (the 0 fill stays 0)."""
    return np.where(data > 0, data.astype(np.int32) - 1000, 0)


def mean_levels(a, b):
    return float((a - b).abs().mean() * 255)


# ---------------------------------------------------------------------------------------------- product offsets


def test_baseline_0400_and_pre_0400_products_reach_the_model_alike(tmp_path, processor):
    old = copy_bands(MAJOR_TOM, tmp_path / PRODUCT.replace("_N0400_", "_N0300_"), without_offset)
    new = processor(MAJOR_TOM, return_metadata=True)
    before = processor(old, return_metadata=True)
    assert (new["pixel_values"] - before["pixel_values"]).abs().max() <= ONE_LEVEL
    assert mean_levels(new["pixel_values"], before["pixel_values"]) == 0.0
    assert new["metadata"][0]["radiometry"]["source"] == "product_name"
    assert new["metadata"][0]["radiometry"]["offset"] == -1000.0
    assert "04.00 >= 04.00" in new["metadata"][0]["radiometry"]["detail"]
    assert before["metadata"][0]["radiometry"]["offset"] == 0.0
    # what the model saw before the rule existed: the 1000 offset left in
    ignored = processor(MAJOR_TOM, input_offset=0)["pixel_values"]
    assert mean_levels(ignored, before["pixel_values"]) > 20


def test_zero_fill_is_no_data_before_the_offset(tmp_path, processor):
    def fill_corner(data):
        data = data.copy()
        data[:, : data.shape[1] // 4, : data.shape[2] // 4] = 0
        return data

    new = copy_bands(MAJOR_TOM, tmp_path / PRODUCT, fill_corner, nodata=0)
    old = copy_bands(MAJOR_TOM, tmp_path / PRODUCT.replace("_N0400_", "_N0300_"),
                     lambda data: without_offset(fill_corner(data)), nodata=0)
    a, b = processor(new, return_metadata=True), processor(old, return_metadata=True)
    valid = a["metadata"][0]["valid_mask"]
    assert not valid[:, :30, :30].any() and valid[:, 40:, 40:].all()
    assert a["metadata"][0]["band_mask"] == [True] * 12
    assert np.array_equal(valid, b["metadata"][0]["valid_mask"])
    assert (a["pixel_values"] - b["pixel_values"]).abs().max() <= ONE_LEVEL


def write_safe(tmp_path, metadata_text, transform=lambda band, data: data):
    """A SAFE-layout product from the Major-TOM crop: GeoTIFF bands (the reader's format) named as in a granule,
    and the product metadata at the SAFE root. Returns (SAFE folder, IMG_DATA folder)."""
    safe = tmp_path / f"{PRODUCT}.SAFE"
    images = safe / "GRANULE" / "L2A_T33NZA_A036725_20220706T090226" / "IMG_DATA"
    for path in sorted(glob.glob(os.path.join(MAJOR_TOM, "B*.tif"))):
        band = os.path.splitext(os.path.basename(path))[0]
        copy_raster(path, str(images / f"T33NZA_20220706T085611_{band}.tif"), lambda data: transform(band, data))
    (safe / "MTD_MSIL2A.xml").write_text(metadata_text)
    return safe, str(images)


def test_safe_product_metadata_gives_the_numbers_of_the_name_rule(tmp_path, processor):
    safe, images = write_safe(tmp_path, Path(MTD).read_text())
    from_metadata = processor(images, return_metadata=True)
    radiometry = from_metadata["metadata"][0]["radiometry"]
    assert radiometry["source"] == "product_metadata"
    assert (radiometry["offset"], radiometry["scale"], radiometry["band_offsets"]) == (-1000.0, 1.0, {})
    assert str(safe / "MTD_MSIL2A.xml") in radiometry["detail"] and "05.10" in radiometry["detail"]
    assert torch.equal(from_metadata["pixel_values"], processor(MAJOR_TOM)["pixel_values"])
    assert find_product_metadata(str(safe)) == find_product_metadata(images) == str(safe / "MTD_MSIL2A.xml")
    assert resolve_radiometry(images).source == resolve_radiometry(str(safe)).source == "product_metadata"


def test_per_band_offsets_follow_the_band_ids_of_the_metadata(tmp_path, processor):
    # band id 8 is B8A (Spectral_Information); store B8A with offset -900 instead of -1000
    text = Path(MTD).read_text().replace('<BOA_ADD_OFFSET band_id="8">-1000<', '<BOA_ADD_OFFSET band_id="8">-900<')
    _, images = write_safe(tmp_path, text, lambda band, data: without_offset(data) + 900 if band == "B8A" else data)
    result = processor(images, return_metadata=True)
    assert result["metadata"][0]["radiometry"]["band_offsets"] == {"B8A": -900.0}
    assert torch.equal(result["pixel_values"], processor(MAJOR_TOM)["pixel_values"])


@pytest.mark.parametrize("edit,name,expected", [
    (lambda t: t.replace("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET").replace("BOA_QUANTIFICATION_VALUE",
                                                                       "QUANTIFICATION_VALUE"),
     "MTD_MSIL1C.xml", (-1000.0, 1.0)),
    (lambda t: re.sub(r"<BOA_ADD_OFFSET_VALUES_LIST>.*</BOA_ADD_OFFSET_VALUES_LIST>", "", t, flags=re.S),
     "MTD_MSIL2A.xml", (0.0, 1.0)),  # a pre-04.00 product: no offsets
    (lambda t: t.replace('<BOA_QUANTIFICATION_VALUE unit="none">10000<', '<BOA_QUANTIFICATION_VALUE unit="none">1000<'),
     "MTD_MSIL2A.xml", (-1000.0, 10.0)),
])
def test_product_metadata_variants(tmp_path, edit, name, expected):
    path = tmp_path / "X.SAFE" / name
    path.parent.mkdir()
    path.write_text(edit(Path(MTD).read_text()))
    radiometry = product_metadata_radiometry(str(path))
    assert (radiometry.offset, radiometry.scale, radiometry.source) == (*expected, "product_metadata")


def test_unreadable_product_metadata_names_the_file(tmp_path):
    path = tmp_path / "MTD_MSIL2A.xml"
    path.write_text(Path(MTD).read_text().replace("BOA_QUANTIFICATION_VALUE", "SOMETHING_ELSE"))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*QUANTIFICATION_VALUE"):
        resolve_radiometry(str(path))
    path.write_text("<truncated")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        resolve_radiometry(str(path))


def test_geotiff_scale_offset_tags(tmp_path, processor):
    # DN = reflectance x 10000 + 1000 with GDAL tags physical = DN * 1e-4 - 0.1 (reflectance)
    tagged = copy_raster(EUROSAT_TIF, str(tmp_path / "tagged.tif"), lambda data: data + 1000,
                         scales=(1e-4,) * 13, offsets=(-0.1,) * 13)
    result = processor(tagged, return_metadata=True)
    radiometry = result["metadata"][0]["radiometry"]
    assert radiometry["source"] == "geotiff_tags"
    assert radiometry["offset"] == pytest.approx(-1000.0) and radiometry["scale"] == pytest.approx(1.0)
    assert (result["pixel_values"] - processor(EUROSAT_TIF)["pixel_values"]).abs().max() <= ONE_LEVEL
    assert read_image(tagged).metadata["scale_offset_tags"]["B02"] == pytest.approx((1e-4, -0.1))


def test_product_name_rule_and_contract():
    assert resolve_radiometry(MAJOR_TOM).offset == -1000.0
    named = resolve_radiometry(BEN_V2)  # reBEN: N9999, reprocessed, no offset
    assert (named.source, named.offset) == ("product_name", 0.0) and "N9999" in named.detail
    assert resolve_radiometry(EUROSAT_TIF).as_dict()["source"] == "none"
    assert resolve_radiometry(read_image(MAJOR_TOM)).offset == -1000.0
    assert resolve_radiometry(np.zeros((12, 8, 8))).source == "none"
    explicit = resolve_radiometry(MAJOR_TOM, RadiometrySettings(input_offset=0))
    assert (explicit.offset, explicit.scale, explicit.source) == (0.0, 1.0, "explicit")
    # settings without explicit values leave the decision to the rules
    assert resolve_radiometry(MAJOR_TOM, RadiometrySettings(strict=True)).source == "product_name"


def test_settings_are_one_frozen_validated_object():
    settings = RadiometrySettings(-1000)
    assert (settings.input_offset, settings.input_scale, settings.strict) == (-1000.0, None, False)
    assert settings.cache_key() == {"rules_version": RULES_VERSION, "input_offset": -1000.0, "input_scale": None}
    assert RadiometrySettings(-1000, strict=True).cache_key() == settings.cache_key()  # strict changes no value
    assert RadiometrySettings(**settings.as_dict()) == settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.input_offset = 0
    with pytest.raises(ValueError, match=re.escape("input_scale=0.0: expected a positive finite number")):
        RadiometrySettings(input_scale=0)
    with pytest.raises(ValueError, match=re.escape("input_offset=nan: expected a finite number")):
        RadiometrySettings(input_offset=float("nan"))


def test_the_processor_takes_the_settings_whole_or_as_loose_kwargs(processor):
    settings = RadiometrySettings(input_offset=-1000, strict=True)
    whole = processor(MAJOR_TOM, radiometry=settings, return_metadata=True)
    loose = processor(MAJOR_TOM, input_offset=-1000, strict=True, return_metadata=True)
    assert torch.equal(whole["pixel_values"], loose["pixel_values"])
    assert whole["metadata"][0]["radiometry"]["source"] == "explicit"
    assert processor.radiometry_settings(input_offset=-1000, strict=True) == settings
    configured = SpectralImageProcessor(input_offset=-1000, strict=True)
    assert configured.radiometry_settings() == settings
    assert configured.radiometry_settings(strict=False) == RadiometrySettings(-1000)
    # the settings object is the whole handling of the call: the processor's configured values do not mix in
    assert configured.radiometry_settings(RadiometrySettings()) == RadiometrySettings()
    with pytest.raises(TypeError, match="pass radiometry= or input_offset=, not both"):
        processor(MAJOR_TOM, radiometry=settings, input_offset=0)
    with pytest.raises(ValueError, match=re.escape("input_scale=-1.0: expected a positive finite number")):
        SpectralImageProcessor(input_scale=-1)


# ---------------------------------------------------------------------------------------------- values


def test_float_reflectance_is_scaled_with_a_warning_naming_the_file(tmp_path, processor):
    path = copy_raster(EUROSAT_TIF, str(tmp_path / "forest_reflectance.tif"), lambda data: data / 10000.0,
                       dtype="float32")
    original = processor(EUROSAT_TIF)["pixel_values"]
    with pytest.warns(RadiometryWarning, match=re.escape(path) + ".*reflectance range"):
        result = processor(path, return_metadata=True)
    assert (result["pixel_values"] - original).abs().max() <= ONE_LEVEL
    assert mean_levels(result["pixel_values"], original) == 0.0
    radiometry = result["metadata"][0]["radiometry"]
    assert (radiometry["source"], radiometry["offset"], radiometry["scale"]) == ("float_reflectance", 0.0, 10000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RadiometryWarning)
        explicit = processor(path, input_scale=10000)
    assert torch.equal(explicit["pixel_values"], result["pixel_values"])
    # input_scale overrides the recognition: reflectance read as x 10000 is implausibly dark
    with pytest.warns(RadiometryWarning, match=re.escape(path) + ".*band B01: 99th percentile"):
        processor(path, input_scale=1)
    # an array in reflectance: the same numbers
    with pytest.warns(RadiometryWarning, match="the input array"):
        array = processor(read_image(EUROSAT_TIF).data / np.float32(10000))["pixel_values"]
    assert torch.equal(array, original)


def test_x1000_values_warn_and_strict_raises_naming_file_and_band(tmp_path, processor):
    path = copy_raster(EUROSAT_TIF, str(tmp_path / "forest_x1000.tif"), lambda data: data * 1000.0, dtype="float32")
    with pytest.warns(RadiometryWarning, match=re.escape(path) + ".*band B01: median .* saturate") as record:
        result = processor(path, return_metadata=True)
    assert "band B12" in str(record[0].message)
    assert set(result["metadata"][0]["radiometry"]["implausible"]) == set(processor.band_names)
    assert result["pixel_values"].min() == 1.0  # every pixel saturated
    with pytest.raises(ValueError, match=re.escape(path) + ".*band B02"):
        processor(path, strict=True)
    with pytest.raises(ValueError, match=re.escape(path) + ".*band B02"):
        SpectralImageProcessor(strict=True)(path)


def test_a_wrong_offset_gives_negative_reflectance(tmp_path, processor):
    with pytest.warns(RadiometryWarning, match=re.escape(BEN_V2) + ".*band B02: .*negative reflectance"):
        result = processor(BEN_V2, input_offset=-1000, return_metadata=True)
    assert "B08" not in result["metadata"][0]["radiometry"]["implausible"]  # bright enough to stay positive


@pytest.mark.parametrize("relative", sorted(TODAYS_LEVELS))
def test_samples_keep_todays_pixel_values(relative, processor):
    path = os.path.join(DATA, relative)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RadiometryWarning)
        result = processor(path, return_metadata=True)
        values, _, metadata = processor.normalise(processor.read(path))
    radiometry = result["metadata"][0]["radiometry"]
    assert (radiometry["offset"], radiometry["scale"], radiometry["implausible"]) == (0.0, 1.0, {})
    assert radiometry["source"] == ("product_name" if "N9999" in relative else "none")
    assert torch.equal(result["pixel_values"], processor(path, input_offset=0, input_scale=1)["pixel_values"])
    levels = np.rint(values * 255).astype(np.uint8)
    assert hashlib.sha256(levels.tobytes()).hexdigest()[:16] == TODAYS_LEVELS[relative]


# ---------------------------------------------------------------------------------------------- integration


@pytest.fixture
def x1000(tmp_path):
    return copy_raster(EUROSAT_TIF, str(tmp_path / "forest_x1000.tif"), lambda data: data * 1000.0, dtype="float32")


def test_processor_kwargs_and_pipeline(tiny_model_dir, x1000):
    from transformers import AutoProcessor, pipeline

    assert os.path.isfile(os.path.join(tiny_model_dir, "radiometry.py"))  # travels with the remote code
    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    inputs = processor(images=[MAJOR_TOM], text=["<image>"], input_offset=0, return_metadata=True)
    assert inputs["metadata"][0]["radiometry"]["source"] == "explicit"
    # the repository's settings object works on the model dir's own copy of the processor too
    whole = processor(images=[MAJOR_TOM], text=["<image>"], radiometry=RadiometrySettings(input_offset=0),
                      return_metadata=True)
    assert torch.equal(whole["pixel_values"], inputs["pixel_values"])
    assert whole["metadata"][0]["radiometry"]["source"] == "explicit"
    assert processor(images=[MAJOR_TOM], text=["<image>"], return_metadata=True)["metadata"][0]["radiometry"][
        "offset"] == -1000.0
    with pytest.raises(ValueError, match=re.escape(x1000) + ".*band B02"):
        processor(images=[x1000], text=["<image>"], strict=True)
    pipe = pipeline("image-text-to-text", model=tiny_model_dir, trust_remote_code=True)
    with pytest.raises(ValueError, match=re.escape(x1000) + ".*band B02"):
        pipe(images=x1000, text="<image>", strict=True, max_new_tokens=1)
    with pytest.raises(ValueError, match=re.escape(x1000) + ".*band B02"):
        pipe(images=x1000, text="<image>", radiometry=RadiometrySettings(strict=True), max_new_tokens=1)
    chat = pipe.processor.build_messages("caption", image=x1000)
    with pytest.raises(ValueError, match=re.escape(x1000) + ".*band B02"):
        pipe(text=chat, processor_kwargs={"strict": True}, max_new_tokens=1)


def run_cli(argv):
    from spectral_llava.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, [json.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


def test_caption_and_classify_cli_flags_and_outputs(tiny_model_dir, x1000):
    # the model dir's remote-code copy of RadiometryWarning is another class: match its message
    with pytest.warns(UserWarning, match=re.escape(BEN_V2) + ".*negative reflectance"):
        code, lines, _ = run_cli(["caption", "--model", tiny_model_dir, MAJOR_TOM, BEN_V2, "--input-offset", "-1000",
                                  "--max-new-tokens", "2", "--resize-whole-image"])
    assert code == 0 and [line["image"] for line in lines] == [MAJOR_TOM, BEN_V2]
    assert [(line["radiometry"]["source"], line["radiometry"]["offset"]) for line in lines] == [
        ("explicit", -1000.0)] * 2
    assert list(lines[1]["radiometry"]["implausible"]) == ["B01", "B02", "B03", "B04"]  # BEN_V2 has no offset
    code, _, stderr = run_cli(["caption", "--model", tiny_model_dir, x1000, "--strict", "--max-new-tokens", "2",
                               "--resize-whole-image"])
    assert code == 2 and x1000 in stderr and "band B02" in stderr
    code, lines, _ = run_cli(["classify", "--model", tiny_model_dir, MAJOR_TOM, EUROSAT_TIF, "--max-new-tokens", "2",
                              "--resize-whole-image"])
    assert code == 0
    assert [(line["radiometry"]["source"], line["radiometry"]["offset"]) for line in lines] == [
        ("product_name", -1000.0), ("none", 0.0)]


@pytest.mark.parametrize("command", [["caption", "--model", "M", "P"], ["classify", "--model", "M", "P"],
                                     ["evaluate", "linear-probe", "--model", "M", "--eurosat", "E", "--output", "O"],
                                     ["evaluate", "tsne", "--model", "M", "--eurosat", "E", "--output", "O"],
                                     ["evaluate", "classify", "--model", "M", "--output", "O"],
                                     ["evaluate", "quality", "--model", "M", "--dataset", "D", "--output", "O"],
                                     ["build-dataset", "--output", "O"],
                                     ["map", "P", "--model", "M", "--output", "O.parquet"]])
def test_every_image_reading_command_takes_the_flags(command):
    from spectral_llava.cli import build_parser

    args = build_parser().parse_args(command + ["--input-offset", "-1000", "--input-scale", "1", "--strict"])
    assert (args.input_offset, args.input_scale, args.strict) == (-1000.0, 1.0, True)
    # refused before any model or file is opened, naming the flag
    code, _, stderr = run_cli(command + ["--input-scale", "0"])
    assert code == 2 and "--input-scale 0" in stderr
