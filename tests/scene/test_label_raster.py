"""`--output map.tif`: a valid Cloud-Optimized GeoTIFF label raster, one pixel per tile step, whose pixels agree with
the GeoParquet rows, whose class names and colours rasterio and GDAL (what QGIS reads through) see, and whose
optional score bands are named by class."""

import ctypes
import glob
import os

import numpy as np
import pytest
import rasterio
from affine import Affine

from sentinel2_samples import MAJOR_TOM_CROP
from spectral_llava.scene import MapOptions, map_scene, read_tiles
from spectral_llava.scene.label_raster import NODATA, read_label_raster, scores_path, write_label_raster
from spectral_llava.scene.palette import NO_LABEL, label_colours
from spectral_llava.scene.tiling import plan_tiles

OPTIONS = dict(max_new_tokens=6, no_overview=True, tile_size=32, batch_size=8, workers=0)


def gdal_categories(path) -> tuple[list[str], list[tuple]]:
    """(category names, raster attribute table rows) of band 1 as GDAL's C API reports them (rasterio has no call
    for either), through the libgdal rasterio ships."""
    library = glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal*.so*"))
    if not library:
        pytest.skip("no libgdal shared library beside rasterio")
    gdal = ctypes.CDLL(library[0])
    gdal.GDALOpen.restype = gdal.GDALGetRasterBand.restype = gdal.GDALGetDefaultRAT.restype = ctypes.c_void_p
    gdal.GDALGetRasterColorTable.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetRasterColorTable.argtypes = gdal.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    gdal.GDALGetRasterCategoryNames.argtypes = gdal.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    gdal.GDALRATGetValueAsString.restype = ctypes.c_char_p
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.GDALAllRegister()
    dataset = gdal.GDALOpen(str(path).encode(), 0)
    band = gdal.GDALGetRasterBand(dataset, 1)
    assert gdal.GDALGetRasterColorTable(band)  # a GIS reads the colour table first (GDAL then loads the sidecar)
    names_pointer, names = gdal.GDALGetRasterCategoryNames(band), []
    while names_pointer and names_pointer[len(names)] is not None:
        names.append(names_pointer[len(names)].decode())
    rat = gdal.GDALGetDefaultRAT(band)
    rows = [tuple(gdal.GDALRATGetValueAsString(rat, row, column).decode()
                  for column in range(gdal.GDALRATGetColumnCount(rat))) for row in range(gdal.GDALRATGetRowCount(rat))]
    gdal.GDALClose(dataset)
    return names, rows


@pytest.fixture(scope="module")
def maps(tiny_map_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("raster")
    tables = map_scene(MAJOR_TOM_CROP, *tiny_map_model, folder / "crop.parquet", MapOptions(**OPTIONS))
    raster = map_scene(MAJOR_TOM_CROP, *tiny_map_model, folder / "crop.tif", MapOptions(**OPTIONS))
    return tables, raster


def test_label_raster_pixels_agree_with_the_geoparquet_rows(maps):
    tables, raster = maps
    frame, _ = read_tiles(tables.output)
    content = read_label_raster(raster.output)
    firsts = [labels[0] if len(labels) else NO_LABEL for labels in frame["labels"]]
    assert content["classes"] == list(label_colours(firsts))  # most frequent first label first
    assert content["labels"].shape == (4, 4)  # 120 px in 32 px steps: 4 x 4 tiles, one pixel each
    for row, col, first in zip(frame["row"], frame["col"], firsts):
        assert content["classes"][content["labels"][row, col]] == first
    with rasterio.open(MAJOR_TOM_CROP + "/B02.tif") as band:
        assert content["crs"] == band.crs and content["transform"] == band.transform @ Affine.scale(32)
    assert content["nodata"] == NODATA
    layout = content["metadata"]["raster"]["layout"]
    assert layout.startswith("one pixel per tile step") and content["metadata"]["counts"] == tables.counts


def test_label_raster_is_a_valid_cog_with_overviews(maps):
    from rio_cogeo.cogeo import cog_validate

    path = maps[1].output
    valid, errors, warnings = cog_validate(str(path))
    assert (valid, errors, warnings) == (True, [], [])
    with rasterio.open(path) as dataset:
        assert dataset.profile["tiled"] and dataset.block_shapes == [(512, 512)]
        assert dataset.overviews(1) == [2, 4] and dataset.dtypes == ("uint8",)
        assert dataset.profile["compress"] == "deflate" and dataset.descriptions == ("top label",)


def test_class_names_and_colours_are_seen_by_rasterio_and_gdal(maps):
    path = maps[1].output
    content = read_label_raster(path)
    colours = content["metadata"]["raster"]["colours"]
    for value, name in enumerate(content["classes"]):
        hex_colour = colours[name]
        assert content["colours"][value] == (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16),
                                             int(hex_colour[5:7], 16), 255)
    with rasterio.open(path) as dataset:
        assert dataset.colormap(1)[NODATA] == (0, 0, 0, 0)
    names, rat = gdal_categories(path)
    assert names == content["classes"]
    assert rat == [(str(value), name, *(str(c) for c in content["colours"][value]))
                   for value, name in enumerate(content["classes"])]
    assert os.path.isfile(f"{path}.aux.xml")  # the PAM sidecar GDAL wrote them to, moved in with the raster


def test_skipped_tiles_are_no_data_and_scores_get_bands_named_by_class(tmp_path):
    tiles = plan_tiles(120, 120, 40, 40)  # 3 x 3
    transform = Affine(10, 0, 500000, 0, -10, 1000000)
    rows = [{"row": t.row, "col": t.col, "labels": ["Forest"] if t.col else ["River", "Forest"],
             "scores": {"Forest": 0.25 + t.index / 100, "River": 0.75 - t.index / 100}}
            for t in tiles if t.index != 4]
    rows[0]["labels"] = []
    output = tmp_path / "given.tif"
    description = write_label_raster(output, rows, tiles, transform, rasterio.CRS.from_epsg(32633), 40, {"x": 1})
    content = read_label_raster(output)
    assert content["classes"] == ["Forest", "River", NO_LABEL] == description["classes"]
    expected = np.array([[2, 0, 0], [1, NODATA, 0], [1, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(content["labels"], expected)
    assert content["transform"] == Affine(400, 0, 500000, 0, -400, 1000000)
    assert content["score_names"] == ["Forest", "River"]
    forest = np.array([[0.25, 0.26, 0.27], [0.28, np.nan, 0.30], [0.31, 0.32, 0.33]], dtype=np.float32)
    np.testing.assert_allclose(content["scores"][0], forest, equal_nan=True)
    np.testing.assert_allclose(content["scores"][1], 1 - forest, equal_nan=True, rtol=1e-6)
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(scores_path(output)))[0]
    assert sorted(os.listdir(tmp_path)) == ["given.tif", "given.tif.aux.xml", "given_scores.tif"]


def test_a_failed_write_leaves_nothing(tmp_path):
    tiles = plan_tiles(16 * 32, 16 * 32, 2, 2)
    rows = [{"row": t.row, "col": t.col, "labels": [f"class {t.index}"]} for t in tiles[:300]]
    with pytest.raises(ValueError, match="300 classes do not fit a uint8 label raster"):
        write_label_raster(tmp_path / "many.tif", rows, tiles, Affine.identity(), None, 2, {})
    assert os.listdir(tmp_path) == []
