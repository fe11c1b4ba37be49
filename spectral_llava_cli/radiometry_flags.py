"""`--input-offset`, `--input-scale`, `--strict`: the radiometric handling flags of every command that reads images.

They map onto the image processor's `input_offset`, `input_scale` and `strict` (see processing/radiometry.py and
README "Inputs"): raw values become `(raw + offset) * scale` = reflectance x 10000.
"""

from __future__ import annotations

import argparse
import math


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_radiometry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("radiometry (default: product metadata, GeoTIFF tags, product name, "
                                      "float reflectance)")
    group.add_argument("--input-offset", type=_finite, metavar="DN",
                       help="added to every raw value before scaling, e.g. -1000 for processing baseline >= 04.00 "
                            "products; overrides the automatic rules (0 if only --input-scale is given)")
    group.add_argument("--input-scale", type=_positive, metavar="FACTOR",
                       help="multiplies (raw + offset) into reflectance x 10000, e.g. 10000 for reflectance 0..1; "
                            "overrides the automatic rules (1 if only --input-offset is given)")
    group.add_argument("--strict", action="store_true",
                       help="implausible values after offset and scale are an error naming the file and band "
                            "(default: a warning)")


def radiometry_kwargs(args: argparse.Namespace) -> dict:
    """{"input_offset", "input_scale", "strict"} of the parsed flags."""
    return {"input_offset": args.input_offset, "input_scale": args.input_scale, "strict": args.strict}


def configure_image_processor(image_processor, args: argparse.Namespace):
    """Make the flags the defaults of a loaded image processor (every later call uses them)."""
    for name, value in radiometry_kwargs(args).items():
        setattr(image_processor, name, value)
    return image_processor
