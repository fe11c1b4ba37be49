"""SpectralLlavaProcessor's typed kwargs: routed by modality, with defaults; the image processor's rescale;
`num_image_tokens` from the processor's parts; `_get_num_multimodal_tokens`; `band_names` through `pipeline()`."""

import copy
import os

import numpy as np
import pytest
import torch

from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import (
    SpectralGPTConfig,
    SpectralLlavaConfig,
    num_visual_tokens,
)
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.pipeline_spectral_llava import SpectralImageTextToTextPipeline
from spectral_llava.processing.processing_spectral_llava import SpectralLlavaProcessor, SpectralLlavaProcessorKwargs
from spectral_llava.processing.sentinel2_io import SPECTRALGPT_BANDS
from testing_utils import DATA, smollm2_tokenizer, tiny_random_llava

TIF = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
FOLDER = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")
NAMES = list(SPECTRALGPT_BANDS)


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer(special_tokens=True)


@pytest.fixture(scope="module")
def processor(tokenizer):
    """Built from its parts only: num_image_tokens comes from the image processor (4 groups x 4 x 4 = 64)."""
    return SpectralLlavaProcessor(SpectralImageProcessor(image_size=32), tokenizer)


def reflectances(seed=0):
    """A 12-band (SpectralGPT order) reflectance array and the same bands in reverse order."""
    array = np.random.default_rng(seed).uniform(200, 4000, size=(12, 24, 24)).astype(np.float32)
    return array, array[::-1].copy()


def test_num_image_tokens_defaults_to_the_default_model_layout(processor, tokenizer):
    model_config = SpectralLlavaConfig(vision_config=SpectralGPTConfig(image_size=32))  # "tokens" layout, no pool
    assert processor.num_image_tokens == num_visual_tokens(model_config) == 64
    out = processor(images=TIF, text="<image>\n[caption] Describe.")
    assert int((out["input_ids"] == processor.image_token_id).sum()) == 64
    # an explicit count (what the builder stores) wins; six bands make two spectral groups
    six = SpectralImageProcessor(image_size=16, band_names=NAMES[:6])
    assert SpectralLlavaProcessor(six, tokenizer).num_image_tokens == 2 * 2 * 2
    assert SpectralLlavaProcessor(six, tokenizer, num_image_tokens=5).num_image_tokens == 5


def test_defaults_are_torch_tensors_and_left_padded_batches(processor):
    assert processor.valid_processor_kwargs is SpectralLlavaProcessorKwargs
    out = processor(images=[TIF, FOLDER], text=["<image>\nhi", "<image>\na longer question about this image"])
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    assert all(isinstance(value, torch.Tensor) for value in out.values())
    assert out["attention_mask"][0, 0] == 0 and out["attention_mask"][:, -1].all()  # padded on the left
    single = processor(images=TIF, text="<image>\nhi")
    assert single["attention_mask"].all()  # a single prompt is not padded


def test_kwargs_are_routed_by_modality_flat_or_structured(processor):
    merged = processor._merge_kwargs(
        SpectralLlavaProcessorKwargs, tokenizer_init_kwargs=processor.tokenizer.init_kwargs,
        padding="max_length", max_length=90, band_names=NAMES, return_metadata=True, do_rescale=False,
    )
    assert {"padding", "max_length"} <= set(merged["text_kwargs"]) and "band_names" not in merged["text_kwargs"]
    assert {"band_names", "return_metadata", "do_rescale"} <= set(merged["images_kwargs"])
    assert "padding" not in merged["images_kwargs"]
    assert merged["text_kwargs"]["return_tensors"] == merged["images_kwargs"]["return_tensors"] == "pt"  # defaults

    array, reversed_bands = reflectances()
    text = "<image>\n[caption] Describe."
    flat = processor(images=reversed_bands, text=text, band_names=NAMES[::-1], padding="max_length", max_length=90,
                     return_metadata=True)
    structured = processor(images=reversed_bands, text=text, text_kwargs={"padding": "max_length", "max_length": 90},
                           images_kwargs={"band_names": NAMES[::-1], "return_metadata": True})
    canonical = processor(images=array, text=text, padding="max_length", max_length=90)
    for out in (flat, structured):
        assert out["input_ids"].shape == (1, 90)
        torch.testing.assert_close(out["pixel_values"], canonical["pixel_values"], rtol=0, atol=0)
        assert out["metadata"][0]["band_names"] == NAMES[::-1]
        assert torch.equal(out["input_ids"], canonical["input_ids"])
    assert "metadata" not in canonical

    as_numpy = processor(images=[array, array], text=[text, text + " Briefly."], common_kwargs={"return_tensors": "np"})
    assert isinstance(as_numpy["input_ids"], np.ndarray) and isinstance(as_numpy["pixel_values"], np.ndarray)
    assert processor(images=array, text=text)["input_ids"].__class__ is torch.Tensor  # the default is untouched


