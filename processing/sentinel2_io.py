"""The one public Sentinel-2 reading API: bands by name onto the 10 m grid, headers, windows.

Remote code: copied flat into saved model directories next to the image processor, so it imports only its sibling
`sentinel2_bands` (band names, band-file names, layouts; every public name of it is re-exported here) and
third-party libraries.

- Names and layouts (from `sentinel2_bands`): `CANONICAL_BANDS`, `SPECTRALGPT_BANDS`, `EUROSAT_FILE_ORDER`,
  `KNOWN_LAYOUTS`, `RASTER_EXTENSIONS`, `PRODUCT_NAME_RE`, `canonical_band_name(s)`, `parse_band_file_name`,
  `detect_layout` -> `SourceLayout` (kind, path, files, prefix), `is_safe_product`, `safe_band_files`, `product_id`.
- Headers, no pixels: `read_header(path)` -> `RasterHeader` (size, CRS, transform, dtype, nodata, band names,
  scale/offset tags); `read_scale_offset_tags(source)`.
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
from dataclasses import dataclass, field

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
                              canonical_band_names, detect_layout, is_safe_product, parse_band_file_name, product_id,
                              safe_band_files)

RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")
# What a user can pass to name the bands of a multi-band file, wherever the reader is called from.
BAND_NAMES_HINT = ("name its bands in file order: band_names=[...] in Python, --band-names B02,B03,... on the command "
                   "line (caption, classify, map, build-dataset), the 'band names' field of the web app")
SENTINEL2_INPUTS = ("the model reads Sentinel-2 bands from a GeoTIFF (.tif, .tiff), JPEG2000 band files (.jp2), a "
                    "folder of band files or a SAFE product")
NOMINAL_PIXEL_SIZE_M = 10.0  # the finest Sentinel-2 grid, which every reader here resamples to
# Faster GeoTIFF opening: no directory listing per open, CRS straight from the GeoKeys (same CRS, no EPSG lookup).
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GTIFF_SRS_SOURCE": "GEOKEYS"}
_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".jp2": "JP2OpenJPEG"}


@dataclass
class SpectralImage:
    """Bands of one scene on a common grid.

    `data`: float32 (C, H, W), the values as stored (no offset or scale applied: see `radiometry`);
    `band_names`: canonical name of each channel; `metadata`: "source" (path or None), "crs", "transform"
    (affine.Affine of the grid), "bounds", "nodata" (the files' declared no-data value or None), "band_mask"
    (per-channel bool, True = band present), "dtype" (the stored data type, e.g. "uint16"), "scale_offset_tags"
    ({band: (scale, offset)} of the GeoTIFF tags that are not the neutral (1, 0)).
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
    if extension in _DRIVERS or not os.path.isfile(path):
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


def open_raster(path: str):
    """Open a GeoTIFF or JPEG2000 file (driver from the extension); another kind of file, or an unreadable one, is a
    ValueError naming it (`check_raster_extension`)."""
    check_raster_extension(path)
    try:
        return rasterio.open(path, driver=_DRIVERS.get(os.path.splitext(path)[1].lower()))
    except RasterioError as err:
        kind = "JPEG2000" if path.lower().endswith(".jp2") else "GeoTIFF"
        raise ValueError(f"cannot read {path}: not a readable {kind} ({err})") from err


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


def read_header(path) -> RasterHeader:
    """The header of one raster file (no pixels read); an unreadable file is a ValueError naming it."""
    path = os.fspath(path)
    with rasterio.Env(**GDAL_OPTIONS), open_raster(path) as dataset:
        return header_of(dataset, path)


def read_scale_offset_tags(source, band_names=None) -> dict:
    """The GeoTIFF scale/offset tags of a file, band folder, SAFE product or `<dir>/<patch>` prefix, by band
    (headers only; bands with the neutral (1, 0) are left out). `band_names`: as for `read_image`, needed only for
    a multi-band file with tags whose bands its header does not name."""
    layout = detect_layout(source)
    if layout.kind == "file":
        header = read_header(layout.path)
        return header.scale_offset_tags(header.band_names(band_names)) if header.has_scale_offset_tags() else {}
    tags = {}
    for band, file in layout.files.items():
        tags.update(read_header(file).scale_offset_tags([band]))
    return tags


def read_image(source, band_names=None, resampling: str = "bilinear", select_bands=None):
    """Read one image (or a list of them) into `SpectralImage`(s) on the finest (10 m) grid.

    source: a multi-band GeoTIFF; a patch folder holding one GeoTIFF per band (`<patch>_B02.tif` BigEarthNet v1/v2,
      `B2.tif` SSL4EO, `B02.tif` Major-TOM; `.tif` or `.tiff`); a path prefix `<dir>/<patch>` when many patches
      share one flat folder; a numpy array or torch tensor (C, H, W) or (H, W, C) or a batch (B, C, H, W);
      a `SpectralImage` (returned as is); or a list of these (returns a list).
    band_names: names of the channels of an array or multi-band file, overriding the file's band descriptions.
      Unnamed inputs: 12 channels are taken in SpectralGPT order, 13 channels in the EuroSAT file order
      (B01..B09, B10, B11, B12, B8A); any other count is an error.
    resampling: how 20 m and 60 m bands are brought onto the 10 m grid using the files' georeferencing
      (one of RESAMPLING_METHODS).
    select_bands: for patch folders, read only these bands (the others are not opened).
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
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path) and band_names is not None:
            raise ValueError(f"band_names= names the channels of an array or multi-band file, but {path} "
                             "is a band folder whose file names give the bands; use select_bands= instead")
        layout = detect_layout(path, select_bands)
        with rasterio.Env(**GDAL_OPTIONS):
            if layout.kind == "file":
                return _read_multiband_file(layout.path, band_names)
            return _read_band_files(path, layout.files, method)
    raise TypeError(f"cannot read an image from a {type(source).__name__}; pass a GeoTIFF path, a band folder, "
                    "a numpy array or a torch tensor")


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
        header = header_of(dataset, path)
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


def _read_band_files(where: str, files: dict, method: Resampling) -> SpectralImage:
    bands, headers, tags = {}, {}, {}
    for band, path in files.items():
        with open_raster(path) as dataset:
            headers[band] = header = header_of(dataset, path)
            header.check_single_band(band)
            bands[band] = read_pixels(dataset, path, 1).astype(np.float32, copy=False)
            tags.update(header.scale_offset_tags([band]))
    if not bands:
        raise ValueError(f"{where}: none of the requested bands has a file")
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
    return SpectralImage(data, names, image_metadata(where, ref.crs, ref.transform, ref_shape, ref.nodata, len(names),
                                                     ref.dtype, tags))


def ground_extent(height: int, width: int, transform=None, crs=None) -> tuple[float, float]:
    """(height, width) in metres of a height x width grid: from the pixel size in a projected CRS, else (arrays,
    geographic CRSs) assuming 10 m pixels."""
    if transform is not None and crs is not None and crs.is_projected:
        metres = crs.linear_units_factor[1]
        return (height * math.hypot(transform.d, transform.e) * metres,
                width * math.hypot(transform.a, transform.b) * metres)
    return height * NOMINAL_PIXEL_SIZE_M, width * NOMINAL_PIXEL_SIZE_M


__all__ = ["SpectralImage", "RasterHeader", "read_image", "read_header", "header_of", "read_scale_offset_tags",
           "open_raster", "read_pixels", "check_raster_extension", "not_sentinel2", "BAND_NAMES_HINT", "resampling_method", "aligned_factor", "image_metadata", "ground_extent",
           "GDAL_OPTIONS", "RESAMPLING_METHODS", "NOMINAL_PIXEL_SIZE_M",
           # names and layouts, from sentinel2_bands
           "CANONICAL_BANDS", "SPECTRALGPT_BANDS", "EUROSAT_FILE_ORDER", "KNOWN_LAYOUTS", "RASTER_EXTENSIONS",
           "LAYOUTS", "PRODUCT_NAME_RE", "BandFile", "SourceLayout", "canonical_band_name", "canonical_band_names",
           "parse_band_file_name", "detect_layout", "is_safe_product", "safe_band_files", "product_id"]
