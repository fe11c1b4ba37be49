"""The mapped tiles on an interactive Leaflet map (folium), working without internet access.

folium links Leaflet, jQuery, Bootstrap and Font Awesome from CDNs. Here the map uses none of those: Leaflet 1.9.4
(BSD-2-Clause, `static/leaflet/LICENSE`), vendored from its npm package, is inlined into the map document, and
there is no basemap: the scene's own true-colour quicklook, warped to Web Mercator, lies under the tiles. The
document is shown in an `<iframe srcdoc>`, so the page makes no request for the map at all.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import folium
import numpy as np
from branca.element import Element, MacroElement
from jinja2 import Template
from PIL import Image
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

from spectral_llava.scene.palette import NO_LABEL, label_colours

LEAFLET_DIR = Path(__file__).resolve().parent / "static" / "leaflet"


class OfflineMap(folium.Map):
    """folium.Map whose only script and stylesheet is the vendored Leaflet, inlined."""

    default_js: list = []
    default_css: list = []

    def render(self, **kwargs):
        header = self.get_root().header
        css = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")
        js = (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8")
        header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css")
        header.add_child(Element(f"<script>{js}</script>"), name="leaflet")
        super().render(**kwargs)


class RefitWhenShown(MacroElement):
    """Leaflet measures its container once: a map document laid out while hidden (a tab not shown yet, an iframe
    still at zero size) would draw every tile at one point. This resizes the map whenever its container does, and
    fits the tiles the first time the container has a size."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, layer = {{ this.layer.get_name() }};
            var container = map.getContainer(), fitted = container.clientWidth > 0;
            new ResizeObserver(function () {
                map.invalidateSize();
                if (!fitted && container.clientWidth > 0) { map.fitBounds(layer.getBounds()); fitted = true; }
            }).observe(container);
        })();
        {% endmacro %}
    """)

    def __init__(self, layer):
        super().__init__()
        self._name = "RefitWhenShown"
        self.layer = layer


class Legend(MacroElement):
    """The label legend as a Leaflet control in the bottom-left corner: Leaflet stacks it above the scale bar and
    keeps it clear of the attribution (bottom right) and the layer switch (top right)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var legend = L.control({position: "bottomleft"});
            legend.onAdd = function () {
                var box = L.DomUtil.create("div", "tile-legend");
                box.style.cssText = "background:white;padding:6px 8px;font:12px sans-serif;border-radius:4px;" +
                                    "box-shadow:0 1px 4px rgba(0,0,0,0.3);max-height:40vh;overflow-y:auto";
                box.innerHTML = {{ this.html|tojson }};
                return box;
            };
            legend.addTo({{ this._parent.get_name() }});
        })();
        {% endmacro %}
    """)

    def __init__(self, colours: dict[str, str], counts: dict[str, int]):
        super().__init__()
        self._name = "Legend"
        self.html = "".join(
            f'<div><span style="display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle;'
            f'background:{colour}"></span>{html.escape(label)} ({counts[label]})</div>'
            for label, colour in colours.items())


def show_owned_parts(collection: dict, result) -> dict:
    """`collection` (the WGS84 GeoJSON of `result`, a `scene.MapResult`) with each tile drawn as the part of it
    that the map draws (`result.drawn`): overlapping edge tiles split their overlap, so each ground point shows one
    tile's colour. Matched by tile_id; the files to download keep the whole footprints."""
    import geopandas as gpd
    import shapely

    parts = gpd.GeoSeries(result.drawn, crs=result.crs).to_crs("EPSG:4326")
    owned = {row["tile_id"]: shapely.geometry.mapping(part) for row, part in zip(result.rows, parts)}
    features = [{**feature, "geometry": owned.get(feature["properties"]["tile_id"], feature["geometry"])}
                for feature in collection.get("features", [])]
    return {**collection, "features": features}


