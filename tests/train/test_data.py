"""The collator (chat template, <image> expansion, answer-only labels), the frozen-tower feature cache and the
build's radiometry in training."""

import json

import pytest
import torch

from spectral_llava.inference.feature_cache import FeatureCache, feature_fingerprint, tower_encoder
from spectral_llava.spectral_inst import load_split, resolve_image_path
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.train.data import IGNORE_INDEX, SpectralLlavaCollator, dataset_radiometry


def test_collator_masks_everything_but_the_answer(model_and_processor, dataset_dir):
    model, processor = model_and_processor
    records, roots = load_split(dataset_dir, "instructions", "train")
    classification = next(r for r in records if r["task"] == "classification")
    caption = next(r for r in records if r["task"] == "caption")
    batch = SpectralLlavaCollator(processor, roots)([classification, caption])

    assert batch["pixel_values"].shape == (2, 12, 32, 32)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    for row, record in enumerate((classification, caption)):
        assert int((ids[row] == processor.image_token_id).sum()) == model.num_image_tokens == 16
        answer = processor.tokenizer.decode(labels[row][labels[row] != IGNORE_INDEX])
        assert answer == record["conversations"][1]["value"] + "<|im_end|>\n"
        length = int(mask[row].sum())
        assert (labels[row, length:] == IGNORE_INDEX).all() and (mask[row, :length] == 1).all()
    # the prompt is the one used at inference: the processor's chat template with a generation prompt
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
                                      classification["conversations"][0]["value"].split("\n", 1)[1]}]}],
        add_generation_prompt=True,
    )
    first_answer = int((labels[0] != IGNORE_INDEX).nonzero()[0])
    image = torch.full((12, 32, 32), 1000.0)  # any reflectance x 10000: only the token ids are compared
    expected = processor(text=prompt, images=[image], return_tensors="pt")["input_ids"][0]
    assert ids[0, :first_answer].tolist() == expected.tolist()


def test_feature_cache_matches_tower_and_is_invalidated(model_and_processor, dataset_dir, tmp_path):
    model, processor = model_and_processor
    records, roots = load_split(dataset_dir, "patches", "test")
    images = {r["id"]: resolve_image_path(r["image_path"], roots) for r in records.select(range(5))}
    fingerprint = feature_fingerprint(model, processor.image_processor)
    encode = tower_encoder(model, processor.image_processor)
    cache = FeatureCache(tmp_path / "cache", fingerprint).build(images, encode, batch_size=2, shard_size=3)
    assert len(cache) == 5 and len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 2
    ids = list(images)[:3]
    pixels = processor.image_processor([images[i] for i in ids], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.select_vision_features(pixels)
    assert expected.shape == (3, 4 * 4 * 4, 64)  # 4 spectral groups x 4x4 patches, width 64
    torch.testing.assert_close(cache.get(ids), expected, rtol=0, atol=1e-6)

    # same tower and processing: reused as is; another processing config or other weights: a new fingerprint
    assert FeatureCache(tmp_path / "cache", fingerprint).open().get(ids[:1]).shape == (1, 64, 64)
    processor.image_processor.image_size, size = 64, processor.image_processor.image_size
    try:
        assert feature_fingerprint(model, processor.image_processor) != fingerprint
    finally:
        processor.image_processor.image_size = size
    layer_norm = model.vision_tower.post_layernorm.weight
    with torch.no_grad():
        layer_norm.add_(1.0)
    try:
        changed = feature_fingerprint(model, processor.image_processor)
        assert changed != fingerprint
        with pytest.raises(FileNotFoundError, match="another tower"):
            FeatureCache(tmp_path / "cache", changed).open()
        rebuilt = FeatureCache(tmp_path / "cache", changed).build(dict(list(images.items())[:2]), encode)
        assert len(rebuilt) == 2 and len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 1
    finally:
        with torch.no_grad():
            layer_norm.sub_(1.0)


def test_training_reads_images_with_the_builds_radiometry(model_and_processor, dataset_dir, tmp_path):
    _, processor = model_and_processor
    (tmp_path / "build_info.json").write_text(json.dumps({"image_roots": {}}))
    assert dataset_radiometry(tmp_path) is None
    (tmp_path / "build_info.json").write_text(json.dumps({"radiometry": {"input_offset": -1000.0, "strict": True}}))
    settings = dataset_radiometry(tmp_path)
    assert settings == RadiometrySettings(-1000.0, None, True)
    # the collator hands the settings to the image processor: the pixels of an explicit offset and scale
    records, roots = load_split(dataset_dir, "instructions", "train")
    path = resolve_image_path(records[0]["image"], roots)
    expected = processor.image_processor(path, input_offset=100, input_scale=0.5)["pixel_values"]
    assert not torch.equal(expected, processor.image_processor(path)["pixel_values"])
    batch = SpectralLlavaCollator(processor, roots, radiometry=RadiometrySettings(100, 0.5))([records[0]])
    assert torch.equal(batch["pixel_values"], expected)
    assert (processor.image_processor.input_offset, processor.image_processor.strict) == (None, False)


def test_feature_cache_fingerprint_follows_the_radiometry(tiny_model_dir):
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

    model, processor = load_model_and_processor(tiny_model_dir, device="cpu")
    image_processor = processor.image_processor
    default = feature_fingerprint(model, image_processor)
    assert feature_fingerprint(model, image_processor, RadiometrySettings()) == default
    # strict changes no value
    assert feature_fingerprint(model, image_processor, RadiometrySettings(strict=True)) == default
    explicit = feature_fingerprint(model, image_processor, RadiometrySettings(input_offset=-1000))
    assert explicit != default
    # the processor's configured settings count as much as the ones passed
    configured = SpectralImageProcessor.from_dict({**image_processor.to_dict(), "input_offset": -1000})
    assert feature_fingerprint(model, configured) == explicit
