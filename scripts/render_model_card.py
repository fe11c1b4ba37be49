"""Render the Hub model card with the evaluation table built from `spectral-llava evaluate` outputs.

    python scripts/render_model_card.py --model quickstart-output/model \
        --results quickstart-output quickstart-output/work/evaluation --output model_card.md [--readme]

`--results` folders hold linear_probe.json, classification.json and/or quality.json (the first folder holding a
file wins). `--readme` also writes the card into MODEL/README.md, the card `spectral-llava push` uploads.
"""

import argparse
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from train.evaluate import render_card  # noqa: E402
from modeling_spectral_llava.fileio import atomic_write_bytes  # noqa: E402


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="the evaluated model dir")
    parser.add_argument("--results", required=True, nargs="+", metavar="DIR", help="folders of evaluate outputs")
    parser.add_argument("--output", default=os.path.join(REPO, "model_card.md"), metavar="PATH")
    parser.add_argument("--vision-source", help="how the card names the tower (default: what MODEL/README.md says)")
    parser.add_argument("--llm-source", help="how the card names the LLM (default: what MODEL/README.md says)")
    parser.add_argument("--note", help="a sentence above the table, e.g. which data and training the numbers reflect")
    parser.add_argument("--readme", action="store_true", help="also write the card to MODEL/README.md")
    args = parser.parse_args(argv)
    try:
        card = render_card(args.model, args.results, args.vision_source, args.llm_source, args.note)
    except (FileNotFoundError, ValueError) as error:
        print(f"render_model_card: error: {error}", file=sys.stderr)
        return 2
    for target in [args.output] + ([os.path.join(args.model, "README.md")] if args.readme else []):
        atomic_write_bytes(target, card.encode("utf-8"))
        logging.info("wrote %s", target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
