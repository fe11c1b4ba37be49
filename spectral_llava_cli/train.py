"""`spectral-llava train align|finetune`: stage 1 and stage 2 training (thin wrapper over train.align/finetune).

Single process as is; for several processes or GPUs run `accelerate launch -m train.align ...` (or
`accelerate launch -m spectral_llava_cli train align ...`), see docs/training.md.
"""

from __future__ import annotations

import json


def add_train_parser(subparsers):
    from train.align import ALIGN, AlignOptions, add_align_arguments
    from train.common import add_common_arguments
    from train.finetune import FINETUNE, FinetuneOptions, add_finetune_arguments

    parser = subparsers.add_parser("train", help="train Spectral-LLaVA: stage 1 alignment, stage 2 LoRA finetuning")
    stages = parser.add_subparsers(dest="stage", required=True)
    for stage, add_arguments, options_class, help_text in (
        (ALIGN, add_align_arguments, AlignOptions, "stage 1: train the projector (tower and LLM frozen)"),
        (FINETUNE, add_finetune_arguments, FinetuneOptions, "stage 2: LoRA on the LLM + projector (tower frozen)"),
    ):
        sub = stages.add_parser(stage.name, help=help_text, description=help_text)
        add_common_arguments(sub, stage.defaults)
        add_arguments(sub)
        sub.set_defaults(func=run_train, stage_spec=stage, options_class=options_class)
    return parser


add_parser = add_train_parser  # the name the `spectral-llava` registry calls


def run_train(args) -> int:
    from train.common import options_from_args, run_stage

    summary = run_stage(args.stage_spec, args.model, args.dataset, args.output,
                        options_from_args(args, args.options_class))
    if summary:
        print(json.dumps(summary, indent=1))
    return 0
