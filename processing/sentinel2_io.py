"""The one public Sentinel-2 reading API: bands by name onto the 10 m grid, headers, windows.

Remote code: copied flat into saved model directories next to the image processor, so it imports only its siblings
`sentinel2_bands` (band names, band-file names, layouts; every public name of it is re-exported here) and
`sentinel2_stac` (STAC items) and third-party libraries.

Sources: a local path (multi-band GeoTIFF / COG, band folder, SAFE product or a part of it, path prefix), a raster
URL (`http(s)://` read through GDAL's range reads, `s3://`), a STAC item (a `.json` file, an item URL, an item dict or
a `pystac.Item`: its band assets are read like the files of a band folder, windowed straight from their hrefs), an
array or tensor.

- Names and layouts (from `sentinel2_bands`): `CANONICAL_BANDS`, `SPECTRALGPT_BANDS`, `EUROSAT_FILE_ORDER`,
  `KNOWN_LAYOUTS`, `RASTER_EXTENSIONS`, `PRODUCT_NAME_RE`, `canonical_band_name(s)`, `parse_band_file_name`,
  `detect_path_layout`, `is_safe_product`, `safe_band_files`, `product_id`; `detect_layout(source)` -> `SourceLayout`
  (kind, path, files, prefix, item) of any source (`sentinel2_stac` for STAC items).
- Headers, no pixels: `read_header(path)` -> `RasterHeader` (size, CRS, transform, dtype, nodata, band names,
  scale/offset tags); `read_scale_offset_tags(source)`; `check_declared_size(header, limit)`, the one check of a
  raster's declared size against a `SizeLimit` (`WHOLE_IMAGE_LIMIT`: one Sentinel-2 tile, for every whole-image
  read; `SCENE_WINDOW_LIMIT`: 4 x 4 tiles, for windowed scene reads), made before any pixel is read.
- What is not Sentinel-2 input (a PNG, a JPEG, an 8-bit RGB rendering) gets one error, `not_sentinel2`, wherever it
  is read (`check_raster_extension` before opening, the header's band naming after); unnamed band layouts say how
  to name the bands (`BAND_NAMES_HINT`: the Python argument, the command-line flag, the web app's field).
- Pixels: `read_image(source, band_names=None, resampling="bilinear", select_bands=None)` turns a GeoTIFF, a band
  folder, a SAFE product (or its granule, IMG_DATA or R10m/R20m/R60m folder), a path prefix, an array or a tensor
  into a `SpectralImage` on the 10 m grid; `open_raster` and `read_pixels` (whole bands or windows, errors naming
  the file) are what `scene_reader.SceneReader` reads windows with, resampled by `aligned_factor` /
  `resampling_method` exactly as `read_image` resamples whole bands.
- `image_metadata`, `ground_extent`, `GDAL_OPTIONS`, `RESAMPLING_METHODS`, `NOMINAL_PIXEL_SIZE_M`.
"""

import math
import os
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.coords import BoundingBox
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import Resampling, reproject

from .sentinel2_bands import (CANONICAL_BANDS, EUROSAT_FILE_ORDER, KNOWN_LAYOUTS, LAYOUTS, PRODUCT_NAME_RE,
                              RASTER_EXTENSIONS, SPECTRALGPT_BANDS, BandFile, SourceLayout, canonical_band_name,
                              canonical_band_names, detect_path_layout, is_safe_product, parse_band_file_name,
                              product_id, safe_band_files, select_band_files)
from .sentinel2_stac import StacItem, is_raster_url, is_remote, is_stac_source, load_item, local_path

RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")
# What a user can pass to name the bands of a multi-band file, wherever the reader is called from.
BAND_NAMES_HINT = ("name its bands in file order: band_names=[...] in Python, --band-names B02,B03,... on the command "
                   "line (caption, classify, map, build-dataset), the 'band names' field of the web app")
SENTINEL2_INPUTS = ("the model reads Sentinel-2 bands from a GeoTIFF (.tif, .tiff), JPEG2000 band files (.jp2), a "
                    "folder of band files or a SAFE product")
