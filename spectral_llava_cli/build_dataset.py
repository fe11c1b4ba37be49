"""`spectral-llava build-dataset`: build Spectral-Inst (thin wrapper over train.spectral_inst)."""

from __future__ import annotations

import argparse
import json
import logging

from spectral_llava_cli.radiometry_flags import add_radiometry_arguments, radiometry_kwargs


def _names(values: list[str] | None) -> list[str] | None:
    """Accept both `--countries Austria Finland` and `--countries Austria,Finland`."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/8") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= INDEX < COUNT")
    return index, count


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_build_dataset_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build-dataset",
        help="build the Spectral-Inst instruction dataset from BigEarthNet v2/v1 and EuroSAT",
        description="Render RGB PNGs, compute metadata and spectral summaries, caption every patch and write "
                    "OUTPUT/patches, OUTPUT/alignment, OUTPUT/instructions (DatasetDicts) plus a dataset card. "
                    "Re-running resumes from OUTPUT/.work.",
    )
    sources = parser.add_argument_group("sources")
    sources.add_argument("--bigearthnet", metavar="ROOT", help="reBEN (BigEarthNet v2) patch folders")
    sources.add_argument("--metadata", metavar="PARQUET", nargs="+",
                         help="the official reBEN metadata.parquet (and its snow/cloud/shadow parquet, if wanted)")
    sources.add_argument("--bigearthnet-v1", metavar="ROOT",
                         help="BigEarthNet v1 patch folders (labels via the parquet's s2v1_name when --metadata)")
    sources.add_argument("--eurosat", metavar="ROOT", help="EuroSAT-MS class folders of GeoTIFFs")
    filters = parser.add_argument_group("filters")
    filters.add_argument("--split", nargs="+", choices=["train", "validation", "test"], help="keep these splits")
    filters.add_argument("--countries", nargs="+", metavar="COUNTRY", help="keep these countries")
    filters.add_argument("--max-patches", type=_positive, help="seeded random sample of at most N patches")
    filters.add_argument("--skip-snow", action="store_true", help="drop patches flagged with seasonal snow")
    filters.add_argument("--skip-cloud", action="store_true", help="drop patches flagged with cloud or shadow")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder (resumable)")
    parser.add_argument("--captioner", default="template",
                        help="template | llm:smollm2 | llm:DIR | hf:MODEL_ID_OR_DIR (default: template)")
    parser.add_argument("--max-new-tokens", type=_positive, default=96, help="caption length for model captioners")
    parser.add_argument("--caption-batch-size", type=_positive, default=8)
    parser.add_argument("--num-proc", type=_positive, default=1, help="worker processes for reading patches")
    parser.add_argument("--shard", type=_shard, metavar="INDEX/COUNT",
                        help="process only this hash shard of the patches into OUTPUT/.work and stop; "
                             "a final run without --shard assembles")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, sampling and phrasing")
    hub = parser.add_argument_group("hub")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="upload OUTPUT to this Hub dataset repo")
    hub.add_argument("--hub-dry-run", action="store_true", help="print the Hub calls instead of uploading")
    hub.add_argument("--hub-private", action="store_true")
    add_radiometry_arguments(parser)
    parser.set_defaults(func=run_build_dataset)
    return parser


add_parser = add_build_dataset_parser  # the name the `spectral-llava` registry calls


def run_build_dataset(args: argparse.Namespace) -> int:
    from train.spectral_inst import BuildConfig, build_dataset

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = BuildConfig(
        output=args.output, bigearthnet=args.bigearthnet, metadata=args.metadata,
        bigearthnet_v1=args.bigearthnet_v1, eurosat=args.eurosat, splits=args.split,
        countries=_names(args.countries), max_patches=args.max_patches, skip_snow=args.skip_snow,
        skip_cloud=args.skip_cloud, captioner=args.captioner, num_proc=args.num_proc, seed=args.seed,
        shard=args.shard, max_new_tokens=args.max_new_tokens, caption_batch_size=args.caption_batch_size,
        push_to_hub=args.push_to_hub, hub_dry_run=args.hub_dry_run, hub_private=args.hub_private,
        **radiometry_kwargs(args),
    )
    report = build_dataset(config)
    summary = {key: report[key] for key in ("output", "patches_ok", "sizes", "hub") if key in report}
    summary["skipped"] = len(report["skipped"])
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spectral-llava")
    add_build_dataset_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
