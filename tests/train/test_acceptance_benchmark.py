"""benchmarks/train_acceptance.py: loss means over the steps there are, and its validation row."""

import importlib.util
import os

from testing_utils import REPO

from spectral_llava.spectral_inst import load_split


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_acceptance",
                                                  os.path.join(REPO, "benchmarks", "train_acceptance.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loss_means_cover_the_logged_steps_there_are(tmp_path):
    bench = load_benchmark()
    (tmp_path / "loss.csv").write_text("step,epoch,loss,learning_rate,grad_norm\n1,0.1,6.0,0.1,1\n2,0.2,4.0,0.1,1\n"
                                       "3,0.3,2.0,0.1,1\n")
    summary = bench.loss_summary({"outputs": {"loss_csv": str(tmp_path / "loss.csv")}, "steps": 3, "records": 8,
                                  "seconds": 1.0})
    assert summary["mean_window"] == 3 and summary["first_mean"] == summary["last_mean"] == 4.0


def test_validation_accuracy_and_baseline(tiny_model_dir, dataset_dir):
    bench = load_benchmark()
    accuracy, answers = bench.classification_accuracy(tiny_model_dir, dataset_dir, split="validation")
    patches, _ = load_split(dataset_dir, "patches", "validation")
    assert [answer["id"] for answer in answers] == patches["id"] and len(answers) == 10
    assert accuracy == sum(answer["parsed"] == sorted(answer["labels"]) for answer in answers) / 10
    baseline, majority = bench.majority_baseline(dataset_dir, split="validation")
    assert baseline == sum(sorted(labels) == majority for labels in patches["labels"]) / 10