def first_label(feature: dict) -> str:
    labels = feature.get("properties", {}).get("labels") or []
    if isinstance(labels, str):
        labels = json.loads(labels) if labels.startswith("[") else [labels]
    return labels[0] if labels else NO_LABEL


def mercator_overlay(rgb: np.ndarray, transform: Affine, crs) -> tuple[str, list[list[float]]]:
    """Warp an (H, W, 3) uint8 rendering on `transform`/`crs` to EPSG:3857; (PNG data URL, [[S, W], [N, E]])."""
    height, width = rgb.shape[:2]
    dst_transform, dst_width, dst_height = calculate_default_transform(
        crs, "EPSG:3857", width, height, *_bounds(transform, width, height))
    source = np.concatenate([np.moveaxis(rgb, -1, 0), np.full((1, height, width), 255, np.uint8)])
    warped = np.zeros((4, dst_height, dst_width), dtype=np.uint8)
    reproject(source, warped, src_transform=transform, src_crs=crs, dst_transform=dst_transform,
              dst_crs="EPSG:3857", resampling=Resampling.nearest, dst_nodata=0)
    buffer = io.BytesIO()
    Image.fromarray(np.moveaxis(warped, 0, -1), mode="RGBA").save(buffer, format="PNG")
    west, south, east, north = transform_bounds(
        "EPSG:3857", "EPSG:4326", *_bounds(dst_transform, dst_width, dst_height))
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return url, [[south, west], [north, east]]


def _bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    left, top = transform @ (0, 0)
    right, bottom = transform @ (width, height)
    return min(left, right), min(top, bottom), max(left, right), max(top, bottom)


def map_document(geojson: dict, quicklook: tuple[np.ndarray, Affine, object] | None = None,
                 height_px: int = 520) -> str:
    """A complete HTML document: the tiles of a WGS84 GeoJSON FeatureCollection coloured by first label (the
    overview PNG's colours, `scene.palette.label_colours`), a legend, tooltips with each tile's labels (and
    caption), over the optional quicklook (rgb, transform, crs)."""
    features = geojson.get("features", [])
    firsts = [first_label(feature) for feature in features]
    colours = label_colours(firsts)
    for feature in features:
        properties = feature.setdefault("properties", {})
        labels = properties.get("labels") or []
        properties["label_text"] = "; ".join(labels) if isinstance(labels, list) else str(labels)
        properties["colour"] = colours[first_label(feature)]
    fmap = OfflineMap(location=[0, 0], zoom_start=2, tiles=None, height=height_px, control_scale=True)
    if quicklook is not None:
        url, bounds = mercator_overlay(*quicklook)
        folium.raster_layers.ImageOverlay(url, bounds=bounds, name="true colour", opacity=1.0).add_to(fmap)
    fields = ["tile_id", "label_text"] + (["caption"] if any("caption" in f["properties"] for f in features) else [])
    aliases = ["tile", "labels", "caption"][:len(fields)]
    layer = folium.GeoJson(
        geojson, name="tiles",
        style_function=lambda feature: {"color": feature["properties"]["colour"], "weight": 1,
                                        "fillColor": feature["properties"]["colour"], "fillOpacity": 0.45},
        highlight_function=lambda feature: {"weight": 3, "fillOpacity": 0.7},
        tooltip=folium.GeoJsonTooltip(fields=fields, aliases=aliases, sticky=True),
    ).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds(layer.get_bounds())
    RefitWhenShown(layer).add_to(fmap)
    Legend(colours, {label: firsts.count(label) for label in colours}).add_to(fmap)
    return fmap.get_root().render()


def map_iframe(document: str, height_px: int = 540) -> str:
    """The document inside an `<iframe srcdoc>` (its scripts run in the frame, nothing is fetched)."""
    return (f'<iframe class="tile-map" title="tile map" srcdoc="{html.escape(document, quote=True)}" '
            f'style="width:100%;height:{height_px}px;border:0" sandbox="allow-scripts"></iframe>')
