"""The stable API through gradio_client against the app served on 127.0.0.1: /caption, /classify, /map and bad
inputs (the server keeps serving); streamed chat against plain generation."""

import json

import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from rasterio.warp import transform_bounds

from spectral_llava.inference import classify_images, generate_answers


def test_api_lists_exactly_the_stable_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/caption", "/classify", "/map"]


def test_caption_equals_the_evaluation_code(client, app_session, data):
    caption = client.predict(handle_file(str(data.forest)), api_name="/caption")
    expected = generate_answers(app_session.model, app_session.processor, [str(data.forest)], "caption",
                                max_new_tokens=app_session.max_new_tokens)[0]["text"]
    assert isinstance(caption, str) and caption == expected and caption


def test_classify_returns_the_labels_of_classify_images(client, app_session, data):
    labels = client.predict(handle_file(str(data.forest)), api_name="/classify")
    expected = classify_images(app_session.model, app_session.processor, [str(data.forest)],
                               max_new_tokens=app_session.max_new_tokens)[0]["labels"]
    assert isinstance(labels, list) and labels == expected


def test_caption_of_a_zipped_patch_folder(client, app_session, ben_zip, data):
    caption = client.predict(handle_file(str(ben_zip)), api_name="/caption")
    expected = generate_answers(app_session.model, app_session.processor, [str(data.ben_patch)], "caption",
                                max_new_tokens=app_session.max_new_tokens)[0]["text"]
    assert caption == expected


def test_caption_of_a_zipped_safe_product_equals_its_band_folder(client, app_session, safe_zip, data):
    caption = client.predict(handle_file(str(safe_zip)), api_name="/caption")
    expected = generate_answers(app_session.model, app_session.processor, [str(data.major_tom)], "caption",
                                max_new_tokens=app_session.max_new_tokens)[0]["text"]
    assert caption == expected


def test_map_returns_the_geojson_of_map_scene(client, app_session, ben_zip, data, tmp_path):
    from spectral_llava.scene import MapOptions, map_scene

    path = client.predict(handle_file(str(ben_zip)), api_name="/map")
    assert path.endswith(".geojson")
    with open(path, encoding="utf-8") as f:
        collection = json.load(f)
    direct = map_scene(str(data.ben_patch), app_session.model, app_session.processor, tmp_path / "direct.geojson",
                       MapOptions(no_overview=True, max_new_tokens=app_session.max_new_tokens))
    features = collection["features"]
    assert len(features) == len(direct.rows) == 4  # 120 px with 64 px tiles: 2 x 2, the edge tiles shifted inward
    assert [f["properties"]["labels"] for f in features] == [row["labels"] for row in direct.rows]
    assert [(f["properties"]["row"], f["properties"]["col"]) for f in features] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    import rasterio

    with rasterio.open(next(data.ben_patch.glob("*_B02.tif"))) as band:
        west, south, east, north = transform_bounds(band.crs, "EPSG:4326", *band.bounds)
    for feature in features:
        for lon, lat in feature["geometry"]["coordinates"][0]:
            assert west - 1e-6 <= lon <= east + 1e-6 and south - 1e-6 <= lat <= north + 1e-6


def test_corrupt_file_is_an_error_and_the_server_keeps_serving(client, app_session, data, tmp_path):
    corrupt = tmp_path / "Forest_1.tif"
    corrupt.write_bytes(data.forest.read_bytes()[:2000])
    with pytest.raises(AppError, match="Forest_1.tif"):
        client.predict(handle_file(str(corrupt)), api_name="/caption")
    assert client.predict(handle_file(str(data.forest)), api_name="/caption")


def test_unknown_format_and_a_scene_wider_than_twice_the_footprint(client, tmp_path, data):
    notes = tmp_path / "scene.png"
    notes.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(AppError, match=r"^scene\.png is not a Sentinel-2 multispectral input: a \.png file that is no "
                                       "image GDAL reads"):
        client.predict(handle_file(str(notes)), api_name="/classify")
    wide = data.zip_folder(data.major_tom, tmp_path / "major-tom.zip")  # 120 px = 1.2 km, tiles of 0.64 km
    assert client.predict(handle_file(str(wide)), api_name="/classify") is not None  # 1.9x: still one answer


