"""The frozen-encoder benchmark: scores on hand-built cases, the probe protocol, every source, the CLI and the card."""

import json

import numpy as np
import pytest
import torch

from spectral_llava.cli import main
from spectral_llava.evaluation import (FrozenEncoder, average_precision, evaluation_table, run_encoder_eval,
                                       top1_accuracy)
from spectral_llava.evaluation import encoder_data
from spectral_llava.evaluation.encoder_probe import ProbeConfig, fit_and_test, train_probes
from testing_utils import DATA, EUROSAT

BEN = [f"{DATA}/bigearthnet-v1", f"{DATA}/bigearthnet-v2"]
PARQUET = [f"{DATA}/bigearthnet-v2/metadata.parquet"]
QUICK = dict(epochs=10, seeds=2, learning_rates=[1e-2, 1e-1], weight_decays=[0.0])


def test_accuracy_and_average_precision_on_known_scores():
    assert top1_accuracy([0, 2, 1], [[0.9, 0.1, 0], [0, 0.2, 0.8], [0.6, 0.3, 0.1]]) == pytest.approx(2 / 3)
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.75, 0.2], [0.7, 0.1, 0.3], [0.6, 0.3, 0.4]])
    result = average_precision(targets, scores, ["a", "b", "c"])
    # class a: positives ranked 1st and 3rd of 4 -> AP = (1/1 + 2/3) / 2; class b: its positive ranked first
    assert result["per_class_ap"] == pytest.approx({"a": 5 / 6, "b": 1.0})
    assert result["macro_map"] == pytest.approx((5 / 6 + 1) / 2) and result["classes_without_positives"] == ["c"]
    # micro: the 12 (image, class) pairs in one ranking: positives at ranks 1, 3, 4 -> (1 + 2/3 + 3/4) / 3
    assert result["micro_map"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    perfect = average_precision(targets[:3], np.where(targets[:3], 1.0, 0.0), ["a", "b", "c"])
    assert perfect["micro_map"] == 1.0 and perfect["macro_map"] == 1.0


def _separable(rng, labels, width=6):
    return (np.eye(width)[labels] * 4 + rng.normal(scale=0.3, size=(len(labels), width))).astype(np.float32)


def test_separable_features_give_accuracy_and_map_one():
    rng = np.random.default_rng(0)
    labels = {split: np.repeat(np.arange(3), n) for split, n in (("train", 10), ("validation", 3), ("test", 4))}
    splits = {split: (_separable(rng, y), y) for split, y in labels.items()}
    result = fit_and_test(splits, ["a", "b", "c"], False, [1e-3, 1e-2], [0.0, 1e-2], epochs=30, batch_size=8,
                          seeds=3, seed=0)
    assert result["accuracy"] == 1.0 and result["accuracy_std"] == 0.0 and len(result["per_seed"]) == 3
    assert len(result["selection"]) == 4 and result["selected"]["lr"] in (1e-3, 1e-2)
    eye = np.eye(3, dtype=int)
    multi = {split: (x, eye[y] | eye[(y + 1) % 3]) for split, (x, y) in splits.items()}  # two classes per image
    result = fit_and_test(multi, ["a", "b", "c"], True, [1e-2], [0.0], epochs=30, batch_size=8, seeds=2, seed=0)
    assert result["micro_map"] == pytest.approx(1.0) and result["macro_map"] == pytest.approx(1.0)
    assert result["per_class_ap"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})


def test_probes_of_several_settings_train_exactly_like_single_ones():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=40)
    x = _separable(rng, y)
    configs = [ProbeConfig(1e-2, 0.0), ProbeConfig(1e-1, 1e-2)]
    together = train_probes(x, y, configs, 3, False, epochs=5, batch_size=7, seed=3)
    for config, (weight, bias) in zip(configs, together):
        alone_weight, alone_bias = train_probes(x, y, [config], 3, False, epochs=5, batch_size=7, seed=3)[0]
        np.testing.assert_allclose(weight, alone_weight, atol=1e-6)
        np.testing.assert_allclose(bias, alone_bias, atol=1e-6)


