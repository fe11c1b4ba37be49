"""The `python -m train.*` and `accelerate launch` entry points exactly as a user runs them, resume after SIGKILL,
and the shipped accelerate configs."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import REPO, subprocess_env

PROJECTOR = "model.multi_modal_projector."


def weights(model_dir):
    return load_file(os.path.join(model_dir, "model.safetensors"))


# a run that checkpoints twice before its end: the SIGKILL test kills a copy after the first checkpoint
ALIGN_FLAGS = ["--max-steps", "6", "--save-steps", "2", "--batch-size", "2", "--text", "class-labels", "--seed", "3"]


@pytest.fixture(scope="module")
def cpu_launch(tiny_model_dir, dataset_dir, tmp_path_factory):
    """Stage 1 with `ALIGN_FLAGS` through the documented `accelerate launch --config_file train/configs/cpu.yaml
    --num_cpu_threads_per_process N`, with OMP_NUM_THREADS unset (accelerate warned then): (output dir, process)."""
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path_factory.mktemp("launch") / "cpu"
    command = [accelerate, "launch", "--config_file", os.path.join("train", "configs", "cpu.yaml"),
               "--num_cpu_threads_per_process", "1", "-m", "spectral_llava.train.align", *ALIGN_FLAGS,
               "--model", tiny_model_dir, "--dataset", dataset_dir, "--output", str(out)]
    env = {key: value for key, value in subprocess_env().items() if key != "OMP_NUM_THREADS"}
    return out, subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_accelerate_launch_on_cpu(cpu_launch, tiny_model_dir):
    """The documented launch with the shipped cpu.yaml trains in one process, and accelerate warns about no value it
    defaulted (without the thread count, which no config file holds, it warned whenever OMP_NUM_THREADS was unset).
    Two gloo processes through the shipped cpu_ddp.yaml: test_two_process_ddp_equals_one_process (test_loss_numbers)."""
    out, done = cpu_launch
    assert done.returncode == 0, done.stderr[-3000:]
    assert "had defaults used instead" not in done.stderr, done.stderr[-3000:]
    hyper = json.loads((out / "hyperparameters.json").read_text())
    assert hyper["world_size"] == 1 and hyper["effective_batch_size"] == 2
    assert len((out / "logs" / "loss.csv").read_text().splitlines()) == 7
    before, after = weights(tiny_model_dir), weights(out / "model")
    assert not torch.equal(before[PROJECTOR + "linear_1.weight"], after[PROJECTOR + "linear_1.weight"])
    assert torch.equal(before["model.language_model.norm.weight"], after["model.language_model.norm.weight"])


def test_documented_cpu_launches_pass_the_thread_count():
    """Every `accelerate launch --config_file train/configs/cpu.yaml` the docs show passes the one value the config
    cannot hold, as the launch above does (without it, accelerate warns)."""
    launches = {}
    for path in [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md")),
                 os.path.join(REPO, "train", "configs", "cpu.yaml")]:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if "--config_file train/configs/cpu.yaml" in line:
                    launches[f"{os.path.relpath(path, REPO)}:{number}"] = line
    assert len(launches) >= 4  # README (2), docs/training.md, the config's own comment
    assert [where for where, line in launches.items() if "--num_cpu_threads_per_process" not in line] == []


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(cpu_launch, tiny_model_dir, dataset_dir, tmp_path):
    """`python -m spectral_llava.train.align` killed after its first checkpoint and run again with --resume (through
    the same entry point, in this process) ends where the uninterrupted launch of the same run ended, bit for bit."""
    from spectral_llava.train.align import ALIGN
    from spectral_llava.train.trainer import main

    straight, launched = cpu_launch
    assert launched.returncode == 0, launched.stderr[-3000:]
    killed = tmp_path / "killed"
    arguments = [*ALIGN_FLAGS, "--model", tiny_model_dir, "--dataset", dataset_dir, "--output", str(killed)]
    process = subprocess.Popen([sys.executable, "-m", "spectral_llava.train.align", *arguments], cwd=REPO,
                               env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists() and not (killed / "model").exists(), "the run must die after a checkpoint, before the end"

    assert main(ALIGN, [*arguments, "--resume"]) == 0
    summary = json.loads((killed / "train_summary.json").read_text())
    assert summary["resumed_from"].startswith(str(killed / "checkpoint-")) and summary["steps"] == 6
    a, b = weights(straight / "model"), weights(killed / "model")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert (straight / "logs" / "loss.csv").read_text() == (killed / "logs" / "loss.csv").read_text()


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = os.path.join(REPO, "train", "configs")
    expected = {"cpu": "NO", "cpu_ddp": "MULTI_GPU", "single_gpu_bf16": "NO", "multi_gpu_ddp": "MULTI_GPU",
                "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}
    for name, kind in expected.items():
        config = load_config_from_file(os.path.join(configs, f"{name}.yaml"))
        assert str(config.distributed_type).endswith(kind), name
        if kind == "DEEPSPEED":
            path = os.path.join(REPO, config.deepspeed_config["deepspeed_config_file"])
            stage = json.loads(Path(path).read_text())["zero_optimization"]["stage"]
            assert stage == int(name[-1])
    fsdp = load_config_from_file(os.path.join(configs, "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_use_orig_params"] and "LlamaDecoderLayer" in fsdp["fsdp_transformer_layer_cls_to_wrap"]


@pytest.mark.slow
def test_a_refused_rerun_under_accelerate_launch_is_one_line(tiny_model_dir, dataset_dir, tmp_path):
    """The documented command (`accelerate launch -q --config_file train/configs/cpu.yaml -m ...`) into an --output
    holding a run: the user reads the stage's one-line error, not accelerate's CalledProcessError traceback that
    repeats it (accelerate then exits 1: its code for a failed run, where `spectral-llava train` exits 2)."""
    from spectral_llava.train.align import run_alignment

    out = tmp_path / "run"
    run_alignment(tiny_model_dir, dataset_dir, out, max_steps=1, split="validation", text="class-labels",
                  batch_size=5, warmup_ratio=0.0)
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    command = [accelerate, "launch", "-q", "--config_file", os.path.join("train", "configs", "cpu.yaml"),
               "-m", "spectral_llava.train.align", "--model", tiny_model_dir, "--dataset", dataset_dir,
               "--output", str(out), "--max-steps", "1"]
    done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"spectral_llava.train.align: error: --output {out} holds an "
                                                     "earlier run"), done.stderr
