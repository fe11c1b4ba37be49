"""`python scripts/render_model_card.py ARGS` = `spectral-llava render-card ARGS` (kept for the documented command).

    python scripts/render_model_card.py --model quickstart-output/model \
        --results quickstart-output quickstart-output/work/evaluation --output model_card.md [--readme]
"""

import sys

from spectral_llava_cli import main

if __name__ == "__main__":
    raise SystemExit(main(["render-card", *sys.argv[1:]]))