NOMINAL_PIXEL_SIZE_M = 10.0  # the finest Sentinel-2 grid, which every reader here resamples to
# Faster GeoTIFF opening: no directory listing per open, CRS straight from the GeoKeys (same CRS, no EPSG lookup).
# Remote hrefs (http(s):// through /vsicurl/, s3:// through /vsis3/): only raster files are looked for (no .aux.xml
# or .ovr probes), consecutive byte ranges go in one request, requests that fail with 429 / 5xx are retried 3 times
# (1 s, then longer), and a request gives up after 60 s (10 s to connect). VSI_CACHE stays off: /vsicurl/ keeps the
# ranges it fetched and GDAL's block cache the decoded blocks, and VSI_CACHE's own 32 KB reads doubled the bytes
# fetched for headers (benchmarks/stac_http.py).
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GTIFF_SRS_SOURCE": "GEOKEYS",
                "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.jp2,{noext}",
                "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES", "VSI_CACHE": "FALSE", "GDAL_HTTP_MAX_RETRY": "3",
                "GDAL_HTTP_RETRY_DELAY": "1", "GDAL_HTTP_TIMEOUT": "60", "GDAL_HTTP_CONNECTTIMEOUT": "10"}
_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".jp2": "JP2OpenJPEG", ".vrt": "VRT"}  # a VRT mosaics real files


@dataclass
class SpectralImage:
    """Bands of one scene on a common grid.

    `data`: float32 (C, H, W), the values as stored (no offset or scale applied: see `radiometry`);
    `band_names`: canonical name of each channel; `metadata`: "source" (path, URL or STAC item location; None for
    arrays), "crs", "transform" (affine.Affine of the grid), "bounds", "nodata" (the files' declared no-data value or
    None), "band_mask" (per-channel bool, True = band present), "dtype" (the stored data type, e.g. "uint16"),
    "scale_offset_tags" ({band: (scale, offset)} of the GeoTIFF tags that are not the neutral (1, 0)) and, for a
    STAC item, "stac" (its `sentinel2_stac.StacItem`: the radiometry rules read it).
    """

    data: np.ndarray
    band_names: list[str]
    metadata: dict = field(default_factory=dict)


def resampling_method(name: str) -> Resampling:
    """The rasterio `Resampling` of one of RESAMPLING_METHODS."""
    if name not in RESAMPLING_METHODS:
        raise ValueError(f"resampling={name!r} is not supported; choose one of {RESAMPLING_METHODS}")
    return getattr(Resampling, name)


def image_metadata(source, crs, transform, shape, nodata, num_bands, dtype=None, scale_offset_tags=None) -> dict:
    """A `SpectralImage`'s metadata for a (height, width) `shape` grid at `transform`."""
    bounds = BoundingBox(*array_bounds(shape[0], shape[1], transform)) if transform is not None else None
    return {"source": source, "crs": crs, "transform": transform, "bounds": bounds,
            "nodata": nodata, "band_mask": [True] * num_bands, "dtype": dtype,
            "scale_offset_tags": scale_offset_tags or {}}


def not_sentinel2(path: str, why: str) -> ValueError:
    """The one error for an input that is not Sentinel-2 multispectral data (a PNG, a JPEG, an RGB rendering)."""
    return ValueError(f"{path} is not a Sentinel-2 multispectral input: {why}; {SENTINEL2_INPUTS}")


def check_raster_extension(path: str) -> None:
    """Refuse a file the reader does not read by its extension (a PNG or JPEG picture, a text file), saying what
    it is (header only)."""
    extension = os.path.splitext(path)[1].lower()
    if extension in _DRIVERS or is_remote(path) or not os.path.isfile(path):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture has none; the error says what it is
            with rasterio.Env(**GDAL_OPTIONS), rasterio.open(path) as dataset:
                why = (f"a {dataset.driver} image with {dataset.count} band(s) of {dataset.dtypes[0]} values"
                       + (", a picture such as an RGB rendering" if dataset.dtypes[0] == "uint8" else ""))
    except RasterioError:
        why = f"a {extension or 'extension-less'} file that is no image GDAL reads"
    raise not_sentinel2(path, why)


