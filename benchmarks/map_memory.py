"""Peak memory of scene reading: windowed tiles (what `spectral-llava map` does) against reading the whole scene.

Each measurement runs in a fresh process: peak RSS (ru_maxrss) above the RSS after imports, and the peak of
Python-visible allocations (tracemalloc, which sees numpy arrays). Inputs: a Major-TOM cell (1068 x 1068 px, LZW
GeoTIFF bands), and a mosaic of 4 x 4 such cells (4272 x 4272 px) built from the real bands of both shared cells and
written as a Level-2A SAFE product (JPEG2000, 1024 px blocks, as ESA ships them). The windowed pass reads every
128 px tile in batches of 8 through the map engine's TileBatches (read + resample + normalise), in its
strip-by-strip order; the whole-scene pass is `read_image`. Prints the numbers and the projection for a full
Sentinel-2 tile (10980 x 10980 px).

    python benchmarks/map_memory.py [--cells 4] [--keep DIR]
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
FULL_TILE = 10980


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


def measure(mode: str, source: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, source], env=env, check=True,
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


def report(name: str, size: int, windowed: dict, whole: dict) -> None:
    print(f"{name} ({size} x {size} px, {windowed['count']} tiles of 128 px):")
    print(f"  windowed tiles : peak RSS +{windowed['peak'] - windowed['base']:.0f} MiB above {windowed['base']:.0f} "
          f"MiB after imports, Python/numpy peak {windowed['python_peak']:.1f} MiB, "
          f"{windowed['count'] / windowed['seconds']:.1f} tiles/s read + preprocessed (1 process)")
    print(f"  whole scene    : peak RSS +{whole['peak'] - whole['base']:.0f} MiB, Python/numpy peak "
          f"{whole['python_peak']:.0f} MiB ({whole['python_peak'] * 2**20 / whole['count']:.0f} bytes per 10 m "
          "pixel)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=4, help="mosaic side in Major-TOM cells (default 4)")
    parser.add_argument("--keep", metavar="DIR", help="write the mosaic here and keep it")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not all(os.path.isdir(cell) for cell in CELLS):
        raise SystemExit(f"needs the Major-TOM cells of ../shared/data ({SHARED})")
    report("Major-TOM cell, GeoTIFF bands", 1068, measure("windowed", CELLS[0]), measure("whole", CELLS[0]))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        started = time.perf_counter()
        safe = write_mosaic(root, args.cells)
        size = 1068 * args.cells
        print(f"(mosaic written in {time.perf_counter() - started:.0f} s)")
        windowed, whole = measure("windowed", safe), measure("whole", safe)
        report(f"{args.cells} x {args.cells} mosaic, SAFE JPEG2000", size, windowed, whole)
    bytes_per_pixel = whole["python_peak"] * 2**20 / whole["count"]
    print(f"projection for {FULL_TILE} x {FULL_TILE} px: windowed stays at the batch-bound figure above (it does not "
          f"grow with the scene: {windowed['peak'] - windowed['base']:.0f} MiB here for {size} px); the whole-scene "
          f"read needs {bytes_per_pixel * FULL_TILE ** 2 / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
