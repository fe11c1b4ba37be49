"""Fixtures for scene mapping: a tiny model dir (tiny tower + tiny random Llama with SmolLM2's tokenizer) and real
Sentinel-2 scenes from the shared data."""

import os
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
MAJOR_TOM = os.path.join(SHARED, "major-tom-s2l2a", "0U", "0U_199R",
                         "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
MAJOR_TOM_N9999 = os.path.join(SHARED, "major-tom-s2l2a", "199U", "199U_1099R",
                               "S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_20230924T183543")
SAFE_MTD = os.path.join(SHARED, "sentinel2-safe-metadata", "MTD_MSIL2A.xml")
DATA = os.path.join(REPO, "tests", "data")
# initializer_range 1.0: random weights large enough that the generated text depends on the image
TINY_VISION = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, initializer_range=1.0)


def build_tiny_model(out, image_size=32, seed=0):
    """A saved model dir: tiny random tower + a 2-layer random Llama on SmolLM2's tokenizer (fast generation)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from modeling_spectral_llava.build import (compose, build_processor, load_vision_tower, save_model_dir,
                                               cache_dir, load_llm)

    path = os.path.join(cache_dir(), "smollm2-135m-instruct")
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        load_llm("smollm2")  # dequantises the GGUF once into the cache
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=True, initializer_range=1.0, eos_token_id=tokenizer.convert_tokens_to_ids(
                                           "<|im_end|>"), pad_token_id=tokenizer.pad_token_id))
    llm.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    llm.generation_config.pad_token_id = tokenizer.pad_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = load_vision_tower("random", image_size=image_size, seed=seed, overrides=TINY_VISION)
    model = compose(tower, llm, tokenizer, layout="spectral_mean", spatial_pool=2, seed=seed)
    processor = build_processor(model, tokenizer)
    save_model_dir(model, processor, out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_map_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-map")


@pytest.fixture(scope="session")
def tiny_map_model(tiny_map_model_dir):
    from train.evaluate import load_model

    return load_model(tiny_map_model_dir, device="cpu")