def open_raster(path: str, what: str | None = None):
    """Open a GeoTIFF or JPEG2000 file or URL (driver from the extension); another kind of file (`check_raster_extension`)
    or an unreadable one is a ValueError naming `what` (default the path: a STAC layout names the asset, see
    `SourceLayout.describe`)."""
    check_raster_extension(path)
    extension = os.path.splitext(urlparse(path).path if is_remote(path) else path)[1].lower()
    try:
        return rasterio.open(path, driver=_DRIVERS.get(extension))
    except RasterioError as err:
        if is_remote(path):
            raise ValueError(f"cannot read {what or path}: the href does not answer with a readable raster "
                             f"({err})") from err
        kind = "JPEG2000" if extension == ".jp2" else "GeoTIFF"
        raise ValueError(f"cannot read {what or path}: not a readable {kind} ({err})") from err


def read_pixels(dataset, path: str, indexes=None, window=None, **read_options) -> np.ndarray:
    """`dataset.read(indexes, window=window, ...)` (a window or, with `out_shape`, a decimated read); a truncated or
    corrupt file is a ValueError naming `path`."""
    try:
        return dataset.read(indexes, window=window, **read_options)
    except RasterioError as err:
        raise ValueError(f"cannot read the pixels of {path}: the file is truncated or corrupt ({err})") from err


@dataclass(frozen=True)
class RasterHeader:
    """What a raster file's header says (no pixels read): band `count`, `height` x `width` pixels, `crs`,
    `transform`, `dtype` (of the first band), declared `nodata`, band `descriptions`, GeoTIFF `scales`/`offsets`."""

    path: str
    count: int
    height: int
    width: int
    crs: object
    transform: object
    dtype: str
    nodata: float | None
    descriptions: tuple
    scales: tuple
    offsets: tuple

    def band_names(self, band_names=None) -> list[str]:
        """Canonical names of the bands: `band_names` (one per band) when given, else from the band descriptions,
        a single band's file name or the band count (KNOWN_LAYOUTS)."""
        if band_names is not None:
            names = canonical_band_names(band_names)
            if len(names) != self.count:
                raise ValueError(f"band_names (--band-names) has {len(names)} names but {self.path} has {self.count} "
                                 "bands")
            return names
        if all(self.descriptions):
            try:
                return canonical_band_names([d.split()[0] for d in self.descriptions],
                                            argument=f"band descriptions of {self.path}")
            except ValueError:
                pass
        parsed = parse_band_file_name(self.path)
        if self.count == 1 and parsed is not None:
            return [parsed.band]
        if self.count in KNOWN_LAYOUTS:
            return list(KNOWN_LAYOUTS[self.count])
        unnamed = (f"{self.count} band(s) of {self.dtype} values without Sentinel-2 band descriptions, which is not a "
                   "known layout (12 = SpectralGPT order, 13 = EuroSAT order)")
        if self.dtype == "uint8" and self.count in (1, 3, 4):
            raise not_sentinel2(self.path, f"{unnamed}: a picture such as an RGB rendering; if they are Sentinel-2 "
                                           f"bands after all, {BAND_NAMES_HINT}")
        raise ValueError(f"{self.path} has {unnamed}; {BAND_NAMES_HINT}")

    def has_scale_offset_tags(self) -> bool:
        return any((scale, offset) != (1.0, 0.0) for scale, offset in zip(self.scales, self.offsets))

    def scale_offset_tags(self, names) -> dict:
        """{band: (scale, offset)} of the bands (named `names`) whose tags are not the neutral (1, 0)."""
        return {band: (float(scale), float(offset)) for band, scale, offset in zip(names, self.scales, self.offsets)
                if (scale, offset) != (1.0, 0.0)}

    def check_single_band(self, band: str) -> None:
        """A band folder's file holds one band."""
        if self.count != 1:
            raise ValueError(f"{self.path} should hold the single band {band} but has {self.count} bands")


