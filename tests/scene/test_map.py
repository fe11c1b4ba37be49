"""`map_scene` / `spectral-llava map` on real scenes with a tiny model: rows, footprints, formats, no-data, SAFE."""

import glob
import json
import os
import re
import shutil
import warnings

import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from sentinel2_samples import MAJOR_TOM, copy_band, write_safe_l2a
from testing_utils import DATA
from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import read_image
from spectral_llava.scene import MapOptions, map_scene, read_tiles
from spectral_llava.scene.mapping import scene_radiometry
from spectral_llava.scene.reading import TileBatches
from spectral_llava.scene.tiling import batches_of, plan_tiles

CROP = os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R",
                    "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
PRODUCT = "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
FAST = dict(max_new_tokens=6, no_overview=True)


def run(model, source, output, **options):
    return map_scene(source, *model, output, MapOptions(**{**FAST, **options}))


def same_polygon(a, b) -> bool:
    return a.normalize().equals_exact(b.normalize(), 1e-6)


def comparable(rows):
    """Rows without tile_id (product-specific) and with geometry as WKT, for equality across runs."""
    return [{**{k: v for k, v in row.items() if k not in ("tile_id", "geometry")}, "wkt": row["geometry"].wkt}
            for row in rows]


@pytest.fixture(scope="module")
def crop_result(tiny_map_model, tmp_path_factory):
    output = tmp_path_factory.mktemp("map") / "crop.parquet"
    return run(tiny_map_model, CROP, output, task="both", batch_size=4, no_overview=False)


def test_rows_footprints_and_metadata(crop_result, tiny_map_model_dir):
    result = crop_result
    assert result.counts == {"tiles": 16, "mapped": 16, "skipped_nodata": 0, "edge_shifted": 7, "resumed": 0}
    with rasterio.open(os.path.join(CROP, "B02.tif")) as dataset:
        transform, crs = dataset.transform, dataset.crs
    offsets = [0, 32, 64, 88]  # 120 px in 32 px tiles: the last one shifted inward
    assert [(row["row"], row["col"]) for row in result.rows] == [(r, c) for r in range(4) for c in range(4)]
    for row in result.rows:
        window = Window(offsets[row["col"]], offsets[row["row"]], 32, 32)
        assert same_polygon(row["geometry"], shapely.box(*window_bounds(window, transform)))
        assert row["tile_id"] == f"{PRODUCT}_t32s32_r{row['row']}_c{row['col']}"
        assert row["valid_fraction"] == 1.0
        assert isinstance(row["labels"], list) and isinstance(row["caption"], str)
        assert isinstance(row["classification_text"], str)
    assert len({row["caption"] for row in result.rows}) > 1  # the tiny model's text depends on the tile

    frame, metadata = read_tiles(result.output)
    assert frame.crs == crs
    assert list(frame.columns) == ["tile_id", "row", "col", "labels", "caption", "classification_text",
                                   "valid_fraction", "geometry"]
    assert frame["tile_id"].tolist() == [row["tile_id"] for row in result.rows]
    assert frame["caption"].tolist() == [row["caption"] for row in result.rows]
    assert frame["labels"].tolist() == [row["labels"] for row in result.rows]
    assert metadata["source"] == CROP and metadata["product_id"] == PRODUCT
    assert metadata["model"]["name_or_path"] == tiny_map_model_dir
    assert metadata["counts"] == result.counts and metadata["tile_size_m"] == 320.0
    assert (metadata["radiometry"]["source"], metadata["radiometry"]["offset"]) == ("product_name", -1000.0)
    assert "shifted inward" in metadata["edge_rule"]
    assert not glob.glob(os.path.join(os.path.dirname(result.output), ".*"))  # work dir and temp files gone


