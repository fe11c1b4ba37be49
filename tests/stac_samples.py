"""STAC items for the tests (imported as `stac_samples`; tests/ is on sys.path): Cloud-Optimized GeoTIFFs written
from the shipped real bands, items describing them in Earth Search's (v1, `sentinel-2-l2a`) and Planetary
Computer's (`sentinel-2-l2a`) naming, and `RangeServer`, a local HTTP server on 127.0.0.1 that honours Range
requests and counts the bytes it serves."""

import http.server
import json
import os
import re
import threading

from sentinel2_samples import MAJOR_TOM_CROP

PRODUCT = "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
EPSG = 32633
# Earth Search v1: asset key = eo:bands name; common names as in the STAC eo extension; centre wavelengths (µm).
EARTH_SEARCH_NAMES = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                      "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                      "B11": "swir16", "B12": "swir22"}
COMMON_NAMES = {**EARTH_SEARCH_NAMES, "B05": "rededge", "B06": "rededge", "B07": "rededge"}
CENTRE_WAVELENGTHS = {"B01": 0.443, "B02": 0.49, "B03": 0.56, "B04": 0.665, "B05": 0.704, "B06": 0.74, "B07": 0.783,
                      "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B11": 1.61, "B12": 2.19}
RESOLUTION = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20,
              "B12": 20, "B01": 60, "B09": 60}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def write_cogs(band_folder, out_dir, names=None, blocksize=None) -> dict:
    """{band: path} of COGs (lossless DEFLATE, internal overviews, `blocksize` px tiles) written from the real bands
    of a Major-TOM-layout folder (B02.tif ...); `names` {band: file name} (default the band's name)."""
    import rasterio.shutil

    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for band in RESOLUTION:
        target = os.path.join(out_dir, (names or {}).get(band, f"{band}.tif"))
        options = {"BLOCKSIZE": blocksize} if blocksize else {}
        rasterio.shutil.copy(os.path.join(band_folder, f"{band}.tif"), target, driver="COG", COMPRESS="DEFLATE",
                             OVERVIEW_COUNT=2, **options)
        paths[band] = target
    return paths


def crop_cogs(root) -> dict:
    """COGs of the shipped Major-TOM crop (120 x 120 px at 10 m)."""
    return write_cogs(MAJOR_TOM_CROP, os.path.join(str(root), "cogs"))


def _links(item_id: str, collection_url: str) -> list:
    return [{"rel": "self", "href": f"{collection_url}/items/{item_id}", "type": "application/geo+json"},
            {"rel": "parent", "href": collection_url}, {"rel": "collection", "href": collection_url},
            {"rel": "root", "href": collection_url.rsplit("/collections", 1)[0]}]


def earth_search_item(hrefs: dict, boa_offset_applied=False, baseline="04.00", raster_bands=True, epsg=EPSG,
                      platform="sentinel-2a") -> dict:
    """An Earth Search v1 `sentinel-2-l2a` item whose band assets (keys coastal .. swir22, each with a `-jp2` copy
    that must never be read) point at `hrefs` {band: href}; plus `visual`, `scl` and `thumbnail` assets."""
    item_id = "S2A_33NZA_20220706_0_L2A"
    assets = {}
    for band, href in hrefs.items():
        key = EARTH_SEARCH_NAMES[band]
        eo = [{"name": key, "common_name": COMMON_NAMES[band], "center_wavelength": CENTRE_WAVELENGTHS[band]}]
        raster = {"nodata": 0, "data_type": "uint16", "spatial_resolution": RESOLUTION[band]}
        if raster_bands:
            raster.update(scale=0.0001, offset=-0.1)
        assets[key] = {"href": href, "type": COG_TYPE, "eo:bands": eo, "gsd": RESOLUTION[band],
                       "proj:epsg": epsg, "raster:bands": [raster], "roles": ["data", "reflectance"]}
        assets[f"{key}-jp2"] = {"href": href.rsplit(".", 1)[0] + ".jp2", "type": "image/jp2", "eo:bands": eo,
                                "gsd": RESOLUTION[band], "roles": ["data", "reflectance"]}
    some_href = next(iter(hrefs.values()))
    assets["visual"] = {"href": some_href.rsplit("/", 1)[0] + "/TCI.tif", "type": COG_TYPE, "roles": ["visual"],
                        "eo:bands": [{"name": name, "common_name": name} for name in ("red", "green", "blue")]}
    assets["scl"] = {"href": some_href.rsplit("/", 1)[0] + "/SCL.tif", "type": COG_TYPE, "roles": ["data"],
                     "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}]}
    assets["thumbnail"] = {"href": some_href.rsplit("/", 1)[0] + "/thumbnail.jpg", "type": "image/jpeg",
                           "roles": ["thumbnail"]}
    properties = {"platform": platform, "constellation": "sentinel-2", "datetime": "2022-07-06T09:11:46.521000Z",
                  "proj:epsg": epsg, "s2:processing_baseline": baseline, "s2:product_uri": f"{PRODUCT}.SAFE",
                  "earthsearch:boa_offset_applied": boa_offset_applied}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "properties": properties, "geometry": None, "bbox": None, "assets": assets,
            "links": _links(item_id, "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a")}


