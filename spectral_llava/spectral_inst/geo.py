"""Where and when a patch was taken: acquisition dates, seasons, WGS84 centres and the reBEN countries."""

from __future__ import annotations

import re
from datetime import date


# Rough WGS84 bounding boxes (lon_min, lat_min, lon_max, lat_max) of the ten reBEN countries, mainland
# only, rounded outward to 0.1 degree from the Natural Earth 1:10m admin-0 extents
# (https://www.naturalearthdata.com/downloads/10m-cultural-vectors/). Boxes of neighbours overlap, so
# they only test plausibility or pick a country when exactly one box contains a point.
COUNTRY_BOUNDS = {
    "Austria": (9.5, 46.3, 17.2, 49.1),
    "Belgium": (2.5, 49.4, 6.5, 51.6),
    "Finland": (20.5, 59.7, 31.6, 70.1),
    "Ireland": (-10.7, 51.4, -5.9, 55.4),
    "Kosovo": (20.0, 41.8, 21.8, 43.3),
    "Lithuania": (20.9, 53.8, 26.9, 56.5),
    "Luxembourg": (5.7, 49.4, 6.6, 50.2),
    "Portugal": (-9.6, 36.9, -6.1, 42.2),
    "Serbia": (18.8, 42.2, 23.1, 46.2),
    "Switzerland": (5.9, 45.8, 10.5, 47.9),
}


def parse_acquisition_date(name: str) -> str | None:
    """ISO date from a Sentinel-2 product or patch name (``..._20170613T101031_...``), else None."""
    match = re.search(r"_(\d{8})T\d+", name)
    if not match:
        return None
    try:
        return date(int(match[1][:4]), int(match[1][4:6]), int(match[1][6:])).isoformat()
    except ValueError:
        return None


def season_of(acquisition_date: str | None, latitude: float | None) -> str | None:
    """Meteorological season (DJF winter, MAM spring, JJA summer, SON autumn), flipped south of the equator."""
    if not acquisition_date or latitude is None:
        return None
    seasons = ("winter", "spring", "summer", "autumn")
    index = (int(acquisition_date[5:7]) % 12) // 3
    if latitude < 0:
        index = (index + 2) % 4
    return seasons[index]


def patch_centre_latlon(crs, transform, height: int, width: int) -> tuple[float, float]:
    """WGS84 (latitude, longitude) of the patch centre, from its own CRS and affine transform."""
    from rasterio.warp import transform as warp_transform

    x, y = transform @ (width / 2.0, height / 2.0)
    lons, lats = warp_transform(crs, "EPSG:4326", [x], [y])
    return float(lats[0]), float(lons[0])


def countries_containing(latitude: float, longitude: float) -> list[str]:
    return [
        name for name, (lon0, lat0, lon1, lat1) in COUNTRY_BOUNDS.items()
        if lon0 <= longitude <= lon1 and lat0 <= latitude <= lat1
    ]
