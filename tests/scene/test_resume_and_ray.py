"""A `spectral-llava map` killed with SIGKILL and continued with --resume ends with the fresh run's rows; the Ray
engine writes the local engine's rows."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from testing_utils import DATA, REPO
from spectral_llava.scene import MapOptions, map_scene, read_tiles
from spectral_llava.scene.outputs import Checkpoints

CROP = os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R",
                    "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
SETTINGS = MapOptions(tile_size=32, stride=16, batch_size=3, task="both", max_new_tokens=6,
                      no_overview=True)  # 49 tiles, 17 batches


def comparable(rows):
    return [{**{k: v for k, v in row.items() if k != "geometry"}, "wkt": row["geometry"].wkt} for row in rows]


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_rows_once(tiny_map_model, tiny_map_model_dir, tmp_path):
    output = tmp_path / "killed.parquet"
    work = Checkpoints(output).dir
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "spectral_llava.cli", "map", CROP, "--model", tiny_map_model_dir,
               "--output", str(output), "--tile-size", "32", "--stride", "16", "--batch-size", "3", "--task", "both",
               "--max-new-tokens", "6", "--no-overview"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(work.glob("batch-*.parquet"))) < 2:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not output.exists()
    done = Checkpoints(output).done()
    assert 2 <= len(done) < 17

    resumed = map_scene(CROP, *tiny_map_model, output, dataclasses.replace(SETTINGS, resume=True))
    fresh = map_scene(CROP, *tiny_map_model, tmp_path / "fresh.parquet", SETTINGS)
    assert resumed.counts["resumed"] == 3 * len(done) and fresh.counts["resumed"] == 0
    assert resumed.counts["tiles"] == resumed.counts["mapped"] == 49
    assert comparable(resumed.rows) == comparable(fresh.rows)
    frame, _ = read_tiles(output)
    assert frame["tile_id"].is_unique and len(frame) == 49
    assert frame["caption"].tolist() == [row["caption"] for row in fresh.rows]
    assert not work.exists()


@pytest.mark.slow
def test_ray_engine_equals_the_local_engine_row_by_row(tiny_map_model, tmp_path):
    ray = pytest.importorskip("ray")
    settings = MapOptions(tile_size=32, stride=24, batch_size=4, task="both", max_new_tokens=8, no_overview=True)
    local = map_scene(CROP, *tiny_map_model, tmp_path / "local.parquet", settings)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": REPO, "OMP_NUM_THREADS": str(torch.get_num_threads())}})
    try:
        distributed = map_scene(CROP, *tiny_map_model, tmp_path / "ray.parquet",
                                dataclasses.replace(settings, engine="ray"))
    finally:
        ray.shutdown()
    assert distributed.counts == local.counts and local.counts["tiles"] == 25
    assert comparable(distributed.rows) == comparable(local.rows)
    assert len({row["caption"] for row in local.rows}) > 1
    frame, metadata = read_tiles(tmp_path / "ray.parquet")
    assert metadata["engine"] == "ray" and frame["tile_id"].tolist() == [row["tile_id"] for row in local.rows]
