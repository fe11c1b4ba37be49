"""Render the repository's `model_card.md` from the outputs of `make demo`: `spectral-llava render-card` with the
quickstart's paths as defaults (any flag given here overrides them; no flag: the card of quickstart-output/model).

    python scripts/render_model_card.py [--readme] [--note TEXT] [--model DIR --results DIR... --output PATH]
"""

import sys

from spectral_llava_cli import main

QUICKSTART_DEFAULTS = ["--model", "quickstart-output/model", "--results", "quickstart-output",
                       "quickstart-output/work/evaluation", "--output", "model_card.md"]

if __name__ == "__main__":
    raise SystemExit(main(["render-card", *QUICKSTART_DEFAULTS, *sys.argv[1:]]))
