"""Shared fixtures: real Sentinel-2 samples (tests/data), a tiny random Llama with SmolLM2's tokenizer (unit tests,
as transformers' own model tests use tiny random configs) and the real SmolLM2 (integration tests only)."""

import os
import sys
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
EUROSAT = os.path.join(DATA, "eurosat-ms")
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "reference", "spectralgpt")
sys.path.insert(0, REPO)

# a tiny tower keeps model tests fast
TINY_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
# a tiny Llama shaped like SmolLM2 (grouped-query attention, tied embeddings); 48 wide so that its features are
# told apart from the tower's 64
TINY_LLAMA = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True)


def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (ChatML): from the dequantised cache when present, else from the GGUF."""
    from transformers import AutoTokenizer

    from modeling_spectral_llava.build import cache_dir, smollm2_gguf_path

    cached = os.path.join(cache_dir(), "smollm2-135m-instruct")
    if os.path.isfile(os.path.join(cached, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(cached)
    folder, name = os.path.split(smollm2_gguf_path())
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def eurosat_subset(root, classes=("Forest", "River", "SeaLake"), per_class=4):
    """`root/<Class>/<Class>_k.tif` symlinks to the first `per_class` samples of `classes`; returns `root`."""
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k in range(1, per_class + 1):
            os.symlink(os.path.join(EUROSAT, name, f"{name}_{k}.tif"), os.path.join(root, name, f"{name}_{k}.tif"))
    return str(root)


@pytest.fixture(scope="session")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, tokenizer):
    """A randomly initialised LlamaForCausalLM (seed 0) saved with SmolLM2's tokenizer and generation config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("llm") / "tiny-llama"
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY_LLAMA)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_llm_dir):
    """A complete saved model dir: tiny random tower (32x32) + tiny random Llama, spectral_mean layout (16 tokens)."""
    from modeling_spectral_llava.build import build_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_model(out, llm=tiny_llm_dir, image_size=32, layout="spectral_mean", vision_overrides=TINY_VISION)
    return str(out)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, processor) of `tiny_model_dir` through the repository's loader, on CPU; tests must not modify them."""
    from modeling_spectral_llava.loading import load_model_and_processor

    return load_model_and_processor(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """(LlamaForCausalLM, tokenizer) of the embedded SmolLM2, loaded once; integration tests must not modify them."""
    from modeling_spectral_llava.build import load_llm

    return load_llm("smollm2")
