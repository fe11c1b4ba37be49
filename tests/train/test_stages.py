"""Stage 1 / stage 2 in-process on the tiny tower + tiny Llama: what trains, what is exported, cache equivalence."""

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from testing_utils import EUROSAT, QUICK_TRAINING

from spectral_llava.spectral_inst import load_split
from spectral_llava.train.data import SpectralLlavaCollator

PROJECTOR = "model.multi_modal_projector."


def weights(model_dir):
    return load_file(os.path.join(model_dir, "model.safetensors"))


def test_stage1_trains_only_the_projector(aligned, tiny_model_dir):
    assert aligned["steps"] == 2
    before, after = weights(tiny_model_dir), weights(aligned["outputs"]["model"])
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if name.startswith(PROJECTOR)} and changed
    log = Path(aligned["outputs"]["loss_csv"]).read_text().splitlines()
    assert log[0] == "step,epoch,loss,learning_rate,grad_norm" and len(log) == 3
    assert os.path.getsize(aligned["outputs"]["loss_curve"]) > 1000
    assert os.listdir(aligned["outputs"]["tensorboard"])
    hyper = json.loads((Path(aligned["outputs"]["loss_csv"]).parent.parent / "hyperparameters.json").read_text())
    assert hyper["text"] == "class-labels" and hyper["effective_batch_size"] == 2 and hyper["optimizer"].startswith("Adam")


def test_stage1_output_is_a_complete_model_dir(aligned):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = aligned["outputs"]["model"]
    for name in ("config.json", "processor_config.json", "chat_template.jinja", "README.md",
                 "modeling_spectral_llava.py", "processing_spectral_llava.py"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    assert processor.num_image_tokens == model.num_image_tokens == 16


def test_cached_features_give_the_same_loss(aligned, tiny_model_dir, dataset_dir, tmp_path):
    from spectral_llava.train.align import run_alignment

    cached = run_alignment(tiny_model_dir, dataset_dir, tmp_path / "cached", max_steps=2, text="class-labels",
                           cache_features=str(tmp_path / "features"), **QUICK_TRAINING)
    assert len(json.loads((tmp_path / "features" / "index.json").read_text())) == 80  # one entry per training image
    first = Path(aligned["outputs"]["loss_csv"]).read_text().splitlines()[1:]
    second = Path(cached["outputs"]["loss_csv"]).read_text().splitlines()[1:]
    for a, b in zip(first, second):
        assert abs(float(a.split(",")[2]) - float(b.split(",")[2])) <= 1e-6
    assert abs(aligned["final_loss"] - cached["final_loss"]) <= 1e-6


def test_stage2_adapter_and_merged_load_and_agree(aligned, dataset_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    from spectral_llava.train.finetune import run_finetune

    base = aligned["outputs"]["model"]
    result = run_finetune(base, dataset_dir, tmp_path / "ft", max_steps=2, lora_r=8, lora_alpha=16, **QUICK_TRAINING)
    adapter, merged_dir = result["outputs"]["adapter"], result["outputs"]["merged"]
    adapter_weights = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    assert any("multi_modal_projector" in name for name in adapter_weights)
    assert any("lora_A" in name and "language_model" in name for name in adapter_weights)
    assert not any("vision_tower" in name for name in adapter_weights)

    with_adapter = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=True),
                                             adapter).eval()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(merged_dir, trust_remote_code=True)
    records, roots = load_split(dataset_dir, "instructions", "test")
    batch = SpectralLlavaCollator(processor, roots)([records[0], records[1]])
    batch.pop("labels")
    with torch.no_grad():
        expected, got = with_adapter(**batch).logits, merged(**batch).logits
    # merging W + scale * B @ A rounds differently from applying LoRA on the fly: same logits to float32 noise
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    # the projector was trained in stage 2 as well, and the merged model carries it
    stage1 = weights(base)
    assert not torch.equal(weights(merged_dir)[PROJECTOR + "linear_1.weight"], stage1[PROJECTOR + "linear_1.weight"])

    pipe = pipeline("image-text-to-text", model=merged_dir, trust_remote_code=True)
    image = os.path.join(EUROSAT, "Forest", sorted(os.listdir(os.path.join(EUROSAT, "Forest")))[0])
    out = pipe(images=image, text=processor.build_prompt("classification"), max_new_tokens=4)
    assert isinstance(out[0]["generated_text"], str)
