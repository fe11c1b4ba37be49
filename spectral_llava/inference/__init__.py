"""Using a saved Spectral-LLaVA model: what evaluation, scene mapping, the web app and the CLI's `caption` /
`classify` share, and the only part of serving code that training uses (the frozen-tower feature cache).

- `loading`: a model dir loaded for use (`load_for_inference`, over the one loader `load_model_and_processor`);
  `runtime`: precision detection (`native_bf16`) and `single_thread`;
- `generation`: batched greedy answers with per-token log-probabilities (`greedy_answers`, `generate_answers`),
  labels from `[classification]` answers ranked by those log-probabilities (`classify_images`, `rank_labels`);
- `labels`: the label vocabularies and the one classification answer format (`format_labels` / `parse_labels`);
  `mentions`: the classes a free-text answer mentions (`mentioned_classes`);
- `feature_cache`: the frozen-tower feature cache (`FeatureCache`, `open_tower_cache`, `image_id`);
- `prompts`: `expand_image_tokens` for texts tokenised without images; `footprint`: `refuse_squashed_inputs`;
- `options`: the generation and footprint options of `caption` / `classify`.

The names below are imported on first use, so that `inference.options` and `inference.labels` (what the command line
and the dataset builder need) do not load torch.
"""

import importlib

_EXPORTS = {
    # .feature_cache
    "FeatureCache": "feature_cache", "encode_in_batches": "feature_cache", "feature_fingerprint": "feature_cache",
    "image_id": "feature_cache", "image_ids": "feature_cache", "open_tower_cache": "feature_cache",
    "tower_encoder": "feature_cache",
    # .footprint
    "refuse_squashed_inputs": "footprint",
    # .generation
    "classify_images": "generation", "generate_answers": "generation", "greedy_answers": "generation",
    "rank_labels": "generation",
    # .labels
    "BEN19_LABELS": "labels", "BEN43_DROPPED": "labels", "BEN43_TO_19": "labels", "EUROSAT_CLASSES": "labels",
    "EUROSAT_PHRASES": "labels", "LABEL_PREFIX": "labels", "LABEL_SEPARATOR": "labels", "format_labels": "labels",
    "parse_labels": "labels",
    # .loading
    "load_for_inference": "loading", "load_model_and_processor": "loading",
    # .mentions
    "CLASS_PHRASES": "mentions", "mentioned_classes": "mentions",
    # .options
    "CaptionOptions": "options", "FootprintOptions": "options", "GenerationOptions": "options",
    # .prompts
    "expand_image_tokens": "prompts",
    # .runtime
    "native_bf16": "runtime", "single_thread": "runtime",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
