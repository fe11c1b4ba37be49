"""`spectral-llava caption --model DIR PATH...`: one JSON line `{"image": PATH, "text": ...}` per image."""

import json
import os
import sys


def caption_images(model_dir: str, paths: list[str], task: str = "caption", prompt: str | None = None,
                   max_new_tokens: int = 64):
    """Yield `{"image": path, "text": generated}` for each GeoTIFF / patch folder, greedy decoding, using the
    model dir's own pipeline (`pipeline("image-text-to-text", trust_remote_code=True)`)."""
    from transformers import pipeline

    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such image file or patch folder: {path}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a model directory (no config.json)")
    pipe = pipeline("image-text-to-text", model=model_dir, trust_remote_code=True)
    for path in paths:
        messages = pipe.processor.build_messages(task, image=path, text=prompt)
        result = pipe(text=messages, max_new_tokens=max_new_tokens, return_full_text=False,
                      generate_kwargs={"do_sample": False})
        yield {"image": path, "text": result[0]["generated_text"].strip()}


def run(args) -> None:
    for record in caption_images(args.model, args.paths, task=args.task, prompt=args.prompt,
                                 max_new_tokens=args.max_new_tokens):
        print(json.dumps(record, ensure_ascii=False), file=sys.stdout, flush=True)


def add_parser(subparsers):
    parser = subparsers.add_parser("caption", help="caption Sentinel-2 GeoTIFFs or patch folders with a model dir")
    parser.add_argument("--model", required=True, help="Spectral-LLaVA model directory")
    parser.add_argument("paths", nargs="+", help="GeoTIFF files or per-band patch folders")
    parser.add_argument("--task", choices=("caption", "classification"), default="caption",
                        help="task token put before the instruction (default: caption)")
    parser.add_argument("--prompt", default=None, help="instruction replacing the task's default one")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.set_defaults(func=run)
    return parser


add_caption_parser = add_parser
