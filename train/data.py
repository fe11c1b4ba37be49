"""Training data: Spectral-Inst records -> model batches, and the frozen-encoder feature cache.

- `load_split(dataset_dir, subset, split)` reads one split of a `spectral-llava build-dataset` output and the image
  roots that resolve its `image` paths.
- `encode_conversation(processor, conversations)` renders a LLaVA conversation with the processor's chat template,
  expands `<image>` to the model's visual tokens and masks everything but the answer tokens with -100.
- `SpectralLlavaCollator` pads a list of records into `input_ids`, `attention_mask`, `labels` and either
  `pixel_values` (images read and normalised by the processor) or `vision_features` (read from a `FeatureCache`).
- `FeatureCache` runs the frozen tower once per image and stores its output (T*h*w, D) in safetensors shards keyed
  by the patch id; a fingerprint of the tower weights, tower config, image-processor config and radiometric handling
  (rules version, input offset and scale) invalidates it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from processing.radiometry import radiometry_settings
from train.spectral_inst import atomic_write_json, resolve_image_path

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def load_split(dataset_dir, subset: str, split: str = "train"):
    """(datasets.Dataset, image_roots) of `DATASET_DIR/<subset>[split]` from a build-dataset output."""
    from datasets import load_from_disk

    dataset_dir = Path(dataset_dir)
    info_path = dataset_dir / "build_info.json"
    subset_path = dataset_dir / subset
    for path in (info_path, subset_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: --dataset must be a `spectral-llava build-dataset` output")
    splits = load_from_disk(str(subset_path))
    if split not in splits:
        raise ValueError(f"{subset_path} has no split {split!r}; it has {sorted(splits)}")
    with open(info_path) as f:
        image_roots = json.load(f)["image_roots"]
    return splits[split], image_roots


def processor_for_dataset(processor, dataset_dir):
    """`processor`, or a copy whose image processor reads images with the explicit radiometric handling
    (`input_offset`, `input_scale`, `strict`) that `build_info.json` records for the dataset's build, so training
    sees the pixels the captions were computed from. The original (exported with the model) is left untouched."""
    with open(Path(dataset_dir) / "build_info.json") as f:
        recorded = json.load(f).get("radiometry") or {}
    settings = {key: recorded.get(key) for key in ("input_offset", "input_scale") if recorded.get(key) is not None}
    if not settings:
        return processor
    image_processor = copy.deepcopy(processor.image_processor)
    for key, value in {**settings, "strict": bool(recorded.get("strict"))}.items():
        setattr(image_processor, key, value)
    configured = copy.copy(processor)
    configured.image_processor = image_processor
    logger.info("images of %s are read with its build's radiometry %s", dataset_dir, settings)
    return configured


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
    """Token ids of `text` with every `<image>` expanded to the processor's number of visual tokens."""
    expanded = text.replace(processor.image_token, processor.image_token * processor.num_image_tokens)
    return processor.tokenizer(expanded, add_special_tokens=False)["input_ids"]


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
    it instead of `pixel_values`.
    """

    def __init__(self, processor, image_roots: dict[str, str], feature_cache: FeatureCache | None = None):
        self.processor = processor
        self.image_roots = image_roots
        self.feature_cache = feature_cache
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
            batch["pixel_values"] = self.processor.image_processor(paths, return_tensors="pt")["pixel_values"]
        return batch


def feature_fingerprint(model, image_processor) -> str:
    """sha256 over the tower weights, tower config, feature layer, image-processor config and radiometric handling
    (`radiometry_settings`: the rules version and the processor's input offset and scale; `strict` changes no
    value and is left out)."""
    digest = hashlib.sha256()
    tower = model.model.vision_tower
    digest.update(tower.config.to_json_string(use_diff=False).encode())
    digest.update(f"vision_feature_layer={model.config.vision_feature_layer}".encode())
    processing = json.loads(image_processor.to_json_string())
    for key in ("processor_class", "strict"):
        processing.pop(key, None)
    processing["radiometry"] = radiometry_settings(getattr(image_processor, "input_offset", None),
                                                   getattr(image_processor, "input_scale", None))
    digest.update(json.dumps(processing, sort_keys=True).encode())
    for name, tensor in sorted(tower.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Tower outputs (T*h*w, D) per image in `ROOT/shard-NNNNN.safetensors`, indexed by `ROOT/index.json`.

    `ROOT/fingerprint.json` records what produced them; `build` discards every shard when it differs.
    """

    def __init__(self, root, fingerprint: str):
        self.root = Path(root)
        self.fingerprint = fingerprint
        self._index: dict[str, str] = {}
        self._handles: dict[str, object] = {}

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def _stored_fingerprint(self) -> str | None:
        path = self.root / "fingerprint.json"
        if not path.is_file():
            return None
        with open(path) as f:
            return json.load(f).get("fingerprint")

    def _load_index(self) -> dict[str, str]:
        if self._stored_fingerprint() != self.fingerprint or not self.index_path.is_file():
            return {}
        with open(self.index_path) as f:
            return json.load(f)

    def build(self, model, image_processor, images: dict[str, str], batch_size: int = 8, shard_size: int = 256):
        """Encode the images (patch id -> path) missing from the cache, `shard_size` per shard; resumable."""
        self.root.mkdir(parents=True, exist_ok=True)
        stored = self._stored_fingerprint()
        if stored != self.fingerprint:
            if stored is not None:
                logger.warning("feature cache %s was made by another tower or image processor: rebuilding", self.root)
            for path in self.root.glob("shard-*.safetensors"):
                path.unlink()
            self.index_path.unlink(missing_ok=True)
            atomic_write_json(self.root / "fingerprint.json", {"fingerprint": self.fingerprint})
        index = self._load_index()
        missing = [patch_id for patch_id in images if patch_id not in index]
        if missing:
            logger.info("feature cache %s: encoding %d of %d images", self.root, len(missing), len(images))
        backbone = model.model
        device = next(backbone.vision_tower.parameters()).device
        was_training = backbone.vision_tower.training
        backbone.vision_tower.eval()
        first_shard = len({name for name in index.values()})
        progress = tqdm(total=len(missing), desc="caching tower features", unit="img")
        for number, start in enumerate(range(0, len(missing), shard_size), start=first_shard):
            ids = missing[start: start + shard_size]
            tensors = {}
            for offset in range(0, len(ids), batch_size):
                chunk = ids[offset: offset + batch_size]
                pixels = image_processor([images[i] for i in chunk], return_tensors="pt")["pixel_values"]
                with torch.no_grad():
                    features = backbone.select_vision_features(pixels.to(device)).float().cpu()
                tensors.update({patch_id: features[row].contiguous() for row, patch_id in enumerate(chunk)})
                progress.update(len(chunk))
            name = f"shard-{number:05d}.safetensors"
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            save_file(tensors, tmp, metadata={"fingerprint": self.fingerprint})
            os.replace(tmp, self.root / name)
            index.update({patch_id: name for patch_id in ids})
            atomic_write_json(self.index_path, index)
        progress.close()
        backbone.vision_tower.train(was_training)
        self._index = index
        self._handles.clear()
        return self

    def open(self):
        """Read-only use of a cache that `build` completed (other processes than the builder)."""
        self._index = self._load_index()
        if not self._index:
            raise FileNotFoundError(f"feature cache {self.root} is empty or was made by another tower")
        return self

    def get(self, patch_ids: list[str]) -> torch.Tensor:
        """Stacked features (B, T*h*w, D) of these images."""
        rows = []
        for patch_id in patch_ids:
            shard = self._index.get(patch_id)
            if shard is None:
                raise KeyError(f"image {patch_id!r} is not in the feature cache {self.root}")
            if shard not in self._handles:
                self._handles[shard] = safe_open(str(self.root / shard), framework="pt")
            rows.append(self._handles[shard].get_tensor(patch_id))
        return torch.stack(rows)

    def __len__(self) -> int:
        return len(self._index)
