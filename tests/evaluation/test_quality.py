"""Caption quality: label consistency and the LLaVA-Bench-style judge."""

import json
import os
from pathlib import Path

import pytest

from spectral_llava.evaluation import judge_prompt, label_consistency, parse_judge_scores, relative_score, run_quality
from spectral_llava.inference import BEN19_LABELS, EUROSAT_CLASSES, mentioned_classes
from spectral_llava.spectral_inst import TemplateCaptioner
from testing_utils import DATA


def test_template_captions_mention_exactly_their_classes():
    captioner = TemplateCaptioner()
    record = {"id": "x", "country": None, "season": None, "acquisition_date": None, "vegetation_fraction": 0.2,
              "ndvi_mean": 0.1, "water_fraction": 0.3, "built_fraction": 0.4, "snow_fraction": 0.0, "snow": False,
              "cloud": False}
    for name in EUROSAT_CLASSES:
        caption = captioner.caption(dict(record, labels=[name]))
        assert mentioned_classes(caption, EUROSAT_CLASSES) == [name], caption
    for labels in (["Coniferous forest", "Mixed forest", "Transitional woodland, shrub"],
                   ["Land principally occupied by agriculture, with significant areas of natural vegetation",
                    "Inland waters", "Coastal wetlands"], list(BEN19_LABELS)):
        caption = captioner.caption(dict(record, labels=labels))
        assert label_consistency(caption, labels, BEN19_LABELS)["recall"] == 1.0, caption
        assert mentioned_classes(caption, BEN19_LABELS) == sorted(labels)


def test_class_matching_rules():
    mentioned = mentioned_classes
    assert mentioned("salt marshes beside the sea", BEN19_LABELS) == ["Coastal wetlands", "Marine waters"]
    assert mentioned("a dense forest and some water", BEN19_LABELS) == []  # generic words name no class
    assert mentioned("Conifers and orchards.", BEN19_LABELS) == ["Coniferous forest", "Permanent crops"]
    assert mentioned("There is no river here, only industrial buildings; no lakes or ponds.",
                     EUROSAT_CLASSES) == ["Industrial"]
    scores = label_consistency("Pastures and a town next to a river.", ["Pastures", "Arable land"],
                                        BEN19_LABELS)
    assert scores["recall"] == 0.5 and scores["false_claims"] == pytest.approx(2 / 17)


@pytest.mark.parametrize("reply, scores", [
    ("8 6\nAssistant 1 is more detailed.", (8.0, 6.0)),
    ("Scores: 9/10 and 4/10.\nAssistant 2 invents a river.", (9.0, 4.0)),
    ("The scene has 2 rivers and 4 fields.", None),  # numbers in prose are no scores
    ("Vegetation is sparse (mean NDVI 0.20, 24% above 0.3), 3 of 5 pixels built-up.", None),
    ("[End of Assistant 1]\n\n[End of Assistant 2] 5 stars, 6 points", None),
    ("7, 9.5", (7.0, 9.5)),
    ("Assistant 1: 8/10\nAssistant 2: 5/10", (8.0, 5.0)),
    ("Assistant 1 receives 7 and Assistant 2 receives 4.", (7.0, 4.0)),
    ("Both answers are fine.", None),
    ("9 12", None),
    ("", None),
])
def test_parse_judge_scores(reply, scores):
    assert parse_judge_scores(reply) == scores


def test_relative_score_counts_parse_failures():
    judged = [{"reference_score": 8.0, "model_score": 6.0}, {"reference_score": 4.0, "model_score": 6.0},
              {"reference_score": None, "model_score": None}]
    result = relative_score(judged)
    assert result["relative_score"] == pytest.approx(100 * 12 / 12)
    assert result["model_mean"] == 6.0 and result["reference_mean"] == 6.0
    assert result["num_judged"] == 3 and result["num_scored"] == 2 and result["parse_failures"] == 1


