"""The conventions transformers' own models (Llava) follow, shown on a tiny random Spectral-LLaVA.

Continuing `generate()` from a returned cache, assisted decoding, `get_image_features` outputs, tuple outputs, tower
attentions under eager, loss kwargs under gradient accumulation, the tied head's TP plan and a compiled decoding
step with a static cache.
"""

import copy
import inspect
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import CompileConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from spectral_llava.modeling_spectral_llava.modeling_spectral_llava import (
    CACHE_FIELD,
    SpectralLlavaForConditionalGeneration,
    SpectralLlavaModel,
)
from testing_utils import TINY_RANDOM_TOWER, smollm2_tokenizer, tiny_random_llava

N_VISUAL = 4 * 2 * 2  # "tokens" layout: 4 spectral groups x 2 x 2 patches


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer(special_tokens=True)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_random_llava(tokenizer)


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Two prompts of different lengths (left padding), one image each."""
    texts = ["<image>" * N_VISUAL + "\n[caption] Describe.",
             "<image>" * N_VISUAL + "\n[classification] Which land-cover classes are in this scene?"]
    inputs = dict(tokenizer(texts, return_tensors="pt", padding=True))
    torch.manual_seed(0)
    inputs["pixel_values"] = torch.rand(2, 12, 16, 16)
    return inputs


def greedy(model, **overrides):
    """Greedy settings that never stop early nor emit `<image>` (a random LLM might)."""
    settings = dict(do_sample=False, max_new_tokens=6, min_new_tokens=6, suppress_tokens=[model.config.image_token_id],
                    return_dict_in_generate=True, output_scores=True)
    return {**settings, **overrides}


def test_forward_and_prepare_inputs_declare_the_cache_argument(model):
    """`generate()` validates model kwargs against these signatures, so the cache must be a named parameter."""
    for method in (model.forward, model.base_model.forward, model.prepare_inputs_for_generation):
        assert CACHE_FIELD in inspect.signature(method).parameters, method
    for method in (model.forward, model.base_model.forward, model.get_image_features, model.vision_tower.forward):
        assert inspect.signature(method).parameters["kwargs"].annotation == Unpack[TransformersKwargs], method


def test_generate_continues_from_a_returned_cache(model, batch):
    with torch.no_grad():
        whole = model.generate(**batch, **greedy(model))
        first = model.generate(**batch, **greedy(model, max_new_tokens=3, min_new_tokens=3))
        attention_mask = F.pad(batch["attention_mask"], (0, 3), value=1)
        # the image is already in the cache: passing it again with the same prompt, or not, gives the same result
        for pixel_values in (batch["pixel_values"], None):
            cache = copy.deepcopy(getattr(first, CACHE_FIELD))
            continued = model.generate(input_ids=first.sequences, attention_mask=attention_mask,
                                       pixel_values=pixel_values, **{CACHE_FIELD: cache},
                                       **greedy(model, max_new_tokens=3, min_new_tokens=3))
            assert torch.equal(continued.sequences, whole.sequences)
            for step, (got, want) in enumerate(zip(first.scores + continued.scores, whole.scores)):
                finite = want.isfinite()
                torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-5, msg=f"step {step}")
            assert getattr(continued, CACHE_FIELD).get_seq_length() == getattr(whole, CACHE_FIELD).get_seq_length()


def test_both_cache_names_are_accepted(model, batch):
    """`cache` (transformers >= 5.24) and `past_key_values` (before) reach the LLM alike."""
    with torch.no_grad():
        prefill = model(**batch, use_cache=True)
        attention_mask = F.pad(batch["attention_mask"], (0, 1), value=1)
        step = dict(input_ids=torch.tensor([[42], [43]]), attention_mask=attention_mask)
        logits = {}
        for name in ("cache", "past_key_values"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the name the installed version deprecates
                out = model(**step, **{name: copy.deepcopy(getattr(prefill, CACHE_FIELD))})
            logits[name] = out.logits
    torch.testing.assert_close(logits["cache"], logits["past_key_values"], rtol=0, atol=0)


def test_assisted_and_prompt_lookup_decoding_equal_greedy(model, tokenizer, batch):
    one = {key: value[:1] for key, value in batch.items()}
    assistant = tiny_random_llava(copy.deepcopy(tokenizer), seed=1)
    with torch.no_grad():
        plain = model.generate(**one, **greedy(model)).sequences
        assisted = model.generate(**one, assistant_model=assistant, **greedy(model)).sequences
        lookup = model.generate(**one, prompt_lookup_num_tokens=2, **greedy(model)).sequences
    assert plain.shape[1] == one["input_ids"].shape[1] + 6
    assert torch.equal(assisted, plain)
    assert torch.equal(lookup, plain)


def test_get_image_features_returns_tower_outputs_and_projected_tokens(model, batch):
    pixels = batch["pixel_values"]
    with torch.no_grad():
        tower = model.vision_tower(pixels, output_hidden_states=True)
        out = model.get_image_features(pixel_values=pixels)
        full = model.get_image_features(pixel_values=pixels, output_hidden_states=True)
        as_tuple = model.get_image_features(pixel_values=pixels, return_dict=False)
        projected = model.multi_modal_projector(model.arrange_visual_tokens(tower.last_hidden_state))
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (2, N_VISUAL, 32)
    torch.testing.assert_close(out.last_hidden_state, tower.last_hidden_state, rtol=0, atol=0)
    assert out.pooler_output.shape == (2, N_VISUAL, model.config.text_config.hidden_size)
    torch.testing.assert_close(out.pooler_output, projected, rtol=0, atol=0)
    assert out.hidden_states is None and out.attentions is None  # only on request
    assert len(full.hidden_states) == TINY_RANDOM_TOWER["num_hidden_layers"] + 1
    for got, want in zip(full.hidden_states, tower.hidden_states):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    torch.testing.assert_close(as_tuple[1], out.pooler_output, rtol=0, atol=0)
    # the merged visual tokens are the ones forward() reports
    with torch.no_grad():
        forward_images = model(**batch).image_outputs
    torch.testing.assert_close(forward_images.pooler_output, out.pooler_output, rtol=0, atol=0)


def test_get_image_features_from_cached_features_and_another_feature_layer(tokenizer, batch):
    model = tiny_random_llava(copy.deepcopy(tokenizer))
    pixels = batch["pixel_values"]
    with torch.no_grad():
        from_pixels = model.get_image_features(pixel_values=pixels)
        cached = model.select_vision_features(pixels)
        from_cache = model.get_image_features(vision_features=cached)
        torch.testing.assert_close(from_cache.pooler_output, from_pixels.pooler_output, rtol=0, atol=0)
        assert from_cache.last_hidden_state is cached
        model.config.vision_feature_layer = 1  # output of block 1, before the final LayerNorm
        layer_one = model.get_image_features(pixel_values=pixels)
        block_one = model.vision_tower(pixels, output_hidden_states=True).hidden_states[1]
    expected = model.multi_modal_projector(model.arrange_visual_tokens(block_one))
    torch.testing.assert_close(layer_one.pooler_output, expected, rtol=0, atol=0)
    assert not torch.allclose(layer_one.pooler_output, from_pixels.pooler_output)
    assert layer_one.hidden_states is None  # read to select the layer, not returned unasked
    with pytest.raises(ValueError, match="pixel_values or vision_features"):
        model.get_image_features()


def test_return_dict_false_gives_the_same_values_as_tuples(model, batch):
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        as_dict = model(**batch, labels=labels)
        as_tuple = model(**batch, labels=labels, return_dict=False)
        base_dict = model.base_model(**batch)
        base_tuple = model.base_model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(base_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.loss, rtol=0, atol=0)
    torch.testing.assert_close(as_tuple[1], as_dict.logits, rtol=0, atol=0)
    torch.testing.assert_close(base_tuple[0], base_dict.last_hidden_state, rtol=0, atol=0)
    assert as_tuple[-1].pooler_output.shape == (2, N_VISUAL, 32)  # image outputs come last


def test_tower_attentions_under_eager_and_eager_matches_sdpa(model, batch, tmp_path):
    pixels = batch["pixel_values"]
    tower = model.vision_tower
    assert tower.config._attn_implementation == "sdpa"  # the default
    with torch.no_grad():
        sdpa = tower(pixels, output_hidden_states=True)
        model.set_attn_implementation("eager")  # switched after loading
        try:
            eager = tower(pixels, output_attentions=True, output_hidden_states=True)
            merged = model(**batch, output_attentions=True)
        finally:
            model.set_attn_implementation("sdpa")
    tokens = 4 * 2 * 2
    assert len(eager.attentions) == TINY_RANDOM_TOWER["num_hidden_layers"]
    for weights in eager.attentions:
        assert weights.shape == (2, TINY_RANDOM_TOWER["num_attention_heads"], tokens, tokens)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, TINY_RANDOM_TOWER["num_attention_heads"], tokens))
    pairs = zip((eager.last_hidden_state, *eager.hidden_states), (sdpa.last_hidden_state, *sdpa.hidden_states))
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert len(merged.image_outputs.attentions) == TINY_RANDOM_TOWER["num_hidden_layers"]
    assert len(merged.attentions) == 2  # the LLM's
    # chosen at load time
    model.save_pretrained(tmp_path)
    loaded = SpectralLlavaForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert loaded.vision_tower.config._attn_implementation == "eager"
    with torch.no_grad():
        reloaded = loaded.vision_tower(pixels, output_attentions=True)
    torch.testing.assert_close(reloaded.attentions[-1], eager.attentions[-1], rtol=0, atol=0)


def test_loss_with_num_items_in_batch_equals_manual_accumulation(model, batch):
    """Two micro-batches with different numbers of target tokens, as `Trainer` accumulates them."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, : -5] = -100
    labels[1, -5:-3] = -100  # the second sample has fewer targets
    micro = [{key: value[i:i + 1] for key, value in {**batch, "labels": labels}.items()} for i in range(2)]
    num_items = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        accumulated = sum(model(**inputs, num_items_in_batch=torch.tensor(num_items)).loss for inputs in micro)
        per_batch_means = sum(model(**inputs).loss for inputs in micro)
        logits = model(**batch).logits
    summed = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(accumulated, summed / num_items, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(per_batch_means / 2, summed / num_items)  # what dropping the kwarg would report

    # shift_labels (sequence parallelism): already aligned targets replace labels' own shift
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        from_shift = model(**batch, labels=torch.zeros_like(labels), shift_labels=shift_labels).loss
        from_labels = model(**batch, labels=labels).loss
    torch.testing.assert_close(from_shift, from_labels, rtol=1e-6, atol=1e-6)


def test_trainer_gradient_accumulation_reports_the_token_mean_loss(model, tokenizer, tmp_path):
    """`Trainer` passes `num_items_in_batch` and, since the model uses it, does not average micro-batch means."""
    from transformers import Trainer, TrainingArguments

    samples = []
    for n_targets in (2, 9, 4, 15):
        ids = tokenizer("<image>" * N_VISUAL + "\n[caption]" + " word" * n_targets, return_tensors="pt")["input_ids"][0]
        labels = ids.masked_fill(torch.arange(len(ids)) < len(ids) - n_targets, -100)
        samples.append({"input_ids": ids, "labels": labels, "pixel_values": torch.rand(12, 16, 16)})

    def collate(rows):
        width = max(len(row["input_ids"]) for row in rows)

        def pad(tensor, value):
            return F.pad(tensor, (width - len(tensor), 0), value=value)

        return {"input_ids": torch.stack([pad(row["input_ids"], tokenizer.pad_token_id) for row in rows]),
                "attention_mask": torch.stack([pad(torch.ones_like(row["input_ids"]), 0) for row in rows]),
                "labels": torch.stack([pad(row["labels"], -100) for row in rows]),
                "pixel_values": torch.stack([row["pixel_values"] for row in rows])}

    with torch.no_grad():
        summed = sum(F.cross_entropy(model(**collate([row])).logits[0, :-1], row["labels"][1:], reduction="sum")
                     for row in samples)
    token_mean = summed / sum(int((row["labels"][1:] != -100).sum()) for row in samples)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, gradient_accumulation_steps=4,
                             learning_rate=0.0, max_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                             save_strategy="no")
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=samples, data_collator=collate)
    trainer.train()
    logged = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert logged == pytest.approx(token_mean.item(), rel=1e-4)  # was 4x (the sum of 4 micro-batch means)


