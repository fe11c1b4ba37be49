"""`spectral-llava <command>`: every command of the project, each a thin wrapper over a documented function.

Options are defined once, as dataclasses whose field metadata holds the help text (in the library modules next to
the functions they configure), and parsed with transformers' `HfArgumentParser`; both `--max-steps` and
`--max_steps` spellings work. Command modules import only those light option modules at start-up, so `--help`
answers without loading torch; the work is imported when a command runs.
"""

import argparse
import dataclasses
import importlib
import logging
import sys

from transformers import HfArgumentParser

from spectral_llava.modeling_spectral_llava.tools.options import prefer_hyphens

# command modules, each with `add_parser(subparsers)`, in the order `--help` lists them
COMMAND_MODULES = [
    "spectral_llava.cli.build",
    "spectral_llava.cli.convert",
    "spectral_llava.cli.build_dataset",
    "spectral_llava.cli.train",
    "spectral_llava.cli.evaluate",
    "spectral_llava.cli.classify",
    "spectral_llava.cli.caption",
    "spectral_llava.cli.map",
    "spectral_llava.cli.app",
    "spectral_llava.cli.push",
    "spectral_llava.cli.render_card",
    "spectral_llava.cli.quickstart",
]


def add_command(subparsers, name: str, dataclass_types: list, run, help: str, description: str | None = None,
                **kwargs):
    """A sub-command parsing `dataclass_types` (HfArgumentParser) that calls `run(args)`."""
    parser = subparsers.add_parser(name, dataclass_types=dataclass_types, help=help, description=description or help,
                                   **kwargs)
    parser.set_defaults(func=run)
    return prefer_hyphens(parser)


def options_of(args: argparse.Namespace, cls):
    """An instance of the dataclass `cls` from the parsed arguments (the fields it declares)."""
    names = [field.name for field in dataclasses.fields(cls) if field.init]
    return cls(**{name: getattr(args, name) for name in names})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectral-llava", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       parser_class=HfArgumentParser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:  # bad input: the message names file or flag
        print(f"spectral-llava {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # an external service failed, e.g. the Hub
        print(f"spectral-llava {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0
