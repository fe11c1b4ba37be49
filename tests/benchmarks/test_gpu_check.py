"""benchmarks/gpu_check.py --tiny: the GPU check's code path on the CPU, run as the lent machine runs it (a plain
checkout that is not installed, no rasterio), writes every section with its setting, measurement, estimate and
status."""

import json
import math
import os
import subprocess
import sys
import textwrap

from testing_utils import REPO

# Run at interpreter start (PYTHONPATH): hide the editable install of this project and make rasterio unimportable,
# then check that neither is importable any more, so that only the checkout's own path can serve the script.
SITECUSTOMIZE = textwrap.dedent("""
    import importlib.abc
    import importlib.util
    import sys

    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    sys.path_importer_cache.clear()


    class NoRasterio(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "rasterio":
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None


    sys.meta_path.insert(0, NoRasterio())
    if importlib.util.find_spec("spectral_llava") is not None:
        raise SystemExit("the test meant spectral_llava not to be installed, but it is importable")
""")
MODEL_CODE = {"spectral_llava", "spectral_llava.modeling_spectral_llava", "spectral_llava.train", "spectral_llava.utils",
              "spectral_llava.modeling_spectral_llava.configuration_spectral_llava",
              "spectral_llava.modeling_spectral_llava.modeling_spectral_llava",
              "spectral_llava.modeling_spectral_llava.modeling_spectralgpt", "spectral_llava.train.lora",
              "spectral_llava.train.options", "spectral_llava.train.quantization", "spectral_llava.utils.fileio"}


def run_tiny_check(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # rasterio and the project stay unimportable in the check's interpreter (the probe runs the same sitecustomize)
    probe = subprocess.run([sys.executable, "-c", "import rasterio"], env=env, capture_output=True, text=True)
    assert "blocked by the test" in probe.stderr
    output = tmp_path / "out"
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--output", str(output)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((output / "gpu_check.json").read_text()), (output / "gpu_check.md").read_text()


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_gpu_check_writes_every_section(tmp_path):
    data, table = run_tiny_check(tmp_path)
    assert data["mode"] == "tiny"
    assert set(data["project_modules"]) <= MODEL_CODE  # model code only: no readers, scene or training loop
    sections = data["sections"]
    assert list(sections) == ["train_bf16", "qlora", "tower", "decode"]
    for section in sections.values():
        assert section["status"] in ("ok", "skipped") and positive(section["seconds"])
        for row in section["rows"]:
            assert set(row) >= {"setting", "measurement", "estimate", "status", "reason"}

    training = sections["train_bf16"]["rows"]
    assert [row["setting"]["gradient_checkpointing"] for row in training] == [False, True]
    for row in training:
        assert row["status"] == "ok" and row["reason"] is None
        assert row["setting"]["sequence_tokens"] == 16 + 16  # 4 groups x 2 x 2 visual tokens + 16 text tokens
        measured = row["measurement"]
        assert positive(measured["steps_per_s"]) and math.isclose(measured["steps_per_s"] * measured["step_s"], 1)
        assert abs(measured["loss"] - math.log(512)) < 1.0  # random weights over a 512-token vocabulary
        assert measured["peak_allocated_gib"] is None and measured["memory_note"] == "no peak-memory counter on CPU"
        assert row["estimate"]["source"].startswith("scripts/memory_estimate.py") and positive(row["estimate"]["peak_gib"])
    no_checkpointing, checkpointing = (row["estimate"] for row in training)
    assert (no_checkpointing["table_column"], checkpointing["table_column"]) == ("1 GPU", "1 GPU, checkpointing")
    assert checkpointing["peak_gib"] < no_checkpointing["peak_gib"]

    qlora = sections["qlora"]
    if qlora["status"] == "skipped":  # no CUDA here: skipped, each setting saying why
        assert [row["setting"]["llm_weights"] for row in qlora["rows"]] == ["4-bit", "4-bit", "8-bit", "8-bit"]
        assert all(row["status"] == "skipped" and row["reason"] for row in qlora["rows"])

    (tower,) = sections["tower"]["rows"]
    assert tower["setting"]["tile_windows"] == math.ceil(10980 / 16) ** 2
    assert positive(tower["measurement"]["images_per_s"])
    assert math.isclose(tower["measurement"]["projected_tile_s"],
                        tower["setting"]["tile_windows"] / tower["measurement"]["images_per_s"])

    decode = sections["decode"]["rows"]
    assert [(row["setting"]["cache"], row["setting"]["batch"]) for row in decode] == [
        ("dynamic", 1), ("dynamic", 8), ("static", 1), ("static", 8)]
    for row in decode:
        measured = row["measurement"]
        assert row["status"] == "ok" and row["setting"]["torch_compile"] is False
        assert measured["new_tokens"] == 4 and row["setting"]["prompt_tokens"] == 32
        for key in ("tokens_per_s", "decode_tokens_per_s", "prefill_s", "generate_s", "first_call_s"):
            assert positive(measured[key]), key

    lines = table.splitlines()
    assert lines[0] == "# GPU check (tiny)" and "| Section | Setting | Measurement | Estimate | Status |" in lines
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Section")]
    assert len(rows) == sum(len(section["rows"]) for section in sections.values())
    assert any("(memory table: bf16, 1 GPU, checkpointing)" in line for line in rows)
    assert sum("skipped:" in line for line in rows) == len(qlora["rows"]) * (qlora["status"] == "skipped")
