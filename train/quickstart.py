"""The one-command quickstart (`make demo`, `spectral-llava quickstart --output DIR`).

On the repository's real samples (tests/data: EuroSAT-MS, 10 patches per class, and the BigEarthNet v1/v2
patches) it builds Spectral-Inst, composes the default model (SpectralGPT ViT-B/8 at 128x128, randomly
initialised unless `--spectralgpt-checkpoint` is given, + SmolLM2-135M-Instruct or `--llm DIR`), runs stage 1
(projector alignment on class-label text) and stage 2 (LoRA + projector) for a few steps, evaluates the result
(linear probe, t-SNE, classification from generated text, caption quality) and writes:

    DIR/report.md      numbers, plots, sample captions and what was untrained or random
    DIR/metrics.json   every number of the report
    DIR/*.png          linear_probe.png, tsne.png, confusion_matrix.png, loss curves
    DIR/model/         the merged final model; pipeline("image-text-to-text", model=DIR/model, trust_remote_code=True)
    DIR/work/          dataset, base model, stage outputs, feature caches, raw evaluation outputs

The tower runs once per image: every image is encoded into one feature cache that both training stages and
all evaluations read. The visual-token layout (spectral_mean, spatial pool 4: 16 tokens per image) keeps the
LLM sequences short enough for 2 CPU cores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from modeling_spectral_llava.fileio import (atomic_write_bytes, atomic_write_json, copy_dir_atomically,
                                           copy_file_atomically)

logger = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


@dataclass
class QuickstartConfig:
    output: str
    spectralgpt_checkpoint: str | None = None
    llm: str = "smollm2"
    data: str = str(REPO_DATA)  # holds eurosat-ms/, bigearthnet-v1/, bigearthnet-v2/ (+ metadata.parquet)
    image_size: int = 128
    layout: str = "spectral_mean"
    spatial_pool: int = 4
    vision_overrides: dict | None = None  # e.g. a tiny tower for tests
    tower_bf16: bool = True  # frozen-tower features under bfloat16 autocast where the CPU has native bf16 (2x faster)
    # the recipe of benchmarks/train_acceptance.py, sized to the 15-minute budget (about 8 min on 2 idle cores):
    # stage 1 ~19 epochs of the 85 class-label records, stage 2 ~2 epochs of the 170 instructions
    align_steps: int = 200
    align_text: str = "class-labels"
    finetune_steps: int = 40
    batch_size: int = 8
    lr_align: float = 5e-3
    lr_finetune: float = 5e-4
    lora_r: int = 128
    lora_alpha: int = 256
    probe_epochs: int = 100
    eval_split: str = "validation,test"
    classify_tokens: int = 48
    caption_tokens: int = 64
    num_sample_captions: int = 4
    judge: str | None = None
    seed: int = 0
    timings: dict = field(default_factory=dict, repr=False)


@contextmanager
def _phase(config: QuickstartConfig, name: str):
    logger.info("quickstart: %s ...", name)
    started = time.perf_counter()
    yield
    config.timings[name] = time.perf_counter() - started
    logger.info("quickstart: %s done in %.1f s", name, config.timings[name])


def _sources(data: Path) -> dict:
    sources = {"eurosat": data / "eurosat-ms", "bigearthnet_v1": data / "bigearthnet-v1",
               "bigearthnet": data / "bigearthnet-v2", "metadata": data / "bigearthnet-v2" / "metadata.parquet"}
    if not sources["eurosat"].is_dir():
        raise FileNotFoundError(f"--data {data}: no eurosat-ms/ folder (the repository's tests/data holds one)")
    found = {key: str(path) for key, path in sources.items() if path.exists()}
    if "bigearthnet" in found and "metadata" not in found:
        del found["bigearthnet"]
    return found


def _native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 / AMX); elsewhere bf16 would be emulated, slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _pipeline_caption(model_dir: Path, image: str, max_new_tokens: int) -> str:
    """Caption one image through `transformers.pipeline`, proving that the exported dir loads on its own."""
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(model_dir), trust_remote_code=True)
    generated = pipe(images=image, generate_kwargs={"max_new_tokens": max_new_tokens, "do_sample": False})
    generated = generated[0]["generated_text"]
    return generated[-1]["content"] if isinstance(generated, list) else generated  # chat input -> messages


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run every phase; returns the metrics written to OUTPUT/metrics.json."""
    from modeling_spectral_llava.build import build_model

    from . import evaluate
    from .align import run_alignment
    from .finetune import run_finetune
    from .spectral_inst import BuildConfig, build_dataset

    started = time.perf_counter()
    output = Path(config.output).resolve()
    work = output / "work"
    work.mkdir(parents=True, exist_ok=True)
    sources = _sources(Path(config.data))
    tower_cache = str(work / "tower-features")
    pooled_cache = str(work / "pooled-features")
    dataset_dir = str(work / "dataset")

    with _phase(config, "build dataset"):
        report = build_dataset(BuildConfig(output=dataset_dir, seed=config.seed, **sources))
    with _phase(config, "build model"):
        vision = config.spectralgpt_checkpoint or "random"
        build_model(work / "base", vision=vision, llm=config.llm, image_size=config.image_size, layout=config.layout,
                    spatial_pool=config.spatial_pool, seed=config.seed, vision_overrides=config.vision_overrides)
    eval_split = ",".join(name for name in config.eval_split.split(",") if name in report["sizes"]["patches"])
    if not eval_split:
        raise ValueError(f"the dataset built from {config.data} has none of the splits {config.eval_split!r}")
    rows = evaluate.load_patches(dataset_dir, split=None)
    eurosat_paths, _, _ = evaluate.list_eurosat(sources["eurosat"])
    tower_precision = "bfloat16 autocast" if config.tower_bf16 and _native_bf16() else "float32"
    with _phase(config, "tower features"):
        model, processor = evaluate.load_model(work / "base")
        images = sorted({row["path"] for row in rows} | set(eurosat_paths))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tower_precision != "float32"):
            evaluate.open_tower_cache(tower_cache, model, processor.image_processor, images, config.batch_size)
        del model
    with _phase(config, "stage 1 (alignment)"):
        align = run_alignment(work / "base", dataset_dir, work / "align", max_steps=config.align_steps,
                              batch_size=config.batch_size, grad_accum=1, lr=config.lr_align, seed=config.seed,
                              text=config.align_text, cache_features=tower_cache, save_steps=10**6)
    with _phase(config, "stage 2 (instruction tuning)"):
        finetune = run_finetune(align["outputs"]["model"], dataset_dir, work / "finetune",
                                max_steps=config.finetune_steps, batch_size=config.batch_size, grad_accum=1,
                                lr=config.lr_finetune, seed=config.seed, lora_r=config.lora_r,
                                lora_alpha=config.lora_alpha, cache_features=tower_cache, save_steps=10**6)
        copy_dir_atomically(finetune["outputs"]["merged"], output / "model")
    model, processor = evaluate.load_model(output / "model")
    common = {"tower_cache": tower_cache, "model": model, "processor": processor}
    with _phase(config, "linear probe + t-SNE"):
        probe = evaluate.run_linear_probe(output / "model", sources["eurosat"], output, epochs=config.probe_epochs,
                                          seed=config.seed, cache_dir=pooled_cache, **common)
        evaluate.run_tsne(output / "model", sources["eurosat"], output, seed=config.seed, cache_dir=pooled_cache,
                          **common)
    with _phase(config, "classification"):
        classification = evaluate.run_classify_eval(output / "model", work / "evaluation", dataset=dataset_dir,
                                                    split=eval_split, max_new_tokens=config.classify_tokens,
                                                    **common)
        if (work / "evaluation" / "confusion_matrix.png").is_file():
            copy_file_atomically(work / "evaluation" / "confusion_matrix.png", output / "confusion_matrix.png")
    with _phase(config, "captions"):
        quality = evaluate.run_quality(output / "model", dataset_dir, work / "evaluation", split=eval_split,
                                       judge=config.judge, max_new_tokens=config.caption_tokens, **common)
    del model, processor, common
    with _phase(config, "pipeline check"):
        sample = next(row for row in rows if row["split"] in eval_split.split(","))
        pipeline_caption = _pipeline_caption(output / "model", sample["path"], config.caption_tokens)
    for stage, result in (("align", align), ("finetune", finetune)):
        curve = Path(result["outputs"]["loss_curve"])
        if curve.is_file():
            copy_file_atomically(curve, output / f"loss_{stage}.png")
    card = evaluate.render_card(
        output / "model", [output, work / "evaluation"],
        vision_source=os.path.basename(config.spectralgpt_checkpoint) if config.spectralgpt_checkpoint
        else "random (untrained)",
        note="Numbers from `spectral-llava quickstart` (the repository's sample patches, a few training steps): "
             "they show the system runs end to end, not the method's quality.")
    atomic_write_bytes(output / "model" / "README.md", card.encode())
    config.timings["total"] = time.perf_counter() - started

    captions = [json.loads(line) for line in (work / "evaluation" / "captions.jsonl").read_text().splitlines()]
    metrics = {
        "config": {k: v for k, v in asdict(config).items() if k != "timings"},
        "dataset": {"sizes": report["sizes"]["patches"], "captioner": report["captioner"]},
        "untrained": untrained_parts(config),
        "tower_precision": tower_precision,
        "training": {stage: {k: result[k] for k in ("first_loss", "final_loss", "steps", "records", "seconds")}
                     for stage, result in (("align", align), ("finetune", finetune))},
        "linear_probe": {kind: {ratio: {"mean": r["mean"], "std": r["std"]} for ratio, r in by_ratio.items()}
                         for kind, by_ratio in probe["results"].items()},
        "linear_probe_notes": probe["notes"],
        "classification": {key: _headline(value) for key, value in classification.items()
                           if key in ("eurosat_classification", "bigearthnet19")},
        "caption_quality": {key: quality[key] for key in ("num_images", "label_consistency", "judge") if key in quality},
        "pipeline_caption": {"image": sample["path"], "text": pipeline_caption},
        "timings_seconds": {name: round(seconds, 1) for name, seconds in config.timings.items()},
        "outputs": {"report": str(output / "report.md"), "model": str(output / "model"), "work": str(work)},
    }
    atomic_write_json(output / "metrics.json", metrics)
    atomic_write_bytes(output / "report.md", render_report(metrics, captions[:config.num_sample_captions]).encode())
    print(timing_table(config.timings))
    logger.info("quickstart outputs: report %s, metrics %s, plots %s/*.png, model %s (pipeline-ready), "
                "intermediate files %s", output / "report.md", output / "metrics.json", output, output / "model", work)
    return metrics


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k in ("accuracy", "num_images", "no_label", "micro_f1", "macro_f1")}


