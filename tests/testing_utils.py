"""Paths and tiny configurations shared by the tests (imported as `testing_utils`; tests/ is on sys.path)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
EUROSAT = os.path.join(DATA, "eurosat-ms")
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "reference", "spectralgpt")
if REPO not in sys.path:
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


def save_tiny_llama(folder, tokenizer, **overrides):
    """A randomly initialised LlamaForCausalLM (seed 0, `TINY_LLAMA` + `overrides`) saved with `tokenizer` and
    SmolLM2's generation settings (end of turn `<|im_end|>`); returns `folder` as a string."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **{**TINY_LLAMA, **overrides})
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def eurosat_subset(root, classes=("Forest", "River", "SeaLake"), per_class=4):
    """`root/<Class>/<Class>_k.tif` symlinks to the first `per_class` samples of `classes`; returns `root`."""
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k in range(1, per_class + 1):
            os.symlink(os.path.join(EUROSAT, name, f"{name}_{k}.tif"), os.path.join(root, name, f"{name}_{k}.tif"))
    return str(root)

# training runs of the tests: few steps, no warm-up so that every step moves the weights
QUICK_TRAINING = dict(batch_size=2, grad_accum=1, warmup_ratio=0.0, lr=1e-3)
