"""`spectral-llava classify --model DIR PATH...`: one JSON line `{"image", "labels", "radiometry"}` per image
(inference.classify_images: the `[classification]` answer parsed into labels, most likely first). Inputs more than
twice the model's footprint are refused (inference.refuse_squashed_inputs) unless --resize-whole-image."""

import json

from spectral_llava.inference.options import FootprintOptions, GenerationOptions
from spectral_llava.processing.options import BandNamesOptions, RadiometryOptions

from . import add_command, options_of


def run(args) -> None:
    from spectral_llava.inference import classify_images, load_for_inference, refuse_squashed_inputs

    options = options_of(args, GenerationOptions)
    radiometry = options_of(args, RadiometryOptions).radiometry
    band_names = options_of(args, BandNamesOptions).names
    model, processor = load_for_inference(args.model)
    if not args.resize_whole_image:
        refuse_squashed_inputs(args.paths, processor.image_processor, args.model, band_names)
    for row in classify_images(model, processor, args.paths, batch_size=options.batch_size,
                               max_new_tokens=options.max_new_tokens, radiometry=radiometry,
                               band_names=band_names):
        print(json.dumps({"image": row["image"], "labels": row["labels"], "radiometry": row["radiometry"]}),
              flush=True)


def add_parser(subparsers):
    parser = add_command(subparsers, "classify", [GenerationOptions, FootprintOptions, RadiometryOptions, BandNamesOptions], run,
                         help="land-cover labels of images from generated text, one JSON line per image",
                         description='Prints {"image": PATH, "labels": [...], "radiometry": {...}} per image, most '
                                     "likely label first; EuroSAT labels are spelled as its class folders, "
                                     "BigEarthNet labels as the 19-class nomenclature; radiometry is the offset, "
                                     "scale and rule applied to the image.")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a Spectral-LLaVA model dir (e.g. finetune's merged/)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="GeoTIFFs or patch folders")
    return parser
