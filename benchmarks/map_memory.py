"""Peak memory of scene reading and mapping: windowed tiles (what `spectral-llava map` does) against reading the
whole scene, and `map` itself on a full 10980 x 10980 Sentinel-2 tile against a 1068 x 1068 cell.

Each measurement runs in a fresh process: peak RSS (ru_maxrss) above the RSS after imports (and, for `map`, after
the model is loaded), and the peak of Python-visible allocations (tracemalloc, which sees numpy arrays).

Reading (`--mode reading`): a Major-TOM cell (1068 x 1068 px, LZW GeoTIFF bands), and a mosaic of 4 x 4 such cells
(4272 x 4272 px) built from the real bands of both shared cells and written as a Level-2A SAFE product (JPEG2000,
1024 px blocks, as ESA ships them). The windowed pass reads every 128 px tile in batches of 8 through the map
engine's TileBatches (read + resample + normalise), in its strip-by-strip order; the whole-scene pass is
`read_image`. Prints the numbers and the projection for a full Sentinel-2 tile (10980 x 10980 px).

Mapping (`--mode map`): `map_scene` (default settings: 1 DataLoader worker reading windows, batches of 8, the
overview PNG) with `--max-tiles N` tiles of 128 px spread over the whole scene, on the Major-TOM cell and on a
10980 x 10980 scene: a 12-band VRT mosaicking the real bands of both cells 11 x 11 times (20 m and 60 m bands
resampled bilinearly by GDAL onto the 10 m grid), named after the cell's product. Peak RSS of the main process and
of the reading worker, both scenes in the same run. Default model: the quickstart architecture (SpectralGPT ViT-B/8
at 128 x 128, random, + SmolLM2-135M, spectral_mean layout, spatial pool 4), built into a temporary dir.

    python benchmarks/map_memory.py [--mode all|reading|map] [--cells 4] [--max-tiles 64] [--model DIR] [--keep DIR]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data", "major-tom-s2l2a")
CELLS = [os.path.join(SHARED, "0U", "0U_199R", "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"),
         os.path.join(SHARED, "199U", "199U_1099R", "S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_20230924T183543")]
BANDS = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20,
         "B12": 20, "B01": 60, "B09": 60}
BANDS_IN_MODEL_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
FULL_TILE = 10980
MAP_NEW_TOKENS = 8


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def child(mode: str, source: str) -> None:
    import tracemalloc

    from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
    from spectral_llava.processing.scene_reader import SceneReader
    from spectral_llava.processing.sentinel2_io import read_image
    from spectral_llava.scene.reading import TileBatches
    from spectral_llava.scene.tiling import batches_of, plan_tiles

    processor = SpectralImageProcessor(image_size=128)
    base = rss_mib()
    tracemalloc.start()
    started = time.perf_counter()
    if mode == "windowed":
        reader = SceneReader(source, select_bands=processor.band_names)
        tiles = plan_tiles(reader.height, reader.width, 128, 128)
        reading = TileBatches(reader, tiles, batches_of(tiles, 8), processor)
        for k in range(len(reading)):
            assert reading[k]["pixel_values"].shape[0] == len(reading.batches[k])
        count = len(tiles)
    else:
        image = read_image(source, select_bands=processor.band_names)
        count = image.data.shape[1] * image.data.shape[2]
    seconds = time.perf_counter() - started
    python_peak = tracemalloc.get_traced_memory()[1] / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base": base, "peak": peak, "python_peak": python_peak, "seconds": seconds, "count": count}))


def child_map(source: str, model_dir: str, max_tiles: str) -> None:
    import warnings

    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
    from spectral_llava.scene import MapOptions, map_scene

    warnings.simplefilter("ignore")
    model, processor = load_model_and_processor(model_dir, device="cpu")
    base = rss_mib()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = map_scene(source, model, processor, os.path.join(out, "tiles.parquet"),
                           MapOptions(tile_size=128, max_tiles=int(max_tiles), max_new_tokens=MAP_NEW_TOKENS))
        seconds = time.perf_counter() - started
    own, worker = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"base": base, "peak": own.ru_maxrss / 1024, "worker_peak": worker.ru_maxrss / 1024,
                      "seconds": seconds, "count": result.counts["tiles"], "mapped": result.counts["mapped"]}))


def measure(mode: str, source: str, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, source, *extra], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_mosaic(root: str, cells: int) -> str:
    """A SAFE L2A product whose bands are a cells x cells mosaic of the two real Major-TOM cells' bands."""
    import numpy as np
    import rasterio

    safe = os.path.join(root, "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419.SAFE")
    img_data = os.path.join(safe, "GRANULE", "L2A_T33NZA_A036711_20220706T090827", "IMG_DATA")
    for band, resolution in BANDS.items():
        sources = []
        for cell in CELLS:
            with rasterio.open(os.path.join(cell, f"{band}.tif")) as dataset:
                sources.append(dataset.read(1))
                if cell == CELLS[0]:
                    profile = dataset.profile
        rows = [np.hstack([sources[(r + c) % 2] for c in range(cells)]) for r in range(cells)]
        data = np.vstack(rows)
        for key in ("compress", "tiled", "interleave", "blockxsize", "blockysize", "predictor"):
            profile.pop(key, None)
        profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES", height=data.shape[0],
                       width=data.shape[1])
        folder = os.path.join(img_data, f"R{resolution}m")
        os.makedirs(folder, exist_ok=True)
        with rasterio.open(os.path.join(folder, f"T33NZA_20220706T085611_{band}_{resolution}m.jp2"), "w",
                           **profile) as dataset:
            dataset.write(data, 1)
    return safe


