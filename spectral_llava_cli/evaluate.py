"""`spectral-llava evaluate linear-probe|tsne|classify|quality` and `spectral-llava classify` (the evaluation
package's run_* functions and classify_images)."""

import json
from dataclasses import asdict, dataclass, field

from evaluation.options import (ClassifyOptions, FeatureOptions, FootprintOptions, GenerationOptions, ProbeOptions,
                                QualityOptions, TsneOptions)

from . import add_command, options_of

MODEL_HELP = {"help": "a Spectral-LLaVA model dir (e.g. finetune's merged/)", "metavar": "DIR"}


@dataclass
class EuroSatRun:
    model: str = field(metadata=MODEL_HELP)
    eurosat: str = field(metadata={"help": "EuroSAT-MS class folders <Class>/*.tif", "metavar": "ROOT"})
    output: str = field(metadata={"help": "folder of the JSON results and PNG plots", "metavar": "DIR"})


@dataclass
class ModelRun:
    model: str = field(metadata=MODEL_HELP)
    output: str = field(metadata={"help": "folder of the JSON results and plots", "metavar": "DIR"})


@dataclass
class DatasetRun:
    model: str = field(metadata=MODEL_HELP)
    dataset: str = field(metadata={"help": "a build-dataset output (reference captions)", "metavar": "DIR"})
    output: str = field(metadata={"help": "folder of the JSON results", "metavar": "DIR"})


def _options(args, *classes) -> dict:
    return {key: value for cls in classes for key, value in asdict(options_of(args, cls)).items()}


def run_linear_probe(args) -> None:
    from evaluation import run_linear_probe

    result = run_linear_probe(args.model, args.eurosat, args.output, **_options(args, ProbeOptions, FeatureOptions))
    summary = {kind: {ratio: f"{100 * r['mean']:.1f} +/- {100 * r['std']:.1f}" for ratio, r in by_ratio.items()}
               for kind, by_ratio in result["results"].items()}
    print(json.dumps({"accuracy_percent": summary, "notes": result["notes"]}, indent=1))


def run_tsne(args) -> None:
    from evaluation import run_tsne

    run_tsne(args.model, args.eurosat, args.output, **_options(args, TsneOptions, FeatureOptions))


def run_classify_eval(args) -> None:
    from evaluation import run_classify_eval

    result = run_classify_eval(args.model, args.output, **_options(args, ClassifyOptions))
    summary = {}
    if "eurosat_classification" in result:
        summary["eurosat"] = {k: result["eurosat_classification"][k] for k in ("accuracy", "num_images", "no_label")}
    if "bigearthnet19" in result:
        summary["bigearthnet19"] = {k: result["bigearthnet19"][k] for k in ("micro_f1", "macro_f1", "num_images")}
    print(json.dumps(summary, indent=1))


def run_quality(args) -> None:
    from evaluation import run_quality

    result = run_quality(args.model, args.dataset, args.output, **_options(args, QualityOptions))
    print(json.dumps({key: result[key] for key in ("num_images", "label_consistency", "judge") if key in result},
                     indent=1))


def run_classify(args) -> None:
    from evaluation import classify_images, refuse_squashed_inputs
    from modeling_spectral_llava.loading import load_model_and_processor

    model, processor = load_model_and_processor(args.model)
    if not args.resize_whole_image:
        refuse_squashed_inputs(args.paths, processor.image_processor, args.model)
    options = options_of(args, GenerationOptions)
    for row in classify_images(model, processor, args.paths, batch_size=options.batch_size,
                               max_new_tokens=options.max_new_tokens):
        print(json.dumps({"image": row["image"], "labels": row["labels"]}), flush=True)


def add_parser(subparsers):
    """Registers `evaluate` (four evaluations) and `classify`."""
    parser = subparsers.add_parser("evaluate", help="linear probe, t-SNE, classification and caption quality",
                                   description="Evaluate a Spectral-LLaVA checkpoint (paper section V).")
    commands = parser.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION",
                                     parser_class=type(parser))
    add_command(commands, "linear-probe", [EuroSatRun, ProbeOptions, FeatureOptions], run_linear_probe,
                help="EuroSAT linear probe of vision-only vs language-grounded features (writes linear_probe.json "
                     "and linear_probe.png)")
    add_command(commands, "tsne", [EuroSatRun, TsneOptions, FeatureOptions], run_tsne,
                help="t-SNE of both feature kinds, side by side, coloured by class (writes tsne.png and tsne.json)")
    add_command(commands, "classify", [ModelRun, ClassifyOptions], run_classify_eval,
                help="EuroSAT accuracy and BigEarthNet-19 F1 from generated labels (writes classification.json, "
                     "classification_predictions.jsonl, confusion_matrix.png)")
    add_command(commands, "quality", [DatasetRun, QualityOptions], run_quality, aliases=["judge"],
                help="caption quality: label consistency and a LLaVA-Bench-style judged score (writes quality.json "
                     "and captions.jsonl)")

    classify = add_command(subparsers, "classify", [GenerationOptions, FootprintOptions], run_classify,
                           help="land-cover labels of images from generated text, one JSON line per image",
                           description='Prints {"image": PATH, "labels": [...]} per image, most likely label first; '
                                       "EuroSAT labels are spelled as its class folders, BigEarthNet labels as the "
                                       "19-class nomenclature.")
    classify.add_argument("--model", required=True, **MODEL_HELP)
    classify.add_argument("paths", nargs="+", metavar="PATH", help="GeoTIFFs or patch folders")
    return parser
