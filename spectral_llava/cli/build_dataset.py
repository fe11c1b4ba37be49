"""`spectral-llava build-dataset`: build Spectral-Inst (spectral_inst.build_dataset)."""

import json

from spectral_llava.spectral_inst.builder import BuildConfig

from . import add_command, options_of


def run(args) -> None:
    from spectral_llava.spectral_inst import build_dataset

    report = build_dataset(options_of(args, BuildConfig))
    summary = {key: report[key] for key in ("output", "patches_ok", "sizes") if key in report}
    summary["skipped"] = len(report["skipped"])
    if "hub" in report:
        summary["hub"] = {key: value for key, value in report["hub"].items() if key != "files"}
        summary["hub"]["files"] = len(report["hub"]["files"])
    print(json.dumps(summary, indent=1))


def add_parser(subparsers):
    return add_command(subparsers, "build-dataset", [BuildConfig], run,
                       help="build the Spectral-Inst instruction dataset from BigEarthNet v2/v1 and EuroSAT",
                       description="Render RGB PNGs, compute metadata and spectral summaries, caption every patch "
                                   "and write OUTPUT/patches, OUTPUT/alignment, OUTPUT/instructions (DatasetDicts) "
                                   "plus a dataset card. Re-running resumes from OUTPUT/.work.")