def write_full_tile_vrt(root: str, side: int = FULL_TILE) -> str:
    """A 12-band VRT of side x side px at 10 m whose bands mosaic the two real Major-TOM cells' band files, cell
    after cell (20 m and 60 m files resampled bilinearly by GDAL), in a folder named after the first cell's
    product (so the product's radiometric rule applies), georeferenced as the first cell."""
    import rasterio

    cell = 1068
    repeats = -(-side // cell)
    with rasterio.open(os.path.join(CELLS[0], "B02.tif")) as reference:
        crs, transform = reference.crs.to_wkt(), reference.transform
    bands = []
    for number, band in enumerate(BANDS_IN_MODEL_ORDER, start=1):
        sources = []
        for r in range(repeats):
            for c in range(repeats):
                path = os.path.join(CELLS[(r + c) % 2], f"{band}.tif")
                size = cell * 10 // BANDS[band]
                sources.append(f'<SimpleSource resampling="bilinear"><SourceFilename relativeToVRT="0">{path}'
                               f'</SourceFilename><SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" '
                               f'xSize="{size}" ySize="{size}"/><DstRect xOff="{c * cell}" yOff="{r * cell}" '
                               f'xSize="{cell}" ySize="{cell}"/></SimpleSource>')
        bands.append(f'<VRTRasterBand dataType="UInt16" band="{number}"><Description>{band}</Description>'
                     f'{"".join(sources)}</VRTRasterBand>')
    folder = os.path.join(root, os.path.basename(CELLS[0]))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"full_tile_{side}.vrt")
    geotransform = ", ".join(repr(value) for value in transform.to_gdal())
    with open(path, "w") as f:
        f.write(f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}"><SRS>{crs}</SRS>'
                f"<GeoTransform>{geotransform}</GeoTransform>{''.join(bands)}</VRTDataset>")
    return path


