"""`spectral-llava map INPUT --model DIR --output OUT`: label (and caption) every tile of a Sentinel-2 scene
(scene.map_scene with scene.options.MapOptions)."""

import json

from spectral_llava.scene.options import MapOptions

from . import add_command, options_of


def run(args) -> None:
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
    from spectral_llava.scene import map_scene

    options = options_of(args, MapOptions)
    model, processor = load_model_and_processor(args.model)
    result = map_scene(args.input, model, processor, args.output, options)
    print(json.dumps({"output": str(result.output), "overview": str(result.overview) if result.overview else None,
                      "counts": result.counts}), flush=True)


def add_parser(subparsers):
    parser = add_command(
        subparsers, "map", [MapOptions], run,
        help="label / caption every tile of a Sentinel-2 scene, SAFE product or STAC item into GeoParquet/GeoJSON/"
             "GPKG or a COG label raster",
        description="Tiles INPUT (a GeoTIFF or COG, as a path or an http(s):// URL, a band folder, a Major-TOM cell, "
                    "a .SAFE product or its granule's IMG_DATA folder, a STAC item JSON file or item URL) on its 10 m "
                    "grid, runs the model on every tile and writes one row per tile (tile_id, row, col, labels, "
                    "caption, valid_fraction, footprint polygon), or with OUT.tif a Cloud-Optimized GeoTIFF label "
                    "raster with one pixel per tile step. STAC band assets are read windowed from their hrefs. Edge "
                    "tiles are shifted inward to stay full size; tiles without data are skipped and counted; the "
                    "radiometric handling is decided once for the scene and recorded in the output. See "
                    "docs/scene_mapping.md.")
    parser.add_argument("input", help="GeoTIFF or COG (path or URL), band folder, .SAFE product, granule or IMG_DATA "
                                      "folder, STAC item (.json file or item URL)")
    parser.add_argument("--model", required=True, metavar="DIR", help="Spectral-LLaVA model dir")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="OUT.parquet (GeoParquet, scene CRS), OUT.geojson (RFC 7946, WGS84), OUT.gpkg or "
                             "OUT.tif (COG label raster, one pixel per tile step)")
    return parser
