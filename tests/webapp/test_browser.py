"""The page in a real headless Chromium (Debian's chromium driven by playwright): upload, caption, map, errors.

Screenshots are saved under tests/artifacts/ (SPECTRAL_LLAVA_TEST_ARTIFACTS overrides) and their paths printed.
Every request the page makes is recorded: none may leave 127.0.0.1.
"""

import pytest

from spectral_llava.inference import generate_answers
from spectral_llava.webapp.browser import browser_page, chromium_path, click_and_read, foreign_requests, upload, upload_and_caption

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no chromium: `make setup` installs Debian's "
                                                                "chromium where apt-get can run as root")


def test_upload_caption_and_screenshot(app_server, app_session, data, artifacts):
    url, _ = app_server
    expected = generate_answers(app_session.model, app_session.processor, [str(data.forest)], "caption",
                                max_new_tokens=app_session.max_new_tokens)[0]["text"]
    with browser_page(url) as (page, requests):
        caption = upload_and_caption(page, data.forest)
        assert caption == expected
        assert "Loaded Forest_1.tif" in page.locator("#status").inner_text()
        footprint = page.locator("#footprint").inner_text()
        assert "EPSG:32632" in footprint and "64 x 64 px" in footprint and "fits one tile" in footprint
        bands = page.locator("#bands").inner_text()
        assert "B8A" in bands and "not used" in bands  # B10 of the EuroSAT file
        for image in ("#true-colour img", "#false-colour img"):
            assert page.locator(image).evaluate("img => img.complete && img.naturalWidth") >= 256
        shot = artifacts / "app-caption.png"
        page.wait_for_timeout(1000)  # gradio fades updated outputs in
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        assert foreign_requests(requests, url) == []


def test_band_files_mapped_on_the_leaflet_map(app_server, data, artifacts):
    url, app = app_server
    with browser_page(url) as (page, requests):
        status = upload(page, sorted(data.ben_patch.glob("*_B*.tif")))
        assert status == f"Loaded {data.ben_patch.name}"
        assert "resampled" in page.locator("#bands").inner_text()
        page.get_by_role("tab", name="Map").click()
        page.locator("#map-button").click()
        frame = page.frame_locator("#tile-map iframe")
        tiles = frame.locator("path.leaflet-interactive")
        tiles.first.wait_for(timeout=120_000)
        assert tiles.count() == 4
        assert frame.locator(".leaflet-image-layer").count() == 1  # the true-colour quicklook under the tiles
        page.get_by_text("4 tiles mapped").wait_for()
        downloads = page.locator("#map-files").inner_text().replace("\n", "")
        for suffix in ("-tiles.geojson", "-tiles.parquet", "-tiles_overview.png"):
            assert f"{data.ben_patch.name}{suffix}" in downloads
        check_map_colours_overlaps_and_legend(frame, tiles, app.work_root, data.ben_patch.name)
        shot = artifacts / "app-map.png"
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        assert foreign_requests(requests, url) == []


def test_classify_and_streamed_chat_in_the_page(app_server, app_session, data):
    url, _ = app_server
    with browser_page(url) as (page, requests):
        upload(page, data.forest)
        page.get_by_role("tab", name="Classify").click()
        answer = click_and_read(page, "#classify-button", "#classify-answer")
        assert answer == app_session.classify(data.forest)["text"]
        page.get_by_role("tab", name="Chat").click()
        page.locator("#question textarea").fill("[caption] What is in this image?")
        page.locator("#question textarea").press("Enter")
        bot = page.locator("#chat .bot").last
        expected = list(app_session.chat_stream(data.forest, [], "[caption] What is in this image?"))[-1]
        page.wait_for_function("([element, text]) => element.innerText.trim() === text",
                               arg=[bot.element_handle(timeout=120_000), expected.strip()], timeout=120_000)
        assert "What is in this image?" in page.locator("#chat .user").last.inner_text()
        assert foreign_requests(requests, url) == []


