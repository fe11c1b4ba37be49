"""The model side of scene mapping: labels and captions for batches of preprocessed tiles."""

from __future__ import annotations

import torch

from spectral_llava.inference.generation import greedy_answers, rank_labels
from spectral_llava.inference.labels import BEN19_LABELS, EUROSAT_CLASSES, parse_labels
from spectral_llava.inference.mentions import mentioned_classes
from spectral_llava.inference.prompts import expand_image_tokens
from spectral_llava.inference.runtime import native_bf16

from .options import TASKS

DEFAULT_MAX_NEW_TOKENS = {"classification": 48, "caption": 64}


def task_list(task: str) -> list[str]:
    if task not in TASKS:
        raise ValueError(f"task={task!r}; expected one of {', '.join(TASKS)}")
    return ["classification", "caption"] if task == "both" else [task]


class TileAnnotator:
    """Labels and/or captions for a batch of tiles, as `spectral-llava map` computes them.

    The tower runs once per batch (under bfloat16 autocast where the device has native bf16, `bf16=None`), and
    its features feed batched greedy generation (left-padded prompts, KV cache) for each task. Labels are the
    `[classification]` answer parsed against `vocabulary` (default: the EuroSAT classes and the 19 BigEarthNet
    classes), most likely first.
    """

    def __init__(self, model, processor, task: str = "classification", max_new_tokens: dict | int | None = None,
                 vocabulary=None, bf16: bool | None = None):
        self.model = model.eval()
        self.processor = processor
        self.tasks = task_list(task)
        if isinstance(max_new_tokens, int):
            max_new_tokens = {name: max_new_tokens for name in self.tasks}
        self.max_new_tokens = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
        self.vocabulary = list(vocabulary) if vocabulary is not None else list(EUROSAT_CLASSES) + list(BEN19_LABELS)
        self.device = next(model.parameters()).device
        self.bf16 = native_bf16(self.device) if bf16 is None else bf16
        self.prompts = {name: expand_image_tokens(processor, processor.build_prompt(name)) for name in self.tasks}

    @property
    def precision(self) -> str:
        return "bfloat16 autocast (tower)" if self.bf16 else "float32"

    @torch.inference_mode()
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower's output at the model's `vision_feature_layer`, float32 (B, T*h*w, D)."""
        pixel_values = pixel_values.to(self.device, self.model.vision_tower.dtype)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.select_vision_features(pixel_values).float()

    @torch.inference_mode()
    def generate(self, task: str, features: torch.Tensor) -> list[dict]:
        """Greedy answers to `task`'s prompt for each image's tower features: {"text", "token_ids", "logprobs"}."""
        tokenizer = self.processor.tokenizer
        inputs = dict(tokenizer([self.prompts[task]] * len(features), return_tensors="pt", padding=True))
        inputs["vision_features"] = features.to(self.model.dtype)
        return greedy_answers(self.model, tokenizer, inputs, self.max_new_tokens[task])

    def __call__(self, pixel_values: torch.Tensor) -> list[dict]:
        """One dict per image: "labels", "classification_text" (with classification) and "caption" (with
        captioning). Captioning alone gives as labels the vocabulary classes that the caption mentions."""
        if len(pixel_values) == 0:
            return []
        features = self.vision_features(pixel_values)
        results = [{} for _ in range(len(pixel_values))]
        for task in self.tasks:
            for result, answer in zip(results, self.generate(task, features)):
                if task == "caption":
                    result["caption"] = answer["text"]
                    result.setdefault("labels", mentioned_classes(answer["text"], self.vocabulary))
                else:
                    labels = parse_labels(answer["text"], self.vocabulary)
                    result["labels"] = rank_labels(self.processor.tokenizer, answer, labels)
                    result["classification_text"] = answer["text"]
        return results
