"""`spectral-llava evaluate encoder`: the frozen-encoder benchmark (GEO-Bench-style linear probing) of a model's
SpectralGPT tower, or of a converted tower dir (`spectral-llava convert-spectralgpt`).

Each image passes the frozen tower once (its output at the model's `vision_feature_layer`; a tower dir: the final
normalised output), pooled by `pooling` ("mean": the mean of the T*h*w output tokens, evaluation's "vision"
feature; "visual_tokens": the mean of the visual tokens the projector consumes), cached per image; the probe
protocol is `encoder_probe`. Writes OUTPUT/encoder_benchmark.json and OUTPUT/encoder_benchmark.md; the protocol and
its differences from GEO-Bench's are in docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from spectral_llava.processing.radiometry_settings import RadiometrySettings

from spectral_llava.utils.fileio import atomic_write_json, atomic_write_text

from . import encoder_data, geobench
from .encoder_probe import fit_and_test
from .options import EncoderOptions
from .scores import probe_headline

logger = logging.getLogger(__name__)

RESULT_JSON, RESULT_MD = "encoder_benchmark.json", "encoder_benchmark.md"
GEOBENCH_DIFFERENCES = [
    "GEO-Bench resizes inputs and normalises with each dataset's band statistics; here every image goes through the "
    "model's own image processor (SpectralGPT's BigEarthNet statistics, bicubic resize to the tower's size).",
    "Features are computed once per image (frozen tower, no augmentation) and standardised with the train split's "
    "mean and std; the probe is a single linear layer trained on them.",
    "Hyper-parameters: a small grid of AdamW learning rates x weight decays at a fixed number of epochs, selected on "
    "the validation split's accuracy (single-label) or micro mAP (multi-label).",
    "The selected setting is retrained with several seeds on the train split; the test metric is their mean and "
    "std, not a bootstrapped confidence interval.",
    "Bands are matched by name: the 12 SpectralGPT bands (no B10).",
]


class FrozenEncoder:
    """The tower of a Spectral-LLaVA model dir or of a converted SpectralGPT tower dir, with its image processor."""

    def __init__(self, model_dir, device: str = "auto", radiometry: RadiometrySettings | None = None):
        from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import (SpectralGPTConfig,
                                                                                        SpectralLlavaConfig)
        from spectral_llava.modeling_spectral_llava.tools.loading import check_model_dir, default_device

        self.model_dir = check_model_dir(model_dir)
        self.radiometry = radiometry  # how images are read (None: the image processor's own handling)
        model_type = json.loads(Path(model_dir, "config.json").read_text()).get("model_type")
        self.model = None
        if model_type == SpectralLlavaConfig.model_type:
            from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

            self.model, processor = load_model_and_processor(model_dir, device=device)
            self.tower, self.image_processor = self.model.vision_tower, processor.image_processor
            self.feature_layer, self.kind = self.model.config.vision_feature_layer, "spectral-llava model"
        elif model_type == SpectralGPTConfig.model_type:
            from spectral_llava.modeling_spectral_llava.modeling_spectralgpt import SpectralGPTVisionModel
            from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor

            self.tower = SpectralGPTVisionModel.from_pretrained(model_dir).eval()
            self.tower.to(default_device() if device == "auto" else device)
            config = self.tower.config
            self.image_processor = SpectralImageProcessor(image_size=config.image_size, patch_size=config.patch_size,
                                                          band_names=config.band_names)
            self.feature_layer, self.kind = -1, "converted SpectralGPT tower"
        else:
            raise ValueError(f"--model {model_dir}: config.json has model_type {model_type!r}; expected a "
                             f"Spectral-LLaVA model dir ({SpectralLlavaConfig.model_type!r}) or a converted tower dir "
                             f"({SpectralGPTConfig.model_type!r}, from `spectral-llava convert-spectralgpt`)")

    def fingerprint(self) -> str:
        from spectral_llava.inference.feature_cache import feature_fingerprint

        config = SimpleNamespace(vision_feature_layer=self.feature_layer)
        owner = SimpleNamespace(vision_tower=self.tower, config=config)  # what feature_fingerprint reads of a model
        return feature_fingerprint(owner, self.image_processor, self.radiometry)

    def pooled(self, pixel_values: torch.Tensor, pooling: str) -> torch.Tensor:
        """(B, D) pooled features of a batch of pixel values."""
        parameter = next(self.tower.parameters())
        pixels = pixel_values.to(parameter.device, parameter.dtype)
        with torch.inference_mode():
            if self.model is not None:
                raw = self.model.select_vision_features(pixels)
            else:
                raw = self.tower(pixel_values=pixels).last_hidden_state
            if pooling == "visual_tokens":
                raw = self.model.arrange_visual_tokens(raw)
            return raw.float().mean(dim=1).cpu()


def image_encoder(encoder: FrozenEncoder, reader: str, pooling: str):
    """encode(keys, paths) -> (B, D) for the feature cache: image files or GEO-Bench sample files."""
    bands = list(encoder.image_processor.band_names)

    def encode(keys, paths):
        if reader == "file":
            pixels = encoder.image_processor(list(paths), radiometry=encoder.radiometry)["pixel_values"]
        else:
            arrays = [geobench.read_bands(path, bands, reader == "geobench-fixed") for path in paths]
            pixels = encoder.image_processor(arrays, band_names=bands, radiometry=encoder.radiometry)["pixel_values"]
        return encoder.pooled(pixels, pooling)

    return encode


def encoder_features(encoder: FrozenEncoder, probe_set, cache_dir, pooling: str, batch_size: int) -> np.ndarray:
    """(N, D) pooled features of `probe_set`'s items (in order), read from / added to the cache in `cache_dir`."""
    from spectral_llava.inference.feature_cache import FeatureCache

    settings = hashlib.sha256(json.dumps([encoder.fingerprint(), pooling]).encode()).hexdigest()
    cache = FeatureCache(Path(cache_dir) / f"encoder-{settings[:16]}", settings)
    images = {item.key: item.path for item in probe_set.items}
    cache.build(images, image_encoder(encoder, probe_set.reader, pooling), batch_size=batch_size,
                desc=f"tower features ({probe_set.name})")
    return cache.get(list(images)).numpy()


