"""The model side of scene mapping: labels and captions for batches of preprocessed tiles."""

from __future__ import annotations

import torch

from spectral_llava.train.data import expand_image_tokens

from .options import TASKS

DEFAULT_MAX_NEW_TOKENS = {"classification": 48, "caption": 64}


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX); elsewhere
    bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


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
        from spectral_llava.spectral_inst.labels import BEN19_LABELS, EUROSAT_CLASSES

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
        from spectral_llava.evaluation.generation import greedy_answers

        tokenizer = self.processor.tokenizer
        inputs = dict(tokenizer([self.prompts[task]] * len(features), return_tensors="pt", padding=True))
        inputs["vision_features"] = features.to(self.model.dtype)
        return greedy_answers(self.model, tokenizer, inputs, self.max_new_tokens[task])

    def __call__(self, pixel_values: torch.Tensor) -> list[dict]:
        """One dict per image: "labels", "classification_text" (with classification) and "caption" (with
        captioning). Captioning alone gives as labels the vocabulary classes that the caption mentions."""
        from spectral_llava.evaluation import mentioned_classes, rank_labels
        from spectral_llava.spectral_inst.labels import parse_labels

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
