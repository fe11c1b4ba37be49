"""Read Sentinel-2 imagery by band name onto the 10 m grid.

Remote code: copied flat into saved model directories next to the image processor, so it imports only third-party
libraries.

`read_image(source, band_names=None, resampling="bilinear")` turns a GeoTIFF, a patch folder with one file per
band, an array or a tensor into a `SpectralImage` on the 10 m grid, with its bands named canonically.
"""

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.coords import BoundingBox
from rasterio.errors import RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import Resampling, reproject

CANONICAL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
# SpectralGPT's 12 bands in model order (B10, cirrus, dropped).
SPECTRALGPT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# Band order inside an EuroSAT-MS GeoTIFF: B8A is stored last.
EUROSAT_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
# Unnamed inputs are accepted only for these band counts.
KNOWN_LAYOUTS = {12: SPECTRALGPT_BANDS, 13: EUROSAT_FILE_ORDER}
# BigEarthNet statistics used by SpectralGPT (reflectance x 10000), in SPECTRALGPT_BANDS order.
RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")
RASTER_EXTENSIONS = (".tif", ".tiff")
_BAND_NAME_RE = re.compile(r"^B?0*(\d{1,2})(A?)$", re.IGNORECASE)
# A band file's stem ends in its band name: "B02", "B2", "B8A" or "<patch>_B02".
_BAND_FILE_RE = re.compile(r"^(?P<prefix>.*?)(?:^|[_\-.])(?P<band>B\d{1,2}A?)$", re.IGNORECASE)
# Faster GeoTIFF opening: no directory listing per open, CRS straight from the GeoKeys (same CRS, no EPSG lookup).
_GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GTIFF_SRS_SOURCE": "GEOKEYS"}


def canonical_band_name(name: str) -> str:
    """Map a Sentinel-2 band alias (`B2`, `b02`, `B8a`, `8A`, `2`) to its canonical name (`B02`, `B8A`)."""
    match = _BAND_NAME_RE.match(str(name).strip())
    if match is not None:
        number, suffix = int(match.group(1)), match.group(2).upper()
        if suffix and number == 8:
            return "B8A"
        if not suffix and 1 <= number <= 12:
            return f"B{number:02d}"
    raise ValueError(f"unknown Sentinel-2 band name {name!r}; expected one of {', '.join(CANONICAL_BANDS)} "
                     "(aliases such as B2, b02, B8a are accepted)")


def canonical_band_names(names, argument: str = "band_names") -> list[str]:
    """Canonicalise a list of band names, refusing duplicates."""
    if isinstance(names, str):
        raise ValueError(f"{argument} must be a list of band names, got the string {names!r}")
    canonical = [canonical_band_name(name) for name in names]
    duplicates = sorted({band for band in canonical if canonical.count(band) > 1})
    if duplicates:
        raise ValueError(f"{argument} names band(s) {duplicates} more than once: {list(names)}")
    return canonical


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


def _resampling(method: str) -> Resampling:
    if method not in RESAMPLING_METHODS:
        raise ValueError(f"resampling={method!r} is not supported; choose one of {RESAMPLING_METHODS}")
    return getattr(Resampling, method)


def _metadata(source, crs, transform, shape, nodata, num_bands, dtype=None, scale_offset_tags=None) -> dict:
    bounds = BoundingBox(*array_bounds(shape[0], shape[1], transform)) if transform is not None else None
    return {"source": source, "crs": crs, "transform": transform, "bounds": bounds,
            "nodata": nodata, "band_mask": [True] * num_bands, "dtype": dtype,
            "scale_offset_tags": scale_offset_tags or {}}


def _scale_offset_tags(dataset, names) -> dict:
    """{band: (scale, offset)} of the bands whose GeoTIFF scale/offset tags are not the neutral (1, 0)."""
    return {band: (float(scale), float(offset)) for band, scale, offset in zip(names, dataset.scales, dataset.offsets)
            if (scale, offset) != (1.0, 0.0)}


def read_scale_offset_tags(source) -> dict:
    """The GeoTIFF scale/offset tags of a file, band folder or `<dir>/<patch>` prefix, by band (headers only; bands
    with the neutral (1, 0) are left out)."""
    path = os.fspath(source)
    with rasterio.Env(**_GDAL_OPTIONS):
        if os.path.isfile(path):
            with _open(path) as dataset:
                return _scale_offset_tags(dataset, _names_from_file(path, dataset))
        files = _band_files_in(path, None) if os.path.isdir(path) else _band_files_with_prefix(path, None)
        if not files:
            raise FileNotFoundError(f"no such image file or band folder: {path}")
        tags = {}
        for band, file in files.items():
            with _open(file, driver="GTiff") as dataset:
                tags.update(_scale_offset_tags(dataset, [band]))
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
    method = _resampling(resampling)
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
        with rasterio.Env(**_GDAL_OPTIONS):
            if os.path.isdir(path):
                if band_names is not None:
                    raise ValueError(f"band_names= names the channels of an array or multi-band file, but {path} "
                                     "is a band folder whose file names give the bands; use select_bands= instead")
                return _read_band_files(path, _band_files_in(path, select_bands), method)
            if os.path.isfile(path):
                return _read_multiband_file(path, band_names)
            prefixed = _band_files_with_prefix(path, select_bands)
            if prefixed:
                return _read_band_files(path, prefixed, method)
        raise FileNotFoundError(f"no such image file or band folder: {path}")
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
    return SpectralImage(data, names, _metadata(None, None, None, data.shape[1:], None, len(names), dtype))


def _open(path: str, driver=None):
    try:
        return rasterio.open(path, driver=driver)
    except RasterioError as err:
        raise ValueError(f"cannot read {path}: not a readable GeoTIFF ({err})") from err


