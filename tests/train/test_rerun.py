"""Re-running a stage into an --output that holds an earlier run, and resuming it (tiny tower + tiny Llama)."""

import csv
import json

import pytest

# the 10 class-label records of the validation split, 2 optimizer steps per epoch
STAGE1_ON_10 = dict(split="validation", text="class-labels", batch_size=5, warmup_ratio=0.0, lr=1e-2)


def logged(output_dir) -> list[dict]:
    with open(output_dir / "logs" / "loss.csv") as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def test_a_rerun_into_an_earlier_run_needs_resume_or_overwrite(tiny_model_dir, dataset_dir, tmp_path, capsys):
    from spectral_llava.train.align import ALIGN, run_alignment
    from spectral_llava.train.trainer import main

    out = tmp_path / "run"
    run_alignment(tiny_model_dir, dataset_dir, out, max_steps=3, save_steps=1, **STAGE1_ON_10)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    exported = (out / "model" / "model.safetensors").stat().st_mtime_ns

    with pytest.raises(FileExistsError, match=r"holds an earlier run \(checkpoint-1, .*--resume.*--overwrite"):
        run_alignment(tiny_model_dir, dataset_dir, out, max_steps=1, **STAGE1_ON_10)
    with pytest.raises(ValueError, match="pass one of them"):
        run_alignment(tiny_model_dir, dataset_dir, out, max_steps=1, resume=True, overwrite=True, **STAGE1_ON_10)
    with pytest.raises(SystemExit) as exit_info:  # the command line says the same, without a traceback
        main(ALIGN, ["--model", tiny_model_dir, "--dataset", dataset_dir, "--output", str(out), "--max-steps", "1"])
    assert exit_info.value.code == 2 and "spectral_llava.train.align: error: --output" in capsys.readouterr().err
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == exported and len(logged(out)) == 3

    result = run_alignment(tiny_model_dir, dataset_dir, out, max_steps=1, save_steps=1, overwrite=True,
                           **STAGE1_ON_10)
    assert result["steps"] == 1 and len(logged(out)) == 1
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]  # no stale checkpoint-2/3 to resume
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["max_steps"] == 1


def test_resume_with_more_steps_extends_the_cosine_schedule(tiny_model_dir, dataset_dir, tmp_path):
    import math

    from spectral_llava.train.align import run_alignment

    out = tmp_path / "run"
    run_alignment(tiny_model_dir, dataset_dir, out, max_steps=2, **STAGE1_ON_10)
    result = run_alignment(tiny_model_dir, dataset_dir, out, max_steps=4, resume=True, **STAGE1_ON_10)
    assert result["resumed_from"] == str(out / "checkpoint-2") and result["steps"] == 4
    rates = [row["learning_rate"] for row in logged(out)]
    # steps 1-2 ran on the 2-step cosine; steps 3-4 on the 4-step cosine at their position (not at 0.0, where the
    # 2-step schedule ended)
    cosine = [1e-2 * (1 + math.cos(math.pi * step / 4)) / 2 for step in (2, 3)]
    assert rates == pytest.approx([1e-2, 5e-3, *cosine]) and min(rates) > 0


def test_expected_errors_are_one_line_without_a_traceback(tiny_model_dir, dataset_dir, tmp_path, capsys):
    """A model dir that is not one, a dataset that is not one: the stage's command line says so in one line (exit
    2), as for a refused re-run; under `accelerate launch -q` the same line reaches the user (test_launch.py)."""
    from spectral_llava.train.align import ALIGN
    from spectral_llava.train.trainer import main

    (tmp_path / "empty").mkdir()
    cases = {"--model": ["--model", str(tmp_path / "empty"), "--dataset", dataset_dir],
             "--dataset": ["--model", tiny_model_dir, "--dataset", str(tmp_path / "empty")]}
    for flag, argv in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(ALIGN, [*argv, "--output", str(tmp_path / "run"), "--max-steps", "1"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err, err
        assert err.splitlines()[-1].startswith(f"spectral_llava.train.align: error: {flag} {tmp_path / 'empty'}"), err
