"""pipeline("image-text-to-text", model=DIR, trust_remote_code=True) on Sentinel-2 inputs, and the caption CLI."""

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from spectral_llava.processing.sentinel2_io import read_image
from spectral_llava.processing.pipeline_spectral_llava import CUSTOM_PIPELINES, register_pipeline_in_model_dir
from testing_utils import DATA

TIF = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
FOLDER = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")
GREEDY = {"max_new_tokens": 4, "generate_kwargs": {"do_sample": False}}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return pipeline("image-text-to-text", model=tiny_model_dir, trust_remote_code=True)


@pytest.fixture(scope="module")
def direct(tiny_model_dir):
    """Greedy continuation computed without the pipeline: processor + model.generate."""
    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True).eval()

    def generate(images, text):
        inputs = processor(images=images, text=text, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        return processor.post_process_image_text_to_text(out[:, inputs["input_ids"].shape[1]:])[0]

    return generate, processor


def chat(image_part, text="[caption] Describe."):
    return [{"role": "user", "content": [image_part, {"type": "text", "text": text}]}]


def test_saved_config_selects_the_custom_pipeline(pipe, tiny_model_dir):
    config = json.loads(Path(os.path.join(tiny_model_dir, "config.json")).read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINES
    assert type(pipe).__name__ == "SpectralImageTextToTextPipeline"
    assert type(pipe).__module__.startswith("transformers_modules")


def test_chat_with_geotiff_path_matches_direct_generation(pipe, direct):
    generate, processor = direct
    messages = chat({"type": "image", "path": TIF})
    result = pipe(text=messages, return_full_text=False, **GREEDY)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert result[0]["generated_text"] == generate(TIF, prompt)
    full = pipe(text=messages, **GREEDY)[0]["generated_text"]
    assert full[-1]["role"] == "assistant" and full[-1]["content"] == result[0]["generated_text"]


def test_chat_with_patch_folder_and_array(pipe, direct):
    generate, processor = direct
    array = read_image(FOLDER).data
    from_folder = pipe(text=chat({"type": "image", "path": FOLDER}), return_full_text=False, **GREEDY)
    from_array = pipe(text=chat({"type": "image", "image": array}), return_full_text=False, **GREEDY)
    assert from_folder[0]["generated_text"] == from_array[0]["generated_text"]
    prompt = processor.apply_chat_template(chat({"type": "image"}), add_generation_prompt=True)
    assert from_folder[0]["generated_text"] == generate(FOLDER, prompt)


def test_images_and_text_keep_all_twelve_bands(pipe, direct):
    generate, _ = direct
    model_inputs = pipe.preprocess({"images": FOLDER, "text": "<image>\n[caption] Describe."})
    assert model_inputs["pixel_values"].shape == (1, 12, 32, 32)
    result = pipe(images=FOLDER, text="<image>\n[caption] Describe.", return_full_text=False, **GREEDY)
    assert result[0]["generated_text"] == generate(FOLDER, "<image>\n[caption] Describe.")


def test_batch_of_images(pipe):
    array = read_image(TIF).data
    text = "<image>\n[caption] Describe."
    batch = pipe(images=[TIF, FOLDER, array], text=text, return_full_text=False, **GREEDY)
    assert len(batch) == 3
    singles = [pipe(images=image, text=text, return_full_text=False, **GREEDY) for image in (TIF, FOLDER)]
    assert [b[0]["generated_text"] for b in batch[:2]] == [s[0]["generated_text"] for s in singles]
    assert batch[2][0]["generated_text"] == batch[0][0]["generated_text"]  # same pixels as the TIF
    chats = pipe(text=[chat({"type": "image", "path": TIF}), chat({"type": "image", "path": FOLDER})],
                 return_full_text=False, **GREEDY)
    assert len(chats) == 2
    paired = pipe(images=[TIF, FOLDER], text=[text, text], return_full_text=False, **GREEDY)
    assert [p[0]["generated_text"] for p in paired] == [s[0]["generated_text"] for s in singles]


def test_images_without_text_get_the_caption_prompt(pipe):
    result = pipe(images=TIF, return_full_text=False, **GREEDY)
    assert "[caption]" in result[0]["input_text"][0]["content"][1]["text"]
    assert isinstance(result[0]["generated_text"], str)


def test_pipeline_errors(pipe):
    with pytest.raises(ValueError, match="2 <image> placeholder"):
        pipe(images=TIF, text="<image><image>", **GREEDY)
    with pytest.raises(ValueError, match="images= has 2 entries but text= has 1"):
        pipe(images=[TIF, FOLDER], text=["<image>"], **GREEDY)
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        pipe(images=os.path.join(DATA, "missing.tif"), text="<image>", **GREEDY)


def test_register_pipeline_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        register_pipeline_in_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "spectral_llava"}))
    register_pipeline_in_model_dir(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    assert (tmp_path / "pipeline_spectral_llava.py").is_file()


def test_band_names_reach_the_processor_without_a_warning(pipe, direct):
    """`band_names=` is a pipeline argument of its own: no "Kwargs ... have to be in `processor_kwargs`" warning,
    with chat input (the default caption prompt) or with text."""
    from transformers.utils import logging as transformers_logging

    generate, processor = direct
    image = read_image(TIF)
    array = image.data
    reordered, order = array[::-1].copy(), image.band_names[::-1]  # another order, named: the names must be used
    transformers_logging.enable_propagation()
    try:
        with capture_transformers_warnings() as warnings_seen:
            default = pipe(images=reordered, band_names=order, return_full_text=False, **GREEDY)
            prompted = pipe(images=reordered, band_names=order, text="<image>\n[caption] Describe.",
                            return_full_text=False, **GREEDY)
    finally:
        transformers_logging.disable_propagation()
    assert not [w for w in warnings_seen if "processor_kwargs" in w], warnings_seen
    assert default[0]["generated_text"] == generate(array, processor.build_prompt("caption"))
    assert prompted[0]["generated_text"] == generate(array, "<image>\n[caption] Describe.")


@contextlib.contextmanager
def capture_transformers_warnings():
    import logging

    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def test_unnamed_array_error_reaches_the_user(pipe):
    with pytest.raises(ValueError, match="band_names"):
        pipe(images=np.ones((5, 32, 32), dtype=np.float32), text="<image>", **GREEDY)


def test_the_repository_pipeline_class_answers_like_the_saved_one(pipe, tiny_model):
    """The repository's own pipeline class on the repository's model and processor (as this repository's code
    would build it) gives the saved dir's remote-code pipeline's answers."""
    from spectral_llava.processing.pipeline_spectral_llava import SpectralImageTextToTextPipeline

    model, processor = tiny_model
    local = pipeline("image-text-to-text", model=model, processor=processor,
                     pipeline_class=SpectralImageTextToTextPipeline)
    assert type(local) is SpectralImageTextToTextPipeline
    for kwargs in ({"text": chat({"type": "image", "path": TIF}), "return_full_text": False},
                   {"images": [TIF, FOLDER], "text": "<image>\n[caption] Describe."},
                   {"images": TIF}):
        assert local(**kwargs, **GREEDY) == pipe(**kwargs, **GREEDY)
    with pytest.raises(ValueError, match="images= has 2 entries but text= has 1"):
        local(images=[TIF, FOLDER], text=["<image>"])


def test_stac_items_and_cog_urls_work_like_paths(pipe, tmp_path):
    """The saved model dir's own remote code reads a STAC item URL and a plain COG URL over HTTP (range requests)
    like the same bands as local files, in chat messages and as images=."""
    from sentinel2_samples import MAJOR_TOM_CROP
    from stac_samples import RangeServer, crop_cogs, planetary_item, write_item

    cogs = crop_cogs(tmp_path)
    expected = pipe(text=chat({"type": "image", "path": MAJOR_TOM_CROP}), return_full_text=False, **GREEDY)
    with RangeServer(tmp_path) as server:
        item = write_item(planetary_item({band: server.url(path) for band, path in cogs.items()}),
                          tmp_path / "item.json")
        from_chat = pipe(text=chat({"type": "image", "path": server.url(item)}), return_full_text=False, **GREEDY)
        prompt = "<image>[caption] Describe."
        from_images = pipe(images=server.url(item), text=prompt, return_full_text=False, **GREEDY)
        from_files = pipe(images=MAJOR_TOM_CROP, text=prompt, return_full_text=False, **GREEDY)
        assert server.bytes_served
    assert from_chat[0]["generated_text"] == expected[0]["generated_text"]
    assert from_images[0]["generated_text"] == from_files[0]["generated_text"]