def test_overview_png(crop_result):
    from PIL import Image

    assert crop_result.overview == crop_result.output.with_name("crop_overview.png")
    with Image.open(crop_result.overview) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_overview_colours_tiles_by_first_label_without_overlaps(tmp_path):
    """The overview fills each tile's owned part (edge tiles shifted inward split their overlap) in the colour the
    web app's map gives its first label (`palette.label_colours`), so no tint depends on how many tiles overlap."""
    import shapely
    from matplotlib.colors import to_rgb, to_rgba
    from PIL import Image

    from spectral_llava.scene.overview import overview_figure, write_overview
    from spectral_llava.scene.palette import NO_LABEL_COLOUR, label_colours

    reader = SceneReader(CROP)
    tiles = plan_tiles(120, 120, 50, 50)  # 3 x 3 tiles at 0, 50 and 70 (shifted): 20 px overlaps
    labels = [["Forest", "River"], ["SeaLake"], ["Forest"], [], ["Forest"], ["SeaLake"], ["River"], ["Forest"], []]
    rows = [{"tile_index": tile.index, "labels": labels[tile.index]} for tile in tiles]
    colours = label_colours(["Forest", "SeaLake", "Forest", "(no label)", "Forest", "SeaLake", "River", "Forest",
                             "(no label)"])
    assert list(colours) == ["Forest", "SeaLake", "River", "(no label)"] and colours["(no label)"] == NO_LABEL_COLOUR
    figure = overview_figure(reader, rows, tiles, "test", max_size=120)  # the quicklook at 1 px per pixel
    patches = figure.axes[0].patches
    assert len(patches) == 9
    parts = [shapely.box(patch.get_x() + 0.5, patch.get_y() + 0.5, patch.get_x() + 0.5 + patch.get_width(),
                         patch.get_y() + 0.5 + patch.get_height()) for patch in patches]
    assert sum(part.area for part in parts) == pytest.approx(120 * 120)
    assert all(a.intersection(b).area < 1e-9 for k, a in enumerate(parts) for b in parts[k + 1:])
    for patch, row in zip(patches, rows):
        first = row["labels"][0] if row["labels"] else "(no label)"
        assert patch.get_facecolor() == pytest.approx(to_rgba(colours[first], 0.45))
    path = tmp_path / "overview.png"
    write_overview(path, reader, rows, tiles, "test", max_size=120)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    for label in ("Forest", "SeaLake"):  # the legend patch is drawn in the label's colour
        colour = np.round(np.asarray(to_rgb(colours[label])) * 255).astype(int)
        assert (np.abs(pixels - colour).max(axis=1) <= 2).sum() > 20, label


def test_windowed_batches_match_the_processor_on_cut_out_tiles(tiny_map_model):
    """The pixel values map feeds the model equal the processor's on crops of the whole scene read at once, with
    the scene's radiometry (processing baseline 04.00: offset -1000 from the product name)."""
    source = MAJOR_TOM if os.path.isdir(MAJOR_TOM) else CROP
    processor = tiny_map_model[1]
    reader = SceneReader(source, select_bands=processor.image_processor.band_names)
    tiles = plan_tiles(reader.height, reader.width, 64, 300 if source == MAJOR_TOM else 40)
    batches = batches_of(tiles, 4)
    resolved, _ = scene_radiometry(reader, RadiometrySettings())
    assert (resolved.source, resolved.offset, resolved.scale) == ("product_name", -1000.0, 1.0)
    reading = TileBatches(reader, tiles, batches, processor.image_processor, RadiometrySettings(), resolved)
    whole = read_image(source)
    for k in range(len(batches)):
        item = reading[k]
        crops = [whole.data[:, tiles[i].y:tiles[i].y + 64, tiles[i].x:tiles[i].x + 64] for i in item["tiles"]]
        expected = processor.image_processor(crops, band_names=whole.band_names, input_offset=-1000)["pixel_values"]
        # uint8 quantisation: a value within 0.02 DN of a step boundary may land one step away
        assert (item["pixel_values"] - expected).abs().max() <= 1 / 255 + 1e-6
        assert (item["pixel_values"] == expected).float().mean() > 0.999


