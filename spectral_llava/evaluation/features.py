"""Tower features for evaluation, from ONE tower pass per image: the tower output mean-pooled (vision-only) and the
visual tokens the projector consumes, cached on disk in an `inference.feature_cache.FeatureCache`.

`cache_dir` keeps pooled rows (a few KB per image) keyed by a fingerprint of the tower weights, the visual-token
layout and the image processor, so probing several projectors of one tower (stage 1 vs stage 2, class-label vs
scene-description alignment) costs one tower pass; `tower_cache` instead reads and extends a training feature
cache (raw tower output, `--cache-features` of align/finetune), which generation can use too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spectral_llava.inference.feature_cache import (FeatureCache, encode_in_batches, feature_fingerprint, image_ids,
                                                    open_tower_cache, tower_encoder)
from spectral_llava.processing.radiometry_settings import RadiometrySettings

logger = logging.getLogger(__name__)


def projector_is_linear(model) -> bool:
    return model.config.projector_type == "linear"


def pooled_encoder(model, image_processor, raw_cache: FeatureCache | None = None,
                   radiometry: RadiometrySettings | None = None):
    """An encoder of images into pooled rows: [tower output mean-pooled (D) | projector input tokens (K * D')];
    the raw tower output comes from `raw_cache` when given, else from images read with `radiometry`."""
    tower = tower_encoder(model, image_processor, radiometry)
    token_mean = projector_is_linear(model)

    def encode(ids: Sequence[str], paths: Sequence[str]) -> torch.Tensor:
        raw = raw_cache.get(ids) if raw_cache is not None else tower(ids, paths)
        with torch.inference_mode():
            tokens = model.arrange_visual_tokens(raw.to(model.device, model.dtype))
            if token_mean:
                tokens = tokens.mean(dim=1, keepdim=True)
        return torch.cat([raw.float().mean(1).cpu(), tokens.float().flatten(1).cpu()], dim=1)

    return encode


def tower_features(model, image_processor, paths: Sequence[str], cache_dir=None, tower_cache=None,
                   batch_size: int = 8, desc: str = "tower features", radiometry: RadiometrySettings | None = None):
    """(vision (N, D), tokens (N, K, D')) for `paths`, from one tower pass per image.

    `vision` is the tower output mean-pooled over its T*h*w tokens; `tokens` are the visual tokens the
    projector consumes (arranged by the model's layout and spatial pool). With a linear projector K = 1 holds
    the token mean (exact, since a mean and a linear map commute), otherwise K = N_vis.

    `cache_dir` keeps these pooled rows in the feature cache ``cache_dir/pooled-<fingerprint>`` (a few KB per
    image; the fingerprint covers the tower weights, layout and image processor), so later runs on the same tower
    skip the tower. `tower_cache` is a training feature cache (`--cache-features` of align/finetune; raw tower
    output keyed by patch id) to read from and extend instead of running the tower directly. Images are read with
    the radiometric handling `radiometry` (default the image processor's own), which both fingerprints cover.
    """
    images = image_ids(paths)
    missing, pooled = images, None
    fingerprint = feature_fingerprint(model, image_processor, radiometry) if cache_dir or tower_cache else None
    if cache_dir is not None:
        config = model.config
        settings = json.dumps([fingerprint, config.visual_token_layout, config.spatial_pool,
                               projector_is_linear(model)])
        settings = hashlib.sha256(settings.encode()).hexdigest()
        pooled = FeatureCache(Path(cache_dir) / f"pooled-{settings[:16]}", settings)
        missing = {key: path for key, path in images.items() if key not in pooled.cached_ids()}
        logger.info("tower features: %d of %d images cached in %s", len(images) - len(missing), len(images),
                    pooled.root)
    raw_cache = open_tower_cache(tower_cache, model, image_processor, list(missing.values()), batch_size,
                                 fingerprint, radiometry)
    encode = pooled_encoder(model, image_processor, raw_cache, radiometry)
    if pooled is not None:
        rows = pooled.build(images, encode, batch_size=batch_size, desc=desc).get(list(images))
    else:
        rows = torch.cat([batch for _, batch in encode_in_batches(images, encode, batch_size, desc)])
    width = model.vision_tower.config.hidden_size
    tokens = 1 if projector_is_linear(model) else model.num_image_tokens
    return rows[:, :width].numpy(), rows[:, width:].reshape(len(rows), tokens, -1).numpy()


def probe_features(model, image_processor, paths: Sequence[str], cache_dir=None, tower_cache=None,
                   batch_size: int = 8, radiometry: RadiometrySettings | None = None) -> dict:
    """{"vision": (N, D), "grounded": (N, d_llm)} float32 arrays, both from the same tower pass (images read with
    `radiometry`)."""
    vision, tokens = tower_features(model, image_processor, paths, cache_dir, tower_cache, batch_size,
                                    radiometry=radiometry)
    projector = model.multi_modal_projector
    with torch.inference_mode():
        weight = projector.linear_1.weight
        grounded = projector(torch.from_numpy(tokens).to(weight.device, weight.dtype)).mean(dim=1)
    return {"vision": vision.astype(np.float32), "grounded": grounded.float().cpu().numpy()}
