"""SpectralGPT preprocessing of Sentinel-2 imagery (AutoImageProcessor).

Remote code: copied flat into saved model directories; imports only its siblings `sentinel2_io`, `radiometry` and
`radiometry_settings`.

`SpectralImageProcessor` picks the model's bands in the model's order, finds no-data, brings the values to
reflectance x 10000 (`radiometry`: product offsets, scales, float reflectance, plausibility checks), fills no-data,
applies the SpectralGPT normalisation, resizes and batches: `pixel_values` (B, C, S, S) float32 and `band_mask`
(B, C) bool (False where a band was missing or entirely no-data). Reading is `sentinel2_io.read_image`.
"""

import functools
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

from .radiometry import ResolvedRadiometry, apply_radiometry
from .radiometry_settings import RadiometrySettings
from .sentinel2_io import (NOMINAL_PIXEL_SIZE_M, SPECTRALGPT_BANDS, SpectralImage, canonical_band_names,
                           ground_extent, is_stac_source, read_image, resampling_method)


logger = logging.get_logger(__name__)

SPECTRALGPT_MEAN = (1370.19151926, 1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144, 1645.40315151,
                    1846.87040806, 1762.59530783, 1972.62420416, 582.72633433, 1732.16362238, 1247.91870117)
SPECTRALGPT_STD = (633.15169573, 650.2842772, 712.12507725, 965.23119807, 948.9819932, 1108.06650639,
                   1258.36394548, 1233.1492281, 1364.38688993, 472.37967789, 1310.36996126, 1087.6020813)
# An input whose ground extent exceeds the model's footprint (image_size 10 m pixels) more than this many times in
# either direction is squashed into one image: warned here, refused by `spectral-llava caption` / `classify`.
MAX_FOOTPRINT_RATIO = 2.0


class SpectralImageProcessorKwargs(ImagesKwargs, total=False):
    """Options of `SpectralImageProcessor`: the constructor's, and at call time (directly or through the processor,
    flat or in `images_kwargs`) `band_names`, `resampling`, `do_rescale`, `rescale_factor`, `return_metadata`,
    `return_band_mask`, `return_tensors` and the radiometric handling: `radiometry` (a `RadiometrySettings`) or
    its loose `input_offset`, `input_scale`, `strict`."""

    band_names: list[str] | tuple[str, ...] | None
    band_mean: list[float]
    band_std: list[float]
    image_size: int
    patch_size: int
    resampling: str | None
    nodata_value: int | float | None
    do_center_crop: bool
    crop_size: int | None
    antialias: bool
    return_metadata: bool
    return_band_mask: bool
    input_offset: int | float | None
    input_scale: int | float | None
    strict: bool
    # a RadiometrySettings: this module's copy or the repository's (a model dir's remote code is another module)
    radiometry: Any


