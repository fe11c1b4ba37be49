"""What the app shows about an input before the model runs: renderings, bands, radiometry, CRS and footprint.

Everything comes from the model's own image processor (`return_metadata=True`: bands read, band mask, CRS,
bounds and, when the processor reports it, the radiometric handling) and from the raster headers (native pixel
size of each band file the reader reads). Renderings (`processing.rendering.stretch_rgb`) stretch each raw band
from its 2nd to its 98th percentile, so a radiometric offset or scale does not change them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.warp import transform_bounds

from spectral_llava.processing.image_processing_spectral_llava import footprint_ratio
from spectral_llava.processing.rendering import FALSE_COLOUR, TRUE_COLOUR, stretch_rgb
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import (NOMINAL_PIXEL_SIZE_M, SPECTRALGPT_BANDS, canonical_band_name,
                                                   ground_extent, read_header, read_image)

from .inputs import image_files

DISPLAY_MIN_PX = 256  # small patches are enlarged (nearest) so that their pixels stay visible
DISPLAY_MAX_PX = 768  # large scenes are decimated for the page


@dataclass
class InputReport:
    source: Path
    height: int
    width: int
    crs: str | None
    bounds: tuple | None  # (left, bottom, right, top) in `crs`
    lonlat_bounds: tuple | None  # (west, south, east, north), WGS84
    extent_m: tuple[float, float]  # (north-south, east-west) ground extent (`sentinel2_io.ground_extent`)
    bands: list[dict]  # one row per model band: band, status, native pixel size, note
    radiometry: dict | None
    true_colour: np.ndarray | None
    false_colour: np.ndarray | None
    tile_px: int  # the model's footprint in 10 m pixels
    quicklook: tuple | None = None  # (rgb (H, W, 3) uint8, transform, crs) at most DISPLAY_MAX_PX, for the map
    notes: list[str] = field(default_factory=list)

    @property
    def tiles(self) -> tuple[int, int]:
        """(rows, cols) of model-sized tiles needed to cover the input."""
        return math.ceil(self.height / self.tile_px), math.ceil(self.width / self.tile_px)

    @property
    def larger_than_one_tile(self) -> bool:
        return self.height > self.tile_px or self.width > self.tile_px

    @property
    def footprint_ratio(self) -> float:
        """How many times the model's footprint the input's ground extent is, in the worse direction."""
        return max(self.extent_m) / (self.tile_px * NOMINAL_PIXEL_SIZE_M)


def for_display(rgb: np.ndarray) -> np.ndarray:
    longest = max(rgb.shape[:2])
    if longest < DISPLAY_MIN_PX:
        factor = DISPLAY_MIN_PX // longest + 1
        return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    if longest > DISPLAY_MAX_PX:
        step = math.ceil(longest / DISPLAY_MAX_PX)
        return np.ascontiguousarray(rgb[::step, ::step])
    return rgb


def composite(image, names: tuple[str, str, str]) -> np.ndarray | None:
    """Render three bands of a SpectralImage at its own size; None when one of them is missing."""
    channel = {band: index for index, band in enumerate(image.band_names)}
    if any(band not in channel for band in names):
        return None
    bands = np.stack([image.data[channel[band]] for band in names])
    return stretch_rgb(bands, np.all(np.isfinite(bands) & (bands != 0), axis=0), per_band=True)


def quicklook(rgb: np.ndarray, transform, crs) -> tuple | None:
    """(rgb decimated to at most DISPLAY_MAX_PX, its transform, crs) for the map's background."""
    if transform is None or crs is None:
        return None
    step = max(1, math.ceil(max(rgb.shape[:2]) / DISPLAY_MAX_PX))
    return np.ascontiguousarray(rgb[::step, ::step]), transform @ Affine.scale(step), crs


def native_pixel_sizes(source: Path) -> dict[str, float]:
    """Native pixel size of each band file the reader reads (the finest copy of a band in a SAFE product);
    {"*": size} for one multi-band file. Headers only."""
    return {band: abs(read_header(path).transform.a) for band, path in image_files(source).items()}


def _pixel_label(size: float, geographic: bool) -> str:
    return f"{size:.3g}°" if geographic else f"{size:.3g} m"