def header_of(dataset, path: str) -> RasterHeader:
    """The `RasterHeader` of an open dataset."""
    return RasterHeader(path, dataset.count, dataset.height, dataset.width, dataset.crs, dataset.transform,
                        dataset.dtypes[0], dataset.nodata, tuple(dataset.descriptions), tuple(dataset.scales),
                        tuple(dataset.offsets))


@dataclass(frozen=True)
class SizeLimit:
    """The largest raster file a kind of read accepts, judged from its header: at most `max_pixels` (declared width
    x height) and `max_samples` (bands x width x height). `reads` names the reads it governs and `advice` says what
    to do instead, for the error message."""

    max_pixels: int
    max_samples: int
    reads: str
    advice: str


S2_TILE_SIDE = 10980  # pixels of a whole Sentinel-2 tile (110 km) on the 10 m grid
# Whole-image reads (the image processor, pipeline(), caption / classify, build-dataset, the web app) hold every band
# of the file as float32 at once: at most one Sentinel-2 tile, 13 bands of it (about 7.9 GiB with the resampling).
WHOLE_IMAGE_LIMIT = SizeLimit(S2_TILE_SIDE ** 2, 13 * S2_TILE_SIDE ** 2,
                              f"whole-image reads (one Sentinel-2 tile, {S2_TILE_SIDE} x {S2_TILE_SIDE})",
                              "map larger scenes tile by tile with `spectral-llava map`")
# Windowed scene reads (`spectral-llava map`) hold one batch of tiles, whatever the scene's size; what grows with
# the scene is the tile plan and the output (one row per tile): at most 4 x 4 Sentinel-2 tiles, 118,336 tiles of
# 128 px.
SCENE_WINDOW_LIMIT = SizeLimit(16 * S2_TILE_SIDE ** 2, 13 * 16 * S2_TILE_SIDE ** 2,
                               f"windowed scene reads (4 x 4 Sentinel-2 tiles, {4 * S2_TILE_SIDE} x "
                               f"{4 * S2_TILE_SIDE})",
                               "cut the scene into smaller files (e.g. with `gdal_translate -srcwin`) and map each")


def check_declared_size(header: RasterHeader, limit: SizeLimit = WHOLE_IMAGE_LIMIT) -> RasterHeader:
    """`header` when the raster size it declares is within `limit`, else a ValueError naming the file and its
    declared width x height. Headers only: readers call it before reading any pixel of the file."""
    pixels = header.width * header.height
    if pixels > limit.max_pixels:
        raise ValueError(f"{header.path} declares {header.width} x {header.height} pixels, over the limit of "
                         f"{limit.reads}: {limit.max_pixels:,} pixels; {limit.advice}")
    if header.count * pixels > limit.max_samples:
        raise ValueError(f"{header.path} declares {header.count} bands of {header.width} x {header.height} pixels, "
                         f"over the limit of {limit.reads}: {limit.max_samples:,} band pixels; {limit.advice}")
    return header


def read_header(path, what: str | None = None) -> RasterHeader:
    """The header of one raster file or URL (no pixels read); an unreadable file is a ValueError naming `what`
    (default the path)."""
    path = os.fspath(path)
    with rasterio.Env(**GDAL_OPTIONS), open_raster(path, what) as dataset:
        return header_of(dataset, path)


def check_one_grid(layout: SourceLayout, headers: dict) -> None:
    """A STAC item's band files must share one CRS (the item is one scene on one grid): a ValueError naming the
    assets and their CRSs otherwise. Other layouts may mix CRSs (their bands are reprojected)."""
    if layout.item is None or len({header.crs for header in headers.values()}) <= 1:
        return
    listed = ", ".join(f"{band} {layout.item.bands[band].key!r} {header.crs}" for band, header in headers.items())
    raise ValueError(f"{layout.item.where}: its band files lie in different CRSs ({listed}); a scene needs one grid")