def test_map_applies_the_scenes_radiometry_to_every_window_and_records_it(tiny_map_model, tmp_path):
    """The Major-TOM N0400 cell stores reflectance x 10000 + 1000: map decides offset -1000 once (product name),
    reads every window with it (not the raw values), and writes the handling into the file's metadata."""
    processor = tiny_map_model[1]
    reader = SceneReader(CROP, select_bands=processor.image_processor.band_names)
    tiles = plan_tiles(reader.height, reader.width, 32, 32)
    batches = batches_of(tiles, 4)
    resolved, description = scene_radiometry(reader, RadiometrySettings())
    corrected = TileBatches(reader, tiles, batches, processor.image_processor, RadiometrySettings(),
                            resolved)[0]["pixel_values"]
    explicit_zero = RadiometrySettings(input_offset=0.0)
    raw = TileBatches(reader, tiles, batches, processor.image_processor, explicit_zero,
                      scene_radiometry(reader, explicit_zero)[0])[0]["pixel_values"]
    assert (corrected - raw).abs().mean() > 0.05  # 1000 DN is about a third of the SpectralGPT window
    whole = read_image(CROP, select_bands=processor.image_processor.band_names)
    crop = whole.data[:, tiles[0].y:tiles[0].y + 32, tiles[0].x:tiles[0].x + 32]
    torch.testing.assert_close(corrected[0], processor.image_processor(
        crop, band_names=whole.band_names, input_offset=-1000)["pixel_values"][0], rtol=0, atol=1 / 255 + 1e-6)

    result = run(tiny_map_model, CROP, tmp_path / "cell.geojson", tile_size=32, batch_size=8)
    _, metadata = read_tiles(result.output)
    assert metadata["radiometry"] == {**description, "strict": False} == result.metadata["radiometry"]
    assert (description["source"], description["offset"], description["scale"]) == ("product_name", -1000.0, 1.0)
    assert "N0400" in description["detail"]
    explicit = run(tiny_map_model, CROP, tmp_path / "explicit.parquet", tile_size=32, batch_size=8,
                   input_offset=-1000, strict=True)
    assert (explicit.metadata["radiometry"]["source"], explicit.metadata["radiometry"]["strict"]) == ("explicit", True)
    assert comparable(explicit.rows) == comparable(result.rows)  # the same pixels reach the model
    with pytest.raises(ValueError, match=re.escape(CROP) + r".*band B\d\d: median"):  # DNs read as reflectance
        run(tiny_map_model, CROP, tmp_path / "scaled.parquet", tile_size=32, input_scale=10000, strict=True)
    assert not (tmp_path / "scaled.parquet").exists()


def test_per_band_offsets_of_a_safe_product_reach_every_window(tiny_map_model, tmp_path):
    """A product whose metadata gives B02 another offset: map's windows carry it like the processor reading the
    product itself (one 120 px tile = the whole scene)."""
    from sentinel2_samples import SAFE_MTD

    safe = write_safe_l2a(tmp_path, CROP, with_mtd=False)
    with open(SAFE_MTD, encoding="utf-8") as f:
        metadata = f.read().replace('<BOA_ADD_OFFSET band_id="1">-1000<', '<BOA_ADD_OFFSET band_id="1">-900<')
    with open(os.path.join(safe, "MTD_MSIL2A.xml"), "w", encoding="utf-8") as f:
        f.write(metadata)
    image_processor = tiny_map_model[1].image_processor
    reader = SceneReader(safe, select_bands=image_processor.band_names)
    resolved, description = scene_radiometry(reader, RadiometrySettings())
    assert (description["source"], description["offset"], description["band_offsets"]) == (
        "product_metadata", -1000.0, {"B02": -900.0})
    tiles = plan_tiles(reader.height, reader.width, 120, 120)
    windowed = TileBatches(reader, tiles, batches_of(tiles, 1), image_processor, RadiometrySettings(),
                           resolved)[0]["pixel_values"]
    whole = image_processor(safe, return_metadata=True)
    assert whole["metadata"][0]["radiometry"]["band_offsets"] == {"B02": -900.0}
    torch.testing.assert_close(windowed, whole["pixel_values"], rtol=0, atol=1e-6)


def test_major_tom_full_cell_with_a_large_stride(tiny_map_model, tmp_path):
    if not os.path.isdir(MAJOR_TOM):
        pytest.skip("needs ../shared/data (the full 1068 x 1068 Major-TOM cell)")
    result = run(tiny_map_model, MAJOR_TOM, tmp_path / "cell.parquet", tile_size=128, stride=470, batch_size=9)
    assert result.counts["tiles"] == 9 and result.counts["edge_shifted"] == 0
    assert [(row["row"], row["col"]) for row in result.rows][-1] == (2, 2)
    reader = SceneReader(MAJOR_TOM)
    assert result.rows[-1]["geometry"].bounds[2] == pytest.approx(reader.transform.c + 1068 * 10)


