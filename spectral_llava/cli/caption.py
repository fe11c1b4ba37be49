"""`spectral-llava caption --model DIR PATH...`: one JSON line `{"image": PATH, "text": ..., "radiometry": ...}` per
image (inference.generate_answers with the `[caption]` or `[classification]` prompt; "radiometry" is the handling
the image processor applied: offset, scale, source rule and its detail, per-band values, implausible bands). Inputs
more than twice the model's footprint are refused (inference.refuse_squashed_inputs) unless --resize-whole-image."""

import json

from spectral_llava.inference.options import CaptionOptions, FootprintOptions
from spectral_llava.processing.options import BandNamesOptions, RadiometryOptions

from . import add_command, options_of


def run(args) -> None:
    from spectral_llava.inference import generate_answers, load_for_inference, refuse_squashed_inputs

    options, radiometry = options_of(args, CaptionOptions), options_of(args, RadiometryOptions).radiometry
    band_names = options_of(args, BandNamesOptions).names
    model, processor = load_for_inference(args.model)
    if not args.resize_whole_image:
        refuse_squashed_inputs(args.paths, processor.image_processor, args.model, band_names)
    answers = generate_answers(model, processor, args.paths, options.task, question=options.prompt,
                               batch_size=options.batch_size, max_new_tokens=options.max_new_tokens,
                               radiometry=radiometry, band_names=band_names)
    for path, answer in zip(args.paths, answers):
        print(json.dumps({"image": path, "text": answer["text"], "radiometry": answer["radiometry"]},
                         ensure_ascii=False), flush=True)


def add_parser(subparsers):
    parser = add_command(subparsers, "caption", [CaptionOptions, FootprintOptions, RadiometryOptions, BandNamesOptions], run,
                         help="caption Sentinel-2 GeoTIFFs or patch folders with a model dir (greedy decoding)")
    parser.add_argument("--model", required=True, metavar="DIR", help="Spectral-LLaVA model directory")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="GeoTIFF files or per-band patch folders")
    return parser
