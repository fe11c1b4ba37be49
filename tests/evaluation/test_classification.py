"""Classification from generated text: label ranking, EuroSAT accuracy, BigEarthNet-19 F1."""

import json

import numpy as np
import pytest

from spectral_llava.evaluation import eurosat_metrics, multilabel_f1, plot_confusion, run_classify_eval
from spectral_llava.inference import EUROSAT_CLASSES, generation, rank_labels


def test_rank_labels_orders_by_generated_token_probability(tokenizer):
    text = "Labels: Forest; River"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = generation._token_spans(tokenizer, ids)
    assert tokenizer.decode(ids) == text

    def confident_on(label):  # log-probabilities: high on the tokens that spell `label`, low elsewhere
        start = text.index(label)
        return [-0.1 if a < start + len(label) and b > start else -2.0 for a, b in spans]

    answer = {"token_ids": ids, "logprobs": confident_on("River")}
    assert rank_labels(tokenizer, answer, ["Forest", "River"]) == ["River", "Forest"]
    answer["logprobs"] = confident_on("Forest")
    assert rank_labels(tokenizer, answer, ["Forest", "River"]) == ["Forest", "River"]
    assert rank_labels(tokenizer, answer, ["Forest", "Pastures", "River"]) == ["Forest", "River", "Pastures"]


def test_eurosat_metrics_and_confusion_matrix(tmp_path):
    metrics = eurosat_metrics(["Forest", "Forest", "River", "SeaLake"],
                                       [["Forest", "River"], ["River"], [], ["Arable land", "SeaLake"]])
    assert metrics["accuracy"] == 0.5 and metrics["no_label"] == 1 and metrics["num_images"] == 4
    counts = np.asarray(metrics["confusion_matrix"]["counts"])
    forest, river = EUROSAT_CLASSES.index("Forest"), EUROSAT_CLASSES.index("River")
    assert counts[forest, forest] == 1 and counts[forest, river] == 1 and counts[river, -1] == 1
    plot_confusion(metrics, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_multilabel_f1_micro_and_macro():
    true = [["Arable land", "Pastures"], ["Coniferous forest"]]
    predicted = [["Arable land"], ["Coniferous forest", "Mixed forest", "AnnualCrop"]]
    metrics = multilabel_f1(true, predicted)
    # tp 2, fp 1 (Mixed forest; AnnualCrop is outside the 19 classes), fn 1 (Pastures)
    assert metrics["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # per true class: Arable 1.0, Pastures 0.0, Coniferous 1.0
    assert metrics["macro_f1"] == pytest.approx(2 / 3)
    assert metrics["classes_in_truth"] == ["Arable land", "Pastures", "Coniferous forest"]


def test_evaluate_classify_on_a_dataset(tiny_model, tiny_model_dir, small_dataset, tmp_path):
    model, processor = tiny_model
    result = run_classify_eval(tiny_model_dir, tmp_path, dataset=small_dataset, split=None,
                                        max_new_tokens=6, model=model, processor=processor)
    assert result["eurosat_classification"]["num_images"] == 12
    assert result["bigearthnet19"]["num_images"] == 1
    assert "[classification]" in result["prompt"]
    rows = [json.loads(line) for line in (tmp_path / "classification_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 13 and {"image", "labels", "text", "true"} <= set(rows[0])
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert json.loads((tmp_path / "classification.json").read_text())["bigearthnet19"] == result["bigearthnet19"]
