"""Paths and tiny configurations shared by the tests (imported as `testing_utils`; tests/ is on sys.path)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
EUROSAT = os.path.join(DATA, "eurosat-ms")
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "reference", "spectralgpt")
# a tiny tower in the official checkpoint format (2 blocks of width 64, 32x32)
TINY_CHECKPOINT = os.path.join(DATA, "spectralgpt-reference", "spectralgpt_mae_tiny.pth")
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# SmolLM2's chat template is ChatML with this default system turn
SMOLLM2_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)
# a tiny tower keeps model tests fast
TINY_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
# a tiny Llama shaped like SmolLM2 (grouped-query attention, tied embeddings); 48 wide so that its features are
# told apart from the tower's 64
TINY_LLAMA = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True)
# the tower of `tiny_random_llava`: 16x16 input, 4 spectral groups x 2 x 2 patches = 16 visual tokens ("tokens")
TINY_RANDOM_TOWER = dict(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def subprocess_env(**extra):
    """Environment of a `spectral-llava` / `python -m train.*` subprocess that runs this tree."""
    return {**os.environ, "PYTHONPATH": REPO, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **extra}


def smollm2_tokenizer(special_tokens: bool = False):
    """SmolLM2-135M-Instruct's tokenizer (ChatML): from the dequantised cache when present, else from the GGUF;
    with `special_tokens` also the builder's `<image>`, `[caption]` and `[classification]`."""
    from transformers import AutoTokenizer

    from spectral_llava.modeling_spectral_llava.tools.build import SPECIAL_TOKENS, cache_dir, smollm2_gguf_path

    cached = os.path.join(cache_dir(), "smollm2-135m-instruct")
    if os.path.isfile(os.path.join(cached, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        folder, name = os.path.split(smollm2_gguf_path())
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


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


def tiny_random_llava(tokenizer, seed=0):
    """Random SpectralGPT tower (`TINY_RANDOM_TOWER`) + random 2-layer Llama on `tokenizer`'s vocabulary, composed
    in memory by the builder (which sets the pad token and left padding on `tokenizer`): model tests that run in
    seconds, as transformers tests its own models on tiny random configurations."""
    import warnings

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from spectral_llava.modeling_spectral_llava.tools.build import compose
    from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import SpectralGPTConfig
    from spectral_llava.modeling_spectral_llava.modeling_spectralgpt import SpectralGPTVisionModel

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


# the tower of `save_image_dependent_model`: large random weights so that the generated text depends on the image
IMAGE_DEPENDENT_TOWER = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, initializer_range=1.0)


def save_image_dependent_model(out, image_size: int, seed: int = 0) -> str:
    """A saved model dir whose answers depend on the image (scene mapping, web app): random tower
    (`IMAGE_DEPENDENT_TOWER`, spectral_mean layout, pool 2) + a 2-layer random Llama (initializer range 1.0) on
    SmolLM2's tokenizer, ending turns at `<|im_end|>`; returns `out` as a string."""
    import warnings

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from spectral_llava.modeling_spectral_llava.tools.build import build_processor, compose, load_vision_tower, save_model_dir

    tokenizer = smollm2_tokenizer()
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=True, initializer_range=1.0, eos_token_id=end_of_turn,
                                       pad_token_id=tokenizer.pad_token_id))
    llm.generation_config.eos_token_id = end_of_turn
    llm.generation_config.pad_token_id = tokenizer.pad_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = load_vision_tower("random", image_size=image_size, seed=seed, overrides=IMAGE_DEPENDENT_TOWER)
    model = compose(tower, llm, tokenizer, layout="spectral_mean", spatial_pool=2, seed=seed)
    save_model_dir(model, build_processor(model, tokenizer), out)
    return str(out)


def eurosat_subset(root, classes=("Forest", "River", "SeaLake"), per_class=4):
    """`root/<Class>/<Class>_k.tif` symlinks to the first `per_class` samples of `classes`; returns `root`."""
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k in range(1, per_class + 1):
            os.symlink(os.path.join(EUROSAT, name, f"{name}_{k}.tif"), os.path.join(root, name, f"{name}_{k}.tif"))
    return str(root)

# training runs of the tests: few steps, no warm-up so that every step moves the weights
QUICK_TRAINING = dict(batch_size=2, grad_accum=1, warmup_ratio=0.0, lr=1e-3)
