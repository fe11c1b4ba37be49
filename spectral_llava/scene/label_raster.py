"""The label raster of a mapped scene: a Cloud-Optimized GeoTIFF with one pixel per tile step (`--output map.tif`).

Layout: the scene's CRS; pixel (r, c) is the tile at grid row r, column c (`scene.tiling`), a square of `stride`
10 m pixels whose top-left corner is the scene's top-left corner plus (c, r) x stride (so with 128 px tiles and no
overlap one pixel is 1.28 km; the last row and column, edge tiles shifted inward, reach up to stride - 1 pixels past
the scene's edge). Band 1, uint8: the class index of the tile's first (top) label, `NO_LABEL` for a mapped tile
without one, 255 (no-data) for a tile skipped as all no-data. Classes are numbered from 0, most frequent first label
first (ties by name), coloured by the scene room's one palette (`palette.label_colours`, the web app's legend);
the colour table is inside the file, the class names are GDAL category names and a thematic raster attribute table
(value, class, red, green, blue, alpha) in the PAM sidecar `map.tif.aux.xml` that GDAL and QGIS read with it
(GDAL 3.10's GeoTIFF keeps neither inside the file). Internal overviews (mode resampling) down to one pixel,
512 px tiles, DEFLATE. The run's metadata (the same dict as the tables') is the dataset metadata item
"spectral_llava".

Per-class scores, where rows carry them ({label: probability} under "scores"), go to a second COG beside it,
`map_scores.tif` (a GeoTIFF's bands share one data type): one float32 band per class, named by the class (band
description), NaN where a tile was skipped or has no score. Everything is written in a temporary folder beside the
output and moved into place, sidecar first.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from .palette import NO_LABEL, label_colours

NODATA = 255
BLOCKSIZE = 512
RAT_FIELDS = (("value", 0, 5), ("class", 2, 2), ("red", 0, 6), ("green", 0, 7), ("blue", 0, 8), ("alpha", 0, 9))
LAYOUT = ("one pixel per tile step: pixel (r, c) is the tile at grid row r, column c, a square of stride x stride "
          "10 m pixels from the scene's top-left corner; band 1 = class index of the tile's first label (255 = "
          "no-data: tile skipped as all no-data); class names and colours in the colour table, GDAL category names "
          "and raster attribute table")


def first_label(row: dict) -> str:
    labels = list(row.get("labels") or [])
    return labels[0] if labels else NO_LABEL


def raster_grid(tiles, transform, stride: int) -> tuple[int, int, object]:
    """(height, width, transform) of the label raster of a tile plan on the scene's `transform`."""
    from affine import Affine

    return max(tile.row for tile in tiles) + 1, max(tile.col for tile in tiles) + 1, transform @ Affine.scale(stride)


