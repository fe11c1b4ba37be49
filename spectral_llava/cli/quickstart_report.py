"""The quickstart's report: `report.md` rendered from the metrics that `metrics.json` holds."""

from __future__ import annotations

import math
import os


def headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k in ("accuracy", "num_images", "no_label", "micro_f1", "macro_f1")}


def untrained_parts(config, data_folder) -> list[str]:
    """What the report says was untrained or random; `data_folder`: the sample folder the run read (--data, else
    the repository's tests/data)."""
    data = f"{data_folder} (the repository's tests/data: no --data given)" if config.data is None else data_folder
    parts = []
    if not config.spectralgpt_checkpoint:
        parts.append("The SpectralGPT vision tower is RANDOMLY INITIALISED (no checkpoint given): its features carry "
                     "no learned meaning. Pass --spectralgpt-checkpoint SpectralGPT.pth for real features.")
    parts.append(f"The projector was trained for only {config.align_steps} alignment steps and "
                 f"{config.finetune_steps} instruction-tuning steps (LoRA r={config.lora_r}) of batch "
                 f"{config.batch_size} on the sample patches of {data}; the paper trains for full epochs "
                 "on BigEarthNet.")
    if config.llm == "smollm2":
        parts.append("The language model is SmolLM2-135M-Instruct (pretrained, but tiny), not LLaMA 3 as in the paper.")
    parts.append("Evaluation uses the same sample patches (the held-out validation and test splits for classification "
                 "and captions, all EuroSAT samples for the linear probe and t-SNE): the numbers show that the "
                 "system runs end to end, not how good the method is.")
    return parts


def timing_table(timings: dict) -> str:
    width = max(len(name) for name in timings)
    lines = [f"{'phase'.ljust(width)}  seconds", f"{'-' * width}  -------"]
    lines += [f"{name.ljust(width)}  {seconds:7.1f}" for name, seconds in timings.items()]
    return "\n".join(lines)


def _percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _training_section(metrics: dict) -> list[str]:
    lines = ["## What was untrained or random", ""] + [f"- {part}" for part in metrics["untrained"]]
    lines += ["", "## Training", "",
              f"The frozen tower encoded every image once ({metrics['tower_precision']}) into a feature cache that "
              "both stages and every evaluation read.", "",
              "| stage | steps | records | first loss | final loss | seconds |", "|---|---|---|---|---|---|"]
    for stage, t in metrics["training"].items():
        lines.append(f"| {stage} | {t['steps']} | {t['records']} | {t['first_loss']:.3f} | {t['final_loss']:.3f} | "
                     f"{t['seconds']:.0f} |")
    return lines + ["", "![stage 1 loss](loss_align.png) ![stage 2 loss](loss_finetune.png)", ""]


def _probe_section(metrics: dict) -> list[str]:
    probe = metrics["linear_probe"]
    lines = ["## Linear probe (EuroSAT, paper Fig. 4 protocol)", "",
             "Test accuracy, mean +/- std over 5 folds; linear layer, Adam lr 1e-4, batch 100.", "",
             "| train ratio | " + " | ".join(probe) + " |", "|---" * (len(probe) + 1) + "|"]
    for ratio in sorted(next(iter(probe.values())), key=float):
        cells = [f"{100 * probe[k][ratio]['mean']:.1f} +/- {100 * probe[k][ratio]['std']:.1f}" if ratio in probe[k]
                 else "n/a" for k in probe]
        lines.append(f"| {float(ratio):.0%} | " + " | ".join(cells) + " |")
    lines += [f"- {note}" for note in metrics["linear_probe_notes"]]
    return lines + ["", "![linear probe](linear_probe.png)", "", "## t-SNE (paper Fig. 3)", "", "![t-SNE](tsne.png)",
                    ""]


def _classification_section(metrics: dict) -> list[str]:
    lines = ["## Classification from generated text", ""]
    euro = metrics["classification"].get("eurosat_classification")
    if euro:
        lines.append(f"- EuroSAT accuracy: {_percent(euro['accuracy'])} on {euro['num_images']} held-out images "
                     f"({euro['no_label']} answers named no EuroSAT class)")
    ben = metrics["classification"].get("bigearthnet19")
    if ben:
        lines.append(f"- BigEarthNet-19: micro F1 {ben['micro_f1']:.3f}, macro F1 {ben['macro_f1']:.3f} on "
                     f"{ben['num_images']} held-out patches")
    return lines + (["", "![confusion matrix](confusion_matrix.png)"] if euro else []) + [""]


def _captions_section(metrics: dict, captions: list[dict]) -> list[str]:
    from spectral_llava.evaluation.judge import judge_summary

    quality = metrics["caption_quality"]
    consistency = quality["label_consistency"]
    lines = ["## Captions", "",
             f"Label consistency over {quality['num_images']} held-out patches (share of true classes mentioned / "
             "share of absent classes claimed): model "
             f"{_percent(consistency['model']['recall'])} / {_percent(consistency['model']['false_claims'])}, "
             f"reference captions {_percent(consistency['reference']['recall'])} / "
             f"{_percent(consistency['reference']['false_claims'])}."]
    scores = quality.get("caption_metrics")
    if scores:
        from spectral_llava.evaluation.caption_metrics import caption_metrics_summary

        lines.append(f"Against the reference captions (COCO caption evaluation, {scores['tokenizer']} tokenizer): "
                     f"{caption_metrics_summary(scores)}."
                     + "".join(f" {name}: {reason}." for name, reason in scores["unavailable"].items()))
    if "judge" in quality:
        judge = quality["judge"]
        lines.append(f"Judged score ({judge['judge']}): {judge_summary(judge)}.")
    lines.append("")
    for item in captions:
        lines += [f"**{item['id']}** (labels: {'; '.join(item['labels'])})", "",
                  f"- model: {item['caption'] or '(empty: the model ended its turn at once)'}",
                  f"- reference: {item['reference']}", ""]
    pipe = metrics["pipeline_caption"]
    return lines + [f"`pipeline(\"image-text-to-text\", model=\"model\", trust_remote_code=True)` on "
                    f"`{os.path.basename(pipe['image'])}`: {pipe['text']!r}", ""]


def render_report(metrics: dict, captions: list[dict]) -> str:
    """report.md: what was untrained, training, probe and t-SNE, classification, captions, timings, files."""
    lines = ["# Spectral-LLaVA quickstart report", ""]
    lines += _training_section(metrics) + _probe_section(metrics) + _classification_section(metrics)
    lines += _captions_section(metrics, captions)
    lines += ["## Timings", "", "```", timing_table(metrics["timings_seconds"]), "```", "", "## Files", "",
              "- `model/`: the merged final model (loads with `pipeline` or `AutoModelForImageTextToText`, "
              "`trust_remote_code=True`)", "- `metrics.json`: every number above",
              "- `linear_probe.png`, `tsne.png`, `confusion_matrix.png`, `loss_*.png`",
              "- `work/`: dataset, base model, stage outputs, feature caches, raw evaluation outputs", ""]
    return "\n".join(lines)