def test_missing_bands_are_refused_by_map(client, tmp_path, data):
    folder = tmp_path / "three-bands"
    folder.mkdir()
    for band in ("B02", "B03", "B04"):
        (folder / f"{band}.tif").write_bytes((data.major_tom / f"{band}.tif").read_bytes())
    archive = data.zip_folder(folder, tmp_path / "three-bands.zip")
    with pytest.raises(AppError, match="band\\(s\\) B01, B05, B06, B07, B08, B8A, B09, B11, B12 missing"):
        client.predict(handle_file(str(archive)), api_name="/map")


def test_scene_over_the_configured_limit(small_limit_server, data):
    from gradio_client import Client

    small = Client(small_limit_server[0], verbose=False)
    with pytest.raises(AppError, match=r"Forest_1\.tif declares 64 x 64 pixels, over the limit of this server "
                                       r"\(spectral-llava app --max-scene-pixels\): 2,500 pixels"):
        small.predict(handle_file(str(data.forest)), api_name="/caption")


def test_input_wider_than_twice_the_footprint_is_sent_to_the_map(client, data, tmp_path):
    ssl4eo = data.zip_folder(data.ssl4eo, tmp_path / "ssl4eo.zip")  # 264 px, 2.6 km; the model sees 0.64 km
    with pytest.raises(AppError, match=r"covers 4\.1x the model's 0\.64 km footprint.*use the Map tab"):
        client.predict(handle_file(str(ssl4eo)), api_name="/caption")


def test_chat_streams_the_greedy_answer(app_session, data):
    history = [{"role": "user", "content": "[caption] Describe this image."},
               {"role": "assistant", "content": "A forest."}]
    pieces = list(app_session.chat_stream(data.forest, history, "Is there water?"))
    prompt = app_session.chat_prompt(data.forest, history, "Is there water?")
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("Describe this image")
    assert prompt.endswith("<|im_start|>assistant\n") and "Is there water?" in prompt
    inputs = app_session.processor(images=[str(data.forest)], text=[prompt], return_tensors="pt")
    with torch.inference_mode():
        ids = app_session.model.generate(**inputs, max_new_tokens=app_session.max_new_tokens, do_sample=False)
    expected = app_session.processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(pieces) > 1 and pieces[-1] == expected
    assert all(later.startswith(earlier) for earlier, later in zip(pieces, pieces[1:]))


def test_map_tab_reports_progress_per_tile_and_renders_the_map(app_server, data):
    _, app = app_server
    calls = []

    def progress(value, desc=None, unit=None):
        calls.append((value, desc, unit))

    state = app.load_sample(next(name for name, path in app.samples.items() if path == data.ben_patch))[0]
    frame, downloads, summary = app.page_map(state, "classification", progress=progress)
    steps = [value for value, desc, unit in calls if unit == "tiles"]
    assert steps[-1] == (4, 4) and [done for done, _ in steps] == sorted(done for done, _ in steps)
    assert all(total == 4 for _, total in steps)
    assert frame.startswith('<iframe class="tile-map"') and "leaflet" in frame.lower()
    assert [path.rsplit(".", 1)[-1] for path in downloads] == ["geojson", "parquet", "png"]
    assert summary.startswith("**4 tiles mapped**")


def test_no_analytics_and_model_requests_share_one_queue_slot(app_session, tmp_path):
    import os

    from spectral_llava.webapp import AppOptions, SpectralApp

    demo = SpectralApp(app_session, AppOptions(model=app_session.model_dir, work_root=str(tmp_path))).build()
    assert demo.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    model_events = [fn for fn in demo.fns.values() if fn.concurrency_id == "model"]
    names = {fn.name for fn in model_events}
    assert {"page_caption", "page_classify", "page_chat", "page_map", "api_caption", "api_classify",
            "api_map"} <= names
    assert {fn.concurrency_limit for fn in model_events} == {1}
