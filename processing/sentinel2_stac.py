"""STAC items as Sentinel-2 sources: which asset holds which band, where it lives, what the item says about its values.

Remote code: copied flat into saved model directories next to `sentinel2_io`, which turns what this module finds into
a `SourceLayout` of kind "stac" that every reader (the image processor, `SceneReader`, `map`) reads like a band
folder. Imports only its sibling `sentinel2_bands` and the standard library: a STAC item is plain JSON, and a
`pystac.Item` is read through its `to_dict()`, so pystac is never imported here.

- `is_stac_source(source)`: a STAC item JSON file (`*.json`, also as `file://`), an item URL (`http(s)://` whose path
  does not end in a raster extension), an item dict, a `pystac.Item` or a `StacItem`.
- `is_remote(path)`, `is_raster_url(source)`, `local_path(href)`: hrefs GDAL reads over the network (`http(s)://`
  through /vsicurl/ range reads, `s3://` through /vsis3/, `/vsi...` paths) and plain raster URLs.
- `load_item(source)` -> `StacItem`: the item's id, datetime, collection, links and its band assets, identified by the
  asset's own band metadata (`eo:bands` of STAC 1.0 or `bands` of STAC 1.1: `name` such as "B04" or Earth Search's
  "rededge1", else `common_name` / `eo:common_name` such as "red", "nir08"; the three red-edge bands share
  common_name "rededge" and are told apart by name or centre wavelength), never by asset keys alone. Assets naming
  no Sentinel-2 band or several bands (`visual`, `SCL`, `AOT`, thumbnails) are ignored. Where several assets hold
  one band (Earth Search's COG and `-jp2` copies, Copernicus Data Space's `B02_10m` / `B02_20m`), the finest
  resolution wins, then a GeoTIFF over a JPEG2000.
Errors name the item and say what is wrong: no band assets, not a Sentinel-2 item, band assets in different CRSs,
an item that cannot be read.
"""

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlparse
from urllib.request import url2pathname

from .sentinel2_bands import CANONICAL_BANDS, PRODUCT_NAME_RE, RASTER_EXTENSIONS, canonical_band_name

# Band names and STAC common names of Sentinel-2 bands (Earth Search v1 names its band assets and bands like this).
STAC_BAND_NAMES = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
                   "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
                   "cirrus": "B10", "swir16": "B11", "swir22": "B12"}
# B05, B06 and B07 share the common name "rededge": their centre wavelengths (micrometres) tell them apart.
REDEDGE_WAVELENGTHS = {"B05": 0.704, "B06": 0.740, "B07": 0.783}
REDEDGE_TOLERANCE = 0.015
# Catalogue flags that say the baseline-04.00 offset (-1000) was already removed from the values.
BOA_OFFSET_APPLIED_KEYS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
REMOTE_SCHEMES = ("http", "https", "s3", "gs", "az", "azure")
ITEM_FETCH_TIMEOUT_S = 30
_SENTINEL2_RE = re.compile(r"sentinel[-_ ]?2", re.IGNORECASE)


@dataclass(frozen=True)
class BandAsset:
    """One band's asset: its `key` in the item, `href` (resolved: a local path or a URL), the `scale` / `offset` its
    raster metadata declares (None when it declares none), `resolution` (metres, None when not declared) and `crs`
    ("EPSG:32633" from proj:epsg / proj:code, None when not declared)."""

    key: str
    href: str
    scale: float | None = None
    offset: float | None = None
    resolution: float | None = None
    crs: str | None = None


@dataclass(frozen=True)
class StacItem:
    """What a STAC item says about one Sentinel-2 scene: `id`, `location` (the item file or URL it came from, None
    for an object in memory), `collection`, `datetime`, `properties`, `links` ({"rel", "href"} of each link) and
    `bands` ({canonical band: BandAsset}, in canonical band order)."""

    id: str
    location: str | None
    collection: str | None
    datetime: str | None
    properties: dict
    links: tuple
    bands: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"STAC item {self.id}" + (f" ({self.location})" if self.location else "")

    @property
    def product(self) -> str:
        """The Sentinel-2 product name (`s2:product_uri` without `.SAFE`), else the item id."""
        for key in ("s2:product_uri", "s2:product_id", "sentinel:product_id"):
            match = PRODUCT_NAME_RE.search(str(self.properties.get(key) or ""))
            if match is not None:
                return match.group(0)
        return self.id

    @property
    def processing_baseline(self) -> str | None:
        """`s2:processing_baseline` (or `processing:version`), else the product name's baseline; None if unknown."""
        for key in ("s2:processing_baseline", "processing:version"):
            if self.properties.get(key) not in (None, ""):
                return str(self.properties[key])
        match = PRODUCT_NAME_RE.search(self.product)
        if match is not None:
            return f"{int(match.group('baseline')) / 100:05.2f}"
        return None

    @property
    def boa_offset_applied(self) -> bool | None:
        """The catalogue's flag that the baseline-04.00 offset was already removed from the values; None when the
        item carries none."""
        for key in BOA_OFFSET_APPLIED_KEYS:
            if key in self.properties:
                return bool(self.properties[key])
        return None

    def describe(self, band: str) -> str:
        asset = self.bands[band]
        return f"asset {asset.key!r} (band {band}) of STAC item {self.id} at {asset.href}"

    def summary(self) -> dict:
        """JSON-ready: what an output's metadata records about the item."""
        return {"item_id": self.id, "collection": self.collection, "datetime": self.datetime, "href": self.location,
                "product_id": self.product, "processing_baseline": self.processing_baseline,
                "boa_offset_applied": self.boa_offset_applied, "links": [dict(link) for link in self.links],
                "assets": {band: {"key": asset.key, "href": asset.href} for band, asset in self.bands.items()}}


