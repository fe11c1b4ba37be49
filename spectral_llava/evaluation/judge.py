"""Description quality (b): a LLaVA-Bench-style judged score relative to a reference answer, with a pluggable
judge LLM ("smollm2", a local model dir or "hf:ID")."""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

JUDGE_SYSTEM = "You are a strict, fair reviewer of descriptions of satellite images."
JUDGE_TEMPLATE = """You cannot see the image. These facts about it are certain:
{facts}

Question asked about the image:
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{answer}
[End of Assistant 2]

Rate how helpful, relevant, accurate (consistent with the facts) and detailed each answer is. Give each
assistant one overall score from 1 to 10, higher is better. On the first line write only the two scores,
Assistant 1 first, separated by a space. Then explain your rating in one or two sentences."""


def _score(value: str) -> float | None:
    number = float(value)
    return number if 1 <= number <= 10 else None


_NUMBER = r"(\d+(?:\.\d+)?)"
# the first line holds the two scores and nothing else: "8 6", "8, 6", "Scores: 8/10 and 6/10."
_SCORE_LINE = re.compile(rf"^\W*(?:scores?\W*)?{_NUMBER}\s*(?:,|;|and|\s)\s*{_NUMBER}\W*$", re.IGNORECASE)


def _labelled(text: str, assistant: int) -> str | None:
    """The number written right after "Assistant N" on its line ("Assistant 1: 8", "Assistant 2 receives 4")."""
    match = re.search(rf"assistant\s*{assistant}\b[^\d\n\]\[]{{0,30}}?{_NUMBER}", text, re.IGNORECASE)
    return match.group(1) if match else None


def parse_judge_scores(text: str) -> tuple[float, float] | None:
    """(score of assistant 1, score of assistant 2) from a judge's reply, or None when unreadable.

    Read only where the rubric asks for them: a first line holding just the two numbers ("8 6", "8, 6",
    "8/10 6/10"), or each number written right after its "Assistant 1" / "Assistant 2" label. Numbers elsewhere
    (pixel percentages, index values, echoed rubric text) are no scores. Scores must lie in [1, 10].
    """
    cleaned = re.sub(r"\s*/\s*10\b", "", text or "")
    lines = [line for line in cleaned.splitlines() if line.strip()]
    candidates = []
    if lines and (match := _SCORE_LINE.match(lines[0].strip())):
        candidates.append(match.groups())
    labelled = (_labelled(cleaned, 1), _labelled(cleaned, 2))
    if all(labelled):
        candidates.append(labelled)
    for values in candidates:
        first, second = _score(values[0]), _score(values[1])
        if first is not None and second is not None:
            return first, second
    return None


def load_judge(spec: str):
    """(causal LM, tokenizer) of a judge: "smollm2" (the embedded SmolLM2), a local model DIR, or "hf:ID" (from
    the Hub or its local cache); on CUDA when available (bfloat16 for DIR / hf: judges)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "smollm2":
        from spectral_llava.modeling_spectral_llava.tools.build import load_llm

        model, tokenizer = load_llm("smollm2")
        return model.eval().to(device), tokenizer
    if spec.startswith("hf:"):
        source = spec[3:]
    elif os.path.isdir(spec):
        source = spec
    else:
        raise FileNotFoundError(f"--judge {spec!r}: expected 'smollm2', a local model directory or 'hf:MODEL_ID'")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).eval().to(device)
    return model, AutoTokenizer.from_pretrained(source)


def judge_prompt(tokenizer, facts: str, question: str, reference: str, answer: str) -> str:
    content = JUDGE_TEMPLATE.format(facts=facts, question=question, reference=reference, answer=answer)
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{JUDGE_SYSTEM}\n\n{content}\n\nScores:"


def judge_pairs(judge, items: Sequence[dict], max_new_tokens: int = 64) -> list[dict]:
    """Score each {"facts", "question", "reference", "answer"} with ONE prompt showing both answers (as
    LLaVA-Bench does: reference = Assistant 1, model = Assistant 2); greedy decoding."""
    model, tokenizer = judge
    results = []
    with torch.inference_mode():
        for item in tqdm(items, desc="judging", unit="answer"):
            prompt = judge_prompt(tokenizer, item["facts"], item["question"], item["reference"], item["answer"])
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            scores = parse_judge_scores(reply)
            results.append({"reply": reply, "reference_score": scores[0] if scores else None,
                            "model_score": scores[1] if scores else None})
    return results


NO_SCORE = "no judge reply held a readable pair of scores"


def relative_score(judged: Sequence[dict]) -> dict:
    """LLaVA-Bench's relative score: 100 x (sum of model scores) / (sum of reference scores) over the pairs
    whose scores parsed; unreadable replies are dropped from the score and counted (`parse_failures`). With no
    readable reply there is no score: the scores are None (null in quality.json) and `why_no_score` says why."""
    parsed = [j for j in judged if j["model_score"] is not None and j["reference_score"] is not None]
    reference = sum(j["reference_score"] for j in parsed)
    failures = len(judged) - len(parsed)
    if failures:
        logger.warning("judge: %d of %d replies hold no readable pair of scores and are left out of the relative "
                       "score (the replies are in captions.jsonl)", failures, len(judged))
    result = {
        "relative_score": 100.0 * sum(j["model_score"] for j in parsed) / reference if reference else None,
        "model_mean": float(np.mean([j["model_score"] for j in parsed])) if parsed else None,
        "reference_mean": float(np.mean([j["reference_score"] for j in parsed])) if parsed else None,
        "num_judged": len(judged), "num_scored": len(parsed), "parse_failures": failures,
    }
    if result["relative_score"] is None:
        result["why_no_score"] = NO_SCORE if not parsed else "the reference answers scored 0 in total"
    return result


def judge_summary(judge: dict) -> str:
    """The judged score in words, with how many replies were dropped: for reports and the model card. A score of
    None (or NaN, in quality.json files written before null) reads "n/a"."""
    score = judge.get("relative_score")
    score = "n/a" if score is None or math.isnan(score) else f"{score:.1f}% of the reference"
    return (f"{score} over {judge['num_judged'] - judge['parse_failures']} scored pairs ({judge['parse_failures']} of "
            f"{judge['num_judged']} judge replies unreadable, left out)")


def patch_facts(row: dict) -> str:
    """What the judge is told about a patch: its labels and the metadata of the Spectral-Inst record."""
    facts = [f"Land-cover classes: {'; '.join(row['labels']) or 'unknown'}"]
    if row.get("country"):
        facts.append(f"Country: {row['country']}")
    if row.get("season"):
        facts.append(f"Season: {row['season']}")
    facts.append(f"Seasonal snow: {'yes' if row.get('snow') else 'no'}; "
                 f"cloud or shadow: {'yes' if row.get('cloud') else 'no'}")
    return "\n".join(facts)
