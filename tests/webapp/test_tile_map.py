"""The Leaflet map document: self-contained (no request to any CDN), tiles coloured by label, legend, quicklook."""

import html
import re

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin

from spectral_llava.scene.palette import NO_LABEL, PALETTE, label_colours
from spectral_llava.webapp.tile_map import LEAFLET_DIR, first_label, map_document, map_iframe, mercator_overlay


def tile(tile_id, labels, west, south, size=0.01):
    ring = [[west, south], [west + size, south], [west + size, south + size], [west, south + size], [west, south]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"tile_id": tile_id, "labels": labels}}


def collection():
    return {"type": "FeatureCollection", "features": [
        tile("t0", ["Forest", "River"], 15.00, 45.00), tile("t1", ["Forest"], 15.01, 45.00),
        tile("t2", ["Pasture"], 15.00, 45.01), tile("t3", [], 15.01, 45.01)]}


def test_colours_follow_the_first_label_most_frequent_first():
    colours = label_colours([first_label(feature) for feature in collection()["features"]])
    assert list(colours) == ["Forest", "Pasture", "(no label)"]
    assert colours["Forest"] == PALETTE[0] and colours["Pasture"] == PALETTE[1] and colours[NO_LABEL] == "#777777"
    document = map_document(collection())
    for label, colour in colours.items():  # the tiles and the legend take the palette's colours
        assert f'"colour": "{colour}"' in document and colour in document.split("tile-legend", 1)[1]


def test_document_inlines_leaflet_and_loads_nothing_from_the_internet():
    rgb = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    document = map_document(collection(), (rgb, from_origin(500000, 4985000, 10, 10), CRS.from_epsg(32633)))
    assert (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8")[:200] in document
    fetched = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="([^"]+)"', document)
    assert fetched == []
    assert "cdn" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', document))
    assert "L.imageOverlay" in document and "data:image/png;base64," in document
    for label in ("Forest (2)", "Pasture (1)", "(no label) (1)"):
        assert label in document  # legend, with the tile counts
    assert '"label_text": "Forest; River"' in document


def test_quicklook_is_warped_to_web_mercator_bounds():
    rgb = np.full((100, 100, 3), 200, np.uint8)
    url, bounds = mercator_overlay(rgb, from_origin(500000, 4985000, 10, 10), CRS.from_epsg(32633))
    (south, west), (north, east) = bounds
    assert url.startswith("data:image/png;base64,")
    # UTM 33N easting 500000 is the zone's central meridian, 15 E; 1 km is about 0.0127 degrees of longitude here
    assert abs(west - 15.0) < 1e-3 and 0.012 < east - west < 0.0135 and 0.0085 < north - south < 0.0095


def test_iframe_escapes_the_document():
    frame = map_iframe('<p class="x">a & b</p>')
    assert 'srcdoc="&lt;p class=&quot;x&quot;&gt;a &amp; b&lt;/p&gt;"' in frame
    assert html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1)) == '<p class="x">a & b</p>'
