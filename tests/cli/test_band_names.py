"""Inputs whose bands the file does not name (issue 20): `--band-names` on caption, classify, map and build-dataset,
and the one message of the reader for what is not Sentinel-2 input (an RGB PNG)."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import rasterio
from testing_utils import DATA

from spectral_llava.cli import main
from spectral_llava.processing.sentinel2_io import read_image

NAMED = ["B02", "B03", "B04", "B08"]
HINT = ("name its bands in file order: band_names=[...] in Python, --band-names B02,B03,... on the command line "
        "(caption, classify, map, build-dataset), the 'band names' field of the web app")


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def last_line(stderr: str) -> str:
    """The last line of a command's stderr (progress bars come before the error)."""
    return stderr.strip().splitlines()[-1]


def four_band_copy(source: str, target, bands=NAMED) -> str:
    """`bands` (B02, B03, B04, B08) of a real EuroSAT GeoTIFF in a GeoTIFF without band descriptions (an export)."""
    image = read_image(source)
    with rasterio.open(source) as dataset:
        profile = dataset.profile
    profile.update(count=len(bands))
    with rasterio.open(target, "w", **profile) as out:
        out.write(np.stack([image.data[image.band_names.index(band)] for band in bands]).astype(profile["dtype"]))
    return str(target)


@pytest.fixture(scope="module")
def four_band(tmp_path_factory) -> str:
    return four_band_copy(os.path.join(DATA, "eurosat-ms", "River", "River_1.tif"),
                          tmp_path_factory.mktemp("four") / "River_1_rgbn.tif")


def test_caption_and_classify_read_a_four_band_file_with_band_names(four_band, tiny_model, tiny_model_dir):
    from spectral_llava.inference import generate_answers

    code, _, err = run_cli("caption", "--model", tiny_model_dir, four_band, "--max-new-tokens", "3",
                           "--resize-whole-image")
    assert code == 2 and last_line(err) == (
        f"spectral-llava caption: error: {four_band} has 4 band(s) of uint16 values without Sentinel-2 band "
        f"descriptions, which is not a known layout (12 = SpectralGPT order, 13 = EuroSAT order); {HINT}")
    code, out, err = run_cli("caption", "--model", tiny_model_dir, four_band, "--max-new-tokens", "3",
                             "--band-names", "B2,B3,B4,B8", "--resize-whole-image")
    assert code == 0, err
    model, processor = tiny_model
    expected = generate_answers(model, processor, [four_band], "caption", max_new_tokens=3, band_names=NAMED)
    assert json.loads(out)["text"] == expected[0]["text"]
    code, out, err = run_cli("classify", "--model", tiny_model_dir, four_band, "--max-new-tokens", "3",
                             "--band-names", "B02,B03,B04,B08", "--resize-whole-image")
    assert code == 0 and json.loads(out)["image"] == four_band, err
    code, _, err = run_cli("caption", "--model", tiny_model_dir, four_band, "--band-names", "B2,B3,B4",
                       "--resize-whole-image")
    assert code == 2 and "band_names (--band-names) has 3 names but" in err and "has 4 bands" in err


def test_band_names_put_the_bands_where_the_named_file_has_them(four_band, tiny_model):
    """The 4 named bands reach the model as the same bands of the original 13-band file do; the others are
    missing (filled and masked)."""
    image_processor = tiny_model[1].image_processor
    named = image_processor(four_band, band_names=NAMED, return_band_mask=True)
    original = image_processor(os.path.join(DATA, "eurosat-ms", "River", "River_1.tif"))
    channels = [image_processor.band_names.index(band) for band in NAMED]
    assert np.allclose(named["pixel_values"][0, channels], original["pixel_values"][0, channels], atol=1e-6)
    assert named["band_mask"][0].tolist() == [band in NAMED for band in image_processor.band_names]


