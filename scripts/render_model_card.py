"""Render the repository's `model_card.md`: `spectral-llava render-card` with, as defaults, the stored inputs of the
`make demo` run the card shows (`docs/model_card_inputs/`: the model's config.json and provenance.json, and the
linear_probe.json, classification.json and quality.json that `spectral-llava evaluate` wrote). Any flag given here
overrides them.

    python scripts/render_model_card.py                   # writes model_card.md exactly as committed
    python scripts/render_model_card.py --model quickstart-output/model \
        --results quickstart-output quickstart-output/work/evaluation --output my_card.md
"""

import os
import sys

from spectral_llava.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORED_INPUTS = os.path.join(REPO, "docs", "model_card_inputs")
DEFAULTS = ["--model", STORED_INPUTS, "--results", STORED_INPUTS, "--output", os.path.join(REPO, "model_card.md")]

if __name__ == "__main__":
    raise SystemExit(main(["render-card", *DEFAULTS, *sys.argv[1:]]))
