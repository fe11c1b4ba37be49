"""The model card's evaluation table, from the JSON files `spectral-llava evaluate` writes, and the whole card."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from .caption_metrics import caption_metrics_summary
from .judge import judge_summary
from .plots import FEATURE_TITLES
from .scores import probe_headline


RESULT_FILES = ("linear_probe.json", "classification.json", "quality.json", "encoder_benchmark.json")


def collect_results(folders: Sequence[str | os.PathLike]) -> dict:
    """{"linear_probe": ..., "classification": ..., "quality": ..., "encoder_benchmark": ...} from the JSON files that
    `evaluate` wrote in `folders` (the first folder holding a file wins)."""
    results = {}
    for name in RESULT_FILES:
        for folder in folders:
            path = Path(folder) / name
            if path.is_file():
                results[name.removesuffix(".json")] = json.loads(path.read_text())
                break
    if not results:
        raise FileNotFoundError(f"none of {RESULT_FILES} found in {[str(f) for f in folders]}: run `spectral-llava "
                                "evaluate` first")
    return results


def _cell(value, percent=True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def evaluation_table(results: dict) -> str:
    """The model card's evaluation section: one markdown table row per reported number."""
    rows = []
    probe = results.get("linear_probe")
    if probe:
        kinds = list(probe["results"])
        name = "linear probe accuracy, " + " / ".join(FEATURE_TITLES.get(kind, kind).split(" (")[0] for kind in kinds)
        setting = f"EuroSAT, {probe['num_samples']} images, {probe['protocol']['folds']} folds"
        for ratio in sorted({r for by_ratio in probe["results"].values() for r in by_ratio}, key=float):
            cells = [f"{100 * probe['results'][k][ratio]['mean']:.1f} +/- {100 * probe['results'][k][ratio]['std']:.1f}%"
                     if ratio in probe["results"][k] else "n/a" for k in kinds]
            rows.append((name, f"{setting}, {float(ratio):.0%} train", " / ".join(cells)))
    classification = results.get("classification")
    if classification:
        euro = classification.get("eurosat_classification")
        if euro:
            rows.append(("classification from generated text", f"EuroSAT, {euro['num_images']} images",
                         f"accuracy {_cell(euro['accuracy'])}"))
        ben = classification.get("bigearthnet19")
        if ben:
            rows.append(("classification from generated text", f"BigEarthNet-19, {ben['num_images']} patches",
                         f"micro F1 {_cell(ben['micro_f1'], False)}, macro F1 {_cell(ben['macro_f1'], False)}"))
    quality = results.get("quality")
    if quality:
        model = quality["label_consistency"]["model"]
        setting = f"Spectral-Inst {quality['split']}, {quality['num_images']} patches"
        rows.append(("caption label consistency", setting,
                     f"true classes mentioned {_cell(model['recall'])}, absent classes claimed "
                     f"{_cell(model['false_claims'])}"))
        metrics = quality.get("caption_metrics")
        if metrics:
            rows.append(("caption metrics vs reference captions (COCO definitions)", setting,
                         caption_metrics_summary(metrics)))
        judge = quality.get("judge")
        if judge:
            rows.append((f"judged caption score ({judge['judge']})", setting, judge_summary(judge)))
    encoder = results.get("encoder_benchmark")
    if encoder:
        for name, entry in encoder["results"].items():
            sizes = entry["sizes"]
            rows.append((f"frozen-encoder linear probe ({encoder['encoder']['pooling']} pooling)",
                         f"{name}, {sizes['train']} / {sizes['validation']} / {sizes['test']} train / validation / "
                         "test", probe_headline(entry)))
    lines = ["| evaluation | data | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


RANDOM_TOWER_CAVEAT = ("The SpectralGPT tower of this checkpoint is random (untrained): these numbers show that the "
                       "system runs end to end, not the method's quality.")


def render_card(model_dir, result_dirs: Sequence, vision_source: str | None = None, llm_source: str | None = None,
                note: str | None = None) -> str:
    """The Hub model card of `model_dir` (its config and stored `provenance.json`) with the evaluation table of
    `result_dirs` (see `evaluation_table`); `vision_source` / `llm_source` override what the provenance names."""
    from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import SpectralLlavaConfig
    from spectral_llava.modeling_spectral_llava.tools.loading import check_model_dir
    from spectral_llava.modeling_spectral_llava.tools.model_card import RANDOM_TOWER, read_provenance, render_model_card

    config = SpectralLlavaConfig.from_pretrained(check_model_dir(model_dir))
    provenance = read_provenance(model_dir)
    provenance.update({key: value for key, value in (("vision_tower", vision_source), ("language_model", llm_source))
                       if value})
    if provenance.get("vision_tower") == RANDOM_TOWER:
        note = " ".join(filter(None, [note, RANDOM_TOWER_CAVEAT]))
    evaluation = (f"{note}\n\n" if note else "") + evaluation_table(collect_results(result_dirs)) + (
        "\n\nReproduce with `spectral-llava evaluate linear-probe|tsne|classify|quality|encoder`; the table is rendered "
        "by `spectral-llava render-card`.")
    return render_model_card(config, provenance, evaluation=evaluation)
