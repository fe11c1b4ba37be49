"""Windows of a Sentinel-2 scene on its 10 m grid, read without loading the scene (for scene tiling).

`SceneReader(source)` opens what `sentinel2_io.read_image` reads from a path or URL (a multi-band GeoTIFF / COG, a
band folder, a SAFE product or its granule / IMG_DATA / R10m folder, a path prefix, a STAC item whose band assets are
read straight from their hrefs, over HTTP by range requests) and reads windows of its finest grid, each band on its
own window, resampled exactly as `read_image` resamples the whole scene. Uses only the public names of its sibling
`sentinel2_io` (layout detection, headers, windowed reads) and third-party libraries.
"""

import math
import os

import numpy as np
import rasterio
from rasterio.transform import array_bounds
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from .sentinel2_io import (CANONICAL_BANDS, GDAL_OPTIONS, SCENE_WINDOW_LIMIT, SizeLimit, SpectralImage, aligned_factor,
                           canonical_band_names, check_declared_size, check_one_grid, detect_layout, image_metadata,
                           open_raster, product_id, read_header, read_pixels, resampling_method)

# Windowed scene reads cap GDAL's block cache (default: 5% of RAM): with tiles visited strip by strip (scene.tiling)
# the blocks in use fit easily (12 bands x a few 1024 x 1024 uint16 JPEG2000 / GeoTIFF blocks of 2 MiB).
SCENE_GDAL_CACHE_BYTES = 256 * 2**20
_SCENE_GDAL_OPTIONS = {**GDAL_OPTIONS, "GDAL_CACHEMAX": SCENE_GDAL_CACHE_BYTES}


