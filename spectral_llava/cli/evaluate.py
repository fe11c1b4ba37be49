"""`spectral-llava evaluate linear-probe|tsne|classify|quality|encoder` (the evaluation package's run_*
functions). Every evaluation reads images with the radiometric handling of --input-offset / --input-scale /
--strict (processing.options.RadiometryOptions)."""

import json
from dataclasses import asdict, dataclass, field

from spectral_llava.evaluation.options import (ClassifyOptions, EncoderOptions, FeatureOptions, ProbeOptions,
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
    from spectral_llava.inference import load_for_inference

    radiometry = options_of(args, RadiometryOptions).radiometry
    model, processor = load_for_inference(args.model)
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
    keys = ("num_images", "label_consistency", "caption_metrics", "judge")
    print(json.dumps({key: result[key] for key in keys if key in result}, indent=1))


@dataclass
class EncoderRun:
    model: str = field(metadata={"help": "a Spectral-LLaVA model dir or a converted tower dir "
                                         "(spectral-llava convert-spectralgpt)", "metavar": "DIR"})
    output: str = field(metadata={"help": "folder of encoder_benchmark.json / .md and the feature cache",
                                  "metavar": "DIR"})


def run_encoder(args) -> None:
    from spectral_llava.evaluation.encoder import FrozenEncoder, run_encoder_eval
    from spectral_llava.evaluation.scores import probe_headline

    options = _options(args, EncoderOptions)
    encoder = FrozenEncoder(args.model, radiometry=options_of(args, RadiometryOptions).radiometry)
    result = run_encoder_eval(args.model, args.output, encoder=encoder, **options)
    print(json.dumps({name: probe_headline(entry) for name, entry in result["results"].items()}, indent=1))


def add_parser(subparsers):
    """Registers `evaluate` (five evaluations)."""
    parser = subparsers.add_parser("evaluate", help="linear probe, t-SNE, classification, caption quality and the "
                                                    "frozen-encoder benchmark",
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
                aliases=["judge"], help="caption quality: label consistency, BLEU / METEOR / ROUGE-L / CIDEr-D against "
                                        "the reference captions and a LLaVA-Bench-style judged score (writes "
                                        "quality.json and captions.jsonl)")
    add_command(commands, "encoder", [EncoderRun, EncoderOptions, RadiometryOptions], run_encoder,
                help="frozen-encoder benchmark: a linear probe of the tower's pooled features, GEO-Bench style, on "
                     "EuroSAT, a build-dataset output, BigEarthNet with reBEN's splits or GEO-Bench tasks (writes "
                     "encoder_benchmark.json and encoder_benchmark.md)")
    return parser