def label_grid(rows: list[dict], shape: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """(uint8 class indices (NODATA where no row), class names) of the mapped rows on a grid of `shape`."""
    classes = list(label_colours([first_label(row) for row in rows]))
    if len(classes) > NODATA:
        raise ValueError(f"{len(classes)} classes do not fit a uint8 label raster (at most {NODATA})")
    index = {name: value for value, name in enumerate(classes)}
    grid = np.full(shape, NODATA, dtype=np.uint8)
    for row in rows:
        grid[row["row"], row["col"]] = index[first_label(row)]
    return grid, classes


def score_grid(rows: list[dict], shape: tuple[int, int], classes: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """(float32 (n, H, W) scores, band names) when rows carry "scores", else None; NaN where no score."""
    scored = [row for row in rows if row.get("scores")]
    if not scored:
        return None
    names = [name for name in classes if any(name in row["scores"] for row in scored)]
    names += sorted({name for row in scored for name in row["scores"]} - set(names))
    grid = np.full((len(names), *shape), np.nan, dtype=np.float32)
    for row in scored:
        for band, name in enumerate(names):
            if name in row["scores"]:
                grid[band, row["row"], row["col"]] = float(row["scores"][name])
    return grid, names


def scores_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_scores{output.suffix}")


def write_label_raster(output: Path, rows: list[dict], tiles, transform, crs, stride: int, metadata: dict) -> dict:
    """Write the label raster of the mapped `rows` (and the score raster when rows carry scores) atomically; returns
    what the metadata records: {"layout", "classes", "colours", "nodata", "scores"} (scores: the score file or None)."""
    height, width, grid_transform = raster_grid(tiles, transform, stride)
    labels, classes = label_grid(rows, (height, width))
    colours = label_colours([first_label(row) for row in rows])
    scores = score_grid(rows, (height, width), classes)
    description = {"layout": LAYOUT, "classes": classes, "colours": colours, "nodata": NODATA,
                   "pixel_size_px": stride, "scores": str(scores_path(output)) if scores else None}
    text = json.dumps({**metadata, "raster": description}, sort_keys=True, default=str)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        _write_classes_cog(staging / output.name, labels, classes, colours, grid_transform, crs, text)
        if scores is not None:
            _write_scores_cog(staging / scores_path(output).name, *scores, grid_transform, crs, text)
        for path in sorted(staging.iterdir(), key=lambda path: path.suffix == output.suffix):  # sidecars first
            os.chmod(path, 0o644)
            os.replace(path, output.parent / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


def _cog_options(height: int, width: int) -> dict:
    """COG creation options: DEFLATE, 512 px tiles and overviews down to one pixel (however small the raster)."""
    return {"driver": "COG", "BLOCKSIZE": BLOCKSIZE, "COMPRESS": "DEFLATE",
            "OVERVIEW_COUNT": max(1, math.ceil(math.log2(max(height, width, 2))))}


def _write_classes_cog(path: Path, labels: np.ndarray, classes, colours, transform, crs, metadata_text: str) -> None:
    import rasterio
    from rasterio.shutil import copy as copy_raster

    pixels = path.with_name("pixels.tif")
    with rasterio.open(pixels, "w", driver="GTiff", height=labels.shape[0], width=labels.shape[1], count=1,
                       dtype="uint8", crs=crs, transform=transform) as dataset:
        dataset.write(labels, 1)
    vrt = _classes_vrt(pixels, labels.shape, classes, colours, transform, crs, metadata_text)
    copy_raster(vrt, str(path), OVERVIEW_RESAMPLING="MODE", **_cog_options(*labels.shape))
    pixels.unlink()


def _classes_vrt(pixels: Path, shape, classes, colours, transform, crs, metadata_text: str) -> str:
    """A VRT over the class pixels carrying what the COG takes from it: CRS, grid, metadata, no-data, colour table,
    category names and the raster attribute table."""
    root = ElementTree.Element("VRTDataset", rasterXSize=str(shape[1]), rasterYSize=str(shape[0]))
    if crs is not None:
        ElementTree.SubElement(root, "SRS").text = crs.to_wkt()
    ElementTree.SubElement(root, "GeoTransform").text = ",".join(repr(float(v)) for v in transform.to_gdal())
    items = ElementTree.SubElement(root, "Metadata")
    ElementTree.SubElement(items, "MDI", key="spectral_llava").text = metadata_text
    band = ElementTree.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ElementTree.SubElement(band, "Description").text = "top label"
    ElementTree.SubElement(band, "NoDataValue").text = str(NODATA)
    ElementTree.SubElement(band, "ColorInterp").text = "Palette"
    rgba = [_rgba(colours[name]) for name in classes]
    table = ElementTree.SubElement(band, "ColorTable")
    for value in range(NODATA + 1):
        red, green, blue, alpha = rgba[value] if value < len(rgba) else (0, 0, 0, 0)
        ElementTree.SubElement(table, "Entry", c1=str(red), c2=str(green), c3=str(blue), c4=str(alpha))
    names = ElementTree.SubElement(band, "CategoryNames")
    for name in classes:
        ElementTree.SubElement(names, "Category").text = name
    rat = ElementTree.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate(RAT_FIELDS):
        field = ElementTree.SubElement(rat, "FieldDefn", index=str(index))
        for tag, text in (("Name", name), ("Type", kind), ("Usage", usage)):
            ElementTree.SubElement(field, tag).text = str(text)
    for value, (name, colour) in enumerate(zip(classes, rgba)):
        row = ElementTree.SubElement(rat, "Row", index=str(value))
        for text in (value, name, *colour):
            ElementTree.SubElement(row, "F").text = str(text)
    source = ElementTree.SubElement(band, "SimpleSource")
    ElementTree.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(pixels)
    ElementTree.SubElement(source, "SourceBand").text = "1"
    return ElementTree.tostring(root, encoding="unicode")


def _rgba(colour: str) -> tuple[int, int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), 255


def _write_scores_cog(path: Path, scores: np.ndarray, names: list[str], transform, crs, metadata_text: str) -> None:
    import rasterio
    from rasterio.shutil import copy as copy_raster

    pixels = path.with_name("scores-pixels.tif")
    with rasterio.open(pixels, "w", driver="GTiff", height=scores.shape[1], width=scores.shape[2],
                       count=len(names), dtype="float32", crs=crs, transform=transform, nodata=float("nan")) as dataset:
        dataset.write(scores)
        dataset.descriptions = tuple(names)
        dataset.update_tags(spectral_llava=metadata_text)
    copy_raster(str(pixels), str(path), OVERVIEW_RESAMPLING="AVERAGE", **_cog_options(*scores.shape[1:]))
    pixels.unlink()


def read_label_raster(path: str | os.PathLike) -> dict:
    """What a label raster holds: "labels" (uint8 grid), "classes" (category names, by value), "colours" ({value:
    RGBA} of the classes), "nodata", "transform", "crs", "metadata" (the run's), and with a score file "scores"
    (float32 (n, H, W)) and "score_names"."""
    import rasterio

    path = Path(path)
    with rasterio.open(path) as dataset:
        metadata = json.loads(dataset.tags()["spectral_llava"])
        colourmap = dataset.colormap(1)
        result = {"labels": dataset.read(1), "nodata": dataset.nodata, "transform": dataset.transform,
                  "crs": dataset.crs, "metadata": metadata}
    result["classes"] = list(metadata["raster"]["classes"])
    result["colours"] = {value: colourmap[value] for value in range(len(result["classes"]))}
    if metadata["raster"]["scores"]:
        with rasterio.open(scores_path(path)) as dataset:
            result["scores"], result["score_names"] = dataset.read(), list(dataset.descriptions)
    return result