def test_the_same_kwarg_flat_and_structured_is_an_error(processor):
    with pytest.raises(ValueError, match="padding"):
        processor(images=TIF, text="<image>", padding="longest", text_kwargs={"padding": "max_length"})


def test_image_processor_honours_do_rescale_and_rescale_factor(processor, tmp_path):
    array, _ = reflectances(1)
    native = SpectralImageProcessor(image_size=24)  # the input's size: no resampling
    levels = native(array, do_rescale=False)["pixel_values"]
    assert torch.equal(levels, levels.round()) and 1 < levels.max() <= 255  # SpectralGPT's uint8 levels
    assert torch.equal(native(array)["pixel_values"], levels / torch.tensor(255.0))  # default: the recipe's / 255
    assert torch.equal(native(array, rescale_factor=-1.0)["pixel_values"], -levels)
    # through the processor, flat or grouped
    text = "<image>"
    unscaled = processor(images=array, text=text, images_kwargs={"do_rescale": False})["pixel_values"]
    assert torch.equal(processor(images=array, text=text, rescale_factor=-1.0)["pixel_values"], -unscaled)
    # configured at init, saved and reloaded
    SpectralImageProcessor(image_size=24, do_rescale=False).save_pretrained(tmp_path)
    reloaded = SpectralImageProcessor.from_pretrained(tmp_path)
    assert reloaded.do_rescale is False
    assert torch.equal(reloaded(array)["pixel_values"], levels)


def test_get_num_multimodal_tokens_matches_the_processor_call(processor):
    sizes = [(24, 24), (120, 64)]
    helper = processor._get_num_multimodal_tokens(image_sizes=sizes)
    images = [np.random.default_rng(i).uniform(200, 4000, size=(12, h, w)) for i, (h, w) in enumerate(sizes)]
    out = processor(images=images, text=["<image> first", "a second, longer prompt <image>"],
                    return_mm_token_type_ids=True)
    assert helper["num_image_tokens"] == out["mm_token_type_ids"].sum(-1).tolist() == [64, 64]
    assert helper["num_image_patches"] == [1, 1]
    assert torch.equal(out["mm_token_type_ids"].bool(), out["input_ids"] == processor.image_token_id)
    assert "mm_token_type_ids" not in processor(images=images, text=["<image>", "<image>"])


def test_band_names_and_return_metadata_reach_the_image_processor(processor):
    array, reversed_bands = reflectances(2)
    out = processor(images=[reversed_bands], text="<image>", band_names=NAMES[::-1], return_metadata=True,
                    return_band_mask=True)
    assert out["metadata"][0]["band_names"] == NAMES[::-1] and out["band_mask"].all()
    assert "band_mask" not in processor(images=[reversed_bands], text="<image>", band_names=NAMES[::-1])
    only_images = processor(images=reversed_bands, band_names=NAMES[::-1], return_metadata=True)
    assert set(only_images) == {"pixel_values", "metadata"}
    torch.testing.assert_close(only_images["pixel_values"], out["pixel_values"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="band_names"):
        processor(images=reversed_bands[:5], text="<image>")  # five unnamed bands


def test_band_names_through_the_pipeline(tokenizer):
    model = tiny_random_llava(copy.deepcopy(tokenizer))
    processor = SpectralLlavaProcessor(SpectralImageProcessor(image_size=16), copy.deepcopy(tokenizer),
                                       num_image_tokens=model.num_image_tokens)
    pipe = SpectralImageTextToTextPipeline(model=model, processor=processor)
    array, reversed_bands = reflectances(3)
    greedy = {"return_full_text": False, "generate_kwargs": {"do_sample": False, "max_new_tokens": 4}}
    prompt = processor.build_prompt("caption")
    canonical = pipe(images=array, text=prompt, **greedy)[0]["generated_text"]
    named = pipe(images=reversed_bands, text=prompt, band_names=NAMES[::-1], **greedy)[0]["generated_text"]
    grouped = pipe(images=reversed_bands, text=prompt, processor_kwargs={"images_kwargs": {"band_names": NAMES[::-1]}},
                   **greedy)[0]["generated_text"]
    assert named == grouped == canonical
    inputs = processor(images=array, text=prompt)
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert canonical == processor.tokenizer.decode(expected, skip_special_tokens=True)
