"""`spectral-llava render-card`: the Hub model card of a model dir with the evaluation table built from
`spectral-llava evaluate` outputs (evaluation.render_card).

    spectral-llava render-card --model quickstart-output/model \
        --results quickstart-output quickstart-output/work/evaluation --output model_card.md [--readme]
"""

import logging
import os
from dataclasses import dataclass, field

from . import add_command, options_of


@dataclass
class RenderCardOptions:
    model: str = field(metadata={"help": "the evaluated model dir (its provenance.json names parts and data)",
                                 "metavar": "DIR"})
    results: list[str] = field(metadata={
        "help": "folders holding linear_probe.json, classification.json and/or quality.json (the first folder "
                "holding a file wins)", "metavar": "DIR"})
    output: str = field(default="model_card.md", metadata={"help": "where to write the card", "metavar": "PATH"})
    vision_source: str | None = field(default=None, metadata={
        "help": "how the card names the tower (default: what MODEL/provenance.json says)"})
    llm_source: str | None = field(default=None, metadata={
        "help": "how the card names the LLM (default: what MODEL/provenance.json says)"})
    note: str | None = field(default=None, metadata={
        "help": "a sentence above the table, e.g. which data and training the numbers reflect"})
    readme: bool = field(default=False, metadata={
        "help": "also write the card to MODEL/README.md, the card `spectral-llava push` uploads"})


def run(args) -> None:
    from spectral_llava.evaluation import render_card
    from spectral_llava.utils.fileio import atomic_write_text

    options = options_of(args, RenderCardOptions)
    card = render_card(options.model, options.results, options.vision_source, options.llm_source, options.note)
    for target in [options.output] + ([os.path.join(options.model, "README.md")] if options.readme else []):
        atomic_write_text(target, card)
        logging.getLogger(__name__).info("wrote %s", target)


def add_parser(subparsers):
    return add_command(subparsers, "render-card", [RenderCardOptions], run,
                       help="render the model card with the evaluation table of `evaluate` outputs")
