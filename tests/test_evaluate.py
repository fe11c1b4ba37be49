"""Evaluation suite: linear probe protocol, t-SNE, classification from generated text, caption quality, judge,
model card rendering and the push command."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import DATA, REPO
from train import evaluate
from train.spectral_inst import BEN19_LABELS, EUROSAT_CLASSES, TemplateCaptioner

EUROSAT = os.path.join(DATA, "eurosat-ms")
BEN_V1 = os.path.join(DATA, "bigearthnet-v1")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return evaluate.load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def small_eurosat(tmp_path_factory):
    """3 classes x 4 real EuroSAT patches (symlinks), enough for t-SNE and every probe ratio."""
    root = tmp_path_factory.mktemp("eurosat")
    for name in ("Forest", "River", "SeaLake"):
        (root / name).mkdir()
        for k in range(1, 5):
            os.symlink(os.path.join(EUROSAT, name, f"{name}_{k}.tif"), root / name / f"{name}_{k}.tif")
    return str(root)


# ---------------------------------------------------------------------------------------------- linear probe


def test_fold_splits_at_80_percent_are_stratified_five_fold_cv():
    labels = np.repeat(np.arange(4), [10, 10, 5, 15])
    splits, name = evaluate.fold_splits(labels, 0.8, n_splits=5, seed=3)
    assert name == "rotated stratified folds"
    tests = np.concatenate([test for _, test in splits])
    assert sorted(tests.tolist()) == list(range(40))  # the 5 test folds partition the data
    for train, test in splits:
        assert not set(train) & set(test)
        assert np.bincount(labels[train], minlength=4).tolist() == [8, 8, 4, 12]
    again, _ = evaluate.fold_splits(labels, 0.8, n_splits=5, seed=3)
    assert all((a[0] == b[0]).all() for a, b in zip(splits, again))  # seeded


def test_fold_splits_fall_back_to_stratified_shuffle_split_for_tiny_classes():
    labels = np.repeat(np.arange(3), [20, 20, 2])  # class 2 would get round(0.2 * 2) = 0 training samples
    splits, name = evaluate.fold_splits(labels, 0.2, n_splits=5, seed=0)
    assert name == "StratifiedShuffleSplit(n_splits=5)"
    assert len(splits) == 5 and all(len(train) == round(0.2 * 42) for train, _ in splits)


def test_batched_probes_train_exactly_like_single_probes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = (rng.normal(size=(60, 8)) + 6 * np.eye(8)[labels]).astype(np.float32)
    splits, _ = evaluate.fold_splits(labels, 0.5, n_splits=5, seed=0)
    together = evaluate.train_linear_probes(features, labels, splits, 3, epochs=30, batch_size=7, lr=1e-2, seed=4)
    for fold in range(5):
        alone = evaluate.train_linear_probes(features, labels, [splits[fold]], 3, epochs=30, batch_size=7, lr=1e-2,
                                             seed=4 + fold)
        assert alone[0] == pytest.approx(together[fold])
    assert min(together) > 0.9  # separable classes are learned


def test_linear_probe_reports_every_ratio_and_the_fallback():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), [20, 20, 4])
    features = {"vision": rng.normal(size=(44, 4)).astype(np.float32),
                "grounded": (np.eye(3)[labels] * 5 + rng.normal(size=(44, 3))).astype(np.float32)}
    result = evaluate.linear_probe(features, labels, ["a", "b", "c"], epochs=40, lr=1e-2)
    assert result["protocol"]["optimizer"] == "Adam" and result["protocol"]["folds"] == 5
    assert result["class_counts"] == {"a": 20, "b": 20, "c": 4}
    assert result["splitter"]["0.1"].startswith("StratifiedShuffleSplit")  # round(0.1 * 4) = 0 for class c
    assert result["splitter"]["0.5"] == "rotated stratified folds"
    assert any("0.1" in note and "StratifiedShuffleSplit" in note for note in result["notes"])
    for kind in ("vision", "grounded"):
        for ratio in result["ratios"]:
            entry = result["results"][kind][f"{ratio:g}"]
            assert len(entry["folds"]) == 5 and 0 <= entry["mean"] <= 1
            assert entry["std"] == pytest.approx(np.std(entry["folds"]))
    assert result["results"]["grounded"]["0.8"]["mean"] > result["results"]["vision"]["0.8"]["mean"]


def test_probe_features_are_tower_mean_and_projector_mean_and_cached(tiny, small_eurosat, tmp_path, monkeypatch):
    model, processor = tiny
    paths, _, _ = evaluate.list_eurosat(small_eurosat, max_per_class=2)
    features = evaluate.probe_features(model, processor.image_processor, paths, cache_dir=tmp_path, batch_size=4)
    pixels = processor.image_processor(paths)["pixel_values"]
    with torch.no_grad():
        tower = model.model.select_vision_features(pixels)
        grounded = model.get_image_features(pixel_values=pixels)
    assert features["vision"].shape == (6, 64) and features["grounded"].shape == (6, 576)
    np.testing.assert_allclose(features["vision"], tower.mean(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(features["grounded"], grounded.mean(1).numpy(), atol=1e-4)
    assert len(list(tmp_path.glob("tower-*.npz"))) == 1

    def tower_must_not_run(pixel_values):
        raise AssertionError("the tower ran although every image is cached")

    with monkeypatch.context() as patch:  # a second pass reads the cache only
        patch.setattr(model.model, "select_vision_features", tower_must_not_run)
        again = evaluate.probe_features(model, processor.image_processor, paths, cache_dir=tmp_path)
    np.testing.assert_array_equal(again["vision"], features["vision"])
    np.testing.assert_array_equal(again["grounded"], features["grounded"])
    # a training feature cache (raw tower output by patch id) gives the same numbers
    raw = evaluate.probe_features(model, processor.image_processor, paths, tower_cache=tmp_path / "raw")
    np.testing.assert_allclose(raw["grounded"], features["grounded"], atol=1e-4)
    index = json.loads((tmp_path / "raw" / "index.json").read_text())
    assert sorted(index) == sorted(os.path.basename(p)[:-4] for p in paths)


def test_run_linear_probe_and_tsne_write_json_and_png(tiny, tiny_model_dir, small_eurosat, tmp_path):
    model, processor = tiny
    result = evaluate.run_linear_probe(tiny_model_dir, small_eurosat, tmp_path, epochs=3, model=model,
                                       processor=processor)
    saved = json.loads((tmp_path / "linear_probe.json").read_text())
    assert saved["num_samples"] == 12 and saved["class_names"] == ["Forest", "River", "SeaLake"]
    assert set(saved["results"]) == {"vision", "grounded"} and saved["results"] == result["results"]
    assert (tmp_path / "linear_probe.png").read_bytes()[:4] == b"\x89PNG"
    tsne = evaluate.run_tsne(tiny_model_dir, small_eurosat, tmp_path, model=model, processor=processor)
    assert np.asarray(tsne["points"]["grounded"]).shape == (12, 2)
    assert (tmp_path / "tsne.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate.list_eurosat(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        evaluate.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-judge"):
        evaluate.load_judge(str(tmp_path / "no-such-judge"))


def test_missing_image_is_reported(tiny, tmp_path):
    model, processor = tiny
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        evaluate.tower_features(model, processor.image_processor, [str(tmp_path / "missing.tif")])


# --------------------------------------------------------------------------------------------- classification


def test_rank_labels_orders_by_generated_token_probability(smollm2):
    _, tokenizer = smollm2
    text = "Labels: Forest; River"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = evaluate._token_spans(tokenizer, ids)
    assert tokenizer.decode(ids) == text

    def confident_on(label):  # log-probabilities: high on the tokens that spell `label`, low elsewhere
        start = text.index(label)
        return [-0.1 if a < start + len(label) and b > start else -2.0 for a, b in spans]

    answer = {"token_ids": ids, "logprobs": confident_on("River")}
    assert evaluate.rank_labels(tokenizer, answer, ["Forest", "River"]) == ["River", "Forest"]
    answer["logprobs"] = confident_on("Forest")
    assert evaluate.rank_labels(tokenizer, answer, ["Forest", "River"]) == ["Forest", "River"]
    assert evaluate.rank_labels(tokenizer, answer, ["Forest", "Pastures", "River"]) == ["Forest", "River", "Pastures"]


def test_eurosat_metrics_and_confusion_matrix(tmp_path):
    metrics = evaluate.eurosat_metrics(["Forest", "Forest", "River", "SeaLake"],
                                       [["Forest", "River"], ["River"], [], ["Arable land", "SeaLake"]])
    assert metrics["accuracy"] == 0.5 and metrics["no_label"] == 1 and metrics["num_images"] == 4
    counts = np.asarray(metrics["confusion_matrix"]["counts"])
    forest, river = EUROSAT_CLASSES.index("Forest"), EUROSAT_CLASSES.index("River")
    assert counts[forest, forest] == 1 and counts[forest, river] == 1 and counts[river, -1] == 1
    evaluate.plot_confusion(metrics, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_multilabel_f1_micro_and_macro():
    true = [["Arable land", "Pastures"], ["Coniferous forest"]]
    predicted = [["Arable land"], ["Coniferous forest", "Mixed forest", "AnnualCrop"]]
    metrics = evaluate.multilabel_f1(true, predicted)
    # tp 2, fp 1 (Mixed forest; AnnualCrop is outside the 19 classes), fn 1 (Pastures)
    assert metrics["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # per true class: Arable 1.0, Pastures 0.0, Coniferous 1.0
    assert metrics["macro_f1"] == pytest.approx(2 / 3)
    assert metrics["classes_in_truth"] == ["Arable land", "Pastures", "Coniferous forest"]


def test_classify_cli_prints_one_json_line_per_image(tiny_model_dir, capsys):
    from spectral_llava_cli import main

    images = [os.path.join(EUROSAT, "River", "River_1.tif"), os.path.join(BEN_V1, "S2A_MSIL2A_20170613T101031_87_48")]
    assert main(["classify", "--model", tiny_model_dir, *images, "--max-new-tokens", "6"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == images
    vocabulary = set(EUROSAT_CLASSES) | set(BEN19_LABELS)
    assert all(set(line) == {"image", "labels", "radiometry"} and set(line["labels"]) <= vocabulary for line in lines)


# ---------------------------------------------------------------------------------------------- description quality


def test_template_captions_mention_exactly_their_classes():
    captioner = TemplateCaptioner()
    record = {"id": "x", "country": None, "season": None, "acquisition_date": None, "vegetation_fraction": 0.2,
              "ndvi_mean": 0.1, "water_fraction": 0.3, "built_fraction": 0.4, "snow_fraction": 0.0, "snow": False,
              "cloud": False}
    for name in EUROSAT_CLASSES:
        caption = captioner.caption(dict(record, labels=[name]))
        assert evaluate.mentioned_classes(caption, EUROSAT_CLASSES) == [name], caption
    for labels in (["Coniferous forest", "Mixed forest", "Transitional woodland, shrub"],
                   ["Land principally occupied by agriculture, with significant areas of natural vegetation",
                    "Inland waters", "Coastal wetlands"], list(BEN19_LABELS)):
        caption = captioner.caption(dict(record, labels=labels))
        assert evaluate.label_consistency(caption, labels, BEN19_LABELS)["recall"] == 1.0, caption
        assert evaluate.mentioned_classes(caption, BEN19_LABELS) == sorted(labels)


def test_class_matching_rules():
    mentioned = evaluate.mentioned_classes
    assert mentioned("salt marshes beside the sea", BEN19_LABELS) == ["Coastal wetlands", "Marine waters"]
    assert mentioned("a dense forest and some water", BEN19_LABELS) == []  # generic words name no class
    assert mentioned("Conifers and orchards.", BEN19_LABELS) == ["Coniferous forest", "Permanent crops"]
    assert mentioned("There is no river here, only industrial buildings; no lakes or ponds.",
                     EUROSAT_CLASSES) == ["Industrial"]
    scores = evaluate.label_consistency("Pastures and a town next to a river.", ["Pastures", "Arable land"],
                                        BEN19_LABELS)
    assert scores["recall"] == 0.5 and scores["false_claims"] == pytest.approx(2 / 17)


@pytest.mark.parametrize("reply, scores", [
    ("8 6\nAssistant 1 is more detailed.", (8.0, 6.0)),
    ("7, 9.5", (7.0, 9.5)),
    ("Assistant 1: 8/10\nAssistant 2: 5/10", (8.0, 5.0)),
    ("Assistant 1 receives 7 and Assistant 2 receives 4.", (7.0, 4.0)),
    ("Both answers are fine.", None),
    ("9 12", None),
    ("", None),
])
def test_parse_judge_scores(reply, scores):
    assert evaluate.parse_judge_scores(reply) == scores


def test_relative_score_counts_parse_failures():
    judged = [{"reference_score": 8.0, "model_score": 6.0}, {"reference_score": 4.0, "model_score": 6.0},
              {"reference_score": None, "model_score": None}]
    result = evaluate.relative_score(judged)
    assert result["relative_score"] == pytest.approx(100 * 12 / 12)
    assert result["model_mean"] == 6.0 and result["reference_mean"] == 6.0
    assert result["num_judged"] == 3 and result["parse_failures"] == 1


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, small_eurosat):
    from train.spectral_inst import BuildConfig, build_dataset

    root = tmp_path_factory.mktemp("dataset") / "inst"
    ben = tmp_path_factory.mktemp("ben")
    # copied, not linked: the builder's folder walk does not follow symlinked folders
    shutil.copytree(os.path.join(BEN_V1, "S2B_MSIL2A_20170924T93020_69_24"), ben / "S2B_MSIL2A_20170924T93020_69_24")
    build_dataset(BuildConfig(output=str(root), eurosat=small_eurosat, bigearthnet_v1=str(ben)))
    return str(root)


def test_evaluate_classify_on_a_dataset(tiny, tiny_model_dir, small_dataset, tmp_path):
    model, processor = tiny
    result = evaluate.run_classify_eval(tiny_model_dir, tmp_path, dataset=small_dataset, split=None,
                                        max_new_tokens=6, model=model, processor=processor)
    assert result["eurosat_classification"]["num_images"] == 12
    assert result["bigearthnet19"]["num_images"] == 1
    assert "[classification]" in result["prompt"]
    rows = [json.loads(line) for line in (tmp_path / "classification_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 13 and {"image", "labels", "text", "true"} <= set(rows[0])
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert json.loads((tmp_path / "classification.json").read_text())["bigearthnet19"] == result["bigearthnet19"]


def test_quality_with_a_judge(tiny, tiny_model_dir, small_dataset, smollm2, tmp_path):
    model, processor = tiny
    result = evaluate.run_quality(tiny_model_dir, small_dataset, tmp_path, split=None, max_samples=2,
                                  judge=smollm2, max_new_tokens=8, judge_max_new_tokens=12, model=model,
                                  processor=processor)
    assert result["num_images"] == 2
    assert result["label_consistency"]["reference"]["recall"] == 1.0  # template captions name their classes
    judge = result["judge"]
    assert judge["num_judged"] == 2 and 0 <= judge["parse_failures"] <= 2
    records = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert all("reply" in r["judge"] and "recall" in r["model_consistency"] for r in records)


def test_judge_prompt_holds_both_answers_and_the_facts(smollm2):
    _, tokenizer = smollm2
    prompt = evaluate.judge_prompt(tokenizer, "Land-cover classes: Pastures", "Describe it.", "REF ANSWER", "MODEL ANSWER")
    assert prompt.index("REF ANSWER") < prompt.index("MODEL ANSWER")
    assert "Pastures" in prompt and "helpful" in prompt and "1 to 10" in prompt


# --------------------------------------------------------------------------------------------- card and push


def test_render_model_card_script(tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "linear_probe.json").write_text(json.dumps({
        "num_samples": 100, "protocol": {"folds": 5},
        "results": {"vision": {"0.1": {"mean": 0.5, "std": 0.01}}, "grounded": {"0.1": {"mean": 0.75, "std": 0.02}}}}))
    (results / "classification.json").write_text(json.dumps({
        "eurosat_classification": {"accuracy": 0.25, "num_images": 20},
        "bigearthnet19": {"micro_f1": 0.5, "macro_f1": 0.4, "num_images": 3}}))
    output = tmp_path / "card.md"
    command = [sys.executable, os.path.join(REPO, "scripts", "render_model_card.py"), "--model", tiny_model_dir,
               "--results", str(results), "--output", str(output), "--vision-source", "random (untrained)"]
    subprocess.run(command, check=True, capture_output=True)
    card = output.read_text()
    front = card.split("---")[1]
    for line in ("library_name: transformers", "pipeline_tag: image-text-to-text", "- remote-sensing",
                 "- multispectral", "- sentinel-2", "license:", "base_model:", "datasets:"):
        assert line in front
    assert "| 50.0 +/- 1.0% / 75.0 +/- 2.0% |" in card and "accuracy 25.0%" in card and "macro F1 0.400" in card
    assert "SpectralGPT (random (untrained))" in card
    missing = subprocess.run(command[:4] + ["--results", str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 2 and "linear_probe.json" in missing.stderr


def _push(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "spectral_llava_cli", "push", *args], capture_output=True, text=True,
                          env=env, cwd=REPO)


def test_push_dry_run_lists_the_files(tiny_model_dir):
    done = _push("--model", tiny_model_dir, "--repo-id", "someone/spectral-llava", "--dry-run")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert "config.json" in listed and "model.safetensors" in listed and "README.md" in listed
    assert "modeling_spectral_llava.py" in listed and "processor_config.json" in listed
    assert sorted(listed) == sorted(os.listdir(tiny_model_dir))
    assert "someone/spectral-llava" in done.stdout.splitlines()[0]


def test_push_fails_cleanly_offline(tiny_model_dir, tmp_path):
    done = _push("--model", tiny_model_dir, "--repo-id", "someone/spectral-llava")
    assert done.returncode == 1
    assert "spectral-llava push: error:" in done.stderr and "someone/spectral-llava" in done.stderr
    assert "Traceback" not in done.stderr
    missing = _push("--model", str(tmp_path), "--repo-id", "someone/spectral-llava", "--dry-run")
    assert missing.returncode == 2 and str(tmp_path) in missing.stderr


def test_evaluate_cli_linear_probe_tsne_and_classify(tiny_model_dir, small_eurosat, tmp_path, capsys):
    from spectral_llava_cli import main

    common = ["--model", tiny_model_dir, "--eurosat", small_eurosat, "--output", str(tmp_path)]
    assert main(["evaluate", "linear-probe", *common, "--ratios", "0.5,0.75", "--epochs", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["accuracy_percent"]["grounded"]) == {"0.5", "0.75"}
    assert json.loads((tmp_path / "linear_probe.json").read_text())["protocol"]["epochs"] == 2
    assert main(["evaluate", "tsne", *common, "--perplexity", "3"]) == 0
    assert (tmp_path / "tsne.png").is_file()
    assert main(["evaluate", "classify", *common, "--max-per-class", "1", "--max-new-tokens", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["eurosat"]["num_images"] == 3 and 0 <= summary["eurosat"]["accuracy"] <= 1
    assert main(["evaluate", "classify", "--model", tiny_model_dir, "--output", str(tmp_path)]) == 2
    assert "--eurosat" in capsys.readouterr().err
