"""The chat format follows the LLM: SmolLM2's own template for new SmolLM2 builds, ChatML (with its tokens added)
for an LLM whose tokenizer has no template, and SmolLM2 model dirs built before this (ChatML without a system turn)
rendering, tokenising and answering exactly as they did."""

import os
import shutil
import warnings

import pytest
import torch
from testing_utils import DATA, SMOLLM2_SYSTEM, TINY_VISION
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from spectral_llava.processing.processing_spectral_llava import DEFAULT_CHAT_TEMPLATE
from spectral_llava.train.data import IGNORE_INDEX, encode_conversation

TIF = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
CAPTION = "[caption] Describe this multispectral satellite image."
# chat_template.jinja as `spectral-llava build` wrote it for SmolLM2 before the chat format followed the LLM
LEGACY_CHATML = (
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\n' -}}{%- if message['content'] is "
    "string -%}{{- message['content'] -}}{%- else -%}{%- for part in message['content'] -%}{%- if part['type'] == "
    "'image' -%}{{- '<image>\n' -}}{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{- '<|im_end|>\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
CONVERSATION = [{"from": "human", "value": "<image>\n[classification] Which land-cover classes are present?"},
                {"from": "gpt", "value": "Labels: Forest"}]


@pytest.fixture(scope="module")
def legacy_model_dir(tiny_model_dir, tmp_path_factory):
    """A SmolLM2 model dir as main's builder wrote it: the same files, with its ChatML chat template."""
    legacy = tmp_path_factory.mktemp("legacy") / "smollm2"
    shutil.copytree(tiny_model_dir, legacy)
    (legacy / "chat_template.jinja").write_text(LEGACY_CHATML)
    return legacy


def expand(text, count=16):
    return text.replace("<image>", "<image>" * count)


def test_new_smollm2_builds_use_smollm2s_template(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    assert processor.build_prompt("caption") == (
        f"{SMOLLM2_SYSTEM}<|im_start|>user\n<image>\n{CAPTION}<|im_end|>\n<|im_start|>assistant\n")
    # labels token by token: the answer and the <|im_end|> (+ newline) closing it, nothing of system turn or prompt
    tokenizer = processor.tokenizer
    ids, labels = encode_conversation(processor, CONVERSATION)
    prompt = tokenizer(expand(f"{SMOLLM2_SYSTEM}<|im_start|>user\n{CONVERSATION[0]['value']}<|im_end|>\n"
                              "<|im_start|>assistant\n"), add_special_tokens=False).input_ids
    answer = tokenizer("Labels: Forest<|im_end|>\n", add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(answer)[-2:] == ["<|im_end|>", "Ċ"]
    assert ids == prompt + answer and labels == [IGNORE_INDEX] * len(prompt) + answer


def test_smollm2_model_dirs_built_before_answer_the_same(legacy_model_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(legacy_model_dir, trust_remote_code=True)
    old_prompt = f"<|im_start|>user\n<image>\n{CAPTION}<|im_end|>\n<|im_start|>assistant\n"
    assert processor.build_prompt("caption") == old_prompt
    tokenizer = processor.tokenizer
    old_ids = tokenizer(expand(old_prompt), add_special_tokens=False).input_ids
    inputs = processor(images=TIF, text=old_prompt, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == old_ids

    model = AutoModelForImageTextToText.from_pretrained(legacy_model_dir, trust_remote_code=True).eval()
    with torch.no_grad():
        direct = model.generate(input_ids=torch.tensor([old_ids]), pixel_values=inputs["pixel_values"],
                                max_new_tokens=6, do_sample=False)[0, len(old_ids):]
    pipe = pipeline("image-text-to-text", model=str(legacy_model_dir), trust_remote_code=True)
    answer = pipe(images=TIF, max_new_tokens=6, return_full_text=False, generate_kwargs={"do_sample": False})
    assert answer[0]["generated_text"] == tokenizer.decode(direct, skip_special_tokens=True)

    # training keeps its format: labels as before, and a re-saved processor (stage exports) keeps the template
    ids, labels = encode_conversation(processor, CONVERSATION)
    prompt = tokenizer(expand(f"<|im_start|>user\n{CONVERSATION[0]['value']}<|im_end|>\n<|im_start|>assistant\n"),
                       add_special_tokens=False).input_ids
    answer_ids = tokenizer("Labels: Forest<|im_end|>\n", add_special_tokens=False).input_ids
    assert ids == prompt + answer_ids and labels == [IGNORE_INDEX] * len(prompt) + answer_ids
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text() == LEGACY_CHATML


def test_llm_without_template_falls_back_to_chatml(llama3_llm_dir):
    from spectral_llava.modeling_spectral_llava.tools.build import build_processor, compose, load_llm, load_vision_tower

    llm, tokenizer = load_llm(llama3_llm_dir, dtype="fp32")
    tokenizer.chat_template = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = load_vision_tower("random", image_size=32, overrides=TINY_VISION)
    model = compose(tower, llm, tokenizer, layout="spectral_mean")
    processor = build_processor(model, tokenizer)
    assert processor.chat_template == DEFAULT_CHAT_TEMPLATE
    assert processor.build_prompt("caption") == (
        f"<|im_start|>user\n<image>\n{CAPTION}<|im_end|>\n<|im_start|>assistant\n")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.tokenize("<|im_start|>user<|im_end|>")[0] == "<|im_start|>"
    assert model.generation_config.eos_token_id == [tokenizer.convert_tokens_to_ids("<|end_of_text|>"), im_end]
    assert model.dtype == torch.float32  # --llm-dtype fp32 over the LLM's bfloat16
