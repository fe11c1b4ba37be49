"""The one on-disk feature cache: per-image tensors computed once from the frozen tower and read back by id.

Training stores the raw tower output (T*h*w, D) per patch (`--cache-features`; `tower_encoder`) and feeds it as
`vision_features`; generation reads and extends such a cache (`open_tower_cache`); evaluation stores pooled rows
derived from the tower (`evaluation.features`) in the same kind of cache. Images are keyed by `image_id`. A cache
lives in `ROOT/shard-NNNNN.safetensors` indexed by `ROOT/index.json`; `ROOT/fingerprint.json` records what produced
it (tower weights and config, feature layer, image-processor config, radiometric handling and whatever the encoder
adds) and `build` discards every shard when it differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.utils.fileio import atomic_write_json, write_file_atomically

logger = logging.getLogger(__name__)

# encode(ids, paths) -> (B, ...) float32 CPU tensor, one row per image
Encoder = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def feature_fingerprint(model, image_processor, radiometry: RadiometrySettings | None = None,
                        band_names=None) -> str:
    """sha256 over the tower weights, tower config, feature layer, image-processor config, the radiometric
    handling the images are read with (`radiometry`, default the processor's own; its `cache_key`: the rules version
    and the input offset and scale, `strict` changes no value) and the band names given to unnamed multi-band
    files (`band_names`, when given)."""
    digest = hashlib.sha256()
    tower = model.vision_tower
    digest.update(tower.config.to_json_string(use_diff=False).encode())
    digest.update(f"vision_feature_layer={model.config.vision_feature_layer}".encode())
    processing = json.loads(image_processor.to_json_string())
    for key in ("processor_class", "input_offset", "input_scale", "strict"):  # the call's settings stand for them
        processing.pop(key, None)
    processing["radiometry"] = image_processor.radiometry_settings(radiometry).cache_key()
    if band_names:
        processing["band_names"] = list(band_names)
    digest.update(json.dumps(processing, sort_keys=True).encode())
    for name, tensor in sorted(tower.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tower_encoder(model, image_processor, radiometry: RadiometrySettings | None = None, band_names=None) -> Encoder:
    """An encoder of image paths, read with the radiometric handling `radiometry` (default the processor's own) and
    `band_names` (unnamed multi-band files), into the tower's output at `vision_feature_layer` (tower in eval
    mode)."""
    tower = model.vision_tower

    def encode(ids: Sequence[str], paths: Sequence[str]) -> torch.Tensor:
        pixels = image_processor(list(paths), return_tensors="pt", radiometry=radiometry,
                                 band_names=band_names)["pixel_values"]
        parameter = next(tower.parameters())
        was_training = tower.training
        tower.eval()
        try:
            with torch.no_grad():
                return model.select_vision_features(pixels.to(parameter.device, parameter.dtype)).float().cpu()
        finally:
            tower.train(was_training)

    return encode


def encode_in_batches(images: dict[str, str], encode: Encoder, batch_size: int = 8, desc: str = "tower features"):
    """Yield (ids, rows) batch by batch for `images` (id -> path), with a progress bar."""
    ids = list(images)
    with tqdm(total=len(ids), desc=desc, unit="img", disable=not ids) as progress:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            yield chunk, encode(chunk, [images[i] for i in chunk])
            progress.update(len(chunk))


class FeatureCache:
    """Per-image tensors in `ROOT/shard-NNNNN.safetensors`, indexed by `ROOT/index.json`, keyed by image id."""

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
        return json.loads(path.read_text()).get("fingerprint")

    def _load_index(self) -> dict[str, str]:
        if self._stored_fingerprint() != self.fingerprint or not self.index_path.is_file():
            return {}
        return json.loads(self.index_path.read_text())

    def _reset_if_stale(self) -> None:
        stored = self._stored_fingerprint()
        if stored == self.fingerprint:
            return
        if stored is not None:
            logger.warning("feature cache %s was made by another tower or image processor: rebuilding", self.root)
        for path in self.root.glob("shard-*.safetensors"):
            path.unlink()
        self.index_path.unlink(missing_ok=True)
        atomic_write_json(self.root / "fingerprint.json", {"fingerprint": self.fingerprint})

    def cached_ids(self) -> set[str]:
        """The ids already in the cache (none when it was made by something else)."""
        return set(self._load_index())

    def build(self, images: dict[str, str], encode: Encoder, batch_size: int = 8, shard_size: int = 256,
              desc: str = "caching tower features") -> "FeatureCache":
        """Encode the images (id -> path) missing from the cache, `shard_size` per shard; resumable between shards."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._reset_if_stale()
        index = self._load_index()
        missing = {image_id: path for image_id, path in images.items() if image_id not in index}
        if missing:
            logger.info("feature cache %s: encoding %d of %d images", self.root, len(missing), len(images))
        ids = list(missing)
        with tqdm(total=len(ids), desc=desc, unit="img", disable=not ids) as progress:
            for number, start in enumerate(range(0, len(ids), shard_size), start=len(set(index.values()))):
                tensors = {}
                for offset in range(start, min(start + shard_size, len(ids)), batch_size):
                    chunk = ids[offset:min(offset + batch_size, start + shard_size)]
                    rows = encode(chunk, [images[i] for i in chunk])
                    tensors.update({image_id: row.contiguous() for image_id, row in zip(chunk, rows)})
                    progress.update(len(chunk))
                name = f"shard-{number:05d}.safetensors"
                write_file_atomically(self.root / name,
                                      lambda tmp: save_file(tensors, tmp, metadata={"fingerprint": self.fingerprint}))
                index.update({image_id: name for image_id in tensors})
                atomic_write_json(self.index_path, index)
        self._index = index
        self._handles.clear()
        return self

    def open(self) -> "FeatureCache":
        """Read-only use of a cache that `build` completed (other processes than the builder)."""
        self._index = self._load_index()
        if not self._index:
            raise FileNotFoundError(f"feature cache {self.root} is empty or was made by another tower")
        return self

    def get(self, image_ids: Sequence[str]) -> torch.Tensor:
        """Stacked rows (B, ...) of these images."""
        rows = []
        for image_id in image_ids:
            shard = self._index.get(image_id)
            if shard is None:
                raise KeyError(f"image {image_id!r} is not in the feature cache {self.root}")
            if shard not in self._handles:
                self._handles[shard] = safe_open(str(self.root / shard), framework="pt")
            rows.append(self._handles[shard].get_tensor(image_id))
        return torch.stack(rows)

    def __len__(self) -> int:
        return len(self._index)