def test_all_nodata_tiles_are_skipped_and_partial_ones_measured(tiny_map_model, tmp_path):
    folder = tmp_path / PRODUCT
    for path in glob.glob(os.path.join(CROP, "B*.tif")):
        target = copy_band(path, folder / os.path.basename(path))
        with rasterio.open(target, "r+") as dataset:  # the same 480 m x 480 m corner empty in every band
            data = dataset.read(1)
            cells = 480 // int(dataset.transform.a)
            data[:cells, :cells] = 0
            dataset.write(data, 1)
    result = run(tiny_map_model, str(folder), tmp_path / "holes.parquet")
    assert result.counts["skipped_nodata"] == 1 and result.counts["mapped"] == 15
    fractions = {(row["row"], row["col"]): row["valid_fraction"] for row in result.rows}
    assert (0, 0) not in fractions
    assert fractions[(0, 1)] == 0.5 and fractions[(1, 0)] == 0.5 and fractions[(1, 1)] == 0.75
    assert fractions[(3, 3)] == 1.0


def test_geojson_is_rfc7946_wgs84(crop_result, tiny_map_model, tmp_path):
    from pyproj import Transformer

    result = run(tiny_map_model, CROP, tmp_path / "crop.geojson", task="both", batch_size=4)
    collection = json.loads((tmp_path / "crop.geojson").read_text())
    assert "crs" not in collection and collection["spectral_llava"]["product_id"] == PRODUCT
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    for feature, row in zip(collection["features"], crop_result.rows):
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        expected = np.asarray([to_wgs84.transform(x, y) for x, y in row["geometry"].exterior.coords])
        assert shapely.Polygon(ring).exterior.is_ccw
        assert {tuple(point) for point in np.round(ring, 9)} == {tuple(point) for point in np.round(expected, 9)}
        assert feature["properties"]["tile_id"] == row["tile_id"]
        assert feature["properties"]["caption"] == row["caption"]
    frame, metadata = read_tiles(result.output)
    assert frame.crs.to_epsg() == 4326 and metadata["counts"] == result.counts