class SpectralImageProcessor(BaseImageProcessor):
    r"""SpectralGPT preprocessing for Sentinel-2 inputs, bands addressed by name.

    For each image: read (`read_image`), take the configured `band_names` in that order, treat 0 (`nodata_value`),
    the file's declared no-data value and NaN as no-data (on the raw values), bring the values to reflectance x 10000
    (`radiometry.apply_radiometry`: `input_offset`/`input_scale` when given, else the product metadata, GeoTIFF
    scale/offset tags, product name or float reflectance; implausible values warn, or raise with `strict`), fill
    no-data with the band's mean over its valid pixels, fill bands that are missing or
    entirely no-data with the dataset mean (they normalise to 127/255) and mark them False in `band_mask` (warned
    once per set of missing bands), normalise each band with SpectralGPT's recipe
    `uint8(clip((x - (m - 2s)) / (4s) * 255, 0, 255)) / 255` using `band_mean` / `band_std`, optionally centre-crop
    to `crop_size` pixels at the native 10 m resolution, then resize to `image_size` x `image_size` (torch bicubic,
    align_corners=False; antialiased when downsampling if `antialias`). The recipe's last step, `/ 255`, is the
    rescale: `do_rescale=False` keeps the 0..255 levels, `rescale_factor` replaces 1/255.

    Call: `processor(images, band_names=None, return_tensors="pt", return_metadata=False)`, plus `resampling`,
    `do_rescale`, `rescale_factor` overriding the configured ones for this call, and the radiometric handling of
    this call: `radiometry=RadiometrySettings(...)` whole, or any of `input_offset`, `input_scale`, `strict`
    overriding the configured ones (`radiometry_settings`); `images` is anything `read_image` reads or a list of
    those; `band_names` names the channels of unnamed arrays/files. Returns a BatchFeature with `pixel_values`
    (B, C, S, S) float32 and `band_mask` (B, C) bool (unless `return_band_mask=False`); with `return_metadata=True`
    also `metadata`, a list of one dict per image ("source", "crs", "transform", "bounds", "band_names" read,
    "band_mask", "valid_mask" (C, H, W) bool on the native grid, "radiometry": what the settings resolved to for
    the image, {"offset", "scale", "source", "detail", "band_offsets", "band_scales", "implausible"}) that is never
    converted to tensors.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = SpectralImageProcessorKwargs

    def __init__(self, band_names=SPECTRALGPT_BANDS, band_mean=None, band_std=None, image_size: int = 128,
                 patch_size: int = 8, resampling: str = "bilinear", nodata_value: float | None = 0,
                 do_center_crop: bool = False, crop_size: int | None = None, antialias: bool = True,
                 do_rescale: bool = True, rescale_factor: float = 1 / 255, input_offset: float | None = None,
                 input_scale: float | None = None, strict: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.band_names = canonical_band_names(band_names)
        self.band_mean = [float(v) for v in (band_mean if band_mean is not None else
                                             _default_statistic(self.band_names, SPECTRALGPT_MEAN, "band_mean"))]
        self.band_std = [float(v) for v in (band_std if band_std is not None else
                                            _default_statistic(self.band_names, SPECTRALGPT_STD, "band_std"))]
        for name, values in (("band_mean", self.band_mean), ("band_std", self.band_std)):
            if len(values) != len(self.band_names):
                raise ValueError(f"{name} has {len(values)} values for {len(self.band_names)} band_names")
        if min(self.band_std) <= 0:
            raise ValueError(f"band_std must be positive, got {self.band_std}")
        resampling_method(resampling)
        if do_center_crop and not crop_size:
            raise ValueError("do_center_crop=True needs crop_size (pixels at the native resolution)")
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.resampling = resampling
        self.nodata_value = nodata_value
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = crop_size
        self.antialias = bool(antialias)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        RadiometrySettings(input_offset, input_scale, strict)  # refuses unusable values now, not at the first call
        self.input_offset = input_offset
        self.input_scale = input_scale
        self.strict = bool(strict)

    def __call__(self, images, band_names=None, return_tensors="pt", return_metadata: bool = False, **kwargs):
        return self.preprocess(images, band_names=band_names, return_tensors=return_tensors,
                               return_metadata=return_metadata, **kwargs)

    def preprocess(self, images, band_names=None, return_tensors="pt", return_metadata: bool = False,
                   return_band_mask: bool = True, resampling: str | None = None, do_rescale: bool | None = None,
                   rescale_factor: float | None = None, radiometry: RadiometrySettings | None = None,
                   input_offset: float | None = None, input_scale: float | None = None, strict: bool | None = None,
                   **kwargs) -> BatchFeature:
        unknown = set(kwargs) - {"images_kwargs", "data_format", "input_data_format", "do_convert_rgb"}
        if unknown:
            raise TypeError(f"SpectralImageProcessor got unexpected argument(s) {sorted(unknown)}")
        sources = flatten_images(images)
        if not sources:
            raise ValueError("images is empty: pass at least one image")
        radiometry = self.radiometry_settings(radiometry, input_offset, input_scale, strict)
        pixel_values, band_masks, metadata = [], [], []
        for source in sources:
            image = self.read(source, band_names=band_names, resampling=resampling)
            values, band_mask, meta = self.normalise(image, do_rescale=do_rescale, rescale_factor=rescale_factor,
                                                     radiometry=radiometry)
            pixel_values.append(values)
            band_masks.append(band_mask)
            metadata.append(meta)
        data = {"pixel_values": self.resize(pixel_values)}
        if return_band_mask:
            data["band_mask"] = torch.from_numpy(np.stack(band_masks))
        if return_tensors == "np":
            data = {key: value.numpy() for key, value in data.items()}
        elif return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or 'np'")
        if return_metadata:
            data["metadata"] = metadata
        return BatchFeature(data=data)

    def radiometry_settings(self, radiometry: RadiometrySettings | None = None, input_offset: float | None = None,
                            input_scale: float | None = None, strict: bool | None = None) -> RadiometrySettings:
        """The radiometric handling of one call: `radiometry` whole when given, else the configured `input_offset`,
        `input_scale` and `strict`, each overridden by this call's value when not None."""
        loose = {name: value for name, value in
                 (("input_offset", input_offset), ("input_scale", input_scale), ("strict", strict))
                 if value is not None}
        if radiometry is not None:
            if loose:
                raise TypeError(f"pass radiometry= or {'/'.join(f'{name}=' for name in loose)}, not both")
            return RadiometrySettings(radiometry.input_offset, radiometry.input_scale, radiometry.strict)
        configured = {"input_offset": self.input_offset, "input_scale": self.input_scale, "strict": self.strict}
        return RadiometrySettings(**{**configured, **loose})

    def read(self, source, band_names=None, resampling: str | None = None) -> SpectralImage:
        """Read one source, opening only the configured bands of a band folder or STAC item."""
        named_bands = is_stac_source(source) or (isinstance(source, (str, os.PathLike)) and os.path.isdir(source))
        return read_image(source, band_names=None if named_bands else band_names,
                          resampling=resampling or self.resampling, select_bands=self.band_names)

    def normalise(self, image: SpectralImage, do_rescale: bool | None = None, rescale_factor: float | None = None,
                  radiometry: RadiometrySettings | None = None, resolved: ResolvedRadiometry | None = None):
        """Select, correct, fill and normalise the configured bands of one image -> ((C, H, W) float32, band_mask,
        metadata). The keyword arguments default to the processor's own (`radiometry`: the configured settings);
        `resolved` (what the settings gave for a whole scene, resolved once) skips resolving them for this image."""
        source = image.metadata.get("source")
        where = source if source is not None else "the input array"
        height, width = image.data.shape[1:]
        if self.do_center_crop:
            top, left = max((height - self.crop_size) // 2, 0), max((width - self.crop_size) // 2, 0)
            image = SpectralImage(image.data[:, top:top + self.crop_size, left:left + self.crop_size],
                                  image.band_names, image.metadata)
            height, width = image.data.shape[1:]
        self.warn_if_squashed(height, width, image.metadata.get("transform"), image.metadata.get("crs"), where)
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"{where}: the image is {height}x{width} pixels, smaller than one {self.patch_size}x"
                             f"{self.patch_size} patch (patch_size in the processor config)")
        mean = np.asarray(self.band_mean, dtype=np.float64)[:, None, None]
        std = np.asarray(self.band_std, dtype=np.float64)[:, None, None]
        low, high = mean - 2 * std, mean + 2 * std
        corrected = apply_radiometry(
            image, self.band_names, radiometry if radiometry is not None else self.radiometry_settings(),
            nodata_value=self.nodata_value, resolved=resolved, where=where,
            window_top=dict(zip(self.band_names, high[:, 0, 0].tolist())))
        stack = np.empty((len(self.band_names), height, width), dtype=np.float64)
        valid_mask = np.zeros((len(self.band_names), height, width), dtype=bool)
        band_mask = np.zeros(len(self.band_names), dtype=bool)
        for index, band in enumerate(self.band_names):
            if band not in corrected.values:
                stack[index] = self.band_mean[index]
                continue
            values, valid = corrected.values[band], corrected.valid[band]
            valid_mask[index] = valid
            if valid.all():
                stack[index] = values
            elif valid.any():
                stack[index] = np.where(valid, values, values[valid].mean(dtype=np.float64))
            else:
                stack[index] = self.band_mean[index]
                continue
            band_mask[index] = True
        if not band_mask.any():
            raise ValueError(f"{where}: every pixel of every band is no-data (0 or NaN); nothing to process")
        if not band_mask.all():
            _warn_missing_once([band for band, ok in zip(self.band_names, band_mask) if not ok], where)
        stack -= low
        stack /= high - low
        stack *= 255.0
        np.clip(stack, 0, 255, out=stack)
        levels = stack.astype(np.uint8)
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        # the product in float64, rounded once, is exactly float32(levels) / 255 for the default 1/255
        values = (levels * rescale_factor).astype(np.float32) if do_rescale else levels.astype(np.float32)
        metadata = {key: image.metadata.get(key) for key in ("source", "crs", "transform", "bounds")}
        metadata.update(band_names=list(image.band_names), band_mask=band_mask.tolist(), valid_mask=valid_mask,
                        radiometry=dict(corrected.resolved.as_dict(), implausible=corrected.implausible))
        return values, band_mask, metadata

    def warn_if_squashed(self, height: int, width: int, transform, crs, where: str) -> None:
        ratio = footprint_ratio(self.image_size, height, width, transform, crs)
        if ratio > MAX_FOOTPRINT_RATIO and (where, height, width) not in _WARNED_SQUASHED:
            _WARNED_SQUASHED.add((where, height, width))
            extent = ground_extent(height, width, transform, crs)
            logger.warning(f"{where}: {extent[0] / 1000:.2f} km x {extent[1] / 1000:.2f} km is {ratio:.1f}x the "
                           f"model's footprint ({self.image_size} px x 10 m = {self.image_size / 100:.2f} km) and is "
                           f"squashed into one {self.image_size}x{self.image_size} image; map it tile by tile with "
                           "`spectral-llava map` instead")

    def resize(self, images: list[np.ndarray]) -> torch.Tensor:
        """Bicubic resize of (C, H, W) arrays to (B, C, S, S).

        Computes torch's `interpolate(mode="bicubic", align_corners=False)` (antialiased when either axis is
        downsampled and `antialias` is set): that resize is linear and separable, so its row and column weights are
        taken once per input shape by resizing an identity and applied as two matrix products (faster on CPU; equal
        to interpolate up to float rounding, see tests).
        """
        out = torch.empty((len(images), len(self.band_names), self.image_size, self.image_size),
                          dtype=torch.float32)
        for index, image in enumerate(images):
            channels, height, width = image.shape
            antialias = self.antialias and (height > self.image_size or width > self.image_size)
            rows, cols = _bicubic_weights(height, width, self.image_size, antialias)
            resized_cols = torch.from_numpy(image).reshape(channels * height, width) @ cols
            out[index] = rows @ resized_cols.reshape(channels, height, self.image_size)
        return out


