"""`map`'s declared-size limit (4 x 4 Sentinel-2 tiles, windowed) and `--max-tiles`: a scene declaring 200,000 x
200,000 pixels is refused from its headers, a whole 10980 x 10980 tile is mapped over a few tiles spread across it,
and the tiles `--max-tiles` keeps get the rows a full run gives them."""

import json
import os

import pytest
from declared_huge import declared, refused_lightly, write_mosaic_vrt, write_sparse_geotiff
from testing_utils import DATA

from spectral_llava.scene import map_scene, read_tiles
from spectral_llava.scene.options import MapOptions

CROP = os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R",
                    "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
WINDOWED = r"windowed scene reads \(4 x 4 Sentinel-2 tiles, 43920 x 43920\): 1,928,966,400 pixels"


def test_map_refuses_a_declared_huge_scene_and_writes_nothing(tiny_map_model, tmp_path):
    huge = write_sparse_geotiff(tmp_path / "huge.tif")
    out = tmp_path / "out"
    out.mkdir()
    refused_lightly(lambda: map_scene(huge, *tiny_map_model, out / "tiles.parquet", MapOptions(max_tiles=4)),
                    declared(huge) + WINDOWED)
    vrt = write_mosaic_vrt(tmp_path / "mosaic.vrt")  # 25 files mosaicked over 200,000 x 200,000 pixels
    refused_lightly(lambda: map_scene(vrt, *tiny_map_model, out / "tiles.parquet"), declared(vrt) + WINDOWED)
    assert os.listdir(out) == []


def test_cli_map_refuses_a_declared_huge_scene(tiny_map_model_dir, tmp_path, capsys):
    from spectral_llava.cli import main

    huge = write_sparse_geotiff(tmp_path / "huge.tif")
    assert main(["map", str(huge), "--model", tiny_map_model_dir, "--output", str(tmp_path / "x.parquet")]) == 2
    assert f"spectral-llava map: error: {huge} declares 200000 x 200000 pixels" in capsys.readouterr().err


def test_a_whole_sentinel2_tile_is_mapped_over_max_tiles_spread_across_it(tiny_map_model, tmp_path):
    scene = write_mosaic_vrt(tmp_path / "T33NZA.vrt", side=10980)  # 12 bands, 5 x 5 files of constant values
    result = map_scene(scene, *tiny_map_model, tmp_path / "tiles.parquet",
                       MapOptions(max_tiles=4, no_overview=True, max_new_tokens=4))
    assert result.counts["tiles"] == result.counts["mapped"] == 4
    assert [(row["row"], row["col"]) for row in result.rows] == [(0, 0), (0, 343), (343, 0), (343, 343)]  # 32 px
    assert result.rows[-1]["tile_id"] == "T33NZA_t32s32_r343_c343"
    assert result.rows[-1]["geometry"].bounds == (300_000 + 10948 * 10, 5_000_000 - 10980 * 10,
                                                  300_000 + 10980 * 10, 5_000_000 - 10948 * 10)
    assert result.metadata["max_tiles"] == 4


def test_max_tiles_maps_the_full_runs_rows_at_the_kept_positions(tiny_map_model, tiny_map_model_dir, tmp_path,
                                                                capsys):
    from spectral_llava.cli import main

    full = map_scene(CROP, *tiny_map_model, tmp_path / "full.parquet",
                     MapOptions(tile_size=40, batch_size=1, no_overview=True, max_new_tokens=4))  # 120 px: 3 x 3 tiles
    output = tmp_path / "four.parquet"
    assert main(["map", CROP, "--model", tiny_map_model_dir, "--output", str(output), "--tile-size", "40",
                 "--batch-size", "1", "--max-tiles", "4", "--max-new-tokens", "4", "--no-overview"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["counts"]["tiles"] == 4
    frame, metadata = read_tiles(output)
    assert list(zip(frame["row"], frame["col"])) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    expected = {row["tile_id"]: row["labels"] for row in full.rows}
    assert {tile_id: expected[tile_id] for tile_id in frame["tile_id"]} == dict(zip(frame["tile_id"],
                                                                                     frame["labels"]))
    assert metadata["max_tiles"] == 4 and metadata["counts"]["tiles"] == 4


def test_max_tiles_option_is_checked():
    assert MapOptions(max_tiles=16).max_tiles == 16 and MapOptions().max_tiles is None
    with pytest.raises(ValueError, match=r"^--max-tiles 0: expected a positive integer$"):
        MapOptions(max_tiles=0)


def test_resume_refuses_a_partial_run_with_another_max_tiles(tiny_map_model, tmp_path):
    from spectral_llava.scene.outputs import Checkpoints

    output = tmp_path / "x.parquet"
    Checkpoints(output).start({"source": CROP, "max_tiles": 4}, resume=False)
    with pytest.raises(ValueError, match=r"--resume: the partial run in .*max_tiles: 4 then, 9 now"):
        map_scene(CROP, *tiny_map_model, output, MapOptions(resume=True, max_tiles=9, no_overview=True))
