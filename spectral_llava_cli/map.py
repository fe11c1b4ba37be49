"""`spectral-llava map INPUT --model DIR --output OUT`: label (and caption) every tile of a Sentinel-2 scene."""

from __future__ import annotations

import argparse
import json
import sys


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def run(args) -> None:
    from scene import map_scene
    from modeling_spectral_llava.loading import load_model_and_processor

    model, processor = load_model_and_processor(args.model)
    result = map_scene(args.input, model, processor, args.output, task=args.task, tile_size=args.tile_size,
                       stride=args.stride, batch_size=args.batch_size, engine=args.engine,
                       ray_address=args.ray_address, resume=args.resume,
                       overview=False if args.no_overview else args.overview, input_offset=args.input_offset,
                       input_scale=args.input_scale, strict=args.strict, max_new_tokens=args.max_new_tokens,
                       num_workers=args.workers, ray_actors=args.ray_actors,
                       ray_cpus_per_actor=args.ray_cpus_per_actor, ray_gpus_per_actor=args.ray_gpus_per_actor)
    print(json.dumps({"output": str(result.output), "overview": str(result.overview) if result.overview else None,
                      "counts": result.counts}), file=sys.stdout, flush=True)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "map", help="label / caption every tile of a Sentinel-2 scene or SAFE product into GeoParquet/GeoJSON/GPKG",
        description="Tiles INPUT (a GeoTIFF or COG, a band folder, a Major-TOM cell, a .SAFE product or its granule's "
                    "IMG_DATA folder) on its 10 m grid, runs the model on every tile and writes one row per tile "
                    "(tile_id, row, col, labels, caption, valid_fraction, footprint polygon). Edge tiles are shifted "
                    "inward to stay full size; tiles without data are skipped and counted. See "
                    "docs/scene_mapping.md.")
    parser.add_argument("input", help="GeoTIFF, band folder, .SAFE product, granule or IMG_DATA folder")
    parser.add_argument("--model", required=True, metavar="DIR", help="Spectral-LLaVA model dir")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="OUT.parquet (GeoParquet, scene CRS), OUT.geojson (RFC 7946, WGS84) or OUT.gpkg")
    parser.add_argument("--task", choices=("classification", "caption", "both"), default="classification")
    parser.add_argument("--tile-size", type=_positive, metavar="PX",
                        help="tile side in 10 m pixels (default: the model's image size, 128 = 1.28 km)")
    parser.add_argument("--stride", type=_positive, metavar="PX", help="pixels between tiles (default: --tile-size)")
    parser.add_argument("--batch-size", type=_positive, default=8, help="tiles per model call (default 8)")
    parser.add_argument("--max-new-tokens", type=_positive, metavar="N",
                        help="generated tokens per answer (default 48 for labels, 64 for captions)")
    parser.add_argument("--workers", type=int, metavar="N", help="DataLoader workers reading tiles (default 1)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="Ray cluster to join (e.g. auto or ray://head:10001; default: start a local instance)")
    parser.add_argument("--ray-actors", type=_positive, default=1, metavar="N", help="model actors (default 1)")
    parser.add_argument("--ray-cpus-per-actor", type=float, default=1, metavar="C")
    parser.add_argument("--ray-gpus-per-actor", type=float, default=0, metavar="G")
    parser.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoints")
    parser.add_argument("--overview", metavar="PNG", help="overview image (default: OUT_overview.png beside OUT)")
    parser.add_argument("--no-overview", action="store_true", help="write no overview image")
    parser.add_argument("--input-offset", type=float, metavar="DN",
                        help="radiometric offset added to the stored values (overrides product metadata)")
    parser.add_argument("--input-scale", type=float, metavar="S",
                        help="radiometric scale applied after the offset (reflectance x 10000 = (DN + offset) x S)")
    parser.add_argument("--strict", action="store_true", help="implausible radiometry is an error, not a warning")
    parser.set_defaults(func=run)
    return parser
