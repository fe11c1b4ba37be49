"""The `python -m train.*` and `accelerate launch` entry points exactly as a user runs them, resume after SIGKILL,
and the shipped accelerate configs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import REPO, subprocess_env

PROJECTOR = "model.multi_modal_projector."


def weights(model_dir):
    return load_file(os.path.join(model_dir, "model.safetensors"))


@pytest.mark.slow
def test_accelerate_launch_on_cpu(tiny_model_dir, dataset_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` trains; accelerate's launcher starts ONE process for it (its
    multi-CPU mode needs MPI), so real 2-process gloo DDP on CPU is checked through `--multi_gpu` (torchrun)."""
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    train = ["-m", "spectral_llava.train.align", "--model", tiny_model_dir, "--dataset", dataset_dir, "--max-steps", "2",
             "--batch-size", "1", "--text", "class-labels", "--warmup-ratio", "0"]
    common = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    before = weights(tiny_model_dir)
    for mode, world_size in (("--cpu", 1), ("--multi_gpu", 2)):
        out = tmp_path / mode.strip("-")
        command = [accelerate, "launch", mode, *common, *train, "--output", str(out)]
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        hyper = json.load(open(out / "hyperparameters.json"))
        assert hyper["world_size"] == world_size and hyper["effective_batch_size"] == world_size
        assert len(open(out / "logs" / "loss.csv").read().splitlines()) == 3
        after = weights(out / "model")
        assert not torch.equal(before[PROJECTOR + "linear_1.weight"], after[PROJECTOR + "linear_1.weight"])
        assert torch.equal(before["model.language_model.norm.weight"], after["model.language_model.norm.weight"])


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tiny_model_dir, dataset_dir, tmp_path):
    def command(out, *extra):
        return [sys.executable, "-m", "spectral_llava.train.align", "--model", tiny_model_dir, "--dataset", dataset_dir,
                "--output", str(out), "--max-steps", "6", "--save-steps", "2", "--batch-size", "2",
                "--text", "class-labels", "--seed", "3", *extra]

    env = subprocess_env()
    straight = tmp_path / "straight"
    subprocess.run(command(straight), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    marker = killed / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists() and not (killed / "model").exists(), "the run must die after a checkpoint, before the end"

    resumed = subprocess.run(command(killed, "--resume"), cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.load(open(killed / "train_summary.json"))
    assert summary["resumed_from"].startswith(str(killed / "checkpoint-")) and summary["steps"] == 6
    a, b = weights(straight / "model"), weights(killed / "model")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert open(straight / "logs" / "loss.csv").read() == open(killed / "logs" / "loss.csv").read()


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
            stage = json.load(open(path))["zero_optimization"]["stage"]
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
