"""Training data: Spectral-Inst records -> model batches.

Records are read with `spectral_inst.load_split` (one split of a `spectral-llava build-dataset` output and the image
roots that resolve its `image` paths).
- `encode_conversation(processor, conversations)` renders a LLaVA conversation with the processor's chat template,
  expands `<image>` to the model's visual tokens and masks everything but the answer tokens with -100.
- `SpectralLlavaCollator` pads a list of records into `input_ids`, `attention_mask`, `labels` and either
  `pixel_values` (images read and normalised by the processor) or `vision_features` (read from a
  `inference.feature_cache.FeatureCache`).
- `dataset_radiometry(dataset_dir)`: the radiometric handling the dataset's build recorded, which training reads
  the images with.
"""

from __future__ import annotations

import logging

import torch

from spectral_llava.inference.feature_cache import FeatureCache
from spectral_llava.inference.prompts import expand_image_tokens
from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.spectral_inst.dataset import load_build_info, resolve_image_path

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def dataset_radiometry(dataset_dir) -> RadiometrySettings | None:
    """The radiometric handling (`input_offset`, `input_scale`, `strict`) that `build_info.json` records for the
    dataset's build, so that training sees the pixels the captions were computed from; None for a build that
    recorded none (the image processor's own settings then apply)."""
    recorded = load_build_info(dataset_dir).get("radiometry")
    if recorded is None:
        return None
    settings = RadiometrySettings(recorded.get("input_offset"), recorded.get("input_scale"),
                                  bool(recorded.get("strict")))
    logger.info("images of %s are read with its build's radiometry %s", dataset_dir, settings)
    return settings


def chat_messages(conversations) -> list[dict]:
    """LLaVA turns ({"from": "human"|"gpt", "value"}) -> chat messages with typed content.

    An `<image>` in a user turn becomes an image content item in its place.
    """
    messages = []
    for turn in conversations:
        role = ROLES.get(turn["from"])
        if role is None:
            raise ValueError(f"conversation turn from {turn['from']!r}; expected one of {sorted(ROLES)}")
        content = []
        for index, piece in enumerate(turn["value"].split("<image>")):
            if index:
                content.append({"type": "image"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        messages.append({"role": role, "content": content})
    return messages


def prompt_messages(conversations) -> list[dict]:
    """The chat messages of a conversation up to (without) its first answer: what the model sees at inference."""
    messages = chat_messages(conversations)
    first_answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return messages[:first_answer]


def _token_ids(processor, text: str) -> list[int]:
    return processor.tokenizer(expand_image_tokens(processor, text), add_special_tokens=False)["input_ids"]


def encode_conversation(processor, conversations) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a whole conversation; labels are -100 except on the assistant answers.

    Each answer's tokens are the chat template's rendering of that turn (answer text and end-of-turn token), found
    as the difference between the conversation rendered up to the answer and up to the question with a
    generation prompt.
    """
    messages = chat_messages(conversations)
    input_ids, labels, rendered = [], [], ""
    for end, message in enumerate(messages, start=1):
        if message["role"] != "assistant":
            continue
        prompt = processor.apply_chat_template(messages[: end - 1], add_generation_prompt=True, tokenize=False)
        full = processor.apply_chat_template(messages[:end], tokenize=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise ValueError("the chat template does not render conversations incrementally; cannot mask prompts")
        context = _token_ids(processor, prompt[len(rendered):])
        answer = _token_ids(processor, full[len(prompt):])
        input_ids += context + answer
        labels += [IGNORE_INDEX] * len(context) + answer
        rendered = full
    if not any(label != IGNORE_INDEX for label in labels):
        raise ValueError(f"conversation has no assistant answer to learn: {conversations}")
    return input_ids, labels


class SpectralLlavaCollator:
    """Records (dicts with `conversations`, `image`, `patch_id`) -> a padded training batch.

    Right padding with `pad_token_id` (labels -100, attention 0). With a `FeatureCache`, `vision_features` come from
    it instead of `pixel_values`; images are read with the radiometric handling `radiometry` (default the image
    processor's own) and the dataset's `band_names` (`spectral_inst.dataset_band_names`).
    """

    def __init__(self, processor, image_roots: dict[str, str], feature_cache: FeatureCache | None = None,
                 radiometry: RadiometrySettings | None = None, band_names=None):
        self.processor = processor
        self.image_roots = image_roots
        self.feature_cache = feature_cache
        self.radiometry = radiometry
        self.band_names = band_names
        self.pad_token_id = processor.tokenizer.pad_token_id

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        encoded = [encode_conversation(self.processor, record["conversations"]) for record in records]
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(records), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(records), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(records), length), dtype=torch.long)
        for row, (ids, targets) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.tensor(targets)
            attention_mask[row, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.feature_cache is not None:
            batch["vision_features"] = self.feature_cache.get([record["patch_id"] for record in records])
        else:
            paths = [resolve_image_path(record["image"], self.image_roots) for record in records]
            batch["pixel_values"] = self.processor.image_processor(paths, return_tensors="pt", radiometry=self.radiometry,
                                                                   band_names=self.band_names)["pixel_values"]
        return batch
