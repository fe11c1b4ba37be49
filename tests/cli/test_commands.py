"""Every `spectral-llava` command as a user runs it: `--help` from any directory, and each command on real inputs."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from testing_utils import DATA, REPO

from spectral_llava.cli import build_parser, main
from spectral_llava.inference import BEN19_LABELS, EUROSAT_CLASSES

EUROSAT = os.path.join(DATA, "eurosat-ms")
TIF = os.path.join(EUROSAT, "River", "River_1.tif")
FOLDER = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")
COMMANDS = [["build"], ["convert-spectralgpt"], ["build-dataset"], ["train", "align"], ["train", "finetune"],
            ["evaluate", "linear-probe"], ["evaluate", "tsne"], ["evaluate", "classify"], ["evaluate", "quality"],
            ["classify"], ["caption"], ["map"], ["app"], ["push"], ["render-card"], ["quickstart"]]


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_answers_help_from_any_directory(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: spectral-llava {' '.join(command)}")
    options = [line.split()[0] for line in text.splitlines() if line.strip().startswith("--")]
    assert options and all("_" not in option.split(",")[0] for option in options)  # documented spellings first


def test_console_script_lists_every_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "spectral-llava"), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(command[0] in done.stdout for command in COMMANDS)


def test_bad_option_values_are_refused_naming_the_flag():
    code, _, err = run_cli("build-dataset", "--output", "x", "--eurosat", EUROSAT, "--shard", "3/2")
    assert code == 2 and "--shard '3/2'" in err
    code, _, err = run_cli("evaluate", "linear-probe", "--model", "m", "--eurosat", "e", "--output", "o",
                           "--ratios", "0.5", "1.5")
    assert code == 2 and "--ratios" in err


def test_build_dataset_builds_and_plans_the_hub_upload(tmp_path):
    output = tmp_path / "out"
    reben = os.path.join(DATA, "bigearthnet-v2")
    code, out, _ = run_cli("build-dataset", "--bigearthnet", reben, "--metadata", os.path.join(reben, "metadata.parquet"),
                           "--output", str(output), "--push-to-hub", "someone/spectral-inst", "--hub-dry-run")
    assert code == 0
    summary = json.loads(out)
    assert summary["patches_ok"] == 2 and summary["hub"]["dry_run"] is True
    hub = summary["hub"]
    assert hub["repo_id"] == "someone/spectral-inst" and hub["repo_type"] == "dataset" and not hub["private"]
    assert hub["folder"] == str(output.resolve()) and hub["files"] > 0
    assert json.loads((output / "build_info.json").read_text())["hub_repo_id"] == "someone/spectral-inst"


def test_classify_prints_one_json_line_per_image(tiny_model_dir):
    # the tiny model sees 32 px: the 120 px BigEarthNet folder is 3.75x its footprint
    code, out, _ = run_cli("classify", "--model", tiny_model_dir, TIF, FOLDER, "--max-new-tokens", "6",
                           "--resize-whole-image")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [TIF, FOLDER]
    vocabulary = set(EUROSAT_CLASSES) | set(BEN19_LABELS)
    assert all(set(line) == {"image", "labels", "radiometry"} and set(line["labels"]) <= vocabulary for line in lines)


def test_caption_equals_the_saved_dirs_own_pipeline(tiny_model_dir):
    from transformers import pipeline

    code, out, _ = run_cli("caption", "--model", tiny_model_dir, TIF, FOLDER, "--max-new-tokens", "4",
                           "--resize-whole-image")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [TIF, FOLDER]
    pipe = pipeline("image-text-to-text", model=tiny_model_dir, trust_remote_code=True)
    expected = pipe(text=pipe.processor.build_messages("caption", image=TIF), return_full_text=False,
                    max_new_tokens=4, generate_kwargs={"do_sample": False})
    assert lines[0]["text"] == expected[0]["generated_text"].strip()
    code, _, err = run_cli("caption", "--model", tiny_model_dir, os.path.join(DATA, "nope.tif"))
    assert code == 2 and "nope.tif" in err


def test_evaluate_linear_probe_tsne_and_classify(tiny_model_dir, small_eurosat, tmp_path):
    common = ["--model", tiny_model_dir, "--eurosat", small_eurosat, "--output", str(tmp_path)]
    code, out, _ = run_cli("evaluate", "linear-probe", *common, "--ratios", "0.5", "0.75", "--epochs", "2")
    assert code == 0 and set(json.loads(out)["accuracy_percent"]["grounded"]) == {"0.5", "0.75"}
    assert json.loads((tmp_path / "linear_probe.json").read_text())["protocol"]["epochs"] == 2
    assert run_cli("evaluate", "tsne", *common, "--perplexity", "3")[0] == 0
    assert (tmp_path / "tsne.png").is_file()
    code, out, _ = run_cli("evaluate", "classify", *common, "--max-per-class", "1", "--max-new-tokens", "4")
    summary = json.loads(out)
    assert code == 0 and summary["eurosat"]["num_images"] == 3 and 0 <= summary["eurosat"]["accuracy"] <= 1
    code, _, err = run_cli("evaluate", "classify", "--model", tiny_model_dir, "--output", str(tmp_path))
    assert code == 2 and "--eurosat" in err


def test_push_dry_run_lists_the_files(tiny_model_dir, tmp_path):
    code, out, _ = run_cli("push", "--model", tiny_model_dir, "--repo-id", "someone/spectral-llava", "--dry-run")
    assert code == 0 and "someone/spectral-llava" in out.splitlines()[0]
    listed = [line.strip() for line in out.splitlines()[1:]]
    assert {"config.json", "model.safetensors", "README.md", "provenance.json", "modeling_spectral_llava.py",
            "processor_config.json"} <= set(listed)
    assert sorted(listed) == sorted(os.listdir(tiny_model_dir))
    code, _, err = run_cli("push", "--model", str(tmp_path), "--repo-id", "someone/spectral-llava", "--dry-run")
    assert code == 2 and str(tmp_path) in err


def test_push_fails_cleanly_offline(tiny_model_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "spectral_llava.cli", "push", "--model", tiny_model_dir, "--repo-id",
                           "someone/spectral-llava"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "spectral-llava push: error:" in done.stderr and "someone/spectral-llava" in done.stderr
    assert "Traceback" not in done.stderr


def run_render_script(monkeypatch, *argv) -> int:
    import runpy

    script = os.path.join(REPO, "scripts", "render_model_card.py")
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(script, run_name="__main__")
    return done.value.code


def test_render_card_script_reproduces_the_committed_model_card(tmp_path, monkeypatch):
    """`python scripts/render_model_card.py` as README shows it renders model_card.md from the stored inputs of the
    demo run it describes (docs/model_card_inputs): byte for byte what is committed."""
    assert run_render_script(monkeypatch, "--output", str(tmp_path / "model_card.md")) == 0
    with open(os.path.join(REPO, "model_card.md"), encoding="utf-8") as committed:
        assert (tmp_path / "model_card.md").read_text(encoding="utf-8") == committed.read()


def test_render_card_script_writes_the_card_and_the_readme(tiny_model_dir, tmp_path, monkeypatch):
    """The script with a quickstart's paths: the card of quickstart-output/model from the evaluate outputs there,
    into model_card.md (and, with --readme, the model's README.md)."""
    import shutil

    from spectral_llava.evaluation import render_card

    quickstart = tmp_path / "quickstart-output"
    model = shutil.copytree(tiny_model_dir, quickstart / "model")
    (quickstart / "classification.json").write_text(json.dumps(
        {"eurosat_classification": {"accuracy": 0.25, "num_images": 20}}))
    monkeypatch.chdir(tmp_path)
    assert run_render_script(monkeypatch, "--model", "quickstart-output/model", "--results", "quickstart-output",
                             "--output", "model_card.md", "--note", "A test.", "--readme") == 0
    card = (tmp_path / "model_card.md").read_text()
    assert card == (model / "README.md").read_text() == render_card(model, [quickstart], note="A test.")
    assert "accuracy 25.0%" in card
    code, _, err = run_cli("render-card", "--model", str(model), "--results", str(tmp_path / "none"))
    assert code == 2 and "linear_probe.json" in err


def test_train_commands_run_both_stages(tiny_model_dir, small_dataset, tmp_path, capsys):
    """`spectral-llava train align` and `python -m spectral_llava.train.finetune` (its `main`) parse the same options."""
    from spectral_llava.train.finetune import FINETUNE
    from spectral_llava.train.trainer import main as stage_main

    common = ["--dataset", small_dataset, "--max-steps", "1", "--batch-size", "2", "--warmup-ratio", "0"]
    code, out, _ = run_cli("train", "align", "--model", tiny_model_dir, "--output", str(tmp_path / "align"),
                           "--text", "class-labels", *common)
    summary = json.loads((tmp_path / "align" / "train_summary.json").read_text())
    assert code == 0 and summary["steps"] == 1 and json.dumps(summary, indent=1) in out
    finetune = ["--model", str(tmp_path / "align" / "model"), "--output", str(tmp_path / "ft"), "--lora-r", "2",
                "--lora_alpha", "4", *common]
    assert stage_main(FINETUNE, finetune) == 0
    summary = json.loads((tmp_path / "ft" / "train_summary.json").read_text())
    assert summary["outputs"]["merged"] == str(tmp_path / "ft" / "merged")
    assert json.dumps(summary, indent=1) in capsys.readouterr().out
    provenance = json.loads((tmp_path / "ft" / "merged" / "provenance.json").read_text())
    assert [stage["stage"] for stage in provenance["training"]] == ["align", "finetune"]
    assert provenance["training"][1]["base_model"] == str(tmp_path / "align" / "model")
    with pytest.raises(SystemExit):
        stage_main(FINETUNE, finetune + ["--batch-size", "0"])
    assert "--batch-size 0: expected a positive integer" in capsys.readouterr().err
