"""Evaluation of Spectral-LLaVA checkpoints (paper section V).

- `probe`: linear probe (Fig. 4) of vision-only vs language-grounded EuroSAT features; `tsne`: Fig. 3.
- `features`: both feature kinds from ONE tower pass per image, cached (`inference.FeatureCache`).
- `classification`: `[classification]` answers (`inference.classify_images`, read back with
  `inference.parse_labels`); EuroSAT accuracy + confusion matrix, BigEarthNet-19 micro/macro F1.
- `consistency`, `judge`, `quality`: caption label consistency and a LLaVA-Bench-style judged score.
- `encoder` (+ `encoder_data`, `encoder_probe`, `geobench`, `scores`): the frozen-encoder benchmark (GEO-Bench-style
  linear probe: accuracy, micro/macro mAP); `caption_metrics` (`score_captions`): BLEU / METEOR / ROUGE-L / CIDEr-D
  (COCO definitions).
- `plots`: the figures; `model_card`: the evaluation table and the rendered card; `options`: every option.
Models load through `modeling_spectral_llava.tools.loading.load_model_and_processor`; generation, the feature cache
and the label format are the inference room's (`spectral_llava.inference`). The names below are imported on
first use, so that `evaluation.options` (what the command line parses) does not load torch.
"""

import importlib

_EXPORTS = {
    # .caption_metrics
    "caption_metrics_summary": "caption_metrics", "score_captions": "caption_metrics",
    # .classification
    "eurosat_metrics": "classification", "multilabel_f1": "classification", "run_classify_eval": "classification",
    # .consistency
    "label_consistency": "consistency", "vocabulary_of": "consistency",
    # .data
    "eurosat_features": "data", "eurosat_samples": "data",
    # .encoder
    "FrozenEncoder": "encoder", "run_encoder_eval": "encoder",
    # .features
    "probe_features": "features", "tower_features": "features",
    # .judge
    "judge_pairs": "judge", "judge_prompt": "judge", "judge_summary": "judge", "load_judge": "judge",
    "parse_judge_scores": "judge", "patch_facts": "judge", "relative_score": "judge",
    # .model_card
    "collect_results": "model_card", "evaluation_table": "model_card", "render_card": "model_card",
    # .options
    "ClassifyOptions": "options", "EncoderOptions": "options", "FeatureOptions": "options", "ProbeOptions": "options",
    "QualityOptions": "options", "TRAIN_RATIOS": "options", "TsneOptions": "options", "split_options": "options",
    # .plots
    "FEATURE_TITLES": "plots", "plot_confusion": "plots", "plot_linear_probe": "plots", "plot_tsne": "plots",
    # .probe
    "fold_splits": "probe", "linear_probe": "probe", "run_linear_probe": "probe", "train_linear_probes": "probe",
    # .quality
    "run_quality": "quality",
    # .scores
    "average_precision": "scores", "top1_accuracy": "scores",
    # .tsne
    "run_tsne": "tsne", "tsne_embeddings": "tsne",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
