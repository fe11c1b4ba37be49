"""The quickstart end to end in a tiny configuration (tiny tower, 1 step per stage, a few real patches) through its
Python API; `make demo` runs the full-size one."""

import json
import os
import shutil

import pytest

from testing_utils import DATA, TINY_VISION, eurosat_subset


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """3 EuroSAT classes x 4 patches (symlinks to tests/data) and one BigEarthNet v1 patch (a copy)."""
    root = tmp_path_factory.mktemp("data")
    eurosat_subset(root / "eurosat-ms", classes=("Forest", "Industrial", "SeaLake"))
    (root / "bigearthnet-v1").mkdir()
    patch = "S2A_MSIL2A_20170617T113321_4_55"
    shutil.copytree(os.path.join(DATA, "bigearthnet-v1", patch), root / "bigearthnet-v1" / patch)  # walks skip links
    return str(root)


def test_quickstart_tiny_end_to_end(small_data, tiny_llm_dir, tmp_path, capsys):
    from transformers import pipeline

    from spectral_llava.cli.quickstart import QuickstartConfig, run_quickstart

    output = tmp_path / "qs"
    config = QuickstartConfig(output=str(output), data=small_data, llm=tiny_llm_dir, image_size=32, spatial_pool=1,
                              align_steps=1, finetune_steps=1, batch_size=2, lora_r=2, lora_alpha=4, probe_epochs=2,
                              classify_tokens=4, caption_tokens=4, eval_split="train,validation,test")
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        metrics = run_quickstart(config, vision_overrides=TINY_VISION)

    for name in ("report.md", "metrics.json", "linear_probe.png", "tsne.png", "confusion_matrix.png",
                 "loss_align.png", "loss_finetune.png", "model/config.json", "model/README.md"):
        assert (output / name).is_file(), name
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["training"]["align"]["steps"] == 1 and saved["training"]["finetune"]["steps"] == 1
    assert saved["dataset"]["sizes"] == metrics["dataset"]["sizes"]
    assert sum(saved["dataset"]["sizes"].values()) == 13
    assert set(saved["linear_probe"]) == {"vision", "grounded"}
    assert saved["classification"]["eurosat_classification"]["num_images"] == 12
    assert saved["classification"]["bigearthnet19"]["num_images"] == 1
    assert saved["caption_quality"]["num_images"] == 13
    assert saved["caption_quality"]["caption_metrics"]["num_images"] == 13
    phases = ["build dataset", "build model", "tower features", "stage 1 (alignment)",
              "stage 2 (instruction tuning)", "linear probe + t-SNE", "classification", "captions", "pipeline check",
              "total"]
    assert list(saved["timings_seconds"]) == phases
    assert any("RANDOMLY INITIALISED" in part for part in saved["untrained"])

    report = (output / "report.md").read_text()
    assert "RANDOMLY INITIALISED" in report and "![linear probe](linear_probe.png)" in report
    assert "| 50% |" in report
    assert "Against the reference captions (COCO caption evaluation, ptb tokenizer): BLEU-1/4 " in report
    assert report.count("- model: ") == config.num_sample_captions
    card = (output / "model" / "README.md").read_text()
    assert "SpectralGPT (random (untrained))" in card and "| evaluation | data | result |" in card
    # the card's provenance is the stored one: both stages on the local build, so no Hub dataset is claimed
    assert "datasets:" not in card.split("---")[1]
    provenance = json.loads((output / "model" / "provenance.json").read_text())
    align, finetune = provenance["training"]
    assert [align["stage"], finetune["stage"]] == ["align", "finetune"]
    # what each stage ran with, stored by the stage and rendered as the card's training recipe
    assert (align["steps"], align["effective_batch_size"], align["world_size"]) == (1, 2, 1)
    assert align["lr"] == config.lr_align
    assert align["stage_options"] == {"text": "class-labels"} and finetune["stage_options"]["lora_r"] == 2
    assert sum(align["patches"].values()) == align["records"] and set(align["patches"]) <= {"bigearthnet-v1", "eurosat"}
    assert ("from class-label text: 1 optimizer step (" in card
            and "of effective batch 2 (2 per process x 1 accumulation step x 1 process)" in card)
    assert f"peak learning rate {config.lr_finetune:g} with cosine decay" in card

    printed = capsys.readouterr().out
    assert "phase" in printed and "stage 2 (instruction tuning)" in printed and "total" in printed

    # the exported model loads through transformers' pipeline on its own
    pipe = pipeline("image-text-to-text", model=str(output / "model"), trust_remote_code=True)
    out = pipe(images=os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif"),
               generate_kwargs={"max_new_tokens": 3, "do_sample": False})
    assert isinstance(out[0]["generated_text"], (str, list))


def test_quickstart_needs_the_sample_data(tmp_path, monkeypatch):
    from spectral_llava.cli import quickstart

    with pytest.raises(FileNotFoundError, match="eurosat-ms"):
        quickstart.run_quickstart(quickstart.QuickstartConfig(output=str(tmp_path / "out"), data=str(tmp_path)))
    # an installed wheel has no tests/data: the error says what to pass instead
    monkeypatch.setattr(quickstart, "REPO_DATA", tmp_path / "site-packages" / "tests" / "data")
    with pytest.raises(FileNotFoundError, match="pass --data DIR"):
        quickstart.run_quickstart(quickstart.QuickstartConfig(output=str(tmp_path / "out")))


def test_timing_table_lists_every_phase():
    from spectral_llava.cli.quickstart_report import timing_table

    table = timing_table({"build dataset": 1.24, "stage 1 (alignment)": 100.0, "total": 101.24}).splitlines()
    assert table[0].split() == ["phase", "seconds"]
    assert table[2].split() == ["build", "dataset", "1.2"]
    assert table[3].split() == ["stage", "1", "(alignment)", "100.0"]
    assert table[-1].split() == ["total", "101.2"]


def test_default_sample_data_is_the_repositorys_tests_data():
    """`make demo` passes no --data: the quickstart must find tests/data of this checkout."""
    from spectral_llava.cli.quickstart import sample_sources

    found = sample_sources(None)
    assert found["eurosat"] == os.path.join(DATA, "eurosat-ms")
    assert found["bigearthnet_v1"] == os.path.join(DATA, "bigearthnet-v1")


def test_the_report_names_the_data_folder_it_read(tmp_path):
    """Without --data the report names the repository's tests/data (it said "the sample patches of None")."""
    from spectral_llava.cli.quickstart import QuickstartConfig, data_folder
    from spectral_llava.cli.quickstart_report import untrained_parts

    default = QuickstartConfig(output=str(tmp_path))
    text = " ".join(untrained_parts(default, data_folder(default.data)))
    assert f"on the sample patches of {DATA} (the repository's tests/data: no --data given);" in text
    assert "None" not in text
    given = QuickstartConfig(output=str(tmp_path), data=str(tmp_path / "mine"))
    assert f"on the sample patches of {tmp_path / 'mine'};" in " ".join(untrained_parts(given, data_folder(given.data)))