# rasterio may warn, in the server's thread, that the cut-off header of broken.tif holds no georeferencing
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_errors_show_in_the_page_and_the_server_keeps_serving(app_server, data, tmp_path):
    url, _ = app_server
    corrupt = tmp_path / "broken.tif"
    corrupt.write_bytes(data.forest.read_bytes()[:500])
    three = [data.major_tom / f"{band}.tif" for band in ("B02", "B03", "B04")]
    with browser_page(url) as (page, _):
        page.locator("#upload input[type=file]").set_input_files(str(corrupt))
        page.get_by_text("cannot read the pixels of broken.tif: the file is truncated or corrupt").first.wait_for(
            timeout=120_000)
        page.locator("#upload input[type=file]").set_input_files(
            [str(data.major_tom / "B02.tif"), str(data.major_tom / "cloud_mask.tif")])  # replaces broken.tif
        status = wait_for_status(page, "cloud_mask.tif")  # named, and whole: `<patch>` is text, not a tag
        assert status.startswith("Could not read the input: cloud_mask.tif: several files were uploaded, so each must "
                                 "be one band named like B02.tif, <patch>_B8A.tif or T33UUU_20170216T102101_B02.jp2\n")
        page.locator("#upload input[type=file]").set_input_files([str(p) for p in three])
        page.get_by_text("B01, B05, B06, B07, B08, B8A, B09, B11, B12 missing").first.wait_for(timeout=120_000)
        page.locator("#sample input").click()
        page.get_by_role("option", name="EuroSAT River (13-band GeoTIFF, 64 px)").click()
        page.locator("#status").get_by_text("Loaded River_1.tif").wait_for(timeout=120_000)
        assert click_and_read(page, "#caption-button", "#caption-output")


def test_map_laid_out_while_hidden_fits_its_tiles_when_shown():
    from spectral_llava.webapp.tile_map import map_document, map_iframe

    ring = [[15.0, 45.0], [15.01, 45.0], [15.01, 45.01], [15.0, 45.01], [15.0, 45.0]]
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"tile_id": "t0", "labels": ["Forest"]}}]}
    frame = map_iframe(map_document(collection), height_px=400)
    with browser_page("about:blank", ready=None) as (page, requests):
        page.set_content(f'<div id="holder" style="display:none">{frame}</div>')
        page.wait_for_timeout(500)  # Leaflet initialises inside the hidden frame
        page.evaluate("document.getElementById('holder').style.display = 'block'")
        tile = page.frame_locator("iframe.tile-map").locator("path.leaflet-interactive")
        tile.wait_for(timeout=30_000)
        box = tile.bounding_box()
        assert box["width"] > 50 and box["height"] > 50
        assert requests == []  # Leaflet, the tiles and the page: nothing fetched


def check_map_colours_overlaps_and_legend(frame, tiles, work_root, name):
    """The map's tiles take the palette's colours of their first labels (those of the overview PNG), the 120 px
    patch's shifted edge tiles (64 px tiles at 0 and 56) are drawn without overlapping, and the legend is readable:
    not under the attribution, its text the topmost element (issue 20, item 4)."""
    import json
    import re

    import numpy as np
    import shapely

    from spectral_llava.scene.palette import NO_LABEL, label_colours

    geojson = max(work_root.glob(f"maps/*/{name}-tiles.geojson"), key=lambda path: path.stat().st_mtime)
    firsts = [(feature["properties"]["labels"] or [NO_LABEL])[0] for feature in json.loads(geojson.read_text())["features"]]
    colours = label_colours(firsts)
    fills = [tiles.nth(k).get_attribute("fill") for k in range(tiles.count())]
    assert sorted(fill.lower() for fill in fills) == sorted(colours[first].lower() for first in firsts)
    drawn = [shapely.Polygon(np.reshape([float(v) for v in re.findall(r"-?[\d.]+", tiles.nth(k).get_attribute("d"))],
                                        (-1, 2))) for k in range(tiles.count())]  # the SVG paths, screen pixels
    for k, a in enumerate(drawn):  # full footprints would overlap by 8 of 64 px, 12 % of a tile
        assert all(a.intersection(b).area < 0.005 * a.area for b in drawn[k + 1:])
    legend = frame.locator(".tile-legend")
    for label in colours:
        assert f"{label} ({firsts.count(label)})" in legend.inner_text()
    box, attribution = legend.bounding_box(), frame.locator(".leaflet-control-attribution").bounding_box()
    assert (box["x"] + box["width"] <= attribution["x"] or attribution["x"] + attribution["width"] <= box["x"]
            or box["y"] + box["height"] <= attribution["y"] or attribution["y"] + attribution["height"] <= box["y"])
    topmost = legend.evaluate("box => { const r = box.getBoundingClientRect();"
                              " return box.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)); }")
    assert topmost


