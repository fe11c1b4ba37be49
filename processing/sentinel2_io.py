"""Read Sentinel-2 imagery by band name onto the 10 m grid.

Remote code: copied flat into saved model directories next to the image processor, so it imports only third-party
libraries.

`read_image(source, band_names=None, resampling="bilinear")` turns a GeoTIFF, a patch folder with one file per
band, a Sentinel-2 SAFE product (or its granule, IMG_DATA or R10m/R20m/R60m folder), an array or a tensor into a
`SpectralImage` on the 10 m grid, with its bands named canonically. `scene_reader.SceneReader(source)` reads windows
of the same grid without loading the scene (memory bounded by the window, for scene tiling).
"""

import glob
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
RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2")
_BAND_NAME_RE = re.compile(r"^B?0*(\d{1,2})(A?)$", re.IGNORECASE)
# A band file's stem ends in its band name: "B02", "B2", "B8A", "<patch>_B02", or, in Level-2A SAFE products,
# "<tile>_<datetime>_B02_10m" (band then resolution).
_BAND_FILE_RE = re.compile(r"^(?P<prefix>.*?)(?:^|[_\-.])(?P<band>B\d{1,2}A?)(?:_(?P<resolution>\d{2})m)?$",
                           re.IGNORECASE)
_SAFE_RESOLUTION_FOLDER_RE = re.compile(r"^R(10|20|60)m$")
# A Sentinel-2 product name, e.g. S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419
PRODUCT_NAME_RE = re.compile(r"S2[A-D]_MSIL(?:1C|2A)_\d{8}T\d{6}_N\d{4}_R\d{3}_T\w{5}_\d{8}T\d{6}")
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
    """The GeoTIFF scale/offset tags of a file, band folder, SAFE product or `<dir>/<patch>` prefix, by band
    (headers only; bands with the neutral (1, 0) are left out)."""
    path = os.fspath(source)
    with rasterio.Env(**_GDAL_OPTIONS):
        files, multiband = band_sources(path)
        if multiband is not None:
            with _open(multiband) as dataset:
                return _scale_offset_tags(dataset, _names_from_file(multiband, dataset))
        tags = {}
        for band, file in files.items():
            with _open_band_file(file) as dataset:
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
        if os.path.isdir(path) and band_names is not None:
            raise ValueError(f"band_names= names the channels of an array or multi-band file, but {path} "
                             "is a band folder whose file names give the bands; use select_bands= instead")
        with rasterio.Env(**_GDAL_OPTIONS):
            files, multiband = band_sources(path, select_bands)
            if multiband is not None:
                return _read_multiband_file(multiband, band_names)
            return _read_band_files(path, files, method)
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
        kind = "JPEG2000" if path.lower().endswith(".jp2") else "GeoTIFF"
        raise ValueError(f"cannot read {path}: not a readable {kind} ({err})") from err


def _open_band_file(path: str):
    return _open(path, driver="JP2OpenJPEG" if path.lower().endswith(".jp2") else "GTiff")


def _read_all(dataset, path: str, indexes=None, window=None) -> np.ndarray:
    try:
        return dataset.read(indexes, window=window)
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
    """(prefix, canonical band, resolution in m or None) of a band file name, or None."""
    stem, extension = os.path.splitext(name)
    if extension.lower() not in RASTER_EXTENSIONS:
        return None
    match = _BAND_FILE_RE.match(stem)
    if match is None:
        return None
    try:
        band = canonical_band_name(match.group("band"))
    except ValueError:
        return None
    resolution = match.group("resolution")
    return match.group("prefix"), band, int(resolution) if resolution else None


def _select(found: dict, select_bands, where: str) -> dict:
    if not found:
        raise ValueError(f"{where}: no band files found (expected GeoTIFFs or JPEG2000s named like B02.tif, B2.tif, "
                         "<patch>_B02.tif or T33UUU_20170216T102101_B02.jp2, or a Sentinel-2 .SAFE product)")
    if select_bands is None:
        return found
    wanted = set(canonical_band_names(select_bands, argument="select_bands"))
    return {band: path for band, path in found.items() if band in wanted}


def _band_files_in(folder: str, select_bands) -> dict:
    safe = safe_band_files(folder)
    if safe is not None:
        return _select(safe, select_bands, folder)
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


