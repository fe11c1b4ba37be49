"""`spectral-llava caption --model DIR PATH...`: one JSON line `{"image": PATH, "text": ..., "radiometry": ...}` per
image."""

import json
import os
import sys

from spectral_llava_cli.radiometry_flags import add_radiometry_arguments, radiometry_kwargs


def caption_images(model_dir: str, paths: list[str], task: str = "caption", prompt: str | None = None,
                   max_new_tokens: int = 64, input_offset: float | None = None, input_scale: float | None = None,
                   strict: bool = False):
    """Yield `{"image": path, "text": generated, "radiometry": {...}}` for each GeoTIFF / patch folder, greedy
    decoding, using the model dir's own pipeline (`pipeline("image-text-to-text", trust_remote_code=True)`).

    `input_offset`/`input_scale`/`strict` are the image processor's radiometric handling; "radiometry" is what
    was applied (offset, scale, source rule and its detail, per-band values, implausible bands), decided and checked
    before the image is captioned.
    """
    from transformers import pipeline

    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such image file or patch folder: {path}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a model directory (no config.json)")
    pipe = pipeline("image-text-to-text", model=model_dir, trust_remote_code=True)
    radiometry = {"input_offset": input_offset, "input_scale": input_scale, "strict": strict}
    for path in paths:
        metadata = pipe.processor.image_processor(path, return_metadata=True, **radiometry)["metadata"][0]
        messages = pipe.processor.build_messages(task, image=path, text=prompt)
        result = pipe(text=messages, max_new_tokens=max_new_tokens, return_full_text=False,
                      generate_kwargs={"do_sample": False}, processor_kwargs=dict(radiometry))  # it adds keys
        yield {"image": path, "text": result[0]["generated_text"].strip(), "radiometry": metadata["radiometry"]}


def run(args) -> None:
    for record in caption_images(args.model, args.paths, task=args.task, prompt=args.prompt,
                                 max_new_tokens=args.max_new_tokens, **radiometry_kwargs(args)):
        print(json.dumps(record, ensure_ascii=False), file=sys.stdout, flush=True)


def add_parser(subparsers):
    parser = subparsers.add_parser("caption", help="caption Sentinel-2 GeoTIFFs or patch folders with a model dir")
    parser.add_argument("--model", required=True, help="Spectral-LLaVA model directory")
    parser.add_argument("paths", nargs="+", help="GeoTIFF files or per-band patch folders")
    parser.add_argument("--task", choices=("caption", "classification"), default="caption",
                        help="task token put before the instruction (default: caption)")
    parser.add_argument("--prompt", default=None, help="instruction replacing the task's default one")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    add_radiometry_arguments(parser)
    parser.set_defaults(func=run)
    return parser


add_caption_parser = add_parser