def load_probe_sets(options: EncoderOptions) -> list:
    sets = []
    if options.eurosat:
        sets.append(encoder_data.eurosat_set(options.eurosat, options.split_seed))
    if options.dataset:
        sets += encoder_data.dataset_sets(options.dataset)
    if options.bigearthnet:
        sets.append(encoder_data.bigearthnet_set(options.bigearthnet, options.metadata))
    sets += [encoder_data.geobench_set(root, options.geobench_band_names) for root in options.geobench or []]
    return sets


def probe_one(probe_set, features: np.ndarray, options: EncoderOptions) -> dict:
    """The probe protocol on one set: sizes, selection, test metrics, notes."""
    splits = {}
    for name in encoder_data.SPLITS:
        index = [i for i, item in enumerate(probe_set.items) if item.split == name]
        splits[name] = (features[index], probe_set.targets([probe_set.items[i] for i in index]))
    metrics = fit_and_test(splits, probe_set.class_names, probe_set.multilabel, options.learning_rates,
                           options.weight_decays, options.epochs, options.batch_size, options.seeds, options.seed)
    return {"task": "multi-label" if probe_set.multilabel else "single-label", "source": probe_set.source,
            "class_names": probe_set.class_names, "sizes": {name: len(splits[name][0]) for name in splits},
            **metrics, "notes": probe_set.notes + metrics["notes"], "skipped": probe_set.skipped}