def untrained_parts(config: QuickstartConfig) -> list[str]:
    parts = []
    if not config.spectralgpt_checkpoint:
        parts.append("The SpectralGPT vision tower is RANDOMLY INITIALISED (no checkpoint given): its features carry "
                     "no learned meaning. Pass --spectralgpt-checkpoint SpectralGPT.pth for real features.")
    parts.append(f"The projector was trained for only {config.align_steps} alignment steps and "
                 f"{config.finetune_steps} instruction-tuning steps (LoRA r={config.lora_r}) of batch "
                 f"{config.batch_size} on the sample patches of {config.data}; the paper trains for full epochs "
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


def render_report(metrics: dict, captions: list[dict]) -> str:
    probe = metrics["linear_probe"]
    ratios = sorted(next(iter(probe.values())), key=float)
    lines = ["# Spectral-LLaVA quickstart report", "", "## What was untrained or random", ""]
    lines += [f"- {part}" for part in metrics["untrained"]]
    lines += ["", "## Training", "",
              f"The frozen tower encoded every image once ({metrics['tower_precision']}) into a feature cache that "
              "both stages and every evaluation read.", "",
              "| stage | steps | records | first loss | final loss | seconds |", "|---|---|---|---|---|---|"]
    for stage, t in metrics["training"].items():
        lines.append(f"| {stage} | {t['steps']} | {t['records']} | {t['first_loss']:.3f} | {t['final_loss']:.3f} | "
                     f"{t['seconds']:.0f} |")
    lines += ["", "![stage 1 loss](loss_align.png) ![stage 2 loss](loss_finetune.png)", "",
              "## Linear probe (EuroSAT, paper Fig. 4 protocol)", "",
              "Test accuracy, mean +/- std over 5 folds; linear layer, Adam lr 1e-4, batch 100.", "",
              "| train ratio | " + " | ".join(probe) + " |", "|---" * (len(probe) + 1) + "|"]
    for ratio in ratios:
        cells = [f"{100 * probe[k][ratio]['mean']:.1f} +/- {100 * probe[k][ratio]['std']:.1f}" if ratio in probe[k]
                 else "n/a" for k in probe]
        lines.append(f"| {float(ratio):.0%} | " + " | ".join(cells) + " |")
    lines += [f"- {note}" for note in metrics["linear_probe_notes"]]
    lines += ["", "![linear probe](linear_probe.png)", "", "## t-SNE (paper Fig. 3)", "", "![t-SNE](tsne.png)", "",
              "## Classification from generated text", ""]
    euro = metrics["classification"].get("eurosat_classification")
    if euro:
        lines.append(f"- EuroSAT accuracy: {_percent(euro['accuracy'])} on {euro['num_images']} held-out images "
                     f"({euro['no_label']} answers named no EuroSAT class)")
    ben = metrics["classification"].get("bigearthnet19")
    if ben:
        lines.append(f"- BigEarthNet-19: micro F1 {ben['micro_f1']:.3f}, macro F1 {ben['macro_f1']:.3f} on "
                     f"{ben['num_images']} held-out patches")
    if euro:
        lines += ["", "![confusion matrix](confusion_matrix.png)"]
    quality = metrics["caption_quality"]
    consistency = quality["label_consistency"]
    lines += ["", "## Captions", "",
              f"Label consistency over {quality['num_images']} held-out patches (share of true classes mentioned / "
              "share of absent classes claimed): model "
              f"{_percent(consistency['model']['recall'])} / {_percent(consistency['model']['false_claims'])}, "
              f"reference captions {_percent(consistency['reference']['recall'])} / "
              f"{_percent(consistency['reference']['false_claims'])}."]
    if "judge" in quality:
        judge = quality["judge"]
        lines.append(f"Judged score ({judge['judge']}): {judge['relative_score']:.1f}% of the reference "
                     f"({judge['parse_failures']} of {judge['num_judged']} judge replies unreadable).")
    lines += [""]
    for item in captions:
        lines += [f"**{item['id']}** (labels: {'; '.join(item['labels'])})", "",
                  f"- model: {item['caption'] or '(empty: the model ended its turn at once)'}",
                  f"- reference: {item['reference']}", ""]
    pipe = metrics["pipeline_caption"]
    lines += [f"`pipeline(\"image-text-to-text\", model=\"model\", trust_remote_code=True)` on "
              f"`{os.path.basename(pipe['image'])}`: {pipe['text']!r}", "", "## Timings", "", "```",
              timing_table(metrics["timings_seconds"]), "```", "", "## Files", "",
              "- `model/`: the merged final model (loads with `pipeline` or `AutoModelForImageTextToText`, "
              "`trust_remote_code=True`)", "- `metrics.json`: every number above",
              "- `linear_probe.png`, `tsne.png`, `confusion_matrix.png`, `loss_*.png`",
              "- `work/`: dataset, base model, stage outputs, feature caches, raw evaluation outputs", ""]
    return "\n".join(lines)