def test_geopackage(crop_result, tiny_map_model, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(tiny_map_model, CROP, tmp_path / "crop.gpkg", task="both", batch_size=4)
    # GDAL warned (through pyogrio) when the temporary file's extension was not .gpkg
    assert [str(w.message) for w in caught if "extension" in str(w.message)] == []
    frame, metadata = read_tiles(result.output)
    assert frame.crs.to_epsg() == 32633
    assert frame["labels"].tolist() == [row["labels"] for row in crop_result.rows]
    assert frame["caption"].tolist() == [row["caption"] for row in crop_result.rows]
    assert metadata["product_id"] == PRODUCT


def test_safe_product_maps_like_the_same_pixels_as_geotiffs(crop_result, tiny_map_model, tmp_path):
    safe = write_safe_l2a(tmp_path, CROP)
    result = run(tiny_map_model, safe, tmp_path / "safe.parquet", task="both", batch_size=4)
    assert result.metadata["product_id"] == "S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_20231217T175625"
    assert result.rows[0]["tile_id"].startswith("S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK")
    # same pixels and the same offset (-1000: product metadata there, the N0400 name here) -> same rows
    assert comparable(result.rows) == comparable(crop_result.rows)


@pytest.mark.parametrize("source, tiles", [
    (os.path.join(DATA, "eurosat-ms", "Highway", "Highway_1.tif"), 4),
    (glob.glob(os.path.join(DATA, "bigearthnet-v1", "*"))[0], 16),
    (glob.glob(os.path.join(DATA, "bigearthnet-v2", "*", "*"))[0], 16),
])
def test_eurosat_and_bigearthnet_inputs(tiny_map_model, tmp_path, source, tiles):
    result = run(tiny_map_model, source, tmp_path / "out.parquet", task="classification")
    assert result.counts["tiles"] == tiles == len(result.rows)
    assert all("caption" not in row and isinstance(row["labels"], list) for row in result.rows)
    reader = SceneReader(source)
    first = result.rows[0]["geometry"].bounds
    assert first[0] == pytest.approx(reader.transform.c) and first[3] == pytest.approx(reader.transform.f)


def test_cli_map_prints_a_summary(tiny_map_model_dir, tmp_path, capsys):
    from spectral_llava.cli import main

    output = tmp_path / "cli.parquet"
    code = main(["map", CROP, "--model", tiny_map_model_dir, "--output", str(output), "--tile-size", "60",
                 "--max-new-tokens", "4", "--task", "caption"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["counts"]["tiles"] == 4 and summary["output"] == str(output)
    assert os.path.isfile(summary["overview"])
    frame, _ = read_tiles(output)
    assert "caption" in frame.columns and "classification_text" not in frame.columns


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear errors naming the file or argument, nothing left behind
# ---------------------------------------------------------------------------------------------------------------


def assert_nothing_written(folder):
    assert os.listdir(folder) == [], os.listdir(folder)


def test_scene_smaller_than_one_tile(tiny_map_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    tif = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
    with pytest.raises(ValueError, match=r"Forest_1.tif is 64x64 pixels, smaller than one 128x128 tile"):
        run(tiny_map_model, tif, out / "x.parquet", tile_size=128)
    assert_nothing_written(out)


def test_unknown_output_extension(tiny_map_model, tmp_path):
    with pytest.raises(ValueError, match=r"x\.csv: unknown extension '\.csv'; use \.parquet"):
        run(tiny_map_model, CROP, tmp_path / "x.csv")
    assert_nothing_written(tmp_path)


def test_missing_bands_are_refused(tiny_map_model, tmp_path):
    folder = tmp_path / "rgb"
    for band in ("B02", "B03", "B04", "B08"):
        copy_band(os.path.join(CROP, f"{band}.tif"), folder / f"{band}.tif")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"rgb: band\(s\) B01, B05, B06, B07, B8A, B09, B11, B12 missing"):
        run(tiny_map_model, str(folder), out / "x.parquet")
    assert_nothing_written(out)


@pytest.fixture()
def ungeoreferenced(tmp_path):
    image = read_image(CROP)
    path = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=120, height=120, count=12, dtype="float32") as dataset:
            dataset.write(image.data)
            dataset.descriptions = tuple(image.band_names)
    return str(path)


def test_no_georeferencing_refuses_geojson_and_writes_pixel_footprints(tiny_map_model, tmp_path, ungeoreferenced):
    out = tmp_path / "out"
    out.mkdir()
    not_georeferenced = rasterio.errors.NotGeoreferencedWarning  # rasterio's, on opening the file
    with pytest.warns(not_georeferenced), pytest.raises(ValueError, match=r"plain.tif has no georeferencing "
                                                                          r"\(no CRS\): GeoJSON needs WGS84"):
        run(tiny_map_model, ungeoreferenced, out / "x.geojson")
    assert_nothing_written(out)
    with pytest.warns(not_georeferenced), pytest.warns(UserWarning, match="footprints are written in pixel"):
        result = run(tiny_map_model, ungeoreferenced, out / "x.parquet")
    frame, metadata = read_tiles(result.output)
    assert frame.crs is None and metadata["georeferenced"] is False
    assert same_polygon(result.rows[1]["geometry"], shapely.box(32, 0, 64, 32))  # x = column, y = row (down)


def test_corrupt_jpeg2000_mid_run_leaves_nothing(tiny_map_model, tmp_path):
    safe = write_safe_l2a(tmp_path / "input", CROP, with_mtd=False)
    bad = glob.glob(os.path.join(safe, "GRANULE", "*", "IMG_DATA", "R10m", "*_B08_10m.jp2"))[0]
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 2)  # header intact: the error comes while reading tiles
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"B08_10m\.jp2"):
        run(tiny_map_model, safe, out / "x.parquet", workers=1)
    assert_nothing_written(out)


def test_resume_with_other_settings_is_refused(tiny_map_model, tmp_path):
    from spectral_llava.scene.outputs import Checkpoints

    output = tmp_path / "x.parquet"
    Checkpoints(output).start({"source": CROP, "tile_size": 60}, resume=False)
    with pytest.raises(ValueError, match=r"--resume: the partial run in .*tile_size: 60 then, 32 now"):
        run(tiny_map_model, CROP, output, resume=True)
    shutil.rmtree(Checkpoints(output).dir)