def test_without_validation_the_grid_middle_is_used_and_said():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(2), 6)
    splits = {"train": (_separable(rng, y), y), "validation": (np.zeros((0, 6), np.float32), y[:0]),
              "test": (_separable(rng, y), y)}
    result = fit_and_test(splits, ["a", "b"], False, [1e-3, 1e-2, 1e-1], [0.0, 1e-4, 1e-2], 5, 4, 1, 0)
    assert result["selected"] == {"lr": 1e-2, "weight_decay": 1e-4} and result["selection"] == []
    assert result["notes"] == ["no validation samples: hyper-parameters not selected, used the middle of each grid "
                               "(lr 0.01, weight decay 0.0001)"]
    with pytest.raises(ValueError, match="needs train and test samples, got 12 and 0"):
        fit_and_test(dict(splits, test=splits["validation"]), ["a", "b"], False, [1e-2], [0.0], 5, 4, 1, 0)


def test_benchmark_of_a_tower_dir_on_every_source(tiny_tower_dir, m_eurosat, m_bigearthnet, tmp_path, monkeypatch):
    result = run_encoder_eval(tiny_tower_dir, tmp_path, eurosat=EUROSAT, bigearthnet=BEN, metadata=PARQUET,
                              geobench=[m_eurosat, m_bigearthnet], **QUICK)
    results = result["results"]
    assert list(results) == ["eurosat", "bigearthnet19", "geobench-m-eurosat", "geobench-m-bigearthnet"]
    assert result["encoder"] == {"kind": "converted SpectralGPT tower", "pooling": "mean", "vision_feature_layer": -1,
                                 "image_size": 32, "feature_dim": 64}
    # EuroSAT: build-dataset's 80/10/10 split of 10 x 10 images; BigEarthNet: reBEN's split of the 7 patches with a
    # parquet row (the snowy v1 patch has none)
    assert results["eurosat"]["sizes"] == {"train": 80, "validation": 10, "test": 10}
    assert results["bigearthnet19"]["sizes"] == {"train": 4, "validation": 2, "test": 1}
    assert [entry["path"].rsplit("/", 1)[-1] for entry in results["bigearthnet19"]["skipped"]] == [
        "S2B_MSIL2A_20180204T94161_57_38"]
    for name in ("eurosat", "geobench-m-eurosat"):
        assert 0.0 <= results[name]["accuracy"] <= 1.0 and len(results[name]["per_seed"]) == 2
    for name in ("bigearthnet19", "geobench-m-bigearthnet"):
        entry = results[name]
        assert 0.0 < entry["micro_map"] <= 1.0 and 0.0 < entry["macro_map"] <= 1.0
        assert entry["macro_map"] == pytest.approx(np.mean(list(entry["per_class_ap"].values())))
    # one test patch: every class it holds is ranked first, so each class AP is 1
    assert set(results["bigearthnet19"]["per_class_ap"].values()) == {1.0}
    saved = json.loads((tmp_path / "encoder_benchmark.json").read_text())
    assert saved["results"]["eurosat"]["accuracy"] == results["eurosat"]["accuracy"]
    markdown = (tmp_path / "encoder_benchmark.md").read_text()
    assert "| eurosat | single-label, 10 classes | 80 / 10 / 10 |" in markdown
    assert "Differences from GEO-Bench's protocol:" in markdown

    def tower_must_not_run(*args, **kwargs):
        raise AssertionError("the tower ran although every image is cached")

    monkeypatch.setattr(FrozenEncoder, "pooled", tower_must_not_run)
    again = run_encoder_eval(tiny_tower_dir, tmp_path, eurosat=EUROSAT, **QUICK)
    assert again["results"]["eurosat"]["accuracy"] == results["eurosat"]["accuracy"]  # seeded