def report(name: str, size: int, windowed: dict, whole: dict) -> None:
    print(f"{name} ({size} x {size} px, {windowed['count']} tiles of 128 px):")
    print(f"  windowed tiles : peak RSS +{windowed['peak'] - windowed['base']:.0f} MiB above {windowed['base']:.0f} "
          f"MiB after imports, Python/numpy peak {windowed['python_peak']:.1f} MiB, "
          f"{windowed['count'] / windowed['seconds']:.1f} tiles/s read + preprocessed (1 process)")
    print(f"  whole scene    : peak RSS +{whole['peak'] - whole['base']:.0f} MiB, Python/numpy peak "
          f"{whole['python_peak']:.0f} MiB ({whole['python_peak'] * 2**20 / whole['count']:.0f} bytes per 10 m "
          "pixel)")


def report_map(name: str, result: dict) -> None:
    print(f"  {name}: {result['count']} tiles ({result['mapped']} mapped) in {result['seconds']:.0f} s; peak RSS "
          f"main process {result['peak']:.0f} MiB (+{result['peak'] - result['base']:.0f} MiB above the "
          f"{result['base']:.0f} MiB after loading the model), reading worker {result['worker_peak']:.0f} MiB")


def run_reading(cells: int, keep: str | None) -> None:
    report("Major-TOM cell, GeoTIFF bands", 1068, measure("windowed", CELLS[0]), measure("whole", CELLS[0]))
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or tmp
        started = time.perf_counter()
        safe = write_mosaic(root, cells)
        size = 1068 * cells
        print(f"(mosaic written in {time.perf_counter() - started:.0f} s)")
        windowed, whole = measure("windowed", safe), measure("whole", safe)
        report(f"{cells} x {cells} mosaic, SAFE JPEG2000", size, windowed, whole)
    bytes_per_pixel = whole["python_peak"] * 2**20 / whole["count"]
    print(f"projection for {FULL_TILE} x {FULL_TILE} px: windowed stays at the batch-bound figure above (it does not "
          f"grow with the scene: {windowed['peak'] - windowed['base']:.0f} MiB here for {size} px); the whole-scene "
          f"read needs {bytes_per_pixel * FULL_TILE ** 2 / 2**30:.1f} GiB")


def run_map(max_tiles: int, model_dir: str | None, keep: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if model_dir is None:
            from spectral_llava.modeling_spectral_llava.tools.build import build_model

            model_dir = os.path.join(tmp, "model")
            build_model(model_dir, image_size=128, layout="spectral_mean", spatial_pool=4)
        scene = write_full_tile_vrt(keep or tmp)
        print(f"map --max-tiles {max_tiles}, tiles of 128 px, batches of 8, {MAP_NEW_TOKENS} new tokens, overview "
              f"written (model {model_dir}):")
        cell, full = measure("map", CELLS[0], model_dir, str(max_tiles)), measure("map", scene, model_dir,
                                                                                   str(max_tiles))
    report_map("Major-TOM cell, 1068 x 1068 px ", cell)
    report_map(f"full tile, {FULL_TILE} x {FULL_TILE} px (VRT)", full)
    print(f"  full tile / cell: main process {full['peak'] / cell['peak']:.2f}x, reading worker "
          f"{full['worker_peak'] / cell['worker_peak']:.2f}x peak RSS")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("all", "reading", "map"), default="all")
    parser.add_argument("--cells", type=int, default=4, help="mosaic side in Major-TOM cells (default 4)")
    parser.add_argument("--max-tiles", type=int, default=64, help="tiles mapped per scene in --mode map")
    parser.add_argument("--model", metavar="DIR", help="model dir for --mode map (default: build the quickstart's)")
    parser.add_argument("--keep", metavar="DIR", help="write the mosaics here and keep them")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "map":
            child_map(*args.child[1:])
        else:
            child(*args.child)
        return
    if not all(os.path.isdir(cell) for cell in CELLS):
        raise SystemExit(f"needs the Major-TOM cells of ../shared/data ({SHARED})")
    if args.mode in ("all", "reading"):
        run_reading(args.cells, args.keep)
    if args.mode in ("all", "map"):
        run_map(args.max_tiles, args.model, args.keep)


if __name__ == "__main__":
    main()
