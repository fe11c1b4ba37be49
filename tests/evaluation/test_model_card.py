"""The model card: the evaluation table from `evaluate` outputs, the provenance from the stored provenance.json."""

import json

import pytest

from evaluation import render_card
from modeling_spectral_llava.configuration_spectral_llava import SpectralLlavaConfig
from modeling_spectral_llava.model_card import read_provenance, render_model_card


def write_results(folder):
    folder.mkdir()
    (folder / "linear_probe.json").write_text(json.dumps({
        "num_samples": 100, "protocol": {"folds": 5},
        "results": {"vision": {"0.1": {"mean": 0.5, "std": 0.01}}, "grounded": {"0.1": {"mean": 0.75, "std": 0.02}}}}))
    (folder / "classification.json").write_text(json.dumps({
        "eurosat_classification": {"accuracy": 0.25, "num_images": 20},
        "bigearthnet19": {"micro_f1": 0.5, "macro_f1": 0.4, "num_images": 3}}))
    return folder


def front_matter(card):
    return card.split("---")[1]


def test_card_holds_the_table_and_the_stored_provenance(tiny_model_dir, tiny_llm_dir, tmp_path):
    provenance = read_provenance(tiny_model_dir)
    assert provenance == {"vision_tower": "random (untrained)", "language_model": "tiny-llama", "training": []}
    card = render_card(tiny_model_dir, [write_results(tmp_path / "results")], note="Numbers of a test.")
    front = front_matter(card)
    for line in ("library_name: transformers", "pipeline_tag: image-text-to-text", "- remote-sensing",
                 "- multispectral", "- sentinel-2", "license:"):
        assert line in front
    # an untrained model on a local LLM: no base_model to link, no training data to name
    assert "datasets:" not in front and "base_model:" not in front
    assert "Numbers of a test.\n\n| evaluation | data | result |" in card
    assert "| 50.0 +/- 1.0% / 75.0 +/- 2.0% |" in card and "accuracy 25.0%" in card and "macro F1 0.400" in card
    assert "SpectralGPT (random (untrained))" in card and "| language model | tiny-llama |" in card
    assert "has not been trained" in card
    with pytest.raises(FileNotFoundError, match="linear_probe.json"):
        render_card(tiny_model_dir, [tmp_path / "none"])


def test_datasets_lists_only_the_hub_data_the_model_was_trained_on(tiny_model_dir):
    config = SpectralLlavaConfig.from_pretrained(tiny_model_dir)
    stage = {"stage": "align", "base_model": "base", "dataset": "/data/inst", "sources": ["eurosat", "reben"],
             "split": "train", "records": 80, "steps": 200}
    provenance = {"vision_tower": "SpectralGPT+.pth", "language_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                  "training": [dict(stage, dataset_hub_id="someone/spectral-inst"),
                               dict(stage, stage="finetune", dataset_hub_id=None, steps=40)]}
    front = front_matter(render_model_card(config, provenance))
    assert "datasets:\n- someone/spectral-inst\ntags:" in front and "BigEarthNet.txt" not in front
    assert "base_model:\n- HuggingFaceTB/SmolLM2-135M-Instruct\n" in front
    card = render_model_card(config, provenance)
    assert ("- `align`: 200 steps on 80 records of the `train` split of someone/spectral-inst (patches from "
            "EuroSAT, reBEN (BigEarthNet v2)).") in card
    assert "- `finetune`: 40 steps on 80 records of the `train` split of a local Spectral-Inst build" in card
