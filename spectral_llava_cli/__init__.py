"""`spectral-llava <command>`: one thin argparse wrapper per command, dispatching to the package functions."""

import argparse
import importlib
import logging
import sys

# command modules, each with `add_parser(subparsers)`; imported lazily so `--help` stays fast
COMMAND_MODULES = [
    "modeling_spectral_llava.convert_spectralgpt",
    "modeling_spectral_llava.build",
    "spectral_llava_cli.build_dataset",
    "spectral_llava_cli.train",
    "spectral_llava_cli.caption",
    "spectral_llava_cli.map",
    "spectral_llava_cli.evaluate",
    "spectral_llava_cli.quickstart",
    "spectral_llava_cli.push",
    "spectral_llava_cli.app",
]


def build_parser():
    parser = argparse.ArgumentParser(prog="spectral-llava", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"spectral-llava {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