def _scheme(path: str) -> str:
    scheme = urlparse(path).scheme.lower()
    return scheme if len(scheme) > 1 else ""  # "c:" of a Windows path is no scheme


def is_remote(path) -> bool:
    """An href GDAL reads over the network: http(s)://, s3://, gs://, az:// or a /vsi... path."""
    return isinstance(path, str) and (_scheme(path) in REMOTE_SCHEMES or path.startswith("/vsi"))


def local_path(href: str) -> str:
    """A `file://` URL as a local path; anything else unchanged."""
    parsed = urlparse(href)
    return url2pathname(parsed.path) if parsed.scheme.lower() == "file" else href


def _extension(path: str) -> str:
    return os.path.splitext(urlparse(path).path if _scheme(path) else path)[1].lower()


def is_raster_url(source) -> bool:
    """A remote raster (a COG or JPEG2000 URL), read like a local raster file."""
    return is_remote(source) and _extension(source) in RASTER_EXTENSIONS


def is_stac_source(source) -> bool:
    """A STAC item: a `StacItem`, an item dict, a `pystac.Item`, a `.json` file or an item URL."""
    if isinstance(source, StacItem):
        return True
    if isinstance(source, dict):
        return source.get("type") == "Feature" and "stac_version" in source
    if _is_pystac_item(source):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, str) and _scheme(path) in ("http", "https"):
            return _extension(path) not in RASTER_EXTENSIONS
        return str(path).lower().endswith(".json")
    return False


def _is_pystac_item(source) -> bool:
    return type(source).__name__ == "Item" and callable(getattr(source, "to_dict", None))


def load_item(source) -> StacItem:
    """The `StacItem` of a STAC source (see `is_stac_source`)."""
    if isinstance(source, StacItem):
        return source
    if _is_pystac_item(source):
        location = source.get_self_href() if callable(getattr(source, "get_self_href", None)) else None
        return parse_item(source.to_dict(include_self_link=False, transform_hrefs=False), location)
    if isinstance(source, dict):
        return parse_item(source, None)
    path = local_path(os.fspath(source))
    if _scheme(path) in ("http", "https"):
        return parse_item(_fetch_json(path), path)
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such STAC item file: {path}") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the STAC item {path}: {err}") from err
    return parse_item(document, os.path.abspath(path))


def _fetch_json(url: str) -> dict:
    request = urllib.request.Request(url, headers={"Accept": "application/geo+json, application/json"})
    try:
        with urllib.request.urlopen(request, timeout=ITEM_FETCH_TIMEOUT_S) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ValueError(f"cannot read the STAC item {url}: {err}") from err


def parse_item(document, location: str | None) -> StacItem:
    """A `StacItem` from an item's JSON `document`, relative hrefs resolved against `location` (or its self link)."""
    where = location or "the STAC item given"
    if not isinstance(document, dict) or document.get("type") != "Feature":
        kind = document.get("type") if isinstance(document, dict) else type(document).__name__
        hint = "; pass one of its items" if kind == "FeatureCollection" else ""
        raise ValueError(f"{where} is not a STAC item (a GeoJSON Feature with assets): its type is {kind!r}{hint}")
    item_id = str(document.get("id") or "")
    properties = document.get("properties") or {}
    links = tuple({"rel": link.get("rel"), "href": link.get("href")} for link in document.get("links") or []
                  if isinstance(link, dict) and link.get("href"))
    base = location or next((link["href"] for link in links if link["rel"] == "self"), None)
    item = StacItem(item_id, location, document.get("collection"),
                    properties.get("datetime") or properties.get("start_datetime"), properties, links)
    check_sentinel2(item)
    assets = document.get("assets") or {}
    bands = _band_assets(assets, properties, base)
    if not bands:
        raise ValueError(f"{item.where}: no band assets: none of its assets ({', '.join(sorted(assets)) or 'none'}) "
                         "declares a single Sentinel-2 band in eo:bands / bands (name such as B04 or rededge1, or "
                         "common_name such as red or nir08)")
    item = StacItem(item.id, item.location, item.collection, item.datetime, item.properties, item.links, bands)
    check_one_crs(item)
    return item