def planetary_item(hrefs: dict, baseline="04.00") -> dict:
    """A Planetary Computer `sentinel-2-l2a` item: band assets B01 .. B12, B8A (eo:bands name "B02", common_name
    "blue"), no raster:bands, plus `visual`, `SCL` and `preview` assets."""
    item_id = "S2A_MSIL2A_20220706T085611_R007_T33NZA_20220706T153419"
    assets = {band: {"href": href, "type": COG_TYPE, "gsd": float(RESOLUTION[band]), "roles": ["data"],
                     "eo:bands": [{"name": band, "common_name": COMMON_NAMES[band],
                                   "center_wavelength": CENTRE_WAVELENGTHS[band]}]}
              for band, href in hrefs.items()}
    folder = next(iter(hrefs.values())).rsplit("/", 1)[0]
    assets["visual"] = {"href": f"{folder}/TCI_10m.tif", "type": COG_TYPE, "roles": ["data"],
                        "eo:bands": [{"name": name, "common_name": common}
                                     for name, common in (("B04", "red"), ("B03", "green"), ("B02", "blue"))]}
    assets["SCL"] = {"href": f"{folder}/SCL_20m.tif", "type": COG_TYPE, "roles": ["data"], "gsd": 20.0}
    assets["preview"] = {"href": "https://planetarycomputer.microsoft.com/api/data/v1/item/preview.png",
                         "type": "image/png", "roles": ["overview"]}
    properties = {"platform": "Sentinel-2A", "constellation": "Sentinel 2", "datetime": "2022-07-06T08:56:11.024Z",
                  "proj:epsg": EPSG, "s2:processing_baseline": baseline, "s2:product_uri": f"{PRODUCT}.SAFE"}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "properties": properties, "geometry": None, "bbox": None, "assets": assets,
            "links": _links(item_id, "https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a")}


def write_item(item: dict, path) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(item, f)
    return str(path)


class RangeServer:
    """Serves `root` on 127.0.0.1 (a free port) while in a `with` block, answering Range requests with 206 and the
    bytes asked for, and counting what it serves: `bytes_served` ({path: bytes}), `requests` ([(path, range)])."""

    def __init__(self, root):
        self.root = os.path.abspath(str(root))
        self.bytes_served: dict = {}
        self.requests: list = []
        self._lock = threading.Lock()

    def url(self, path) -> str:
        return f"http://127.0.0.1:{self.port}/" + os.path.relpath(os.path.abspath(str(path)), self.root)

    def total_bytes(self) -> int:
        return sum(self.bytes_served.values())

    def reset(self) -> None:
        with self._lock:
            self.bytes_served.clear()
            self.requests.clear()

    def __enter__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _record(self, path: str, byte_range, size: int) -> None:
        with self._lock:
            self.requests.append((path, byte_range))
            self.bytes_served[path] = self.bytes_served.get(path, 0) + size

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _file(self):
                path = os.path.normpath(os.path.join(server.root, self.path.split("?")[0].lstrip("/")))
                return path if path.startswith(server.root) and os.path.isfile(path) else None

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                path = self._file()
                if path is None:
                    self.send_error(404)
                    return
                size = os.path.getsize(path)
                start, stop = 0, size
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        stop = min(size, int(match.group(2)) + 1) if match.group(2) else size
                    else:
                        start = max(0, size - int(match.group(2)))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
                elif self.headers.get("Range"):
                    self.send_error(416, "only single byte ranges are served")
                    return
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(stop - start))
                self.end_headers()
                if body:
                    with open(path, "rb") as f:
                        f.seek(start)
                        data = f.read(stop - start)
                    self.wfile.write(data)
                    server._record(os.path.relpath(path, server.root), self.headers.get("Range"), len(data))

        return Handler