def footprint_ratio(image_size: int, height: int, width: int, transform=None, crs=None) -> float:
    """How many times a height x width image's ground extent exceeds a model's footprint (image_size pixels of 10 m),
    in the worse direction."""
    return max(ground_extent(height, width, transform, crs)) / (image_size * NOMINAL_PIXEL_SIZE_M)


@functools.lru_cache(maxsize=32)
def _bicubic_weights(height: int, width: int, size: int, antialias: bool):
    """(size, height) and (width, size) matrices R, C with R @ x @ C == interpolate(x, (size, size), bicubic).

    torch applies its antialiased kernel to both axes once either is downsampled, hence one flag for both.
    """

    def weights(length: int) -> torch.Tensor:
        identity = torch.eye(length)[None, None]
        return F.interpolate(identity, size=(size, length), mode="bicubic", align_corners=False,
                             antialias=antialias)[0, 0].contiguous()

    return weights(height), weights(width).T.contiguous()


def _default_statistic(band_names, values, argument):
    lookup = dict(zip(SPECTRALGPT_BANDS, values))
    unknown = [band for band in band_names if band not in lookup]
    if unknown:
        raise ValueError(f"no SpectralGPT statistics for band(s) {unknown}; pass {argument}=[...] for all band_names")
    return [lookup[band] for band in band_names]


_WARNED_MISSING: set = set()
_WARNED_SQUASHED: set = set()


def _warn_missing_once(bands: list[str], where: str) -> None:
    key = tuple(bands)
    if key not in _WARNED_MISSING:
        _WARNED_MISSING.add(key)
        logger.warning(f"band(s) {', '.join(bands)} missing or entirely no-data (first seen in {where}); filled with "
                       "the dataset mean and marked False in band_mask (warned once per set of bands)")


def flatten_images(images) -> list:
    """Flatten nested lists of image sources; a 4-D array or tensor counts as a batch of images."""
    if isinstance(images, (list, tuple)):
        return [item for entry in images for item in flatten_images(entry)]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images] if images is not None else []


SpectralImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["SpectralImageProcessor", "flatten_images", "SPECTRALGPT_MEAN", "SPECTRALGPT_STD", "MAX_FOOTPRINT_RATIO",
           "footprint_ratio"]