def image_id(path: str) -> str:
    """The key of an image in a feature cache: the Spectral-Inst patch id, i.e. the file stem of a EuroSAT GeoTIFF
    and the folder name of a BigEarthNet patch folder."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def image_ids(paths: Sequence[str]) -> dict[str, str]:
    """{image id: absolute path} of `paths`; two different images with one id are refused."""
    images = {}
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"image not found: {path}")
        key = image_id(path)
        if images.setdefault(key, os.path.abspath(path)) != os.path.abspath(path):
            raise ValueError(f"two images share the id {key!r}: {images[key]} and {path}")
    return images


def open_tower_cache(tower_cache, model, image_processor, paths: Sequence[str], batch_size: int = 8,
                     fingerprint: str | None = None, radiometry: RadiometrySettings | None = None,
                     band_names=None) -> FeatureCache | None:
    """The training feature cache at `tower_cache` holding the raw tower output of every path read with the
    radiometric handling `radiometry` and `band_names` (encoding only the images it lacks), or None when
    `tower_cache` is None or there are no paths."""
    if tower_cache is None or not paths:
        return None
    cache = FeatureCache(tower_cache, fingerprint or feature_fingerprint(model, image_processor, radiometry,
                                                                         band_names))
    return cache.build(image_ids(paths), tower_encoder(model, image_processor, radiometry, band_names),
                       batch_size=batch_size)
