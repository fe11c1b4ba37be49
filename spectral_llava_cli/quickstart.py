"""`spectral-llava quickstart --output DIR`: the whole system on the repository's samples (wrapper over
train.quickstart)."""

from __future__ import annotations

import os


def run(args):
    from train.quickstart import QuickstartConfig, run_quickstart

    if args.spectralgpt_checkpoint and not os.path.exists(args.spectralgpt_checkpoint):
        raise FileNotFoundError(f"--spectralgpt-checkpoint {args.spectralgpt_checkpoint}: no such file")
    config = QuickstartConfig(output=args.output, spectralgpt_checkpoint=args.spectralgpt_checkpoint, llm=args.llm,
                              **({"data": args.data} if args.data else {}))
    run_quickstart(config)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "quickstart", help="build data, train both stages briefly, evaluate and report (about 15 min on 2 CPU cores)",
        description="Builds Spectral-Inst from the sample patches, composes the default model (random ViT-B/8 tower "
                    "unless --spectralgpt-checkpoint, SmolLM2-135M-Instruct unless --llm), trains stage 1 and 2 for a "
                    "few steps, evaluates, and writes OUTPUT/report.md, metrics.json, PNG plots and OUTPUT/model.")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--spectralgpt-checkpoint", metavar="PATH",
                        help="official SpectralGPT .pth (or converted tower dir) instead of the random tower")
    parser.add_argument("--llm", default="smollm2", metavar="DIR|ORG/NAME",
                        help="LLM dir or Hub id instead of the embedded SmolLM2")
    parser.add_argument("--data", metavar="DIR",
                        help="folder with eurosat-ms/, bigearthnet-v1/, bigearthnet-v2/ (default: the repo's tests/data)")
    parser.set_defaults(func=run)
    return parser
