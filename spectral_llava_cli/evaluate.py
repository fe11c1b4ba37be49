"""`spectral-llava evaluate {linear-probe,tsne,classify,quality}` and `spectral-llava classify` (wrappers over
train.evaluate)."""

from __future__ import annotations

import argparse
import json

from spectral_llava_cli.radiometry_flags import add_radiometry_arguments, configure_image_processor


def _ratios(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios {text!r}: expected comma-separated fractions, e.g. 0.1,0.5") from None
    if not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--ratios {text!r}: every ratio must lie strictly between 0 and 1")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _model_argument(parser):
    parser.add_argument("--model", required=True, metavar="DIR", help="a Spectral-LLaVA model dir (e.g. finetune's merged/)")
    add_radiometry_arguments(parser)


def _loaded(args) -> dict:
    """model= and processor= of --model, its image processor set to the radiometry flags."""
    from train.evaluate import load_model

    model, processor = load_model(args.model)
    configure_image_processor(processor.image_processor, args)
    return {"model": model, "processor": processor}


def _eurosat_arguments(parser, required=True):
    parser.add_argument("--eurosat", required=required, metavar="ROOT", help="EuroSAT-MS class folders <Class>/*.tif")
    parser.add_argument("--max-per-class", type=_positive, metavar="N", help="first N images of each class")


def _cache_arguments(parser):
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="pooled tower-feature cache (default OUTPUT/feature-cache); reused across projectors")
    parser.add_argument("--tower-cache", metavar="DIR",
                        help="a training feature cache (align/finetune --cache-features) to read and extend")


def run_linear_probe(args):
    from train.evaluate import run_linear_probe

    result = run_linear_probe(args.model, args.eurosat, args.output, max_per_class=args.max_per_class,
                              ratios=args.ratios, n_splits=args.folds, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, cache_dir=args.cache_dir,
                              tower_cache=args.tower_cache, **_loaded(args))
    summary = {kind: {ratio: f"{100 * r['mean']:.1f} +/- {100 * r['std']:.1f}" for ratio, r in by_ratio.items()}
               for kind, by_ratio in result["results"].items()}
    print(json.dumps({"accuracy_percent": summary, "notes": result["notes"]}, indent=1))


def run_tsne(args):
    from train.evaluate import run_tsne

    run_tsne(args.model, args.eurosat, args.output, max_per_class=args.max_per_class, seed=args.seed,
             perplexity=args.perplexity, cache_dir=args.cache_dir, tower_cache=args.tower_cache, **_loaded(args))


def run_classify_eval(args):
    from train.evaluate import run_classify_eval

    result = run_classify_eval(args.model, args.output, eurosat=args.eurosat, dataset=args.dataset,
                               split=args.split, max_per_class=args.max_per_class, max_samples=args.max_samples,
                               batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                               tower_cache=args.tower_cache, **_loaded(args))
    summary = {}
    if "eurosat_classification" in result:
        summary["eurosat"] = {k: result["eurosat_classification"][k] for k in ("accuracy", "num_images", "no_label")}
    if "bigearthnet19" in result:
        summary["bigearthnet19"] = {k: result["bigearthnet19"][k] for k in ("micro_f1", "macro_f1", "num_images")}
    print(json.dumps(summary, indent=1))


def run_quality(args):
    from train.evaluate import run_quality

    result = run_quality(args.model, args.dataset, args.output, split=args.split, judge=args.judge,
                         max_samples=args.max_samples, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, tower_cache=args.tower_cache, **_loaded(args))
    print(json.dumps({key: result[key] for key in ("num_images", "label_consistency", "judge") if key in result},
                     indent=1))


