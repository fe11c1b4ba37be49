"""Reference-based caption metrics with the COCO caption evaluation definitions (`pycocoevalcap`): BLEU-1..4,
METEOR, ROUGE-L and CIDEr-D of generated captions against reference captions.

As COCO's evaluation does, every caption is first tokenised by the Stanford PTB tokenizer (lower-cased, punctuation
removed), then BLEU is the corpus-level score ("closest" reference length), ROUGE-L (beta 1.2), METEOR 1.5 and
CIDEr-D (pycocoevalcap's `Cider`: tf-idf of 1..4-grams with idf from the references of the evaluated images,
clipping and a Gaussian length penalty, sigma 6, x 10) are means over images. The PTB tokenizer and METEOR run in
Java: without a `java` executable, METEOR is reported as unavailable (with the reason) and the other metrics are
computed on a regular-expression tokenisation, which is recorded in the result because their values then differ
slightly from COCO's.
"""

from __future__ import annotations

import logging
import re
import shutil
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

# the punctuation tokens COCO's evaluation drops after PTB tokenisation
PUNCTUATION = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...",
               ";"}
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")


def regex_tokenize(text: str) -> str:
    """Lower-cased words and punctuation split apart, COCO's punctuation dropped (the fallback without Java)."""
    tokens = re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text.lower())
    return " ".join(token for token in tokens if token not in PUNCTUATION)


def _tokenize(captions: Mapping[str, Sequence[str]], java: bool) -> dict[str, list[str]]:
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({key: [{"caption": text} for text in texts] for key, texts in captions.items()})
    return {key: [regex_tokenize(text) for text in texts] for key, texts in captions.items()}


def _meteor(references: dict, candidates: dict) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return float(scorer.compute_score(references, candidates)[0])
    finally:
        del scorer  # stops the Java process


def score_captions(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (fractions; CIDEr-D on its usual 0..10 scale) of `candidates`
    ({image id: generated caption}) against `references` ({image id: [reference captions]}); a metric that cannot
    run is None with its reason under "unavailable"."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(candidates) != set(references):
        raise ValueError(f"captions and references cover different images: {sorted(set(candidates) ^ set(references))}")
    if not candidates or not all(references[key] for key in references):
        raise ValueError("caption metrics need at least one image and a reference caption for every image")
    java = shutil.which("java") is not None
    unavailable = {}
    if not java:
        unavailable["meteor"] = "METEOR 1.5 runs in Java and no `java` executable was found (make setup installs one)"
        logger.warning("caption metrics: no Java: METEOR unavailable, PTB tokenizer replaced by a regex tokenizer")
    tokenized_references = _tokenize(references, java)
    tokenized_candidates = _tokenize({key: [candidates[key]] for key in references}, java)
    bleu, _ = Bleu(4).compute_score(tokenized_references, tokenized_candidates, verbose=0)
    result = {f"bleu_{n + 1}": float(value) for n, value in enumerate(bleu)}
    result["meteor"] = None
    if java:
        try:
            result["meteor"] = _meteor(tokenized_references, tokenized_candidates)
        except (OSError, ValueError) as error:
            unavailable["meteor"] = f"METEOR failed: {error}"
            logger.warning("caption metrics: METEOR failed: %s", error)
    result["rouge_l"] = float(Rouge().compute_score(tokenized_references, tokenized_candidates)[0])
    result["cider_d"] = float(Cider().compute_score(tokenized_references, tokenized_candidates)[0])
    return {**{name: result[name] for name in METRICS}, "num_images": len(candidates),
            "references_per_image": sorted({len(texts) for texts in references.values()}),
            "tokenizer": "ptb" if java else "regex (no Java: values differ slightly from COCO's PTB tokenisation)",
            "definitions": "COCO caption evaluation (pycocoevalcap): corpus BLEU, METEOR 1.5, ROUGE-L, CIDEr-D",
            "unavailable": unavailable}


def caption_metrics_summary(metrics: dict) -> str:
    """"BLEU-1/4 0.412/0.101, METEOR 0.150, ROUGE-L 0.330, CIDEr-D 0.250" ("n/a" for a metric that could not run)."""
    def value(name):
        return "n/a" if metrics.get(name) is None else f"{metrics[name]:.3f}"

    return (f"BLEU-1/4 {value('bleu_1')}/{value('bleu_4')}, METEOR {value('meteor')}, ROUGE-L {value('rouge_l')}, "
            f"CIDEr-D {value('cider_d')}")