def check_sentinel2(item: StacItem) -> None:
    """A ValueError unless the item's platform, constellation, collection or `s2:` properties say Sentinel-2."""
    props = item.properties
    named = " ".join(str(value) for value in (props.get("platform"), props.get("constellation"), item.collection)
                     if value)
    if _SENTINEL2_RE.search(named) or any(str(key).startswith("s2:") for key in props):
        return
    raise ValueError(f"{item.where} is not a Sentinel-2 item (platform {props.get('platform')!r}, constellation "
                     f"{props.get('constellation')!r}, collection {item.collection!r}); the model reads Sentinel-2 "
                     "Level-1C / Level-2A bands")


def check_one_crs(item: StacItem) -> None:
    """A ValueError when the band assets declare different CRSs (proj:epsg / proj:code)."""
    crss = {asset.crs for asset in item.bands.values() if asset.crs is not None}
    if len(crss) > 1:
        listed = ", ".join(f"{band} ({asset.key!r}) {asset.crs}" for band, asset in item.bands.items())
        raise ValueError(f"{item.where}: its band assets lie in different CRSs ({listed}); a scene needs one grid")


def identify_band(entry: dict) -> str | None:
    """The canonical Sentinel-2 band an `eo:bands` / `bands` entry describes, or None."""
    name = str(entry.get("name") or "").strip()
    common = str(entry.get("common_name") or entry.get("eo:common_name") or "").strip().lower()
    try:
        return canonical_band_name(name)
    except ValueError:
        pass
    for alias in (name.lower(), common):
        if alias in STAC_BAND_NAMES:
            return STAC_BAND_NAMES[alias]
    wavelength = entry.get("center_wavelength", entry.get("eo:center_wavelength"))
    if common == "rededge" and isinstance(wavelength, (int, float)):
        band, centre = min(REDEDGE_WAVELENGTHS.items(), key=lambda item: abs(item[1] - wavelength))
        if abs(centre - wavelength) <= REDEDGE_TOLERANCE:
            return band
    return None


def _band_assets(assets: dict, properties: dict, base: str | None) -> dict:
    candidates: dict[str, list] = {}
    for order, (key, asset) in enumerate(assets.items()):
        entries = asset.get("eo:bands") or asset.get("bands") or []
        if len(entries) != 1 or not asset.get("href") or not _is_raster_asset(asset):
            continue
        band = identify_band(entries[0])
        if band is None:
            continue
        raster = (asset.get("raster:bands") or [{}])[0]
        scale = _first(raster.get("scale"), entries[0].get("raster:scale"), asset.get("raster:scale"))
        offset = _first(raster.get("offset"), entries[0].get("raster:offset"), asset.get("raster:offset"))
        if scale is not None or offset is not None:
            scale, offset = float(1.0 if scale is None else scale), float(0.0 if offset is None else offset)
        resolution = _first(asset.get("gsd"), raster.get("spatial_resolution"),
                            entries[0].get("raster:spatial_resolution"), asset.get("raster:spatial_resolution"),
                            abs((asset.get("proj:transform") or [None])[0] or 0) or None)
        band_asset = BandAsset(key, resolve_href(asset["href"], base), scale, offset,
                               float(resolution) if resolution is not None else None,
                               _crs_of(asset) or _crs_of(properties))
        jp2 = _extension(band_asset.href) == ".jp2" or "jp2" in str(asset.get("type") or "")
        rank = (band_asset.resolution if band_asset.resolution is not None else float("inf"), jp2, order)
        candidates.setdefault(band, []).append((rank, band_asset))
    return {band: min(candidates[band], key=lambda candidate: candidate[0])[1]
            for band in CANONICAL_BANDS if band in candidates}


def _is_raster_asset(asset: dict) -> bool:
    media_type = str(asset.get("type") or "").lower()
    if media_type:
        return media_type.startswith("image/tiff") or media_type.startswith("image/jp2")
    return _extension(str(asset["href"])) in RASTER_EXTENSIONS


def _first(*values):
    return next((value for value in values if value is not None), None)


def _crs_of(where: dict) -> str | None:
    if where.get("proj:code"):
        return str(where["proj:code"]).upper()
    if where.get("proj:epsg"):
        return f"EPSG:{int(where['proj:epsg'])}"
    return None


def resolve_href(href: str, base: str | None) -> str:
    """An asset href as GDAL reads it: URLs as given, `file://` as a local path, relative hrefs joined to `base` (the
    item's file or URL)."""
    href = str(href)
    if _scheme(href):
        return local_path(href)
    if base is None or os.path.isabs(href):
        return href
    if _scheme(base) and _scheme(base) != "file":
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(local_path(base)), href))


__all__ = ["StacItem", "BandAsset", "STAC_BAND_NAMES", "REDEDGE_WAVELENGTHS", "BOA_OFFSET_APPLIED_KEYS",
           "is_stac_source", "is_remote", "is_raster_url", "local_path", "load_item", "parse_item", "identify_band",
           "check_sentinel2", "check_one_crs", "resolve_href"]