def add_evaluate_parser(subparsers):
    parser = subparsers.add_parser("evaluate", help="linear probe, t-SNE, classification and caption quality",
                                   description="Evaluate a Spectral-LLaVA checkpoint (paper section V).")
    commands = parser.add_subparsers(dest="evaluation", required=True)

    probe = commands.add_parser("linear-probe", help="EuroSAT linear probe of vision-only vs language-grounded features")
    _model_argument(probe)
    _eurosat_arguments(probe)
    probe.add_argument("--output", required=True, metavar="DIR", help="writes linear_probe.json and linear_probe.png")
    probe.add_argument("--ratios", type=_ratios, default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                       help="train ratios (default 0.1,...,0.9)")
    probe.add_argument("--folds", type=_positive, default=5)
    probe.add_argument("--epochs", type=_positive, default=100)
    probe.add_argument("--batch-size", type=_positive, default=100)
    probe.add_argument("--lr", type=float, default=1e-4)
    probe.add_argument("--seed", type=int, default=0)
    _cache_arguments(probe)
    probe.set_defaults(func=run_linear_probe)

    tsne = commands.add_parser("tsne", help="t-SNE of both feature kinds, side by side, coloured by class")
    _model_argument(tsne)
    _eurosat_arguments(tsne)
    tsne.add_argument("--output", required=True, metavar="DIR", help="writes tsne.png and tsne.json")
    tsne.add_argument("--perplexity", type=float, default=30.0)
    tsne.add_argument("--seed", type=int, default=0)
    _cache_arguments(tsne)
    tsne.set_defaults(func=run_tsne)

    classify = commands.add_parser("classify", help="EuroSAT accuracy and BigEarthNet-19 F1 from generated labels")
    _model_argument(classify)
    _eurosat_arguments(classify, required=False)
    classify.add_argument("--dataset", metavar="DIR", help="a build-dataset output: its patches of --split")
    classify.add_argument("--split", default="test", help="split(s) of --dataset, e.g. test or validation,test")
    classify.add_argument("--max-samples", type=_positive, metavar="N", help="first N patches of --dataset")
    classify.add_argument("--output", required=True, metavar="DIR",
                          help="writes classification.json, classification_predictions.jsonl, confusion_matrix.png")
    classify.add_argument("--batch-size", type=_positive, default=4)
    classify.add_argument("--max-new-tokens", type=_positive, default=64)
    classify.add_argument("--tower-cache", metavar="DIR", help="a training feature cache to read and extend")
    classify.set_defaults(func=run_classify_eval)

    quality = commands.add_parser("quality", aliases=["judge"],
                                  help="caption quality: label consistency and a LLaVA-Bench-style judged score")
    _model_argument(quality)
    quality.add_argument("--dataset", required=True, metavar="DIR", help="a build-dataset output (reference captions)")
    quality.add_argument("--split", default="test", help="split(s) of --dataset, e.g. test or validation,test")
    quality.add_argument("--max-samples", type=_positive, metavar="N", help="first N patches of --split")
    quality.add_argument("--judge", metavar="SPEC",
                         help="judge LLM: smollm2 | DIR | hf:MODEL_ID (omit for label consistency only)")
    quality.add_argument("--output", required=True, metavar="DIR", help="writes quality.json and captions.jsonl")
    quality.add_argument("--batch-size", type=_positive, default=4)
    quality.add_argument("--max-new-tokens", type=_positive, default=128)
    quality.add_argument("--tower-cache", metavar="DIR", help="a training feature cache to read and extend")
    quality.set_defaults(func=run_quality)
    return parser


def run_classify(args):
    from train.evaluate import classify_images

    for row in classify_images(**_loaded(args), paths=args.paths, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens):
        print(json.dumps({"image": row["image"], "labels": row["labels"], "radiometry": row["radiometry"]}),
              flush=True)


def add_classify_parser(subparsers):
    parser = subparsers.add_parser(
        "classify", help="land-cover labels of images from generated text, one JSON line per image",
        description='Prints {"image": PATH, "labels": [...], "radiometry": {...}} per image, most likely label first; '
                    "EuroSAT labels are spelled as its class folders, BigEarthNet labels as the 19-class nomenclature; "
                    "radiometry is the offset, scale and rule applied to the image.")
    _model_argument(parser)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="GeoTIFFs or patch folders")
    parser.add_argument("--batch-size", type=_positive, default=4)
    parser.add_argument("--max-new-tokens", type=_positive, default=64)
    parser.set_defaults(func=run_classify)
    return parser


def add_parser(subparsers):
    """The `spectral-llava` registry calls this: registers `evaluate` and `classify`."""
    add_evaluate_parser(subparsers)
    add_classify_parser(subparsers)
