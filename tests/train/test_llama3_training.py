"""Training a Llama-3-format model: labels token by token, both stages one step each, gradient checkpointing, and
8/4-bit base weights refused with a clear error where bitsandbytes cannot run."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from fixtures.llama3 import ASSISTANT, EOT, USER
from safetensors.torch import load_file
from testing_utils import DATA
from testing_utils import QUICK_TRAINING as QUICK
from transformers import AutoProcessor, pipeline
from transformers.models.llama import modeling_llama

from spectral_llava.spectral_inst.dataset import load_split
from spectral_llava.train.data import IGNORE_INDEX, SpectralLlavaCollator, encode_conversation

PROJECTOR = "model.multi_modal_projector."


@pytest.fixture(scope="module")
def processor(llama3_model_dir):
    return AutoProcessor.from_pretrained(llama3_model_dir, trust_remote_code=True)


@pytest.fixture(scope="module")
def aligned(llama3_model_dir, dataset_dir, tmp_path_factory):
    from spectral_llava.train.align import run_alignment

    out = tmp_path_factory.mktemp("llama3-align")
    return run_alignment(llama3_model_dir, dataset_dir, out, max_steps=1, text="class-labels", **QUICK)


def ids_of(processor, text):
    expanded = text.replace("<image>", "<image>" * processor.num_image_tokens)
    return processor.tokenizer(expanded, add_special_tokens=False).input_ids


def test_labels_are_each_answer_and_its_eot_token_by_token(processor):
    conversation = [{"from": "human", "value": "<image>\n[caption] Describe this image."},
                    {"from": "gpt", "value": "A river crosses farmland."},
                    {"from": "human", "value": "[classification] Which classes?"},
                    {"from": "gpt", "value": "Labels: River, Pasture"}]
    ids, labels = encode_conversation(processor, conversation)
    eot = processor.tokenizer.convert_tokens_to_ids(EOT)
    first_prompt = ids_of(processor, f"<|begin_of_text|>{USER}<image>\n[caption] Describe this image.<|eot_id|>"
                                     f"{ASSISTANT}")
    first_answer = ids_of(processor, "A river crosses farmland.") + [eot]
    second_prompt = ids_of(processor, f"{USER}[classification] Which classes?<|eot_id|>{ASSISTANT}")
    second_answer = ids_of(processor, "Labels: River, Pasture") + [eot]
    assert ids == first_prompt + first_answer + second_prompt + second_answer
    assert labels == ([IGNORE_INDEX] * len(first_prompt) + first_answer
                      + [IGNORE_INDEX] * len(second_prompt) + second_answer)
    assert ids.count(processor.tokenizer.bos_token_id) == 1


def test_collator_right_pads_with_the_chosen_pad_token(processor, dataset_dir):
    records, roots = load_split(dataset_dir, "instructions", "train")
    caption = next(r for r in records if r["task"] == "caption")
    classification = next(r for r in records if r["task"] == "classification")
    batch = SpectralLlavaCollator(processor, roots)([caption, classification])
    eot = processor.tokenizer.convert_tokens_to_ids(EOT)
    for row, record in enumerate((caption, classification)):
        ids, labels = encode_conversation(processor, record["conversations"])
        length = len(ids)
        assert batch["input_ids"][row, :length].tolist() == ids and batch["labels"][row, :length].tolist() == labels
        assert (batch["input_ids"][row, length:] == processor.tokenizer.pad_token_id).all()
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (batch["input_ids"].shape[1] - length)
        answer = [token for token in labels if token != IGNORE_INDEX]
        assert answer == ids_of(processor, record["conversations"][1]["value"]) + [eot]


def test_stage1_trains_the_projector_of_a_bf16_llama3_model(aligned, llama3_model_dir):
    before = load_file(os.path.join(llama3_model_dir, "model.safetensors"))
    after = load_file(os.path.join(aligned["outputs"]["model"], "model.safetensors"))
    assert aligned["steps"] == 1 and torch.isfinite(torch.tensor(aligned["final_loss"]))
    changed = {name for name in before if not torch.equal(before[name].float(), after[name].float())}
    assert changed == {name for name in before if name.startswith(PROJECTOR)}
    assert after[PROJECTOR + "linear_1.weight"].dtype == torch.float32  # trained in float32
    assert after["model.language_model.norm.weight"].dtype == torch.bfloat16
    exported = Path(os.path.join(aligned["outputs"]["model"], "chat_template.jinja")).read_text()
    assert exported == Path(os.path.join(llama3_model_dir, "chat_template.jinja")).read_text()


def test_stage2_runs_and_the_merged_model_answers_in_llama3_format(aligned, dataset_dir, tmp_path):
    from spectral_llava.train.finetune import run_finetune

    result = run_finetune(aligned["outputs"]["model"], dataset_dir, tmp_path / "ft", max_steps=1, lora_r=8,
                          lora_alpha=16, **QUICK)
    adapter = load_file(os.path.join(result["outputs"]["adapter"], "adapter_model.safetensors"))
    assert any("lora_A" in name and "language_model" in name for name in adapter)
    merged = result["outputs"]["merged"]
    pipe = pipeline("image-text-to-text", model=merged, trust_remote_code=True)
    tif = os.path.join(DATA, "eurosat-ms", "River", "River_1.tif")
    out = pipe(images=tif, max_new_tokens=3, return_full_text=False, generate_kwargs={"do_sample": False})
    assert isinstance(out[0]["generated_text"], str)
    assert pipe.processor.build_prompt("caption").startswith(f"<|begin_of_text|>{USER}<image>\n[caption]")
    assert pipe.model.generation_config.eos_token_id[-1] == pipe.processor.tokenizer.convert_tokens_to_ids(EOT)


def test_checkpointing_is_asked_for_by_the_names_this_transformers_knows(tmp_path):
    """transformers 5.2x renamed gradient to activation checkpointing and warns on the old names (on every
    training run, before); 5.17 knows only the old ones. Either way the arguments switch it on without a warning."""
    import warnings

    from spectral_llava.train.options import TrainOptions
    from spectral_llava.train.trainer import training_arguments

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        args = training_arguments(TrainOptions(gradient_checkpointing=True), str(tmp_path))
    assert args.gradient_checkpointing is True
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_gradient_checkpointing_recomputes_and_gives_the_same_step(aligned, dataset_dir, tmp_path):
    from spectral_llava.train.finetune import run_finetune

    mlp_calls = []  # the decoder layers' MLPs start with gradients on: once per micro-step, twice when recomputed

    def count(module, args):  # a pre-hook: the recomputation stops inside the MLP once it has what backward needs
        if isinstance(module, modeling_llama.LlamaMLP) and torch.is_grad_enabled():
            mlp_calls.append(module)

    runs = {}
    for checkpointing in (False, True):
        mlp_calls.clear()
        hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
        try:
            runs[checkpointing] = run_finetune(aligned["outputs"]["model"], dataset_dir, tmp_path / str(checkpointing),
                                               max_steps=1, lora_r=8, lora_alpha=16,
                                               gradient_checkpointing=checkpointing, **QUICK)
        finally:
            hook.remove()
        runs[checkpointing]["layer_calls"] = len(mlp_calls)
    # 2 decoder layers, one micro-step: run once, or once more in the backward pass
    assert runs[False]["layer_calls"] == 2 and runs[True]["layer_calls"] == 4
    assert abs(runs[True]["first_loss"] - runs[False]["first_loss"]) <= 1e-6
    adapters = [load_file(os.path.join(runs[c]["outputs"]["adapter"], "adapter_model.safetensors"))
                for c in (False, True)]
    for name in adapters[0]:
        torch.testing.assert_close(adapters[1][name], adapters[0][name], rtol=0, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None,
                    reason="bitsandbytes can run here: the quantized path is for a CUDA machine")
@pytest.mark.parametrize("flag", ["load_in_8bit", "load_in_4bit"])
def test_quantized_base_weights_need_cuda_and_bitsandbytes(flag, aligned, dataset_dir, tmp_path):
    from spectral_llava.train.finetune import run_finetune

    with pytest.raises(ValueError) as error:
        run_finetune(aligned["outputs"]["model"], dataset_dir, tmp_path / "q", max_steps=1, **{flag: True})
    message = str(error.value)
    assert message.startswith(f"--{flag.replace('_', '-')} needs ")
    assert ("a CUDA GPU" in message) == (not torch.cuda.is_available())
    assert ("pip install bitsandbytes" in message) == (importlib.util.find_spec("bitsandbytes") is None)
    assert not (tmp_path / "q").exists()


def test_quantization_is_refused_under_fsdp_and_configured_as_qlora(monkeypatch):
    from spectral_llava.train.options import FinetuneOptions
    from spectral_llava.train.quantization import bitsandbytes_config, quantization_config

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="--load-in-4bit runs on one GPU or with DDP"):
        quantization_config(FinetuneOptions(load_in_4bit=True))
    assert quantization_config(FinetuneOptions()) is None
    qlora, int8 = bitsandbytes_config(4), bitsandbytes_config(8)
    assert qlora.load_in_4bit and qlora.bnb_4bit_quant_type == "nf4" and qlora.bnb_4bit_use_double_quant
    assert qlora.bnb_4bit_compute_dtype == torch.bfloat16 and int8.load_in_8bit and not int8.load_in_4bit
    for config in (qlora, int8):  # the tower (features cached in float32), projector and lm_head stay as they are
        assert config.llm_int8_skip_modules == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def test_quantization_skips_exactly_the_tower_projector_and_lm_head(tiny_model):
    """Which linear layers bitsandbytes converts, decided by transformers' own matching of the skip list: only the
    LLM's decoder layers (a bare "vision_tower" entry would leave the tower and projector to be quantized)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    from spectral_llava.train.quantization import NOT_QUANTIZED

    model, _ = tiny_model
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    converted = {name for name in linears if should_convert_module(name, NOT_QUANTIZED)}
    assert converted and all(name.startswith("model.language_model.layers.") for name in converted)
    assert set(linears) - converted == {name for name in linears if not name.startswith("model.language_model.")}
    assert {"lm_head", "model.multi_modal_projector.linear_1"} <= set(linears) - converted
    for name in NOT_QUANTIZED:
        model.get_submodule(name)  # each entry names a module of the model


def test_8bit_and_4bit_exclude_each_other(capsys, tmp_path):
    from spectral_llava.cli import build_parser, main
    from spectral_llava.train.finetune import FINETUNE
    from spectral_llava.train.trainer import main as stage_main

    paths = ["--model", str(tmp_path / "m"), "--dataset", str(tmp_path / "d"), "--output", str(tmp_path / "o")]
    both = "pass --load-in-8bit or --load-in-4bit, not both"
    with pytest.raises(SystemExit):  # python -m spectral_llava.train.finetune / accelerate launch
        stage_main(FINETUNE, [*paths, "--load-in-8bit", "--load-in-4bit"])
    assert both in capsys.readouterr().err
    assert main(["train", "finetune", *paths, "--load-in-8bit", "--load-in-4bit"]) == 2
    assert both in capsys.readouterr().err
    args = build_parser().parse_args(["train", "finetune", *paths, "--load-in-4bit", "--gradient-checkpointing"])
    assert args.load_in_4bit and not args.load_in_8bit and args.gradient_checkpointing
