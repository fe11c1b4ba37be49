"""Caption quality of a model on a Spectral-Inst split: label consistency, reference-based caption metrics (BLEU,
METEOR, ROUGE-L, CIDEr-D) and, with a judge, the relative score."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from spectral_llava.utils.fileio import atomic_write_json
from spectral_llava.inference.generation import generate_answers
from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
from spectral_llava.processing.processing_spectral_llava import TASK_PROMPTS
from spectral_llava.spectral_inst.dataset import dataset_band_names, load_patches

from .caption_metrics import score_captions
from .classification import write_jsonl
from .consistency import label_consistency, vocabulary_of
from .judge import judge_pairs, load_judge, patch_facts, relative_score
from .options import QualityOptions

logger = logging.getLogger(__name__)


NULL_MEANS = ("no value: a recall needs images with labels, a false-claim rate images with absent classes, a judged "
              "score at least one readable judge reply (judge.why_no_score); written as null, not NaN, which strict "
              "JSON parsers refuse")


def nan_mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def run_quality(model_dir, dataset_dir, output_dir, model=None, processor=None, judge_model=None, radiometry=None,
                **options) -> dict:
    """Caption the patches of a Spectral-Inst split with the `[caption]` prompt and score the captions:
    label consistency for model and reference captions, BLEU-1..4 / METEOR / ROUGE-L / CIDEr-D against the dataset's
    reference caption (`caption_metrics.score_captions`), and, with a judge (`options["judge"]`, or a loaded
    (model, tokenizer) pair `judge_model`), the LLaVA-Bench-style relative score against the dataset's reference
    caption. Writes OUTPUT/quality.json and OUTPUT/captions.jsonl. `options`: `QualityOptions` fields; `radiometry`
    (a `RadiometrySettings`) is how the images are read, with the band names the dataset's build recorded."""
    options = QualityOptions(**options)
    output_dir = Path(output_dir)
    rows = load_patches(dataset_dir, options.split, options.max_samples)
    if not rows:
        raise ValueError(f"--dataset {dataset_dir}: split {options.split!r} is empty")
    if model is None:
        model, processor = load_model_and_processor(model_dir)
    answers = generate_answers(model, processor, [row["path"] for row in rows], "caption",
                               batch_size=options.batch_size, max_new_tokens=options.max_new_tokens,
                               tower_cache=options.tower_cache, desc="captioning", radiometry=radiometry,
                               band_names=dataset_band_names(dataset_dir))
    records = []
    for row, answer in zip(rows, answers):
        vocabulary = vocabulary_of(row["source"])
        records.append({"id": row["id"], "image": row["path"], "labels": list(row["labels"]),
                        "caption": answer["text"], "reference": row["caption"],
                        **({"radiometry": answer["radiometry"]} if "radiometry" in answer else {}),
                        "model_consistency": label_consistency(answer["text"], row["labels"], vocabulary),
                        "reference_consistency": label_consistency(row["caption"], row["labels"], vocabulary)})
    result = {
        "model": str(model_dir), "dataset": str(dataset_dir), "split": options.split, "num_images": len(records),
        "prompt": processor.build_prompt("caption"),
        "label_consistency": {
            who: {"recall": nan_mean(r[f"{who}_consistency"]["recall"] for r in records),
                  "false_claims": nan_mean(r[f"{who}_consistency"]["false_claims"] for r in records)}
            for who in ("model", "reference")},
        "label_matching": "inference.mentions.CLASS_PHRASES: whole-word key phrases, longest match first, generic "
                          "words count for no class, negated mentions ignored",
        "caption_metrics": score_captions({r["id"]: r["caption"] for r in records},
                                          {r["id"]: [r["reference"]] for r in records}),
        "null_means": NULL_MEANS,
    }
    if judge_model is not None or options.judge is not None:
        question = TASK_PROMPTS["caption"].split("] ", 1)[-1]
        judged = judge_pairs(judge_model or load_judge(options.judge), [
            {"facts": patch_facts(row), "question": question, "reference": row["caption"], "answer": answer["text"]}
            for row, answer in zip(rows, answers)], options.judge_max_new_tokens)
        for record, item in zip(records, judged):
            record["judge"] = item
        result["judge"] = {"judge": options.judge if judge_model is None else "in-process model",
                           "rubric": "helpfulness, relevance, accuracy, level of detail; 1-10 per answer",
                           **relative_score(judged)}
    atomic_write_json(output_dir / "quality.json", result)
    write_jsonl(output_dir / "captions.jsonl", records)
    logger.info("description quality: %s and %s", output_dir / "quality.json", output_dir / "captions.jsonl")
    return result