def test_real_smollm2_judge_replies_are_dropped_not_scored():
    """The embedded SmolLM2 judge's real replies (tests/data/judge) hold no scores in the asked format; numbers in
    their prose ("The land cover classes of 1.0 ... of 2.0") must not become a 1 vs 2 score (a relative score of
    200%). Unreadable replies stay out of the score, and the card row says how many were dropped."""
    from spectral_llava.evaluation import evaluation_table

    path = os.path.join(DATA, "judge", "smollm2_replies.jsonl")
    replies = [json.loads(line)["reply"] for line in Path(path).read_text(encoding="utf-8").splitlines()]
    assert len(replies) == 18 and any("classes of 1.0" in reply for reply in replies)
    judged = [{"reply": reply, "reference_score": None, "model_score": None} for reply in replies]
    for item in judged:
        scores = parse_judge_scores(item["reply"])
        if scores:
            item["reference_score"], item["model_score"] = scores
    # two replies in the format the rubric asks for, next to the real ones
    judged += [{"reply": reply, **dict(zip(("reference_score", "model_score"), parse_judge_scores(reply)))}
               for reply in ("8 6\nAssistant 1 names the classes.", "Assistant 1: 7/10\nAssistant 2: 7/10")]

    result = relative_score(judged)
    assert result["num_judged"] == 20 and result["num_scored"] == 2 and result["parse_failures"] == 18
    assert result["relative_score"] == pytest.approx(100 * (6 + 7) / (8 + 7))
    alone = relative_score(judged[:18])
    assert alone["relative_score"] is None and alone["model_mean"] is None and alone["num_scored"] == 0
    assert alone["why_no_score"] == "no judge reply held a readable pair of scores"

    quality = {"split": "validation,test", "num_images": 18, "label_consistency": {"model": {"recall": 0.5,
               "false_claims": 0.1}}, "judge": {"judge": "smollm2", **alone}}
    table = evaluation_table({"quality": quality})
    assert "| judged caption score (smollm2) | Spectral-Inst validation,test, 18 patches | n/a over 0 scored pairs " \
           "(18 of 18 judge replies unreadable, left out) |" in table


def test_quality_with_a_judge(tiny_model, tiny_model_dir, tiny_llm_dir, small_dataset, tmp_path):
    from spectral_llava.modeling_spectral_llava.tools.build import load_llm

    model, processor = tiny_model
    result = run_quality(tiny_model_dir, small_dataset, tmp_path, split=None, max_samples=2,
                         judge_model=load_llm(tiny_llm_dir), max_new_tokens=8, judge_max_new_tokens=12, model=model,
                         processor=processor)
    assert result["num_images"] == 2
    assert result["label_consistency"]["reference"]["recall"] == 1.0  # template captions name their classes
    metrics = result["caption_metrics"]  # BLEU / METEOR / ROUGE-L / CIDEr-D against the reference captions
    assert metrics["num_images"] == 2 and metrics["tokenizer"] == "ptb" and metrics["unavailable"] == {}
    assert all(0.0 <= metrics[name] <= 1.0 for name in ("bleu_1", "bleu_4", "meteor", "rouge_l"))
    assert 0.0 <= metrics["cider_d"] <= 10.0
    judge = result["judge"]
    assert judge["num_judged"] == 2 and 0 <= judge["parse_failures"] <= 2
    records = [strict_loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert all("reply" in r["judge"] and "recall" in r["model_consistency"] for r in records)
    written = strict_loads((tmp_path / "quality.json").read_text())
    assert written["judge"] == judge and "null" in written["null_means"]


def strict_loads(text: str):
    """json.loads refusing NaN / Infinity, as strict parsers (jq, JSON.parse) do."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_judge_without_readable_replies_writes_null_and_says_why(tiny_model, tiny_model_dir, tiny_llm_dir,
                                                                  small_dataset, tmp_path):
    """A judge whose replies hold no scores (the tiny random LLM with 1 new token) gives no relative score: null in
    quality.json, which a strict parser reads, with the reason next to it; the card row reads n/a."""
    from spectral_llava.evaluation import judge_summary
    from spectral_llava.modeling_spectral_llava.tools.build import load_llm

    model, processor = tiny_model
    run_quality(tiny_model_dir, small_dataset, tmp_path, split=None, max_samples=2, judge_model=load_llm(tiny_llm_dir),
                max_new_tokens=4, judge_max_new_tokens=1, model=model, processor=processor)
    text = (tmp_path / "quality.json").read_text()
    judge = strict_loads(text)["judge"]
    assert judge["parse_failures"] == 2 and judge["relative_score"] is None and judge["model_mean"] is None
    assert judge["why_no_score"] == "no judge reply held a readable pair of scores"
    assert judge_summary(judge) == "n/a over 0 scored pairs (2 of 2 judge replies unreadable, left out)"


def test_judge_prompt_holds_both_answers_and_the_facts(tokenizer):
    prompt = judge_prompt(tokenizer, "Land-cover classes: Pastures", "Describe it.", "REF ANSWER", "MODEL ANSWER")
    assert prompt.index("REF ANSWER") < prompt.index("MODEL ANSWER")
    assert "Pastures" in prompt and "helpful" in prompt and "1 to 10" in prompt