def detect_layout(source, select_bands=None) -> SourceLayout:
    """Which layout any source is (`LAYOUTS`) and which band file or href holds each band, nothing opened but a STAC
    item's JSON: a STAC item (`sentinel2_stac.is_stac_source`) -> "stac" with its band assets' hrefs; a raster URL
    -> "file"; a local path -> `detect_path_layout`. `select_bands`: keep only these bands' files."""
    if is_stac_source(source):
        item = load_item(source)
        where = item.location or f"STAC item {item.id}"
        files = select_band_files({band: asset.href for band, asset in item.bands.items()}, select_bands, where)
        return SourceLayout("stac", where, files, None, item)
    if is_raster_url(source):
        return SourceLayout("file", source)
    return detect_path_layout(local_path(os.fspath(source)), select_bands)


def read_scale_offset_tags(source, band_names=None) -> dict:
    """The GeoTIFF scale/offset tags of a file, band folder, SAFE product, `<dir>/<patch>` prefix or STAC item, by
    band (headers only; bands with the neutral (1, 0) are left out). `band_names`: as for `read_image`, needed only
    for a multi-band file with tags whose bands its header does not name."""
    layout = detect_layout(source)
    if layout.kind == "file":
        header = read_header(layout.path)
        return header.scale_offset_tags(header.band_names(band_names)) if header.has_scale_offset_tags() else {}
    tags = {}
    for band, file in layout.files.items():
        tags.update(read_header(file, layout.describe(band)).scale_offset_tags([band]))
    return tags


def read_image(source, band_names=None, resampling: str = "bilinear", select_bands=None):
    """Read one image (or a list of them) into `SpectralImage`(s) on the finest (10 m) grid.

    source: a multi-band GeoTIFF (a path, or an http(s):// / s3:// URL read through GDAL); a STAC item (`.json`
      file, item URL, dict or `pystac.Item`: its band assets, read from their hrefs); a patch folder holding one
      GeoTIFF per band (`<patch>_B02.tif` BigEarthNet v1/v2, `B2.tif` SSL4EO, `B02.tif` Major-TOM; `.tif` or
      `.tiff`); a path prefix `<dir>/<patch>` when many patches
      share one flat folder; a numpy array or torch tensor (C, H, W) or (H, W, C) or a batch (B, C, H, W);
      a `SpectralImage` (returned as is); or a list of these (returns a list).
    band_names: names of the channels of an array or multi-band file, overriding the file's band descriptions.
      Unnamed inputs: 12 channels are taken in SpectralGPT order, 13 channels in the EuroSAT file order
      (B01..B09, B10, B11, B12, B8A); any other count is an error.
    resampling: how 20 m and 60 m bands are brought onto the 10 m grid using the files' georeferencing
      (one of RESAMPLING_METHODS).
    select_bands: for patch folders, read only these bands (the others are not opened).
    Every file's declared size is checked against WHOLE_IMAGE_LIMIT (`check_declared_size`) before any pixel is read.
    """
    method = resampling_method(resampling)
    if isinstance(source, SpectralImage):
        return source
    if isinstance(source, (list, tuple)):
        return [read_image(item, band_names, resampling, select_bands) for item in source]
    if isinstance(source, torch.Tensor):
        dtype = str(source.dtype).removeprefix("torch.")
        source = source.detach().cpu().float().numpy()
    else:
        dtype = None
    if isinstance(source, np.ndarray):
        if source.ndim == 4:
            return [_from_array(item, band_names, dtype) for item in source]
        return _from_array(source, band_names, dtype)
    if isinstance(source, (str, os.PathLike)) or is_stac_source(source):
        layout = detect_layout(source, select_bands)
        if layout.kind != "file" and band_names is not None:
            what = ("a STAC item whose band metadata gives" if layout.kind == "stac"
                    else "a band folder whose file names give")
            raise ValueError(f"band_names= names the channels of an array or multi-band file, but {layout.path} "
                             f"is {what} the bands; use select_bands= instead")
        with rasterio.Env(**GDAL_OPTIONS):
            if layout.kind == "file":
                return _read_multiband_file(layout.path, band_names)
            return _read_band_files(layout, method)
    raise TypeError(f"cannot read an image from a {type(source).__name__}; pass a GeoTIFF path or URL, a band "
                    "folder, a STAC item, a numpy array or a torch tensor")


