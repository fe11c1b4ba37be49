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
    url, _ = app_server
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
        assert frame.locator(".tile-legend").inner_text().strip()
        page.get_by_text("4 tiles mapped").wait_for()
        downloads = page.locator("#map-files").inner_text().replace("\n", "")
        for suffix in ("-tiles.geojson", "-tiles.parquet", "-tiles_overview.png"):
            assert f"{data.ben_patch.name}{suffix}" in downloads
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
        page.locator("#upload").get_by_text("broken.tif").wait_for(state="detached", timeout=120_000)
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
