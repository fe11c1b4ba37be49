"""Batched greedy answers to the task prompts, with the log-probability of every generated token, and the labels of
`[classification]` answers ranked by those log-probabilities."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from spectral_llava.processing.radiometry_settings import RadiometrySettings

from .feature_cache import image_id, open_tower_cache
from .labels import BEN19_LABELS, EUROSAT_CLASSES, parse_labels
from .options import GenerationOptions
from .prompts import expand_image_tokens
from .runtime import single_thread


def generate_answers(model, processor, paths: Sequence[str], task: str, question: str | None = None,
                     batch_size: int = GenerationOptions.batch_size,
                     max_new_tokens: int = GenerationOptions.max_new_tokens, tower_cache=None, desc: str | None = None,
                     radiometry: RadiometrySettings | None = None, band_names=None):
    """Greedy answers to the processor's `task` prompt ("caption" | "classification") for each image.

    Returns one dict per image: "text" (decoded, special tokens dropped), "token_ids" and "logprobs" (the
    log-probability of each generated token, up to the end-of-turn token) and, when the image was processed in
    this call, "radiometry" (the image processor's metadata: offset, scale, source rule...). Images are read with
    the radiometric handling `radiometry` (a `RadiometrySettings`; default the image processor's own) and
    `band_names` (the bands of multi-band files whose header does not name them, in file order; band folders
    ignore it). With `tower_cache` (a training feature cache dir) the tower output is read from the cache instead
    of recomputed.
    """
    prompt = processor.build_prompt(task, text=question)
    tokenizer = processor.tokenizer
    raw_cache = open_tower_cache(tower_cache, model, processor.image_processor, paths, batch_size,
                                 radiometry=radiometry, band_names=band_names)
    expanded = expand_image_tokens(processor, prompt)
    answers = []
    with torch.inference_mode(), single_thread():
        for start in tqdm(range(0, len(paths), batch_size), desc=desc or f"{task} answers", unit="batch"):
            chunk = list(paths[start:start + batch_size])
            metadata = [{}] * len(chunk)
            if raw_cache is not None:
                inputs = dict(tokenizer([expanded] * len(chunk), return_tensors="pt", padding=True))
                inputs["vision_features"] = raw_cache.get([image_id(p) for p in chunk]).to(model.dtype)
            else:
                inputs = dict(processor(images=chunk, text=[prompt] * len(chunk), return_tensors="pt",
                                        return_metadata=True, radiometry=radiometry, band_names=band_names))
                metadata = [{"radiometry": meta["radiometry"]} for meta in inputs.pop("metadata")]
            answers += [{**answer, **meta}
                        for answer, meta in zip(greedy_answers(model, tokenizer, inputs, max_new_tokens), metadata)]
    return answers


def greedy_answers(model, tokenizer, inputs: dict, max_new_tokens: int) -> list[dict]:
    """Greedy `model.generate(**inputs)` (pixel values or precomputed `vision_features`), one dict per sequence:
    "text" (decoded, special tokens dropped), "token_ids" and "logprobs", up to the end-of-turn token."""
    stop_ids = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id, model.generation_config.eos_token_id)
                if isinstance(i, int)}
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True,
                         output_scores=True, pad_token_id=tokenizer.pad_token_id)
    logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    answers = []
    for ids, scores in zip(out.sequences[:, inputs["input_ids"].shape[1]:].tolist(), logprobs.tolist()):
        end = next((k for k, token in enumerate(ids) if token in stop_ids), len(ids))
        answers.append({"text": tokenizer.decode(ids[:end], skip_special_tokens=True).strip(),
                        "token_ids": ids[:end], "logprobs": scores[:end]})
    return answers


def _token_spans(tokenizer, token_ids: Sequence[int]):
    """Character span of each token in `tokenizer.decode(token_ids)` (prefix decoding, exact for any tokenizer)."""
    spans, previous = [], 0
    for k in range(len(token_ids)):
        length = len(tokenizer.decode(token_ids[:k + 1], skip_special_tokens=True))
        spans.append((previous, length))
        previous = length
    return spans


def rank_labels(tokenizer, answer: dict, labels: Sequence[str]) -> list[str]:
    """`labels` (parsed from the answer) most likely first: by the mean log-probability of the generated tokens
    that spell each label; labels not found verbatim in the text keep their order after the found ones."""
    text = tokenizer.decode(answer["token_ids"], skip_special_tokens=True)
    spans = _token_spans(tokenizer, answer["token_ids"])
    scored = []
    for order, label in enumerate(labels):
        position = text.lower().find(label.lower())
        if position < 0:
            scored.append((-math.inf, order, label))
            continue
        end = position + len(label)
        inside = [lp for (a, b), lp in zip(spans, answer["logprobs"]) if a < end and b > position]
        scored.append((float(np.mean(inside)) if inside else -math.inf, order, label))
    return [label for _, _, label in sorted(scored, key=lambda item: (-item[0], item[1]))]


def classify_images(model, processor, paths: Sequence[str], vocabulary: Sequence[str] | None = None,
                    batch_size: int = GenerationOptions.batch_size,
                    max_new_tokens: int = GenerationOptions.max_new_tokens, tower_cache=None,
                    radiometry: RadiometrySettings | None = None, band_names=None) -> list[dict]:
    """One {"image", "labels", "text"} per image (and "radiometry" when the image was read, not taken from
    `tower_cache`): the `[classification]` answer parsed with parse_labels against `vocabulary` (default: the
    EuroSAT classes and the 19 BigEarthNet classes), most likely first. `radiometry`, `band_names`: as
    `generate_answers`."""
    vocabulary = list(vocabulary) if vocabulary is not None else list(EUROSAT_CLASSES) + list(BEN19_LABELS)
    answers = generate_answers(model, processor, paths, "classification", batch_size=batch_size,
                               max_new_tokens=max_new_tokens, tower_cache=tower_cache, desc="classifying",
                               radiometry=radiometry, band_names=band_names)
    return [{"image": str(path), "labels": rank_labels(processor.tokenizer, answer,
                                                        parse_labels(answer["text"], vocabulary)),
             "text": answer["text"], **({"radiometry": answer["radiometry"]} if "radiometry" in answer else {})}
            for path, answer in zip(paths, answers)]
