"""`spectral-llava caption --model DIR PATH...`: one JSON line `{"image": PATH, "text": ...}` per image."""

import json
import os
import sys


def refuse_squashed_inputs(paths: list[str], image_processor, model_dir: str) -> None:
    """Refuse inputs whose ground extent exceeds the model's footprint more than MAX_FOOTPRINT_RATIO times in either
    direction: one answer for a whole scene squashed into the model's image size is not what the user wants."""
    from processing.image_processing_spectral_llava import MAX_FOOTPRINT_RATIO, footprint_ratio
    from processing.sentinel2_io import SceneReader

    size = image_processor.image_size
    for path in paths:
        with SceneReader(path, select_bands=image_processor.band_names) as reader:  # headers only
            height, width = reader.height, reader.width
            if getattr(image_processor, "do_center_crop", False):
                height, width = min(height, image_processor.crop_size), min(width, image_processor.crop_size)
            ratio = footprint_ratio(size, height, width, reader.transform, reader.crs)
        if ratio > MAX_FOOTPRINT_RATIO:
            raise ValueError(f"{path} covers {ratio:.1f}x the model's footprint ({size} px x 10 m) and would be "
                             f"squashed into one {size}x{size} image; map it tile by tile with `spectral-llava map "
                             f"{path} --model {model_dir} --output tiles.parquet`, or pass --resize-whole-image to "
                             "answer for the whole image anyway")


def caption_images(model_dir: str, paths: list[str], task: str = "caption", prompt: str | None = None,
                   max_new_tokens: int = 64, resize_whole_image: bool = False):
    """Yield `{"image": path, "text": generated}` for each GeoTIFF / patch folder, greedy decoding, using the
    model dir's own pipeline (`pipeline("image-text-to-text", trust_remote_code=True)`). Inputs more than twice
    the model's footprint are refused (see `refuse_squashed_inputs`) unless `resize_whole_image`."""
    from transformers import pipeline

    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such image file or patch folder: {path}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a model directory (no config.json)")
    pipe = pipeline("image-text-to-text", model=model_dir, trust_remote_code=True)
    if not resize_whole_image:
        refuse_squashed_inputs(paths, pipe.processor.image_processor, model_dir)
    for path in paths:
        messages = pipe.processor.build_messages(task, image=path, text=prompt)
        result = pipe(text=messages, max_new_tokens=max_new_tokens, return_full_text=False,
                      generate_kwargs={"do_sample": False})
        yield {"image": path, "text": result[0]["generated_text"].strip()}


def run(args) -> None:
    for record in caption_images(args.model, args.paths, task=args.task, prompt=args.prompt,
                                 max_new_tokens=args.max_new_tokens, resize_whole_image=args.resize_whole_image):
        print(json.dumps(record, ensure_ascii=False), file=sys.stdout, flush=True)


def add_parser(subparsers):
    parser = subparsers.add_parser("caption", help="caption Sentinel-2 GeoTIFFs or patch folders with a model dir")
    parser.add_argument("--model", required=True, help="Spectral-LLaVA model directory")
    parser.add_argument("paths", nargs="+", help="GeoTIFF files or per-band patch folders")
    parser.add_argument("--task", choices=("caption", "classification"), default="caption",
                        help="task token put before the instruction (default: caption)")
    parser.add_argument("--prompt", default=None, help="instruction replacing the task's default one")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    add_resize_whole_image_argument(parser)
    parser.set_defaults(func=run)
    return parser


def add_resize_whole_image_argument(parser) -> None:
    parser.add_argument("--resize-whole-image", action="store_true",
                        help="answer for inputs more than twice the model's footprint (e.g. a 10 km scene) by "
                             "resizing the whole image to the model's size; without it they are refused, see "
                             "`spectral-llava map`")


add_caption_parser = add_parser
