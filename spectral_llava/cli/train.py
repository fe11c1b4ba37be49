"""`spectral-llava train align|finetune`: stage 1 and stage 2 training (train.align / train.finetune).

Single process as is; for several processes or GPUs run `accelerate launch -m spectral_llava.train.align ...` (or
`accelerate launch -m spectral_llava.cli train align ...`), see docs/training.md.
"""

import json

from spectral_llava.train.options import AlignOptions, FinetuneOptions, StagePaths

from . import add_command, options_of

STAGES = {"align": (AlignOptions, "stage 1: train the projector (tower and LLM frozen)"),
          "finetune": (FinetuneOptions, "stage 2: LoRA on the LLM + projector (tower frozen)")}


def run(args) -> None:
    from spectral_llava.train.align import ALIGN
    from spectral_llava.train.finetune import FINETUNE
    from spectral_llava.train.trainer import run_stage

    stage = {"align": ALIGN, "finetune": FINETUNE}[args.stage]
    summary = run_stage(stage, args.model, args.dataset, args.output, options_of(args, stage.options))
    if summary:
        print(json.dumps(summary, indent=1))


def add_parser(subparsers):
    parser = subparsers.add_parser("train", help="train Spectral-LLaVA: stage 1 alignment, stage 2 LoRA finetuning",
                                   description=__doc__.split("\n\n")[0])
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE", parser_class=type(parser))
    for name, (options, help_text) in STAGES.items():
        add_command(stages, name, [StagePaths, options], run, help=help_text)
    return parser
