"""Model captioners: a text LLM (the real SmolLM2: what it writes is the behaviour under test) and any HF
image-text-to-text model (a tiny random Llava)."""

import json

import pytest
from testing_utils import save_tiny_llama

from spectral_llava.spectral_inst import BuildConfig, build_dataset, metadata_facts, metadata_prompt
from spectral_inst_data import PARQUET, REBEN, all_rows


def llm_caption_build(output, spec, max_new_tokens):
    config = BuildConfig(output=str(output), bigearthnet=str(REBEN), metadata=str(PARQUET), captioner=f"llm:{spec}",
                         max_new_tokens=max_new_tokens, max_patches=1)
    build_dataset(config)
    rows = [row for rows in all_rows(output / "patches").values() for row in rows]
    assert len(rows) == 1 and rows[0]["captioner"] == f"llm:{spec}"
    return config, rows[0]


def test_llm_captioner_prompts_caches_and_reuses_captions(tmp_path, tokenizer):
    """The `llm:DIR` route on a tiny random Llama (untied: a tied random one only repeats the prompt's last token,
    here a newline, which makes an empty caption)."""
    llm = save_tiny_llama(tmp_path / "llm", tokenizer, tie_word_embeddings=False)
    output = tmp_path / "out"
    config, row = llm_caption_build(output, llm, max_new_tokens=6)
    assert row["caption"].strip()
    messages = json.loads(row["caption_prompt"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"].endswith(metadata_facts(row) + "\nDescribe the image in two sentences.")
    assert "Austria" in messages[-1]["content"] and "Serbia" in messages[1]["content"]
    cached = sorted((output / ".work" / "captions").glob("llm-*/*/*.json"))
    assert [json.loads(path.read_text())["caption"] for path in cached] == [row["caption"]]
    # a re-run takes the captions from the cache (one JSON per patch) instead of generating them again
    entry = json.loads(cached[0].read_text())
    cached[0].write_text(json.dumps(dict(entry, caption=entry["caption"] + " (cached)")))
    build_dataset(config)
    again = [r for rows in all_rows(output / "patches").values() for r in rows]
    assert [r["caption"] for r in again] == [row["caption"] + " (cached)"]


@pytest.mark.integration
def test_smollm2_writes_a_sentence_about_the_patch(tmp_path):
    _, row = llm_caption_build(tmp_path / "out", "smollm2", max_new_tokens=20)
    assert len(row["caption"].split()) >= 3 and row["caption"].endswith((".", "!", "?"))


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def tiny_llava_dir(tmp_path, tokenizer):
    """A tiny randomly initialised LlavaForConditionalGeneration (CLIP 32x32 tower) with SmolLM2's tokenizer."""
    import torch
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    folder = tmp_path / "tiny-llava"
    tokenizer.save_pretrained(folder / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.generation_config.eos_token_id = None  # a random model may emit EOS at once; keep the route testable
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_hf_image_text_captioner_route(tmp_path, tiny_llava_dir):
    output = tmp_path / "out"
    config = BuildConfig(output=str(output), bigearthnet=str(REBEN), metadata=str(PARQUET),
                         captioner=f"hf:{tiny_llava_dir}", max_new_tokens=8)
    build_dataset(config)
    rows = [row for rows in all_rows(output / "patches").values() for row in rows]
    assert len(rows) == 2
    for row in rows:
        assert row["captioner"] == f"hf:{tiny_llava_dir}" and row["caption"].strip()
        assert row["caption_prompt"] == metadata_prompt(row)
    assert len(list((output / ".work" / "captions").glob("hf-*/*/*.json"))) == 2
