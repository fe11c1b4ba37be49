"""Declared-size limits of the reading API (`sentinel2_io.check_declared_size`): tiny files declaring 200,000 x
200,000 pixels (a sparse GeoTIFF, a JPEG2000 header, a VRT mosaicking many files) are refused from their headers,
naming the file and its declared size, by `read_image`, `SceneReader`, the image processor and `pipeline()`, with
peak memory staying low (tracemalloc in process, ru_maxrss in a fresh process)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from declared_huge import (HUGE, declared, refused_lightly, write_declared_huge_jp2, write_mosaic_vrt,
                           write_sparse_geotiff)
from testing_utils import DATA, REPO

from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import (S2_TILE_SIDE, SCENE_WINDOW_LIMIT, WHOLE_IMAGE_LIMIT,
                                                    check_declared_size, read_header, read_image)

FOREST = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
MAJOR_TOM = os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R",
                         "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
KINDS = ["geotiff", "vrt", "jp2"]


def huge_input(kind: str, folder) -> tuple[str, str]:
    """(the path to pass, the file the refusal names) of a declared-huge input of `kind`."""
    if kind == "geotiff":
        path = str(write_sparse_geotiff(folder / "huge.tif"))
        return path, path
    if kind == "vrt":
        path = str(write_mosaic_vrt(folder / "huge.vrt"))
        return path, path
    band_folder = folder / "patch"  # a band folder whose 10 m B02 is the declared-huge JPEG2000
    band_folder.mkdir()
    jp2 = write_declared_huge_jp2(band_folder / "B02.jp2")
    return str(band_folder), str(jp2)


def test_the_test_files_are_tiny_and_declare_the_huge_size(tmp_path):
    for kind in KINDS:
        (tmp_path / kind).mkdir()
        _, file = huge_input(kind, tmp_path / kind)
        header = read_header(file)
        assert (header.width, header.height) == (HUGE, HUGE)
        assert os.path.getsize(file) < 100_000, kind


def test_check_declared_size_messages(tmp_path):
    header = read_header(write_sparse_geotiff(tmp_path / "huge.tif"))
    with pytest.raises(ValueError) as whole:
        check_declared_size(header)
    assert str(whole.value) == (
        f"{tmp_path / 'huge.tif'} declares 200000 x 200000 pixels, over the limit of whole-image reads (one "
        "Sentinel-2 tile, 10980 x 10980): 120,560,400 pixels; map larger scenes tile by tile with `spectral-llava map`")
    with pytest.raises(ValueError) as windowed:
        check_declared_size(header, SCENE_WINDOW_LIMIT)
    assert str(windowed.value) == (
        f"{tmp_path / 'huge.tif'} declares 200000 x 200000 pixels, over the limit of windowed scene reads (4 x 4 "
        "Sentinel-2 tiles, 43920 x 43920): 1,928,966,400 pixels; cut the scene into smaller files (e.g. with "
        "`gdal_translate -srcwin`) and map each")
    many_bands = read_header(write_sparse_geotiff(tmp_path / "bands.tif", S2_TILE_SIDE, [f"B{i}" for i in range(14)]))
    with pytest.raises(ValueError, match=r"bands\.tif declares 14 bands of 10980 x 10980 pixels, over the limit of "
                                         r"whole-image reads .*: 1,567,285,200 band pixels"):
        check_declared_size(many_bands)


def test_a_whole_sentinel2_tile_is_within_both_limits_and_a_larger_scene_only_within_the_map_limit(tmp_path):
    tile = read_header(write_sparse_geotiff(tmp_path / "tile.tif", S2_TILE_SIDE))
    assert check_declared_size(tile) is tile and check_declared_size(tile, SCENE_WINDOW_LIMIT) is tile
    four_tiles = write_sparse_geotiff(tmp_path / "four.tif", 2 * S2_TILE_SIDE)
    with SceneReader(four_tiles) as reader:  # headers only: map reads it window by window
        assert (reader.height, reader.width) == (2 * S2_TILE_SIDE, 2 * S2_TILE_SIDE)
    refused_lightly(lambda: read_image(four_tiles), declared(four_tiles, 21960, 21960) + "whole-image reads")
    assert WHOLE_IMAGE_LIMIT.max_pixels == 10980 ** 2 and SCENE_WINDOW_LIMIT.max_pixels == 16 * 10980 ** 2


@pytest.mark.parametrize("kind", KINDS)
def test_read_image_and_scene_reader_refuse_before_reading(kind, tmp_path):
    source, file = huge_input(kind, tmp_path)
    refused_lightly(lambda: read_image(source), declared(file) + r"whole-image reads \(one Sentinel-2 tile")
    refused_lightly(lambda: SceneReader(source), declared(file) + r"windowed scene reads \(4 x 4 Sentinel-2 tiles")


def test_a_band_folder_is_refused_before_any_band_is_read(tmp_path):
    folder = tmp_path / "patch"
    folder.mkdir()
    for band in ("B03", "B04"):  # real bands, listed (and opened) before the huge B8A
        shutil.copy(os.path.join(MAJOR_TOM, f"{band}.tif"), folder)
    huge = write_sparse_geotiff(folder / "B8A.tif", band_names=["B8A"])
    refused_lightly(lambda: read_image(str(folder)), declared(huge) + "whole-image reads")


@pytest.mark.parametrize("kind", KINDS)
def test_the_image_processor_refuses(kind, tmp_path):
    source, file = huge_input(kind, tmp_path)
    processor = SpectralImageProcessor(image_size=32)
    refused_lightly(lambda: processor(images=[FOREST, source]), declared(file) + "whole-image reads")


def test_pipeline_refuses(tiny_model_dir, tmp_path):
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=tiny_model_dir, trust_remote_code=True)  # the saved remote code
    source, file = huge_input("geotiff", tmp_path)
    messages = pipe.processor.build_messages("caption", image=source)
    refused_lightly(lambda: pipe(text=messages, max_new_tokens=2), declared(file) + "whole-image reads")


_RSS_SCRIPT = """
import json, resource, sys
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import read_image
processor = SpectralImageProcessor(image_size=32)
processor(images=[sys.argv[1]])  # warm up: GDAL drivers, torch kernels
with SceneReader(sys.argv[1]) as reader:
    reader.read(0, 0, 32, 32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = []
for source in sys.argv[2:]:
    for call in (read_image, SceneReader, lambda path: processor(images=[path])):
        try:
            call(source)
        except ValueError as error:
            refused.append(str(error))
print(json.dumps({"growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "refused": refused}))
"""


def test_refusing_keeps_peak_rss_flat_in_a_fresh_process(tmp_path):
    sources = []
    for kind in KINDS:
        (tmp_path / kind).mkdir()
        sources.append(huge_input(kind, tmp_path / kind)[0])
    done = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, FOREST, *sources], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["refused"]) == 9 and all("declares 200000 x 200000 pixels" in m for m in result["refused"])
    assert result["growth_kib"] < 32 * 1024, f"peak RSS grew {result['growth_kib'] / 1024:.0f} MiB while refusing"
