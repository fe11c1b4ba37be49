"""The logged loss is the per-token mean over the effective batch, whatever the split into micro-steps and processes:
`Trainer` passes `num_items_in_batch` (the answer tokens of all micro-steps and processes) to the model's loss, which
divides its token sum by it. Same records, same loss, grad norm and trained weights (tiny tower + tiny Llama)."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import REPO, subprocess_env

from spectral_llava.spectral_inst import load_split
from spectral_llava.train.data import SpectralLlavaCollator

PROJECTOR = "model.multi_modal_projector."
# The 10 class-label records of the validation split: an optimizer step over 10 records sees all of them, in any order
SAME_RECORDS = dict(split="validation", text="class-labels", max_steps=2, warmup_ratio=0.0, lr=1e-2)


def logged(output_dir) -> list[dict]:
    with open(os.path.join(output_dir, "logs", "loss.csv")) as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def assert_same_run(got, want):
    """Same logged loss and grad norm per step, same trained projector, to float32 summation noise."""
    rows, expected = logged(got), logged(want)
    assert [row["step"] for row in rows] == [row["step"] for row in expected] == [1.0, 2.0]
    for row, reference in zip(rows, expected):
        for key in ("loss", "grad_norm", "learning_rate"):
            assert row[key] == pytest.approx(reference[key], rel=1e-5), (got, key, row["step"])
    a = load_file(os.path.join(got, "model", "model.safetensors"))
    b = load_file(os.path.join(want, "model", "model.safetensors"))
    for name in (PROJECTOR + "linear_1.weight", PROJECTOR + "linear_1.bias"):
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def full_batch_run(tiny_model_dir, dataset_dir, tmp_path_factory):
    """Stage 1, 2 optimizer steps of all 10 records at once (--batch-size 10 --grad-accum 1)."""
    from spectral_llava.train.align import run_alignment

    out = tmp_path_factory.mktemp("full-batch") / "b10-ga1"
    run_alignment(tiny_model_dir, dataset_dir, out, batch_size=10, grad_accum=1, **SAME_RECORDS)
    return str(out)


def test_logged_loss_is_the_per_token_mean_whatever_the_accumulation(full_batch_run, tiny_model_dir, dataset_dir,
                                                                      tmp_path):
    """5 micro-batches of 2 give the loss, gradient and update of one batch of 10 (before: 5x the loss)."""
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
    from spectral_llava.train.align import run_alignment

    run_alignment(tiny_model_dir, dataset_dir, tmp_path / "b2-ga5", batch_size=2, grad_accum=5, **SAME_RECORDS)
    assert_same_run(str(tmp_path / "b2-ga5"), full_batch_run)

    model, processor = load_model_and_processor(tiny_model_dir, device="cpu")
    records, roots = load_split(dataset_dir, "alignment", "validation")
    records = [r for r in records if r["variant"] == "labels"]
    assert len(records) == 10
    with torch.no_grad():  # the mean cross-entropy over every answer token of the 10 records, in one forward
        per_token_mean = model(**SpectralLlavaCollator(processor, roots)(records)).loss.item()
    assert logged(full_batch_run)[0]["loss"] == pytest.approx(per_token_mean, rel=1e-5)


def test_stage2_logged_loss_does_not_depend_on_grad_accum(tiny_model_dir, dataset_dir, tmp_path):
    """The same through peft's wrapper (stage 2): 20 instruction records as one batch or as 5 micro-batches of 4.
    Both runs start from the same LoRA weights because the stage seeds them from --seed."""
    from spectral_llava.train.finetune import run_finetune

    # no LoRA dropout: its masks would differ between one batch and five micro-batches
    options = dict(split="validation", max_steps=1, warmup_ratio=0.0, lr=1e-3, lora_r=4, lora_alpha=8,
                   lora_dropout=0.0)
    first = {}
    for batch_size, grad_accum in ((20, 1), (4, 5)):
        out = tmp_path / f"b{batch_size}-ga{grad_accum}"
        run_finetune(tiny_model_dir, dataset_dir, out, batch_size=batch_size, grad_accum=grad_accum, **options)
        first[grad_accum] = logged(out)[0]
    assert first[5]["loss"] == pytest.approx(first[1]["loss"], rel=1e-5)
    assert first[5]["grad_norm"] == pytest.approx(first[1]["grad_norm"], rel=1e-5)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(full_batch_run, tiny_model_dir, dataset_dir, tmp_path):
    """2 gloo processes of 5 records each log the loss and reach the weights of one process with all 10; launched
    with the shipped CPU DDP config, which leaves accelerate nothing to default (and warn about)."""
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    config = os.path.join("train", "configs", "cpu_ddp.yaml")
    command = [accelerate, "launch", "--config_file", config, "-m", "spectral_llava.train.align",
               "--model", tiny_model_dir, "--dataset", dataset_dir, "--output", str(tmp_path / "ddp"),
               "--batch-size", "5", "--grad-accum", "1", "--split", "validation", "--text", "class-labels",
               "--max-steps", "2", "--warmup-ratio", "0", "--lr", "1e-2"]
    done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "had defaults used instead" not in done.stderr
    hyper = json.loads((tmp_path / "ddp" / "hyperparameters.json").read_text())
    assert hyper["world_size"] == 2 and hyper["effective_batch_size"] == 10
    provenance = json.loads((tmp_path / "ddp" / "model" / "provenance.json").read_text())
    recipe = provenance["training"][-1]  # what the card renders
    assert [recipe[key] for key in ("batch_size", "grad_accum", "world_size", "effective_batch_size")] == [5, 1, 2, 10]
    assert_same_run(str(tmp_path / "ddp"), full_batch_run)
