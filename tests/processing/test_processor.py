"""SpectralLlavaProcessor: <image> expansion, inputs of every kind, chat template, padding, errors, round trip."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer

from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.sentinel2_io import read_image
from spectral_llava.processing.processing_spectral_llava import SpectralLlavaProcessor
from testing_utils import DATA, SMOLLM2_SYSTEM

TIF = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
FOLDER = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)


def in_repo_processor(model_dir):
    """The in-repo class on the builder's tokenizer (with <image>, [caption], [classification])."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return SpectralLlavaProcessor(SpectralImageProcessor(image_size=32), tokenizer, num_image_tokens=7)


@pytest.fixture(scope="module")
def local_processor(tiny_model_dir):
    return in_repo_processor(tiny_model_dir)


def image_count(processor, input_ids):
    return (input_ids == processor.image_token_id).sum(dim=-1).tolist()


def test_saved_processor_loads_as_remote_code(processor, tiny_model_dir):
    assert type(processor).__name__ == "SpectralLlavaProcessor"
    assert type(processor).__module__.startswith("transformers_modules")
    assert type(processor.image_processor).__name__ == "SpectralImageProcessor"
    assert processor.num_image_tokens == 16  # tiny model: 32x32, patch 8, spectral_mean -> 4 x 4 tokens
    assert processor.tokenizer.padding_side == "left"
    assert os.path.isfile(os.path.join(tiny_model_dir, "chat_template.jinja"))
    assert processor.chat_template == Path(os.path.join(tiny_model_dir, "chat_template.jinja")).read_text()


def test_image_placeholder_expands_to_num_image_tokens(local_processor):
    out = local_processor(images=TIF, text="<image>\n[caption] Describe.")
    assert image_count(local_processor, out["input_ids"]) == [7]
    assert out["pixel_values"].shape == (1, 12, 32, 32)
    two = local_processor(images=[TIF, FOLDER], text="first <image> then <image>")
    assert image_count(local_processor, two["input_ids"]) == [14]
    # the image tokens sit exactly where the placeholder was
    ids = out["input_ids"][0].tolist()
    start = ids.index(local_processor.image_token_id)
    assert ids[start:start + 7] == [local_processor.image_token_id] * 7


def test_paths_folders_and_arrays_in_one_batch_with_left_padding(local_processor):
    array = read_image(os.path.join(DATA, "eurosat-ms", "River", "River_1.tif")).data
    texts = ["<image>\nhi", "<image>\na much longer question about this image", "<image>"]
    out = local_processor(images=[TIF, FOLDER, array], text=texts)
    assert out["pixel_values"].shape == (3, 12, 32, 32) and out["pixel_values"].dtype == torch.float32
    expected = local_processor.image_processor([TIF, FOLDER, array])["pixel_values"]
    torch.testing.assert_close(out["pixel_values"], expected, rtol=0, atol=0)
    mask = out["attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0] and mask[1].all()  # padded on the left
    assert image_count(local_processor, out["input_ids"]) == [7, 7, 7]
    assert set(out.keys()) == {"input_ids", "attention_mask", "pixel_values"}


def test_nested_per_sample_image_lists(local_processor):
    out = local_processor(images=[[TIF], [FOLDER, TIF]], text=["<image>", "<image><image>"])
    assert out["pixel_values"].shape == (3, 12, 32, 32)
    assert image_count(local_processor, out["input_ids"]) == [7, 14]


def test_band_mask_and_metadata_only_on_request(local_processor):
    out = local_processor(images=FOLDER, text="<image>", return_band_mask=True, return_metadata=True)
    assert out["band_mask"].shape == (1, 12) and out["band_mask"].all()
    assert out["metadata"][0]["crs"].to_epsg() == 32633


@pytest.mark.parametrize("text,images,counts", [
    ("<image><image> two placeholders", [TIF], "2 <image> placeholder"),
    ("one <image>", [TIF, FOLDER], "1 <image> placeholder"),
    ("no placeholder", [TIF], "0 <image> placeholder"),
    ("<image> but no image", None, "1 <image> placeholder"),
])
def test_placeholder_count_must_match_images(local_processor, text, images, counts):
    with pytest.raises(ValueError, match=f"{counts}.*images= has"):
        local_processor(images=images, text=text)


def test_truncating_image_tokens_is_an_error(tiny_model_dir):
    # its own processor: the fast tokenizer keeps the truncation setting, which a saved copy would carry along
    processor = in_repo_processor(tiny_model_dir)
    with pytest.raises(ValueError, match="truncated"):
        processor(images=TIF, text="some words first <image>", truncation=True, max_length=6)


def test_chat_template_with_path_and_array_images(processor):
    array = read_image(TIF).data
    for image_part in ({"type": "image", "path": TIF}, {"type": "image", "image": array}):
        messages = [{"role": "user", "content": [image_part, {"type": "text", "text": "[caption] Describe."}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        assert prompt == (SMOLLM2_SYSTEM + "<|im_start|>user\n<image>\n[caption] Describe.<|im_end|>\n"
                          "<|im_start|>assistant\n")
        out = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            return_tensors="pt")
        assert image_count(processor, out["input_ids"]) == [16]
        torch.testing.assert_close(out["pixel_values"], processor.image_processor(TIF)["pixel_values"])


def test_task_prompts(processor):
    caption = processor.build_prompt("caption")
    assert caption.startswith(SMOLLM2_SYSTEM + "<|im_start|>user\n<image>\n[caption] ")
    assert caption.endswith("<|im_start|>assistant\n")
    custom = processor.build_prompt("classification", text="Which classes?")
    assert "<image>\n[classification] Which classes?<|im_end|>" in custom
    ids = processor.tokenizer(custom)["input_ids"]
    assert processor.tokenizer.convert_tokens_to_ids("[classification]") in ids  # one special token
    messages = processor.build_messages("caption", image=FOLDER)
    assert messages[0]["content"][0] == {"type": "image", "path": FOLDER}
    with pytest.raises(ValueError, match="task='segmentation'"):
        processor.build_prompt("segmentation")


def test_post_process_image_text_to_text(processor):
    out = processor(images=TIF, text="<image>\nA forest", return_tensors="pt")
    assert processor.post_process_image_text_to_text(out["input_ids"]) == ["\nA forest"]
    assert processor.post_process_image_text_to_text(out["input_ids"][0]) == ["\nA forest"]


def test_processor_round_trip_in_repo(local_processor, tmp_path):
    local_processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.num_image_tokens == 7 and loaded.image_processor.image_size == 32
    a = local_processor(images=FOLDER, text="<image> x")
    b = loaded(images=FOLDER, text="<image> x")
    assert torch.equal(a["input_ids"], b["input_ids"])
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"], rtol=0, atol=0)


def test_constructor_errors(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="num_image_tokens"):
        SpectralLlavaProcessor(SpectralImageProcessor(), tokenizer, num_image_tokens=0)
    with pytest.raises(ValueError, match="no '<img>' token"):
        SpectralLlavaProcessor(SpectralImageProcessor(), tokenizer, num_image_tokens=4, image_token="<img>")


def test_numpy_output(local_processor):
    out = local_processor(images=np.full((12, 16, 16), 1000, dtype=np.uint16), text="<image>", return_tensors="np")
    assert isinstance(out["pixel_values"], np.ndarray) and out["pixel_values"].shape == (1, 12, 32, 32)
