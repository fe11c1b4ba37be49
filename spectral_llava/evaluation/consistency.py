"""Description quality (a): label consistency, i.e. whether a description mentions the true classes and no others
(paper Table I); which classes a text mentions is `inference.mentions.mentioned_classes`."""

from __future__ import annotations

import math
from typing import Sequence

from spectral_llava.inference.labels import BEN19_LABELS, EUROSAT_CLASSES
from spectral_llava.inference.mentions import mentioned_classes


def label_consistency(text: str, true_labels: Sequence[str], vocabulary: Sequence[str]) -> dict:
    """The paper's criterion: "recall" = share of the true classes the text mentions, "false_claims" = share
    of the vocabulary's absent classes it mentions anyway."""
    mentioned = set(mentioned_classes(text, vocabulary))
    true = set(true_labels) & set(vocabulary)
    absent = set(vocabulary) - true
    return {"mentioned": sorted(mentioned),
            "recall": len(mentioned & true) / len(true) if true else math.nan,
            "false_claims": len(mentioned & absent) / len(absent) if absent else math.nan}


def vocabulary_of(source: str) -> tuple[str, ...]:
    return EUROSAT_CLASSES if source == "eurosat" else BEN19_LABELS
