import os
import sys
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "reference", "spectralgpt")
sys.path.insert(0, REPO)

# a tiny tower keeps model tests fast; the LLM is the real SmolLM2-135M-Instruct
TINY_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(scope="session")
def smollm2():
    """(LlamaForCausalLM, tokenizer) of the embedded SmolLM2, loaded once; tests must not modify them."""
    from modeling_spectral_llava.build import load_llm

    return load_llm("smollm2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A complete saved model dir: tiny random tower (32x32) + real SmolLM2, spectral_mean layout (16 tokens)."""
    from modeling_spectral_llava.build import build_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_model(out, image_size=32, layout="spectral_mean", vision_overrides=TINY_VISION)
    return str(out)