def run_encoder_eval(model_dir, output_dir, encoder: FrozenEncoder | None = None, **options) -> dict:
    """Probe the frozen tower of `model_dir` on every source of `options` (`EncoderOptions` fields); writes
    OUTPUT/encoder_benchmark.json and .md. Each set's test accuracy is under "accuracy", multi-label mAP under
    "micro_map" / "macro_map"."""
    options = EncoderOptions(**options)
    output_dir = Path(output_dir)
    probe_sets = load_probe_sets(options)
    encoder = encoder or FrozenEncoder(model_dir)
    if options.pooling == "visual_tokens" and encoder.model is None:
        raise ValueError(f"--pooling visual_tokens needs a Spectral-LLaVA model dir; {model_dir} is a tower dir")
    cache_dir = options.cache_dir or os.path.join(output_dir, "feature-cache")
    result = {"model": str(model_dir), "encoder": {"kind": encoder.kind, "pooling": options.pooling,
                                                    "vision_feature_layer": encoder.feature_layer,
                                                    "image_size": encoder.image_processor.image_size},
              "protocol": protocol_of(options), "differences_from_geobench": GEOBENCH_DIFFERENCES, "results": {},
              "timing": {}}
    for probe_set in probe_sets:
        start = time.perf_counter()
        features = encoder_features(encoder, probe_set, cache_dir, options.pooling, options.feature_batch_size)
        seconds = time.perf_counter() - start
        result["encoder"]["feature_dim"] = int(features.shape[1])
        start = time.perf_counter()
        result["results"][probe_set.name] = probe_one(probe_set, features, options)
        result["timing"][probe_set.name] = {"images": len(features), "feature_seconds": round(seconds, 3),
                                            "probe_seconds": round(time.perf_counter() - start, 3)}
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / RESULT_JSON, result)
    atomic_write_text(output_dir / RESULT_MD, render_markdown(result))
    logger.info("encoder benchmark: %s and %s (features cached in %s)", output_dir / RESULT_JSON,
                output_dir / RESULT_MD, cache_dir)
    return result


def protocol_of(options: EncoderOptions) -> dict:
    return {"probe": "torch.nn.Linear on train-standardised features", "optimizer": "AdamW",
            "loss": "cross-entropy (single-label) / binary cross-entropy with logits (multi-label)",
            "learning_rates": options.learning_rates, "weight_decays": options.weight_decays,
            "epochs": options.epochs, "batch_size": options.batch_size, "seeds": options.seeds, "seed": options.seed,
            "selection": "validation accuracy (single-label) / validation micro mAP (multi-label)",
            "test_metrics": "top-1 accuracy; micro and macro mAP (scikit-learn average_precision_score; macro over "
                            "the classes with a positive test sample)"}


def render_markdown(result: dict) -> str:
    lines = ["# Frozen-encoder benchmark", "",
             f"Model `{result['model']}` ({result['encoder']['kind']}), features: {result['encoder']['pooling']} "
             f"pooling, width {result['encoder'].get('feature_dim', 'n/a')}. Linear probe on the train split, "
             "AdamW learning rate and weight decay selected on validation, test metric mean +/- std over "
             f"{result['protocol']['seeds']} seeds.", "",
             "| data | task | train / validation / test | selected lr, weight decay | test |", "|---|---|---|---|---|"]
    for name, entry in result["results"].items():
        sizes = " / ".join(str(entry["sizes"][split]) for split in encoder_data.SPLITS)
        selected = f"{entry['selected']['lr']:g}, {entry['selected']['weight_decay']:g}"
        lines.append(f"| {name} | {entry['task']}, {len(entry['class_names'])} classes | {sizes} | {selected} | "
                     f"{probe_headline(entry)} |")
    for name, entry in result["results"].items():
        if entry["task"] == "multi-label":
            lines += ["", f"Per-class AP, {name}:", ""]
            lines += [f"- {label}: {ap:.3f}" for label, ap in entry["per_class_ap"].items()]
        lines += [f"- note ({name}): {note}" for note in entry["notes"]]
        lines += [f"- skipped ({name}): {item['path']}: {item['reason']}" for item in entry["skipped"]]
    lines += ["", "Differences from GEO-Bench's protocol:", ""]
    lines += [f"- {difference}" for difference in result["differences_from_geobench"]]
    return "\n".join(lines) + "\n"
