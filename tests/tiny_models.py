"""A tiny random Spectral-LLaVA on SmolLM2's vocabulary: model and processor tests that run in seconds, as
transformers tests its own models on tiny random configurations."""

import warnings

# 16x16 input, 4 spectral groups x 2 x 2 patches = 16 visual tokens in the "tokens" layout
TINY_RANDOM_TOWER = dict(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def smollm2_tokenizer():
    """The embedded SmolLM2 tokenizer with the builder's special tokens (<image>, [caption], [classification]),
    loaded without the LLM."""
    from transformers import AutoTokenizer

    from modeling_spectral_llava.build import SPECIAL_TOKENS, smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


def tiny_random_llava(tokenizer, seed=0):
    """Random SpectralGPT tower + random 2-layer Llama on `tokenizer`'s vocabulary, composed by the builder (which
    sets the pad token and left padding on `tokenizer`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from modeling_spectral_llava.build import compose
    from modeling_spectral_llava.configuration_spectral_llava import SpectralGPTConfig
    from modeling_spectral_llava.modeling_spectral_llava import SpectralGPTVisionModel

    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    ))
    tower = SpectralGPTVisionModel(SpectralGPTConfig(**TINY_RANDOM_TOWER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mean-resizing notice for the added special tokens
        return compose(tower, llm, tokenizer, layout="tokens", seed=seed).eval()
