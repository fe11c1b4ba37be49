"""benchmarks/gpu_check.py --tiny: the GPU check's code path on the CPU, run as the lent machine runs it (a plain
checkout that is not installed, no rasterio), writes every section with its setting, measurement, estimate and
status."""

import importlib.util
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
MODEL_CODE = {"spectral_llava", "spectral_llava.modeling_spectral_llava", "spectral_llava.train",
              "spectral_llava.utils",
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
        assert row["estimate"]["source"].startswith("scripts/memory_estimate.py")
        assert positive(row["estimate"]["peak_gib"])
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


def test_a_spent_budget_skips_every_section_saying_why(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts benchmarks/ and scripts/ on the path
    spec.loader.exec_module(gpu_check)

    data = gpu_check.run_gpu_check(gpu_check.GpuCheckOptions(output=str(tmp_path), tiny=True, budget=1e-6))
    spent = "this section's share of --budget was spent"
    assert [(s["status"], s["reason"], s["rows"]) for s in data["sections"].values()] == [("skipped", spent, [])] * 4
    assert json.loads((tmp_path / "gpu_check.json").read_text())["sections"] == data["sections"]
    assert (tmp_path / "gpu_check.md").read_text().count(f"| - | - | - | skipped: {spent} |") == 4


def test_report_rows_compare_with_the_estimate_and_say_why_nothing_was_measured(tmp_path, monkeypatch):
    import time

    import torch

    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    from gpu_check_report import SHARE_SPENT, Report

    report = Report(str(tmp_path), "tiny", torch.device("cpu"), 60.0, REPO)
    section = report.section("train_bf16", "Training", deadline=time.monotonic() + 60)
    estimate = {"source": "scripts/memory_estimate.py", "table_row": "bf16", "table_column": "1 GPU", "peak_gib": 4.0}
    assert section.measure({"batch": 1}, lambda: {"peak_allocated_gib": 3.0}, estimate) == {"peak_allocated_gib": 3.0}
    assert estimate["measured_over_estimate"] == 0.75
    assert section.measure({"batch": 2}, lambda: 1 / 0) is None
    assert section.measure({"batch": 3}, lambda: {}, needs_s=1e6) is None
    section.deadline = time.monotonic() - 1
    assert section.measure({"batch": 4}, lambda: {}) is None
    section.done()

    saved = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["train_bf16"]
    assert saved["status"] == "partial" and [row["status"] for row in saved["rows"]] == ["ok", "error", "skipped",
                                                                                           "skipped"]
    error, needs, spent = (row["reason"] for row in saved["rows"][1:])
    assert error.startswith("ZeroDivisionError: division by zero (at test_gpu_check.py:")
    assert "Traceback" in saved["rows"][1]["traceback"]
    assert needs.startswith("needs about 1000000 s") and spent == SHARE_SPENT
    lines = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert "| Training | batch=1 | peak_allocated_gib=3 | 4 GiB (memory table: bf16, 1 GPU); measured/estimate 0.75 | ok |" \
        in lines
    assert f"| Training | batch=4 | - | - | skipped: {SHARE_SPENT} |" in lines