def safe_band_files(path: str) -> dict | None:
    """{band: file} of a Sentinel-2 SAFE product, or None when `path` is not part of one.

    `path` is the `.SAFE` folder (one granule), a granule folder, its `IMG_DATA` folder, or one of a Level-2A
    product's `IMG_DATA/R10m`, `R20m`, `R60m` folders (that resolution only). Level-1C files are named
    `T33UUU_20170216T102101_B02.jp2`, Level-2A files `T21JUK_20231217T135659_B02_10m.jp2`; where a band exists
    at several resolutions the finest is taken. B10 (cirrus, not among SpectralGPT's bands) is dropped.
    """
    path = os.path.normpath(path)
    if path.upper().endswith(".SAFE") or os.path.isdir(os.path.join(path, "GRANULE")):
        img_data = sorted(glob.glob(os.path.join(glob.escape(path), "GRANULE", "*", "IMG_DATA")))
        if not img_data:
            raise ValueError(f"{path}: a SAFE product without GRANULE/<granule>/IMG_DATA")
        if len(img_data) > 1:
            raise ValueError(f"{path} holds {len(img_data)} granules; pass one granule's IMG_DATA folder "
                             f"(e.g. {img_data[0]})")
        path = img_data[0]
    elif os.path.isdir(os.path.join(path, "IMG_DATA")):
        path = os.path.join(path, "IMG_DATA")
    name = os.path.basename(path)
    if name == "IMG_DATA":
        folders = [os.path.join(path, r) for r in ("R10m", "R20m", "R60m") if os.path.isdir(os.path.join(path, r))]
        folders = folders or [path]
    elif _SAFE_RESOLUTION_FOLDER_RE.match(name) and os.path.basename(os.path.dirname(path)) == "IMG_DATA":
        folders = [path]
    else:
        return None
    finest: dict[str, tuple[int, str]] = {}
    for folder in folders:
        for file_name in sorted(os.listdir(folder)):
            parsed = _band_file(file_name)
            if parsed is None or parsed[1] == "B10":
                continue
            resolution = parsed[2] or 0
            if parsed[1] not in finest or resolution < finest[parsed[1]][0]:
                finest[parsed[1]] = (resolution, os.path.join(folder, file_name))
    return {band: file for band, (_, file) in finest.items()}


def product_id(source) -> str | None:
    """The Sentinel-2 product name in a path (the `.SAFE` folder, a Major-TOM product folder, a reBEN patch
    name), else the file or folder name without extension; None for arrays."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = os.path.abspath(os.fspath(source))
    for part in reversed(path.split(os.sep)):
        match = PRODUCT_NAME_RE.search(part)
        if match is not None:
            return match.group(0)
    return os.path.splitext(os.path.basename(path))[0]


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
        with _open_band_file(path) as dataset:
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


NOMINAL_PIXEL_SIZE_M = 10.0  # the finest Sentinel-2 grid, which every reader here resamples to


def ground_extent(height: int, width: int, transform=None, crs=None) -> tuple[float, float]:
    """(height, width) in metres of a height x width grid: from the pixel size in a projected CRS, else (arrays,
    geographic CRSs) assuming 10 m pixels."""
    if transform is not None and crs is not None and crs.is_projected:
        metres = crs.linear_units_factor[1]
        return (height * math.hypot(transform.d, transform.e) * metres,
                width * math.hypot(transform.a, transform.b) * metres)
    return height * NOMINAL_PIXEL_SIZE_M, width * NOMINAL_PIXEL_SIZE_M


def band_sources(source, select_bands=None) -> tuple[dict, str | None]:
    """({band: file} of a band folder / SAFE product / path prefix, None) or ({}, path) for a multi-band file."""
    path = os.fspath(source)
    if os.path.isdir(path):
        return _band_files_in(path, select_bands), None
    if os.path.isfile(path):
        return {}, path
    prefixed = _band_files_with_prefix(path, select_bands)
    if prefixed:
        return prefixed, None
    raise FileNotFoundError(f"no such image file or band folder: {path}")


__all__ = ["SpectralImage", "read_image", "read_scale_offset_tags", "safe_band_files", "product_id",
           "ground_extent", "canonical_band_name", "canonical_band_names", "CANONICAL_BANDS", "SPECTRALGPT_BANDS",
           "EUROSAT_FILE_ORDER", "KNOWN_LAYOUTS", "RESAMPLING_METHODS"]
