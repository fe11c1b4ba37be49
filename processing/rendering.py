"""RGB renderings of Sentinel-2 bands for people: the web app's true and false colour, scene overview quicklooks and
the Spectral-Inst patch PNGs all stretch with `stretch_rgb`. Not remote code (models never render); numpy only.
"""

import numpy as np

TRUE_COLOUR = ("B04", "B03", "B02")
FALSE_COLOUR = ("B08", "B04", "B03")
RGB_PERCENTILES = (2.0, 98.0)


def stretch_rgb(bands: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = RGB_PERCENTILES,
                per_band: bool = False, gamma: float = 1.0) -> np.ndarray:
    """(3, H, W) values -> (H, W, 3) uint8, stretched linearly from the low to the high percentile of the valid
    values, clipped, raised to 1 / `gamma` (above 1 brightens the shadows) and rounded; invalid values are black.

    valid: bool, (H, W) (one mask for the three bands) or (3, H, W). One range shared by the three bands keeps the
    colour balance; `per_band` stretches each band on its own range. Neither changes when an offset or scale is
    applied to all three bands, so renderings can be made from raw values.
    """
    bands = np.asarray(bands, dtype=np.float32)
    valid = np.broadcast_to(valid, bands.shape)
    scaled = np.zeros(bands.shape, dtype=np.float32)
    for channels in ([0], [1], [2]) if per_band else ([0, 1, 2],):
        values, mask = bands[channels], valid[channels]
        if mask.any():
            low, high = np.percentile(values[mask], percentiles)
            scaled[channels] = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
    if gamma != 1.0:
        scaled **= 1.0 / gamma
    scaled = np.where(valid, scaled, np.float32(0))
    return np.round(np.moveaxis(scaled, 0, -1) * 255.0).astype(np.uint8)


__all__ = ["TRUE_COLOUR", "FALSE_COLOUR", "RGB_PERCENTILES", "stretch_rgb"]