def test_tied_lm_head_is_sharded_with_the_embeddings(model):
    assert model.lm_head.weight is model.get_input_embeddings().weight
    plan = model.tp_plan
    assert plan["lm_head"] == "colwise_gather_output"
    assert "model.language_model.embed_tokens" in plan
    modules = {name for name, _ in model.named_modules()}
    for pattern in plan:  # every entry names modules of this model
        regex = pattern.replace(".", r"\.").replace("*", r"\d+")
        assert any(re.fullmatch(regex, name) for name in modules), pattern


def test_compiled_decoding_with_a_static_cache_equals_eager(model, batch):
    """`generate()` compiles the decoding step (fullgraph, no graph break allowed) when the cache is static, as it
    does by default on GPUs; forced here on CPU. aot_eager keeps the test fast; inductor gives the same tokens."""
    assert SpectralLlavaForConditionalGeneration._can_compile_fullgraph
    compile_config = CompileConfig(fullgraph=True, dynamic=False, backend="aot_eager")
    compile_config._compile_all_devices = True  # generate() compiles on accelerators only otherwise
    torch.compiler.reset()
    with torch.no_grad():
        eager = model.generate(**batch, **greedy(model))
        compiled = model.generate(**batch, cache_implementation="static", compile_config=compile_config,
                                  **greedy(model))
    assert hasattr(model, "_compiled_call")
    assert type(getattr(compiled, CACHE_FIELD)).__name__ == "StaticCache"
    assert torch.equal(compiled.sequences, eager.sequences)
    for got, want in zip(compiled.scores, eager.scores):
        finite = want.isfinite()
        torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_base_model_outputs_carry_image_outputs(model, batch):
    with torch.no_grad():
        out = model.base_model(**batch, output_hidden_states=True)
        text_only = model.base_model(input_ids=batch["input_ids"][:, -5:])
    assert isinstance(model.base_model, SpectralLlavaModel)
    assert len(out.image_outputs.hidden_states) == TINY_RANDOM_TOWER["num_hidden_layers"] + 1
    torch.testing.assert_close(out.image_hidden_states, out.image_outputs.pooler_output, rtol=0, atol=0)
    assert text_only.image_outputs is None
