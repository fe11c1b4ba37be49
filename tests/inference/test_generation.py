"""Batched greedy answers with per-token log-probabilities, from pixels or from the frozen-tower feature cache."""

import os

import pytest
import torch
from testing_utils import EUROSAT

from spectral_llava.inference import (EUROSAT_CLASSES, classify_images, expand_image_tokens, generate_answers,
                                      parse_labels, rank_labels)

PATHS = [os.path.join(EUROSAT, name, f"{name}_1.tif") for name in ("Forest", "River", "Industrial")]


@pytest.fixture(scope="module")
def answers(tiny_model):
    model, processor = tiny_model
    return generate_answers(model, processor, PATHS, "caption", batch_size=2, max_new_tokens=6)


def test_logprobs_are_the_models_own_for_each_generated_token(tiny_model, answers):
    model, processor = tiny_model
    assert len(answers) == len(PATHS) and any(answer["token_ids"] for answer in answers)
    prompt = processor.build_prompt("caption")
    for path, answer in zip(PATHS, answers):
        assert len(answer["logprobs"]) == len(answer["token_ids"]) <= 6
        assert answer["text"] == processor.tokenizer.decode(answer["token_ids"], skip_special_tokens=True).strip()
        assert set(answer["radiometry"]) >= {"offset", "scale"}
        inputs = processor(images=[path], text=[prompt], return_tensors="pt")
        sequence = torch.cat([inputs["input_ids"], torch.tensor([answer["token_ids"]], dtype=torch.long)], dim=1)
        with torch.no_grad():
            logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence),
                           pixel_values=inputs["pixel_values"]).logits[0].float()
        start = inputs["input_ids"].shape[1] - 1
        expected = [torch.log_softmax(logits[start + k], -1)[token].item()
                    for k, token in enumerate(answer["token_ids"])]
        assert answer["logprobs"] == pytest.approx(expected, abs=1e-4)
        assert answer["token_ids"] == [int(logits[start + k].argmax()) for k in range(len(answer["token_ids"]))]


def test_one_image_per_batch_gives_the_same_answers(tiny_model, answers):
    model, processor = tiny_model
    single = generate_answers(model, processor, PATHS, "caption", batch_size=1, max_new_tokens=6)
    assert [a["token_ids"] for a in single] == [a["token_ids"] for a in answers]
    for one, batched in zip(single, answers):
        assert one["logprobs"] == pytest.approx(batched["logprobs"], abs=1e-4)


def test_the_feature_cache_gives_the_answers_of_the_pixels(tiny_model, answers, tmp_path):
    model, processor = tiny_model
    cached = generate_answers(model, processor, PATHS, "caption", batch_size=2, max_new_tokens=6,
                              tower_cache=tmp_path / "tower")
    assert [a["token_ids"] for a in cached] == [a["token_ids"] for a in answers]
    assert all("radiometry" not in answer for answer in cached)  # the images were not read
    assert sorted(p.name for p in (tmp_path / "tower").iterdir()) == ["fingerprint.json", "index.json",
                                                                      "shard-00000.safetensors"]
    expanded = expand_image_tokens(processor, processor.build_prompt("caption"))
    assert expanded.count(processor.image_token) == processor.num_image_tokens == 16
    pixels = processor(images=PATHS[:1], text=[processor.build_prompt("caption")], return_tensors="pt")
    assert processor.tokenizer(expanded)["input_ids"] == pixels["input_ids"][0].tolist()


def test_classify_images_parses_and_ranks_against_the_vocabulary(tiny_model):
    model, processor = tiny_model
    rows = classify_images(model, processor, PATHS[:2], vocabulary=EUROSAT_CLASSES, max_new_tokens=6)
    assert [row["image"] for row in rows] == PATHS[:2]
    for row in rows:
        assert sorted(row["labels"]) == parse_labels(row["text"], EUROSAT_CLASSES)
        assert set(row) == {"image", "labels", "text", "radiometry"}
    answer = {"token_ids": processor.tokenizer("Labels: Forest; River", add_special_tokens=False)["input_ids"]}
    answer["logprobs"] = [-1.0] * len(answer["token_ids"])
    assert rank_labels(processor.tokenizer, answer, ["Pastures", "River", "Forest"]) == ["River", "Forest", "Pastures"]