def _read_all(dataset, path: str, indexes=None) -> np.ndarray:
    try:
        return dataset.read(indexes)
    except RasterioError as err:
        raise ValueError(f"cannot read the pixels of {path}: the file is truncated or corrupt ({err})") from err


def _read_multiband_file(path: str, band_names) -> SpectralImage:
    with _open(path) as dataset:
        count = dataset.count
        if band_names is not None:
            names = canonical_band_names(band_names)
            if len(names) != count:
                raise ValueError(f"band_names has {len(names)} names but {path} has {count} bands")
        else:
            names = _names_from_file(path, dataset)
        raw = _read_all(dataset, path)
        data = raw.astype(np.float32, copy=False)
        crs, transform, nodata = dataset.crs, dataset.transform, dataset.nodata
        tags = _scale_offset_tags(dataset, names)
    return SpectralImage(data, names, _metadata(path, crs, transform, data.shape[1:], nodata, len(names),
                                                raw.dtype.name, tags))


def _names_from_file(path: str, dataset) -> list[str]:
    descriptions = dataset.descriptions
    if all(descriptions):
        try:
            return canonical_band_names([d.split()[0] for d in descriptions], argument=f"band descriptions of {path}")
        except ValueError:
            pass
    if dataset.count == 1:
        match = _BAND_FILE_RE.match(os.path.splitext(os.path.basename(path))[0])
        if match is not None:
            return [canonical_band_name(match.group("band"))]
    if dataset.count in KNOWN_LAYOUTS:
        return list(KNOWN_LAYOUTS[dataset.count])
    raise ValueError(f"{path} has {dataset.count} bands without Sentinel-2 band descriptions, which is not a known "
                     "layout (12 = SpectralGPT order, 13 = EuroSAT order); pass band_names=[...]")


def _band_file(name: str):
    stem, extension = os.path.splitext(name)
    if extension.lower() not in RASTER_EXTENSIONS:
        return None
    match = _BAND_FILE_RE.match(stem)
    if match is None:
        return None
    try:
        return match.group("prefix"), canonical_band_name(match.group("band"))
    except ValueError:
        return None


def _select(found: dict, select_bands, where: str) -> dict:
    if not found:
        raise ValueError(f"{where}: no band files found (expected GeoTIFFs named like B02.tif, B2.tif or "
                         "<patch>_B02.tif)")
    if select_bands is None:
        return found
    wanted = set(canonical_band_names(select_bands, argument="select_bands"))
    return {band: path for band, path in found.items() if band in wanted}


def _band_files_in(folder: str, select_bands) -> dict:
    by_prefix: dict[str, dict[str, str]] = {}
    for name in sorted(os.listdir(folder)):
        parsed = _band_file(name)
        if parsed is not None:
            by_prefix.setdefault(parsed[0], {})[parsed[1]] = os.path.join(folder, name)
    if len(by_prefix) > 1:
        raise ValueError(f"{folder} holds band files of {len(by_prefix)} patches ({', '.join(sorted(by_prefix))}); "
                         "pass one patch as the path prefix <folder>/<patch>")
    return _select(next(iter(by_prefix.values()), {}), select_bands, folder)


def _band_files_with_prefix(prefix: str, select_bands) -> dict:
    folder, patch = os.path.split(prefix)
    if not os.path.isdir(folder or "."):
        return {}
    found = {}
    for name in os.listdir(folder or "."):
        parsed = _band_file(name)
        if parsed is not None and parsed[0] == patch:
            found[parsed[1]] = os.path.join(folder, name)
    return _select(found, select_bands, prefix) if found else {}


def _aligned_factor(src_transform, src_shape, dst_transform, dst_shape):
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
        factor = _aligned_factor(src_transform, band.shape, dst_transform, dst_shape)
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
    bands, dtypes, tags = {}, {}, {}
    for band, path in files.items():
        with _open(path, driver="GTiff") as dataset:
            if dataset.count != 1:
                raise ValueError(f"{path} should hold the single band {band} but has {dataset.count} bands")
            raw = _read_all(dataset, path, 1)
            bands[band] = (raw.astype(np.float32, copy=False), dataset.transform, dataset.crs, dataset.nodata)
            dtypes[band] = raw.dtype.name
            tags.update(_scale_offset_tags(dataset, [band]))
    if not bands:
        raise ValueError(f"{where}: none of the requested bands has a file")
    # The reference grid is the finest band's (10 m); ties go to the canonical order.
    names = [band for band in CANONICAL_BANDS if band in bands]
    reference = min(names, key=lambda band: abs(bands[band][1].a))
    _, ref_transform, ref_crs, ref_nodata = bands[reference]
    ref_shape = bands[reference][0].shape
    data = np.empty((len(names), *ref_shape), dtype=np.float32)
    for index, band in enumerate(names):
        array, transform, crs, nodata = bands[band]
        if array.shape == ref_shape and transform.almost_equals(ref_transform) and crs == ref_crs:
            data[index] = array
        else:
            data[index] = _to_grid(array, transform, crs, ref_transform, ref_crs, ref_shape, method, nodata)
    return SpectralImage(data, names, _metadata(where, ref_crs, ref_transform, ref_shape, ref_nodata, len(names),
                                                dtypes[reference], tags))


__all__ = ["SpectralImage", "read_image", "read_scale_offset_tags", "canonical_band_name", "canonical_band_names",
           "CANONICAL_BANDS", "SPECTRALGPT_BANDS", "EUROSAT_FILE_ORDER", "KNOWN_LAYOUTS", "RESAMPLING_METHODS"]
