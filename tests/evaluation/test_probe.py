"""Linear probe protocol, probe features (one tower pass, cached) and t-SNE."""

import json
import os

import numpy as np
import pytest
import torch

from spectral_llava.evaluation import (eurosat_samples, fold_splits, linear_probe, load_judge, probe_features, run_linear_probe,
                        run_tsne, tower_features, train_linear_probes)
from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor


def test_fold_splits_at_80_percent_are_stratified_five_fold_cv():
    labels = np.repeat(np.arange(4), [10, 10, 5, 15])
    splits, name = fold_splits(labels, 0.8, n_splits=5, seed=3)
    assert name == "rotated stratified folds"
    tests = np.concatenate([test for _, test in splits])
    assert sorted(tests.tolist()) == list(range(40))  # the 5 test folds partition the data
    for train, test in splits:
        assert not set(train) & set(test)
        assert np.bincount(labels[train], minlength=4).tolist() == [8, 8, 4, 12]
    again, _ = fold_splits(labels, 0.8, n_splits=5, seed=3)
    assert all((a[0] == b[0]).all() for a, b in zip(splits, again))  # seeded


def test_fold_splits_fall_back_to_stratified_shuffle_split_for_tiny_classes():
    labels = np.repeat(np.arange(3), [20, 20, 2])  # class 2 would get round(0.2 * 2) = 0 training samples
    splits, name = fold_splits(labels, 0.2, n_splits=5, seed=0)
    assert name == "StratifiedShuffleSplit(n_splits=5)"
    assert len(splits) == 5 and all(len(train) == round(0.2 * 42) for train, _ in splits)


def test_batched_probes_train_exactly_like_single_probes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = (rng.normal(size=(60, 8)) + 6 * np.eye(8)[labels]).astype(np.float32)
    splits, _ = fold_splits(labels, 0.5, n_splits=5, seed=0)
    together = train_linear_probes(features, labels, splits, 3, epochs=30, batch_size=7, lr=1e-2, seed=4)
    for fold in range(5):
        alone = train_linear_probes(features, labels, [splits[fold]], 3, epochs=30, batch_size=7, lr=1e-2,
                                             seed=4 + fold)
        assert alone[0] == pytest.approx(together[fold])
    assert min(together) > 0.9  # separable classes are learned


def test_linear_probe_reports_every_ratio_and_the_fallback():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), [20, 20, 4])
    features = {"vision": rng.normal(size=(44, 4)).astype(np.float32),
                "grounded": (np.eye(3)[labels] * 5 + rng.normal(size=(44, 3))).astype(np.float32)}
    result = linear_probe(features, labels, ["a", "b", "c"], epochs=40, lr=1e-2)
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


def test_probe_features_are_tower_mean_and_projector_mean_and_cached(tiny_model, small_eurosat, tmp_path, monkeypatch):
    model, processor = tiny_model
    paths, _, _ = eurosat_samples(small_eurosat, max_per_class=2)
    features = probe_features(model, processor.image_processor, paths, cache_dir=tmp_path, batch_size=4)
    pixels = processor.image_processor(paths)["pixel_values"]
    with torch.no_grad():
        tower = model.select_vision_features(pixels)
        grounded = model.get_image_features(pixel_values=pixels).pooler_output
    assert features["vision"].shape == (6, 64) and features["grounded"].shape == (6, 48)
    np.testing.assert_allclose(features["vision"], tower.mean(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(features["grounded"], grounded.mean(1).numpy(), atol=1e-4)
    assert len(list(tmp_path.glob("pooled-*/shard-*.safetensors"))) == 1

    def tower_must_not_run(pixel_values):
        raise AssertionError("the tower ran although every image is cached")

    with monkeypatch.context() as patch:  # a second pass reads the cache only
        patch.setattr(model, "select_vision_features", tower_must_not_run)
        again = probe_features(model, processor.image_processor, paths, cache_dir=tmp_path)
    np.testing.assert_array_equal(again["vision"], features["vision"])
    np.testing.assert_array_equal(again["grounded"], features["grounded"])
    # a training feature cache (raw tower output by patch id) gives the same numbers
    raw = probe_features(model, processor.image_processor, paths, tower_cache=tmp_path / "raw")
    np.testing.assert_allclose(raw["grounded"], features["grounded"], atol=1e-4)
    index = json.loads((tmp_path / "raw" / "index.json").read_text())
    assert sorted(index) == sorted(os.path.basename(p)[:-4] for p in paths)


def test_run_linear_probe_and_tsne_write_json_and_png(tiny_model, tiny_model_dir, small_eurosat, tmp_path):
    model, processor = tiny_model
    result = run_linear_probe(tiny_model_dir, small_eurosat, tmp_path, epochs=3, model=model, processor=processor)
    saved = json.loads((tmp_path / "linear_probe.json").read_text())
    assert saved["num_samples"] == 12 and saved["class_names"] == ["Forest", "River", "SeaLake"]
    assert set(saved["results"]) == {"vision", "grounded"} and saved["results"] == result["results"]
    assert (tmp_path / "linear_probe.png").read_bytes()[:4] == b"\x89PNG"
    tsne = run_tsne(tiny_model_dir, small_eurosat, tmp_path, model=model, processor=processor)
    assert np.asarray(tsne["points"]["grounded"]).shape == (12, 2)
    assert (tmp_path / "tsne.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        eurosat_samples(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_processor(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-judge"):
        load_judge(str(tmp_path / "no-such-judge"))


def test_missing_image_is_reported(tiny_model, tmp_path):
    model, processor = tiny_model
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        tower_features(model, processor.image_processor, [str(tmp_path / "missing.tif")])
