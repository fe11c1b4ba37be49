"""The model card: the evaluation table from `evaluate` outputs, the provenance from the stored provenance.json."""

import json

import pytest

from spectral_llava.evaluation import render_card
from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import SpectralLlavaConfig
from spectral_llava.modeling_spectral_llava.tools.model_card import read_provenance, render_model_card


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
    # the note, then what a random tower means for the numbers
    assert ("Numbers of a test. The SpectralGPT tower of this checkpoint is random (untrained): these numbers show "
            "that the system runs end to end, not the method's quality.\n\n| evaluation | data | result |") in card
    assert "| 50.0 +/- 1.0% / 75.0 +/- 2.0% |" in card and "accuracy 25.0%" in card and "macro F1 0.400" in card
    assert "SpectralGPT (random (untrained))" in card and "| language model | tiny-llama |" in card
    assert "has not been trained" in card
    with pytest.raises(FileNotFoundError, match="linear_probe.json"):
        render_card(tiny_model_dir, [tmp_path / "none"])


ALIGN_ENTRY = {
    "stage": "align", "base_model": "base", "dataset": "/data/inst", "dataset_hub_id": None, "captioner": "template",
    "sources": ["bigearthnet-v1", "eurosat", "reben"], "patches": {"bigearthnet-v1": 3, "eurosat": 80, "reben": 2},
    "split": "train", "records": 85, "steps": 200, "epochs": 18.82, "batch_size": 8, "grad_accum": 1, "world_size": 1,
    "effective_batch_size": 8, "optimizer": "Adam (torch AdamW, weight_decay=0)", "lr": 0.005,
    "lr_scheduler": "cosine", "warmup_ratio": 0.03, "seed": 0, "stage_options": {"text": "class-labels"}}
FINETUNE_ENTRY = dict(ALIGN_ENTRY, stage="finetune", records=170, steps=40, epochs=1.88, batch_size=4, grad_accum=8,
                      world_size=2, effective_batch_size=64, lr=0.0005,
                      stage_options={"lora_r": 128, "lora_alpha": 256, "lora_dropout": 0.05})


def test_training_recipe_is_rendered_from_the_stored_hyperparameters(tiny_model_dir):
    config = SpectralLlavaConfig.from_pretrained(tiny_model_dir)
    card = render_model_card(config, {"vision_tower": "random (untrained)", "language_model": "tiny-llama",
                                      "training": [ALIGN_ENTRY, FINETUNE_ENTRY]})
    recipe = card.split("## Training recipe\n\n")[1].split("\n\n## Evaluation")[0]
    assert recipe.splitlines()[0] == (
        "- Stage 1, alignment (`align`): tower and LLM frozen, the projector learned to map SpectralGPT features onto "
        "the LLM's word embeddings from class-label text: 200 optimizer steps (18.82 epochs) of effective batch 8 "
        "(8 per process x 1 accumulation step x 1 process), Adam without weight decay, peak learning rate 0.005 with "
        "cosine decay after 3% warm-up, seed 0; on 85 records of 85 patches (BigEarthNet v1 3, EuroSAT 80, "
        "reBEN (BigEarthNet v2) 2; template captions) from the `train` split of a local Spectral-Inst build.")
    assert recipe.splitlines()[1].startswith(
        "- Stage 2, instruction tuning (`finetune`): the projector and LoRA (r=128, alpha 256, dropout 0.05) on the "
        "LLM's attention and MLP layers learned from conversations with the task tokens `[caption]` and "
        "`[classification]`: 40 optimizer steps (1.88 epochs) of effective batch 64 (4 per process x 8 accumulation "
        "steps x 2 processes), Adam without weight decay, peak learning rate 0.0005")
    assert "effective batch 8 (stage 1) and 64 (stage 2)" in recipe.splitlines()[-1]  # the paper's, named as such
    assert "1 epoch" not in recipe.split("The paper's recipe")[0]


def test_datasets_lists_only_the_hub_data_the_model_was_trained_on(tiny_model_dir):
    config = SpectralLlavaConfig.from_pretrained(tiny_model_dir)
    provenance = {"vision_tower": "SpectralGPT+.pth", "language_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                  "training": [dict(ALIGN_ENTRY, dataset_hub_id="someone/spectral-inst"), FINETUNE_ENTRY]}
    front = front_matter(render_model_card(config, provenance))
    assert "datasets:\n- someone/spectral-inst\ntags:" in front and "BigEarthNet.txt" not in front
    assert "base_model:\n- HuggingFaceTB/SmolLM2-135M-Instruct\n" in front
    card = render_model_card(config, provenance)
    assert "template captions) from the `train` split of someone/spectral-inst." in card
    assert "template captions) from the `train` split of a local Spectral-Inst build." in card


def test_a_provenance_without_hyperparameters_still_renders(tiny_model_dir):
    """Model dirs whose provenance predates the stored hyper-parameters name steps and data only."""
    config = SpectralLlavaConfig.from_pretrained(tiny_model_dir)
    stage = {"stage": "align", "base_model": "base", "dataset": "/data/inst", "sources": ["eurosat", "reben"],
             "split": "train", "records": 80, "steps": 200, "dataset_hub_id": None}
    card = render_model_card(config, {"training": [stage]})
    assert (": 200 steps on 80 records of the `train` split of a local Spectral-Inst build (patches from EuroSAT, "
            "reBEN (BigEarthNet v2)).") in card


def test_base_model_links_only_a_hub_repo(tiny_model_dir, tmp_path, monkeypatch):
    """`is_hub_id` (the builder's test) decides: an existing local ORG/NAME folder or a path is no Hub repo."""
    config = SpectralLlavaConfig.from_pretrained(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "llm").mkdir(parents=True)
    for local in ("runs/llm", "/models/llm", "a/b/c", "tiny-llama"):
        assert "base_model:" not in front_matter(render_model_card(config, {"language_model": local})), local
    front = front_matter(render_model_card(config, {"language_model": "HuggingFaceTB/SmolLM2-135M-Instruct@main"}))
    assert "base_model:\n- HuggingFaceTB/SmolLM2-135M-Instruct\n" in front