def band_rows(metadata: dict, model_bands, sizes: dict[str, float], geographic: bool) -> list[dict]:
    """One row per model band, then one per band present but not used. Aliases are one band (`B1.tif` of SSL4EO is
    B01): names are compared in their canonical spelling."""
    sizes = {key if key == "*" else canonical_band_name(key): size for key, size in sizes.items()}
    read = {canonical_band_name(band) for band in metadata.get("band_names") or []}
    mask = dict(zip(model_bands, metadata.get("band_mask") or []))
    finest = min(sizes.values()) if sizes else None
    rows = []
    for band in model_bands:
        size = sizes.get(band, sizes.get("*"))
        pixel = _pixel_label(size, geographic) if size is not None else ""
        if band not in read:
            rows.append({"band": band, "status": "missing", "native pixel": pixel,
                         "handling": "filled with the dataset mean, masked out"})
        elif not mask.get(band, True):
            rows.append({"band": band, "status": "no data", "native pixel": pixel,
                         "handling": "every pixel no-data: filled with the dataset mean, masked out"})
        elif size is not None and finest is not None and size > finest * 1.01:
            rows.append({"band": band, "status": "resampled", "native pixel": pixel,
                         "handling": f"resampled onto the {_pixel_label(finest, geographic)} grid"})
        else:
            rows.append({"band": band, "status": "found", "native pixel": pixel, "handling": "as read"})
    extra = sorted(set(sizes) - set(model_bands) - {"*"})
    extra += sorted(read - set(model_bands) - set(extra))
    for band in extra:
        rows.append({"band": band, "status": "not used", "native pixel": "",
                     "handling": "not one of the model's bands (dropped)"})
    return rows


def describe_input(source: Path, image_processor, radiometry=None) -> InputReport:
    """Read `source` through the model's image processor (metadata; with the radiometric handling `radiometry`, a
    `RadiometrySettings`, default the processor's own) and the reader (renderings)."""
    features = image_processor(str(source), return_metadata=True, radiometry=radiometry)
    metadata = features["metadata"][0]
    model_bands = list(getattr(image_processor, "band_names", SPECTRALGPT_BANDS))
    select = None if source.is_file() else sorted(set(TRUE_COLOUR + FALSE_COLOUR))
    image = read_image(str(source), select_bands=select)
    crs = metadata.get("crs")
    bounds = metadata.get("bounds")
    height, width = image.data.shape[1:]
    lonlat = None
    if crs is not None and bounds is not None:
        lonlat = tuple(transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))
    notes = []
    if crs is None:
        notes.append("no georeferencing: the footprint and the map are not available")
    sizes = native_pixel_sizes(source)
    true_colour, false_colour = composite(image, TRUE_COLOUR), composite(image, FALSE_COLOUR)
    report = InputReport(
        source=source, height=height, width=width, crs=crs.to_string() if crs is not None else None,
        bounds=tuple(bounds) if bounds is not None else None, lonlat_bounds=lonlat,
        extent_m=ground_extent(height, width, metadata.get("transform"), crs),
        bands=band_rows(metadata, model_bands, sizes, bool(crs is not None and crs.is_geographic)),
        radiometry=metadata.get("radiometry"),
        true_colour=for_display(true_colour) if true_colour is not None else None,
        false_colour=for_display(false_colour) if false_colour is not None else None,
        tile_px=int(image_processor.image_size),
        quicklook=quicklook(true_colour, metadata.get("transform"), crs) if true_colour is not None else None,
        notes=notes)
    for name, rendering in (("true colour (B04/B03/B02)", report.true_colour),
                            ("false colour (B08/B04/B03)", report.false_colour)):
        if rendering is None:
            notes.append(f"no {name} rendering: a band it needs is missing")
    return report


def input_footprint_ratio(source: Path, image_processor) -> float:
    """`footprint_ratio` of an input from its headers (no pixels read), as `spectral-llava caption` computes it."""
    with SceneReader(str(source), select_bands=image_processor.band_names) as reader:
        return footprint_ratio(image_processor.image_size, reader.height, reader.width, reader.transform, reader.crs)
