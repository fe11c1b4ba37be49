"""`caption`, `classify` (with and without --resize-whole-image) and `build-dataset` refuse a tiny GeoTIFF declaring
200,000 x 200,000 pixels from its header: a clear error naming the file and its declared size, little memory."""

import json
import os
import shutil

import pytest
from declared_huge import declared, lightly, refused_lightly, write_sparse_geotiff
from test_commands import run_cli
from testing_utils import DATA

from spectral_llava.spectral_inst import BuildConfig
from spectral_llava.spectral_inst.builder import discover
from spectral_llava.spectral_inst.patches import read_patch_bands

FOREST = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")


@pytest.mark.parametrize("command", [["caption"], ["classify"], ["caption", "--resize-whole-image"],
                                     ["classify", "--resize-whole-image"]], ids=" ".join)
def test_caption_and_classify_refuse_a_declared_huge_raster(command, tiny_model_dir, tmp_path):
    huge = write_sparse_geotiff(tmp_path / "huge.tif")
    code, out, err = lightly(lambda: run_cli(*command, "--model", tiny_model_dir, str(huge), "--max-new-tokens", "2"))
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == (
        f"spectral-llava {command[0]}: error: {huge} declares 200000 x 200000 pixels, over the limit of whole-image "
        "reads (one Sentinel-2 tile, 10980 x 10980): 120,560,400 pixels; map larger scenes tile by tile with "
        "`spectral-llava map`")


def test_build_dataset_skips_and_reports_a_declared_huge_patch(tmp_path):
    eurosat = tmp_path / "eurosat"
    (eurosat / "Forest").mkdir(parents=True)
    shutil.copy(FOREST, eurosat / "Forest")
    huge = write_sparse_geotiff(eurosat / "Forest" / "Forest_2.tif")
    output = tmp_path / "out"
    code, out, _ = run_cli("build-dataset", "--eurosat", str(eurosat), "--output", str(output), "--num-proc", "1")
    assert code == 0
    summary = json.loads(out)
    assert summary["patches_ok"] == 1 and summary["skipped"] == 1
    [skipped] = json.loads((output / "report.json").read_text())["skipped"]
    assert skipped["id"] == "Forest_2" and skipped["path"] == str(huge)
    assert skipped["reason"].startswith("ValueError: ")
    assert f"{huge} declares 200000 x 200000 pixels, over the limit of whole-image reads" in skipped["reason"]
    # the builder's read of that patch refuses it with little memory
    tasks, _, _ = discover(BuildConfig(output=str(tmp_path / "again"), eurosat=str(eurosat)))
    task = next(task for task in tasks if task.id == "Forest_2")
    refused_lightly(lambda: read_patch_bands(task), declared(huge) + "whole-image reads")
