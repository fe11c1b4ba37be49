"""Scene mapping speed: `map_scene` against `pipeline()` called one cut-out tile at a time, the same model loaded once.

The scene is the shared Major-TOM cell (1068 x 1068 px); `--stride 400` picks 16 tiles of 128 px (offsets 0, 400, 800
and the edge tile at 940 in each direction). The pipeline path gets each of those tiles cut out beforehand as a
12-band GeoTIFF (in a folder named after the product, so the same radiometric rules apply) and answers the same
`[classification]` prompt greedily for each, one call per tile. Both paths share the model object of one
`pipeline("image-text-to-text", model=DIR, trust_remote_code=True)`. Rounds alternate the two paths so that load
from other jobs on shared cores hits both alike; the ratio of their median per-tile costs is the result (goal >= 2.5).
Each path is timed in wall-clock seconds and in CPU seconds (this process and its DataLoader workers; OpenMP threads
wait passively, so CPU time is work done, and stays meaningful when other jobs share the cores). Also printed:
tiles/s of `map` and the projected time for a full Sentinel-2 tile (10980 x 10980 px, 7396 tiles).

Default model: the quickstart's architecture (SpectralGPT ViT-B/8 at 128 x 128, random, + SmolLM2-135M, spectral_mean
layout with spatial pool 4: 16 visual tokens), built into a temporary dir; `--model DIR` uses another.

    python benchmarks/map.py [--model DIR] [--rounds 2] [--stride 400] [--batch-size 8] [--max-new-tokens 48]
"""

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CELL = os.path.join(os.path.dirname(REPO), "shared", "data", "major-tom-s2l2a", "0U", "0U_199R",
                    "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
FULL_TILE = 10980
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP: waiting threads sleep


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers, joined after each map)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cut_out_tiles(scene: str, tiles, folder: str) -> list[str]:
    """Each tile of the scene's 10 m grid as a 12-band GeoTIFF named by its band descriptions."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from spectral_llava.processing.sentinel2_io import read_image

    image = read_image(scene)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for tile in tiles:
        path = os.path.join(folder, f"tile_r{tile.row}_c{tile.col}.tif")
        data = image.data[:, tile.y:tile.y + tile.size, tile.x:tile.x + tile.size]
        transform = window_transform(Window(tile.x, tile.y, tile.size, tile.size), image.metadata["transform"])
        with rasterio.open(path, "w", driver="GTiff", width=tile.size, height=tile.size, count=len(data),
                           dtype="float32", crs=image.metadata["crs"], transform=transform) as dataset:
            dataset.write(data)
            dataset.descriptions = tuple(image.band_names)
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", metavar="DIR", help="model dir (default: build the quickstart architecture)")
    parser.add_argument("--scene", default=CELL)
    parser.add_argument("--stride", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not os.path.isdir(args.scene):
        raise SystemExit(f"no scene at {args.scene} (the Major-TOM cell of ../shared/data)")
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    import torch
    from transformers import pipeline

    from spectral_llava.inference import native_bf16
    from spectral_llava.processing.scene_reader import SceneReader
    from spectral_llava.scene import MapOptions, map_scene
    from spectral_llava.scene.tiling import plan_tiles

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from spectral_llava.modeling_spectral_llava.tools.build import build_model

            model_dir = os.path.join(tmp, "model")
            build_model(model_dir, image_size=128, layout="spectral_mean", spatial_pool=4)
        pipe = pipeline("image-text-to-text", model=model_dir, trust_remote_code=True)
        size = pipe.processor.image_processor.image_size
        reader = SceneReader(args.scene)
        tiles = plan_tiles(reader.height, reader.width, size, args.stride)
        cut_outs = cut_out_tiles(args.scene, tiles, os.path.join(tmp, "tiles", os.path.basename(args.scene)))
        generate = {"max_new_tokens": args.max_new_tokens, "do_sample": False}

        def run_pipeline(paths):
            for path in paths:
                messages = pipe.processor.build_messages("classification", image=path)
                pipe(text=messages, return_full_text=False, generate_kwargs=generate)

        def run_map(index):
            map_scene(args.scene, pipe.model, pipe.processor, os.path.join(tmp, f"map{index}.parquet"),
                      MapOptions(tile_size=size, stride=args.stride, batch_size=args.batch_size,
                                 max_new_tokens=args.max_new_tokens, no_overview=True))

        run_pipeline(cut_outs[:1])  # warm-up: kernels, page cache
        map_scene(args.scene, pipe.model, pipe.processor, os.path.join(tmp, "warm.parquet"),
                  MapOptions(tile_size=size, stride=1068 - size if reader.width > size else size,
                             batch_size=args.batch_size, max_new_tokens=4, no_overview=True))
        load = os.getloadavg()[0]
        per_tile = {"map": [], "pipeline": []}
        cpu_per_tile = {"map": [], "pipeline": []}
        for index in range(args.rounds):
            order = ("map", "pipeline") if index % 2 == 0 else ("pipeline", "map")
            for path in order:
                started, cpu_started = time.perf_counter(), cpu_seconds()
                run_map(index) if path == "map" else run_pipeline(cut_outs)
                per_tile[path].append((time.perf_counter() - started) / len(tiles))
                cpu_per_tile[path].append((cpu_seconds() - cpu_started) / len(tiles))
            print(f"round {index + 1}: map {per_tile['map'][-1]:.3f} s/tile ({cpu_per_tile['map'][-1]:.3f} CPU s), "
                  f"pipeline {per_tile['pipeline'][-1]:.3f} s/tile ({cpu_per_tile['pipeline'][-1]:.3f} CPU s), ratio "
                  f"{per_tile['pipeline'][-1] / per_tile['map'][-1]:.2f}x wall, "
                  f"{cpu_per_tile['pipeline'][-1] / cpu_per_tile['map'][-1]:.2f}x CPU", flush=True)

    map_cost, pipeline_cost = statistics.median(per_tile["map"]), statistics.median(per_tile["pipeline"])
    map_cpu, pipeline_cpu = statistics.median(cpu_per_tile["map"]), statistics.median(cpu_per_tile["pipeline"])
    full_tiles = len(plan_tiles(FULL_TILE, FULL_TILE, size, size))
    print(f"model: {model_dir}; {len(tiles)} tiles of {size} px from {os.path.basename(args.scene)}; "
          f"{torch.get_num_threads()} threads on {os.cpu_count()} cores (load average {load:.1f} at the start); "
          f"tower bf16 autocast: {native_bf16(torch.device('cpu'))}; batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens")
    print(f"per tile (median of {args.rounds} rounds): map {map_cost:.3f} s, pipeline() one tile at a time "
          f"{pipeline_cost:.3f} s -> map is {pipeline_cost / map_cost:.2f}x faster (goal >= 2.5x)")
    print(f"CPU seconds per tile: map {map_cpu:.3f}, pipeline {pipeline_cpu:.3f} -> {pipeline_cpu / map_cpu:.2f}x; on "
          f"{os.cpu_count()} otherwise idle cores map would do about {os.cpu_count() / map_cpu:.2f} tiles/s")
    print(f"map: {1 / map_cost:.2f} tiles/s measured; a full {FULL_TILE} x {FULL_TILE} px tile ({full_tiles} tiles of "
          f"{size} px) takes {full_tiles * map_cost / 3600:.2f} h at that rate, about "
          f"{full_tiles * map_cpu / os.cpu_count() / 3600:.2f} h on idle cores")


if __name__ == "__main__":
    main()