def _from_array(array: np.ndarray, band_names, dtype=None) -> SpectralImage:
    array = np.asarray(array)
    dtype = dtype or array.dtype.name
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"an image array must be (C, H, W) or (H, W, C), got shape {array.shape}")
    if band_names is not None:
        names = canonical_band_names(band_names)
        if array.shape[0] != len(names) and array.shape[-1] == len(names):
            array = np.moveaxis(array, -1, 0)
        if array.shape[0] != len(names):
            raise ValueError(f"band_names has {len(names)} names but the array of shape {array.shape} has neither "
                             f"{len(names)} leading nor trailing channels")
    else:
        if array.shape[0] not in KNOWN_LAYOUTS and array.shape[-1] in KNOWN_LAYOUTS:
            array = np.moveaxis(array, -1, 0)
        if array.shape[0] not in KNOWN_LAYOUTS:
            raise ValueError(f"an array of shape {array.shape} without band_names: its band count is not a known "
                             "layout (12 = SpectralGPT order, 13 = EuroSAT order); pass band_names=[...]")
        names = list(KNOWN_LAYOUTS[array.shape[0]])
    data = np.ascontiguousarray(array, dtype=np.float32)
    return SpectralImage(data, names, image_metadata(None, None, None, data.shape[1:], None, len(names), dtype))


def _read_multiband_file(path: str, band_names) -> SpectralImage:
    with open_raster(path) as dataset:
        header = check_declared_size(header_of(dataset, path))
        names = header.band_names(band_names)
        data = read_pixels(dataset, path).astype(np.float32, copy=False)
    return SpectralImage(data, names, image_metadata(path, header.crs, header.transform, data.shape[1:], header.nodata,
                                                     len(names), header.dtype, header.scale_offset_tags(names)))


def aligned_factor(src_transform, src_shape, dst_transform, dst_shape):
    """Integer upsampling factor when the source grid is the destination grid coarsened by it, else None."""
    if src_transform.b != 0 or src_transform.d != 0 or dst_transform.b != 0 or dst_transform.d != 0:
        return None
    factor = src_transform.a / dst_transform.a
    rounded = round(factor)
    if rounded < 1 or not math.isclose(factor, rounded, rel_tol=1e-9) \
            or not math.isclose(src_transform.e / dst_transform.e, rounded, rel_tol=1e-9):
        return None
    tolerance = abs(dst_transform.a) * 1e-6
    if abs(src_transform.c - dst_transform.c) > tolerance or abs(src_transform.f - dst_transform.f) > tolerance:
        return None
    if src_shape[0] * rounded != dst_shape[0] or src_shape[1] * rounded != dst_shape[1]:
        return None
    return rounded


def _to_grid(band: np.ndarray, src_transform, src_crs, dst_transform, dst_crs, dst_shape, method, nodata):
    """Resample one band onto the reference grid.

    Same CRS, an aligned integer coarsening (the Sentinel-2 20 m / 60 m case) and no declared no-data value:
    bilinear is computed with torch (pixel-centre bilinear, identical to GDAL's for upsampling, see tests) and
    nearest by repetition. Anything else goes through rasterio.warp.reproject, which skips the declared no-data
    value; pixels it cannot fill become NaN (no-data).
    """
    if src_crs == dst_crs and nodata is None and method in (Resampling.bilinear, Resampling.nearest):
        factor = aligned_factor(src_transform, band.shape, dst_transform, dst_shape)
        if factor is not None:
            if method == Resampling.nearest:
                return np.repeat(np.repeat(band, factor, axis=0), factor, axis=1)
            resized = F.interpolate(torch.from_numpy(band)[None, None], size=dst_shape, mode="bilinear",
                                    align_corners=False)
            return resized[0, 0].numpy()
    out = np.full(dst_shape, np.nan, dtype=np.float32)
    reproject(band, out, src_transform=src_transform, src_crs=src_crs, src_nodata=nodata,
              dst_transform=dst_transform, dst_crs=dst_crs, dst_nodata=np.nan, resampling=method)
    return out