def test_model_dir_features_are_the_models_own_pooling(tiny_model, tiny_model_dir, tiny_tower_dir, small_dataset,
                                                      tmp_path):
    model, processor = tiny_model
    encoder = FrozenEncoder(tiny_model_dir, device="cpu")
    assert encoder.kind == "spectral-llava model"
    pixels = processor.image_processor([f"{EUROSAT}/Forest/Forest_1.tif", f"{EUROSAT}/River/River_2.tif"])[
        "pixel_values"]
    with torch.no_grad():
        raw = model.select_vision_features(pixels)
        tokens = model.arrange_visual_tokens(raw)
    torch.testing.assert_close(encoder.pooled(pixels, "mean"), raw.mean(1))
    torch.testing.assert_close(encoder.pooled(pixels, "visual_tokens"), tokens.mean(1))
    with pytest.raises(ValueError, match="--pooling visual_tokens needs a Spectral-LLaVA model dir"):
        run_encoder_eval(tiny_tower_dir, tmp_path, eurosat=EUROSAT, pooling="visual_tokens")
    sets = encoder_data.dataset_sets(small_dataset)
    assert [(s.name, s.multilabel, len(s.items)) for s in sets] == [("dataset-eurosat", False, 12),
                                                                      ("dataset-bigearthnet19", True, 1)]
    assert sets[0].class_names == ["Forest", "River", "SeaLake"]


def test_cli_evaluate_encoder(tiny_tower_dir, m_eurosat, tmp_path, capsys):
    assert main(["evaluate", "encoder", "--model", tiny_tower_dir, "--output", str(tmp_path), "--geobench", m_eurosat,
                 "--epochs", "5", "--seeds", "1", "--learning-rates", "0.01"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["geobench-m-eurosat"] and printed["geobench-m-eurosat"].startswith("accuracy ")
    assert main(["evaluate", "encoder", "--model", tiny_tower_dir, "--output", str(tmp_path)]) == 2
    assert "give at least one of --eurosat ROOT" in capsys.readouterr().err
    assert main(["evaluate", "encoder", "--model", str(tmp_path), "--output", str(tmp_path), "--eurosat",
                 EUROSAT]) == 2
    assert f"--model {tmp_path}: not a Spectral-LLaVA model dir (no config.json)" in capsys.readouterr().err


def test_model_card_rows_of_the_benchmark_and_caption_metrics():
    encoder = {"encoder": {"pooling": "mean"}, "results": {
        "geobench-m-eurosat": {"task": "single-label", "sizes": {"train": 2000, "validation": 1000, "test": 1000},
                               "accuracy": 0.9761, "accuracy_std": 0.0012},
        "geobench-m-bigearthnet": {"task": "multi-label", "sizes": {"train": 20000, "validation": 1000, "test": 1000},
                                   "micro_map": 0.7712, "micro_map_std": 0.001, "macro_map": 0.6,
                                   "macro_map_std": 0.0}}}
    quality = {"split": "test", "num_images": 3, "label_consistency": {"model": {"recall": 0.5, "false_claims": 0.1}},
               "caption_metrics": {"bleu_1": 0.5, "bleu_4": 0.1, "meteor": None, "rouge_l": 0.4, "cider_d": 1.25}}
    table = evaluation_table({"encoder_benchmark": encoder, "quality": quality})
    assert ("| frozen-encoder linear probe (mean pooling) | geobench-m-eurosat, 2000 / 1000 / 1000 train / "
            "validation / test | accuracy 97.6 +/- 0.1% |") in table
    assert "| micro mAP 0.771 +/- 0.001, macro mAP 0.600 +/- 0.000 |" in table
    assert ("| caption metrics vs reference captions (COCO definitions) | Spectral-Inst test, 3 patches | BLEU-1/4 "
            "0.500/0.100, METEOR n/a, ROUGE-L 0.400, CIDEr-D 1.250 |") in table
