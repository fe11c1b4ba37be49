"""Bytes read over HTTP when a STAC item is mapped: what `spectral-llava map ITEM_URL` fetches from the band COGs.

The full Major-TOM cell (1068 x 1068 px, ../shared/data) is written as COGs the way Earth Search serves Sentinel-2
(DEFLATE, internal overviews, here 256 px blocks: a 1068 px cell is a tenth of a 10980 px tile, whose COGs have
1024 px blocks), described by an Earth Search-style item and served by the tests' 127.0.0.1 server, which honours
Range requests and counts the bytes it sends. Measured, each from a fresh GDAL cache (a fresh process): opening the
item (headers only), one 128 px tile, every 128 px tile of the scene (what map reads, batches of 8 through the map
engine's TileBatches), and the overview PNG's quicklook. Prints bytes and the fraction of the band COGs' bytes, and
the seconds per tile against the same tiles from the local COGs.

    python benchmarks/stac_http.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
MODES = ("headers", "one_tile", "every_tile", "quicklook")


def child(mode: str, item: str, root: str, served: bool) -> None:
    from stac_samples import RangeServer

    from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
    from spectral_llava.processing.scene_reader import SceneReader
    from spectral_llava.scene.reading import TileBatches
    from spectral_llava.scene.tiling import batches_of, plan_tiles

    with RangeServer(root) as server:
        document = json.load(open(item))
        if served:
            for asset in document["assets"].values():
                asset["href"] = server.url(asset["href"])
        start = time.perf_counter()
        reader = SceneReader(document, select_bands=SpectralImageProcessor().band_names)
        tiles = plan_tiles(reader.height, reader.width, 128, 128)
        if mode == "one_tile":
            reader.read(tiles[40].y, tiles[40].x, 128, 128)
        elif mode == "every_tile":
            batches = batches_of(tiles, 8)
            reading = TileBatches(reader, tiles, batches, SpectralImageProcessor())
            for k in range(len(batches)):
                assert "error" not in reading[k]
        elif mode == "quicklook":
            reader.read_overview(("B04", "B03", "B02"), 256)
        seconds = time.perf_counter() - start
        print(json.dumps({"bytes": server.total_bytes(), "seconds": seconds, "tiles": len(tiles)}))


def measure(mode: str, item: str, root: str, served: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, item, root, str(int(served))], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    from sentinel2_samples import MAJOR_TOM
    from stac_samples import earth_search_item, write_cogs

    if not os.path.isdir(MAJOR_TOM):
        sys.exit(f"needs the full Major-TOM cell at {MAJOR_TOM}")
    with tempfile.TemporaryDirectory() as root:
        cogs = write_cogs(MAJOR_TOM, os.path.join(root, "cogs"), blocksize=256)
        relative = {band: os.path.relpath(path, root) for band, path in cogs.items()}
        item = os.path.join(root, "item.json")
        with open(item, "w") as f:
            json.dump(earth_search_item({band: os.path.join(root, path) for band, path in relative.items()}), f)
        band_bytes = sum(os.path.getsize(path) for path in cogs.values())
        print(f"band COGs of the 1068 x 1068 px cell: {band_bytes / 2**20:.2f} MiB (12 bands, overviews included)")
        for mode in MODES:
            http = measure(mode, item, root, True)
            local = measure(mode, item, root, False)
            print(f"{mode:>10}: {http['bytes'] / 2**20:7.2f} MiB over HTTP = {http['bytes'] / band_bytes:6.1%} of the "
                  f"band COGs; {http['seconds']:.2f} s over HTTP, {local['seconds']:.2f} s from local files "
                  f"({http['tiles']} tiles of 128 px in the scene)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")
    else:
        main()