def _read_band_files(layout: SourceLayout, method: Resampling) -> SpectralImage:
    where, files = layout.path, layout.files
    if not files:
        raise ValueError(f"{where}: none of the requested bands has a file")
    bands, headers, tags = {}, {}, {}
    with ExitStack() as stack:
        datasets = {band: stack.enter_context(open_raster(path, layout.describe(band))) for band, path in files.items()}
        for band, dataset in datasets.items():  # every header checked before any pixel is read
            headers[band] = header = check_declared_size(header_of(dataset, files[band]))
            header.check_single_band(band)
            tags.update(header.scale_offset_tags([band]))
        check_one_grid(layout, headers)
        for band, dataset in datasets.items():
            bands[band] = read_pixels(dataset, files[band], 1).astype(np.float32, copy=False)
    # The reference grid is the finest band's (10 m); ties go to the canonical order.
    names = [band for band in CANONICAL_BANDS if band in bands]
    ref = headers[min(names, key=lambda band: abs(headers[band].transform.a))]
    ref_shape = (ref.height, ref.width)
    data = np.empty((len(names), *ref_shape), dtype=np.float32)
    for index, band in enumerate(names):
        header = headers[band]
        if bands[band].shape == ref_shape and header.transform.almost_equals(ref.transform) and header.crs == ref.crs:
            data[index] = bands[band]
        else:
            data[index] = _to_grid(bands[band], header.transform, header.crs, ref.transform, ref.crs, ref_shape,
                                   method, header.nodata)
    metadata = image_metadata(where, ref.crs, ref.transform, ref_shape, ref.nodata, len(names), ref.dtype, tags)
    if layout.item is not None:
        metadata["stac"] = layout.item
    return SpectralImage(data, names, metadata)


def ground_extent(height: int, width: int, transform=None, crs=None) -> tuple[float, float]:
    """(height, width) in metres of a height x width grid: from the pixel size in a projected CRS, else (arrays,
    geographic CRSs) assuming 10 m pixels."""
    if transform is not None and crs is not None and crs.is_projected:
        metres = crs.linear_units_factor[1]
        return (height * math.hypot(transform.d, transform.e) * metres,
                width * math.hypot(transform.a, transform.b) * metres)
    return height * NOMINAL_PIXEL_SIZE_M, width * NOMINAL_PIXEL_SIZE_M


__all__ = ["SpectralImage", "RasterHeader", "read_image", "read_header", "header_of", "read_scale_offset_tags",
           "SizeLimit", "check_declared_size", "WHOLE_IMAGE_LIMIT", "SCENE_WINDOW_LIMIT", "S2_TILE_SIDE",
           "detect_layout", "check_one_grid", "open_raster", "read_pixels", "check_raster_extension", "not_sentinel2",
           "BAND_NAMES_HINT", "resampling_method", "aligned_factor", "image_metadata", "ground_extent",
           "GDAL_OPTIONS", "RESAMPLING_METHODS", "NOMINAL_PIXEL_SIZE_M",
           # names and layouts, from sentinel2_bands
           "CANONICAL_BANDS", "SPECTRALGPT_BANDS", "EUROSAT_FILE_ORDER", "KNOWN_LAYOUTS", "RASTER_EXTENSIONS",
           "LAYOUTS", "PRODUCT_NAME_RE", "BandFile", "SourceLayout", "canonical_band_name", "canonical_band_names",
           "parse_band_file_name", "detect_path_layout", "select_band_files", "is_safe_product", "safe_band_files",
           "product_id",
           # STAC items, from sentinel2_stac
           "StacItem", "is_stac_source", "is_raster_url", "is_remote", "load_item", "local_path"]
