"""`spectral-llava evaluate linear-probe|tsne|classify|quality` and `spectral-llava classify` (the evaluation
package's run_* functions and classify_images). Every command reads images with the radiometric handling of
--input-offset / --input-scale / --strict (processing.options.RadiometryOptions)."""

import json
from dataclasses import asdict, dataclass, field

from spectral_llava.evaluation.options import (ClassifyOptions, FeatureOptions, FootprintOptions, GenerationOptions, ProbeOptions,
                                QualityOptions, TsneOptions)
from spectral_llava.processing.options import RadiometryOptions

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


def _loaded(args) -> dict:
    """model= and processor= of --model, and radiometry=: the settings of the radiometry flags (checked first)."""
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

    radiometry = options_of(args, RadiometryOptions).radiometry
    model, processor = load_model_and_processor(args.model)
    return {"model": model, "processor": processor, "radiometry": radiometry}


def run_linear_probe(args) -> None:
    from spectral_llava.evaluation import run_linear_probe

    options = _options(args, ProbeOptions, FeatureOptions)
    result = run_linear_probe(args.model, args.eurosat, args.output, **_loaded(args), **options)
    summary = {kind: {ratio: f"{100 * r['mean']:.1f} +/- {100 * r['std']:.1f}" for ratio, r in by_ratio.items()}
               for kind, by_ratio in result["results"].items()}
    print(json.dumps({"accuracy_percent": summary, "notes": result["notes"]}, indent=1))


def run_tsne(args) -> None:
    from spectral_llava.evaluation import run_tsne

    options = _options(args, TsneOptions, FeatureOptions)
    run_tsne(args.model, args.eurosat, args.output, **_loaded(args), **options)


def run_classify_eval(args) -> None:
    from spectral_llava.evaluation import run_classify_eval

    options = _options(args, ClassifyOptions)
    result = run_classify_eval(args.model, args.output, **_loaded(args), **options)
    summary = {}
    if "eurosat_classification" in result:
        summary["eurosat"] = {k: result["eurosat_classification"][k] for k in ("accuracy", "num_images", "no_label")}
    if "bigearthnet19" in result:
        summary["bigearthnet19"] = {k: result["bigearthnet19"][k] for k in ("micro_f1", "macro_f1", "num_images")}
    print(json.dumps(summary, indent=1))


def run_quality(args) -> None:
    from spectral_llava.evaluation import run_quality

    options = _options(args, QualityOptions)
    result = run_quality(args.model, args.dataset, args.output, **_loaded(args), **options)
    print(json.dumps({key: result[key] for key in ("num_images", "label_consistency", "judge") if key in result},
                     indent=1))


def run_classify(args) -> None:
    from spectral_llava.evaluation import classify_images, refuse_squashed_inputs

    options = options_of(args, GenerationOptions)
    loaded = _loaded(args)
    if not args.resize_whole_image:
        refuse_squashed_inputs(args.paths, loaded["processor"].image_processor, args.model)
    for row in classify_images(**loaded, paths=args.paths, batch_size=options.batch_size,
                               max_new_tokens=options.max_new_tokens):
        print(json.dumps({"image": row["image"], "labels": row["labels"], "radiometry": row["radiometry"]}),
              flush=True)


def add_parser(subparsers):
    """Registers `evaluate` (four evaluations) and `classify`."""
    parser = subparsers.add_parser("evaluate", help="linear probe, t-SNE, classification and caption quality",
                                   description="Evaluate a Spectral-LLaVA checkpoint (paper section V).")
    commands = parser.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION",
                                     parser_class=type(parser))
    add_command(commands, "linear-probe", [EuroSatRun, ProbeOptions, FeatureOptions, RadiometryOptions],
                run_linear_probe, help="EuroSAT linear probe of vision-only vs language-grounded features (writes "
                                       "linear_probe.json and linear_probe.png)")
    add_command(commands, "tsne", [EuroSatRun, TsneOptions, FeatureOptions, RadiometryOptions], run_tsne,
                help="t-SNE of both feature kinds, side by side, coloured by class (writes tsne.png and tsne.json)")
    add_command(commands, "classify", [ModelRun, ClassifyOptions, RadiometryOptions], run_classify_eval,
                help="EuroSAT accuracy and BigEarthNet-19 F1 from generated labels (writes classification.json, "
                     "classification_predictions.jsonl, confusion_matrix.png)")
    add_command(commands, "quality", [DatasetRun, QualityOptions, RadiometryOptions], run_quality,
                aliases=["judge"], help="caption quality: label consistency and a LLaVA-Bench-style judged score "
                                        "(writes quality.json and captions.jsonl)")

    classify = add_command(subparsers, "classify", [GenerationOptions, FootprintOptions, RadiometryOptions],
                           run_classify,
                           help="land-cover labels of images from generated text, one JSON line per image",
                           description='Prints {"image": PATH, "labels": [...], "radiometry": {...}} per image, most '
                                       "likely label first; EuroSAT labels are spelled as its class folders, "
                                       "BigEarthNet labels as the 19-class nomenclature; radiometry is the offset, "
                                       "scale and rule applied to the image.")
    classify.add_argument("--model", required=True, **MODEL_HELP)
    classify.add_argument("paths", nargs="+", metavar="PATH", help="GeoTIFFs or patch folders")
    return parser