class SceneReader:
    """Windows of a scene on its finest (10 m) grid, read without loading the scene.

    `source`: a multi-band GeoTIFF (path or URL), a band folder, a SAFE product (or granule / IMG_DATA / R10m folder),
    a path prefix or a STAC item, as for `read_image`. Only header information is read on construction, and every
    file's declared size is checked against `limit` (default SCENE_WINDOW_LIMIT, 4 x 4 Sentinel-2 tiles;
    `check_declared_size`).
    `read(row_off, col_off, height, width)` reads that window of the reference grid: each band file is read on its
    own window (with the few extra source pixels resampling needs) and resampled onto the 10 m window, giving the
    pixels `read_image` gives for the whole scene (see tests), so memory is bounded by the window. Open files are
    per process: a reader can be pickled into DataLoader workers and reopens its files there.

    Attributes: `source` (the path, URL or STAC item location), `product` (the product id tiles are named after),
    `stac` (the `StacItem`, or None), `band_names` (canonical order), `height`, `width`, `crs`, `transform`,
    `nodata`, `dtype` (stored data type), `scale_offset_tags` (as in `read_image`'s metadata), `files` ({band: path
    or href} for band folders and STAC items, {} for a multi-band file). Windows carry the same metadata as
    `read_image`'s images, plus "window".
    """

    def __init__(self, source, select_bands=None, resampling: str = "bilinear", band_names=None,
                 limit: SizeLimit = SCENE_WINDOW_LIMIT):
        self.limit = limit
        self.method = resampling_method(resampling)
        self._datasets: dict = {}
        self._pid = None
        layout = detect_layout(source, select_bands)
        self.source, self.stac = layout.path, layout.item
        self.product = layout.item.product if layout.item is not None else product_id(layout.path)
        if layout.kind == "file":
            self._init_multiband(layout.path, select_bands, band_names)
        elif band_names is not None:
            raise ValueError(f"band_names= names the channels of an array or multi-band file, but "
                             f"{self.source} is a {'STAC item' if self.stac else 'band folder'} whose "
                             f"{'band metadata gives' if self.stac else 'file names give'} the bands")
        else:
            self._init_band_files(layout)
        self.transform, self.crs, self.height, self.width, self.nodata = self._grid

    def _init_multiband(self, path: str, select_bands, band_names) -> None:
        header = check_declared_size(read_header(path), self.limit)
        names = header.band_names(band_names)
        wanted = set(canonical_band_names(select_bands, "select_bands")) if select_bands else set(names)
        self.files, self._multiband = {}, path
        self._indexes = {band: index + 1 for index, band in enumerate(names) if band in wanted}
        self.band_names = [band for band in CANONICAL_BANDS if band in self._indexes]
        if not self.band_names:
            raise ValueError(f"{path} holds none of the requested bands {sorted(wanted)}")
        self._grid = (header.transform, header.crs, header.height, header.width, header.nodata)
        self.dtype = header.dtype
        self.scale_offset_tags = {band: tag for band, tag in header.scale_offset_tags(names).items()
                                  if band in self.band_names}

    def _init_band_files(self, layout) -> None:
        if not layout.files:
            raise ValueError(f"{self.source}: none of the requested bands has a file")
        self.files, self._multiband = dict(layout.files), None
        headers = {band: check_declared_size(read_header(path, layout.describe(band)), self.limit)
                   for band, path in self.files.items()}
        check_one_grid(layout, headers)
        self.scale_offset_tags = {}
        for band, header in headers.items():
            header.check_single_band(band)
            self.scale_offset_tags.update(header.scale_offset_tags([band]))
        self._grids = {band: (h.transform, h.crs, h.height, h.width, h.nodata) for band, h in headers.items()}
        self.band_names = [band for band in CANONICAL_BANDS if band in self.files]
        reference = min(self.band_names, key=lambda band: abs(headers[band].transform.a))
        self._grid, self.dtype = self._grids[reference], headers[reference].dtype

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_datasets"], state["_pid"] = {}, None
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for dataset in self._datasets.values():
            dataset.close()
        self._datasets = {}

    def _dataset(self, path: str):
        if self._pid != os.getpid():  # opened in another process (before a DataLoader fork): reopen here
            self._datasets, self._pid = {}, os.getpid()
        if path not in self._datasets:
            self._datasets[path] = open_raster(path)
        return self._datasets[path]

    def read(self, row_off: int, col_off: int, height: int, width: int) -> SpectralImage:
        """The window (rows row_off.., columns col_off.. of the 10 m grid) as a SpectralImage."""
        if row_off < 0 or col_off < 0 or row_off + height > self.height or col_off + width > self.width:
            raise ValueError(f"window ({row_off}, {col_off}, {height}x{width}) lies outside {self.source} "
                             f"({self.height}x{self.width} pixels)")
        window = Window(col_off, row_off, width, height)
        dst_transform = window_transform(window, self.transform)
        data = np.empty((len(self.band_names), height, width), dtype=np.float32)
        with rasterio.Env(**_SCENE_GDAL_OPTIONS):
            if self._multiband is not None:
                dataset = self._dataset(self._multiband)
                indexes = [self._indexes[band] for band in self.band_names]
                data[:] = read_pixels(dataset, self._multiband, indexes, window)
            else:
                for index, band in enumerate(self.band_names):
                    data[index] = self._read_band(band, window, dst_transform)
        metadata = image_metadata(self.source, self.crs, dst_transform, (height, width), self.nodata,
                                  len(self.band_names), self.dtype, self.scale_offset_tags)
        metadata["window"] = (row_off, col_off, height, width)
        if self.stac is not None:
            metadata["stac"] = self.stac
        return SpectralImage(data, list(self.band_names), metadata)

    def read_overview(self, bands, max_size: int = 1024) -> np.ndarray:
        """`bands` of the whole scene, block-averaged to at most `max_size` pixels a side: float32 (len(bands), h, w)
        (NaN where a band is missing). GDAL decimates while reading (JPEG2000 resolution levels, GeoTIFF
        overviews or blocks), so the scene is never held at full resolution."""
        factor = max(1.0, max(self.height, self.width) / max_size)
        shape = (max(1, round(self.height / factor)), max(1, round(self.width / factor)))
        out = np.full((len(bands), *shape), np.nan, dtype=np.float32)
        with rasterio.Env(**_SCENE_GDAL_OPTIONS):
            for index, band in enumerate(bands):
                if band not in self.band_names:
                    continue
                path = self._multiband or self.files[band]
                dataset = self._dataset(path)
                band_index = self._indexes[band] if self._multiband is not None else 1
                out[index] = read_pixels(dataset, path, band_index, out_shape=shape, resampling=Resampling.average)
        return out

    def _read_band(self, band: str, window: Window, dst_transform) -> np.ndarray:
        path = self.files[band]
        dataset = self._dataset(path)
        src_transform, src_crs, src_height, src_width, nodata = self._grids[band]
        ref_transform, ref_crs = self.transform, self.crs
        if src_transform.almost_equals(ref_transform) and (src_height, src_width) == (self.height, self.width) \
                and src_crs == ref_crs:
            return read_pixels(dataset, path, 1, window)
        if src_crs == ref_crs and nodata is None and self.method in (Resampling.bilinear, Resampling.nearest):
            factor = aligned_factor(src_transform, (src_height, src_width), ref_transform, (self.height, self.width))
            if factor is not None:
                rows, row_weights = _upsampling_weights(window.row_off, window.height, factor, src_height, self.method)
                cols, col_weights = _upsampling_weights(window.col_off, window.width, factor, src_width, self.method)
                source = read_pixels(dataset, path, 1, Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0]))
                return row_weights @ source.astype(np.float32) @ col_weights.T
        # General case: reproject a source window covering the destination window with a margin of 3 source
        # pixels (enough for every kernel in RESAMPLING_METHODS at these scale factors).
        west, south, east, north = array_bounds(window.height, window.width, dst_transform)
        if src_crs != ref_crs:
            west, south, east, north = transform_bounds(ref_crs, src_crs, west, south, east, north, densify_pts=21)
        covering = from_bounds(west, south, east, north, src_transform)
        first_col, first_row = math.floor(covering.col_off) - 3, math.floor(covering.row_off) - 3
        stop_col = math.ceil(covering.col_off + covering.width) + 3
        stop_row = math.ceil(covering.row_off + covering.height) + 3
        src_window = Window(first_col, first_row, stop_col - first_col, stop_row - first_row).intersection(
            Window(0, 0, src_width, src_height))
        source = read_pixels(dataset, path, 1, src_window).astype(np.float32, copy=False)
        out = np.full((int(window.height), int(window.width)), np.nan, dtype=np.float32)
        reproject(source, out, src_transform=window_transform(src_window, src_transform), src_crs=src_crs,
                  src_nodata=nodata, dst_transform=dst_transform, dst_crs=ref_crs, dst_nodata=np.nan,
                  resampling=self.method)
        return out


def _upsampling_weights(start: int, length: int, factor: int, size: int, method):
    """((first, stop) source indices, (length, stop - first) weights) that upsample source samples onto the
    destination samples start..start+length-1 of an axis refined by `factor`: torch's pixel-centre bilinear
    (align_corners=False, clamped at the edges) or nearest, as `sentinel2_io` applies to whole bands."""
    destination = np.arange(start, start + length)
    if method == Resampling.nearest:
        low = high = destination // factor
        fraction = np.zeros(length, dtype=np.float32)
    else:
        # in float32 like torch: source position = scale * (index + 0.5) - 0.5, scale = source / destination size
        scale = np.float32(size) / np.float32(size * factor)
        position = np.maximum(scale * (destination.astype(np.float32) + np.float32(0.5)) - np.float32(0.5),
                              np.float32(0))
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        fraction = position - low.astype(np.float32)
    first, stop = int(low.min()), int(high.max()) + 1
    weights = np.zeros((length, stop - first), dtype=np.float32)
    np.add.at(weights, (np.arange(length), low - first), 1.0 - fraction)
    np.add.at(weights, (np.arange(length), high - first), fraction)
    return (first, stop), weights


__all__ = ["SceneReader", "SCENE_GDAL_CACHE_BYTES"]