def test_map_takes_band_names(four_band, tiny_model_dir, tmp_path):
    """Unnamed bands stop the map with the hint; a 13-band export in canonical order (B8A after B08, where an
    unnamed 13-band file is read in EuroSAT's order, B8A last) maps as the original once --band-names says so."""
    from spectral_llava.processing.sentinel2_io import CANONICAL_BANDS

    river = os.path.join(DATA, "eurosat-ms", "River", "River_1.tif")
    image = read_image(river)
    with rasterio.open(river) as dataset:
        profile = dataset.profile
    canonical = tmp_path / "River_1_canonical.tif"
    with rasterio.open(canonical, "w", **profile) as out:
        out.write(np.stack([image.data[image.band_names.index(band)] for band in CANONICAL_BANDS]).astype("uint16"))

    def map_tiles(source, *flags):
        output = tmp_path / f"{os.path.basename(source)}.geojson"
        code, out, err = run_cli("map", str(source), "--model", tiny_model_dir, "--output", str(output),
                                 "--tile-size", "32", "--max-new-tokens", "3", "--workers", "0", "--no-overview",
                                 *flags)
        rows = [feature["properties"] for feature in json.loads(output.read_text())["features"]] if code == 0 else []
        return code, err, [(row["tile_id"].rsplit("_t", 1)[1], row["labels"]) for row in rows]

    code, err, _ = map_tiles(four_band)
    assert code == 2 and HINT in err
    code, err, named = map_tiles(canonical, "--band-names", ",".join(CANONICAL_BANDS))
    assert code == 0, err
    assert len(named) == 4 and named == map_tiles(river)[2]


def test_build_dataset_records_band_names_and_training_reads_with_them(tiny_model_dir, tmp_path):
    from spectral_llava.spectral_inst.dataset import dataset_band_names

    root = tmp_path / "eurosat" / "River"
    root.mkdir(parents=True)
    for k in range(1, 6):
        four_band_copy(os.path.join(DATA, "eurosat-ms", "River", f"River_{k}.tif"), root / f"River_{k}.tif",
                       NAMED + ["B11"])  # the bands of the dataset's RGB and indices
    dataset = tmp_path / "inst"
    code, out, err = run_cli("build-dataset", "--eurosat", str(root.parent), "--output", str(dataset))
    assert code == 2 and "no patch survived processing" in last_line(err)  # unnamed: every patch refused
    code, out, err = run_cli("build-dataset", "--eurosat", str(root.parent), "--output", str(dataset),
                             "--band-names", "B02,B03,B04,B08,B11")
    assert code == 0 and json.loads(out)["patches_ok"] == 5, err
    assert dataset_band_names(dataset) == NAMED + ["B11"]
    code = main(["train", "align", "--model", tiny_model_dir, "--dataset", str(dataset), "--output",
                 str(tmp_path / "align"), "--max-steps", "1", "--batch-size", "2", "--text", "class-labels",
                 "--cache-features", str(tmp_path / "features")])
    assert code == 0 and (tmp_path / "align" / "model" / "model.safetensors").is_file()


def test_an_rgb_png_gets_the_readers_one_message(tiny_model_dir, tmp_path):
    from PIL import Image

    picture = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(picture)
    message = (f"{picture} is not a Sentinel-2 multispectral input: a PNG image with 3 band(s) of uint8 values, a "
               "picture such as an RGB rendering; the model reads Sentinel-2 bands from a GeoTIFF (.tif, .tiff), "
               "JPEG2000 band files (.jp2), a folder of band files or a SAFE product")
    with pytest.raises(ValueError) as raised:
        read_image(str(picture))
    assert str(raised.value) == message
    for command in ("caption", "classify"):
        code, _, err = run_cli(command, "--model", tiny_model_dir, str(picture))
        assert (code, last_line(err)) == (2, f"spectral-llava {command}: error: {message}")


def test_evaluations_read_a_dataset_with_the_band_names_of_its_build(tiny_model_dir, tmp_path):
    root = tmp_path / "eurosat" / "River"
    root.mkdir(parents=True)
    for k in range(1, 11):
        four_band_copy(os.path.join(DATA, "eurosat-ms", "River", f"River_{k}.tif"), root / f"River_{k}.tif",
                       NAMED + ["B11"])
    dataset = tmp_path / "inst"
    code, _, err = run_cli("build-dataset", "--eurosat", str(root.parent), "--output", str(dataset),
                           "--band-names", "B02,B03,B04,B08,B11")
    assert code == 0, err
    for command in (["classify", "--eurosat", os.path.join(DATA, "eurosat-ms"), "--max-per-class", "1"],
                    ["quality"]):
        code, out, err = run_cli("evaluate", *command, "--model", tiny_model_dir, "--dataset", str(dataset),
                                 "--split", "train", "--max-new-tokens", "3", "--output", str(tmp_path / "eval"))
        assert code == 0, err
    predictions = (tmp_path / "eval" / "classification_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 10 + 8  # one per EuroSAT class, the 8 training patches
    assert json.loads((tmp_path / "eval" / "quality.json").read_text())["num_images"] == 8