def four_band_geotiff(source, target):
    """B02, B03, B04, B08 of a real EuroSAT GeoTIFF in a 4-band GeoTIFF without band descriptions (an export)."""
    import numpy as np
    import rasterio

    from spectral_llava.processing.sentinel2_io import read_image

    image = read_image(str(source))
    with rasterio.open(source) as dataset:
        profile = dataset.profile
    profile.update(count=4)
    with rasterio.open(target, "w", **profile) as out:
        out.write(np.stack([image.data[image.band_names.index(b)] for b in ("B02", "B03", "B04", "B08")]).astype("uint16"))
    return target


def wait_for_status(page, text: str, timeout_ms: int = 120_000) -> str:
    page.locator("#status").get_by_text(text).wait_for(timeout=timeout_ms)
    return page.locator("#status").inner_text()


def test_each_upload_replaces_the_input_and_a_failed_one_clears_the_page(app_server, data, tmp_path, artifacts):
    """Issue 20, items 1-3 and 6: a second upload replaces the first the first time (SSL4EO's band files after a
    GeoTIFF, then a 4-band GeoTIFF); a file the app cannot read leaves no input loaded, says why in full in the status
    line and clears every panel, without error badges; SSL4EO's B1..B9 are listed once; the band names field names
    the 4-band file's bands."""
    url, _ = app_server
    four = four_band_geotiff(data.forest, tmp_path / "Forest_1_rgbn.tif")
    with browser_page(url) as (page, _):
        assert upload(page, data.forest) == "Loaded Forest_1.tif"
        files = page.locator("#upload input[type=file]")
        files.set_input_files([str(p) for p in sorted(data.ssl4eo.glob("B*.tif"))])
        assert wait_for_status(page, "Loaded bands") == "Loaded bands"
        rows = page.locator("#bands tbody tr")
        assert rows.count() == 12 and "not used" not in page.locator("#bands").inner_text()
        assert [rows.nth(k).locator("td").first.inner_text() for k in range(12)][:3] == ["B01", "B02", "B03"]

        files.set_input_files(str(four))
        status = wait_for_status(page, "Could not read the input")
        assert status.startswith("Could not read the input: Forest_1_rgbn.tif has 4 band(s) of uint16 values without "
                                 "Sentinel-2 band descriptions")
        assert status.endswith("the 'band names' field of the web app\nNo input is open now: upload another file or "
                               "pick a sample.")
        assert page.locator("#bands").inner_text().strip() == "" and page.locator("#footprint").inner_text() == ""
        assert page.locator("#true-colour img").count() == 0 and page.locator("#false-colour img").count() == 0
        assert page.get_by_text("Error", exact=True).count() == 0  # no error badge on any panel
        page.locator("#caption-button").click()
        page.get_by_text("load an image first: upload a file or pick a sample").first.wait_for(timeout=120_000)

        assert "Forest_1_rgbn" not in page.locator("#upload").inner_text()  # the box is empty for the next upload
        page.locator("#band-names textarea").fill("B02,B03,B04,B08")
        page.locator("#band-names textarea").press("Enter")
        assert wait_for_status(page, "Loaded Forest_1_rgbn.tif") == "Loaded Forest_1_rgbn.tif"
        bands = page.locator("#bands").inner_text()
        assert "B02\tfound" in bands and "B01\tmissing" in bands
        assert click_and_read(page, "#caption-button", "#caption-output") is not None
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / "app-replaced-upload.png"), full_page=True)
