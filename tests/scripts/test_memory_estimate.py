"""scripts/memory_estimate.py: the parameter counts it builds the docs/training.md memory table on."""

import importlib.util
import os
from pathlib import Path

from testing_utils import REPO


def load_script():
    path = os.path.join(REPO, "scripts", "memory_estimate.py")
    spec = importlib.util.spec_from_file_location("memory_estimate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_match_llama3_8b_and_lora_r128(capsys):
    script = load_script()
    counts = script.count_parameters(lora_r=128)
    assert round(counts.frozen_llm / 1e9, 2) == 8.03  # Meta's published size of Llama-3-8B
    assert counts.embeddings == 2 * 128256 * 4096
    # r x (in + out) for q, o (4096 -> 4096), k, v (4096 -> 1024), gate, up, down (4096 <-> 14336), 32 layers
    assert counts.lora == 32 * 128 * (2 * 8192 + 2 * 5120 + 3 * 18432) == 335_544_320
    assert counts.projector == 768 * 4096 + 4096
    rows = script.estimate(counts, seq_len=1152, micro_batch=1)["rows"]
    assert rows["4-bit"]["frozen weights"] < rows["8-bit"]["frozen weights"] < rows["bf16"]["frozen weights"]
    for row in rows.values():
        assert row["1 GPU, checkpointing"] < row["1 GPU"]
    assert rows["bf16"]["ZeRO-3 x8"] < rows["bf16"]["ZeRO-3 x4"] < rows["bf16"]["ZeRO-3 x2"] < rows["bf16"]["FSDP x2"]
    assert script.main([]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    docs = Path(os.path.join(REPO, "docs", "training.md")).read_text().splitlines()
    assert len(table) == 5 and all(line in docs for line in table)  # docs/training.md shows these numbers
