import os
import subprocess
import sys
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "reference", "spectralgpt")
sys.path.insert(0, REPO)

# a tiny tower keeps model tests fast; the LLM is the real SmolLM2-135M-Instruct
TINY_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
# the same tower shape in the official checkpoint format (2 blocks of width 64, 32x32)
TINY_CHECKPOINT = os.path.join(DATA, "spectralgpt-reference", "spectralgpt_mae_tiny.pth")


def subprocess_env(**extra):
    """Environment of a `spectral-llava` / `python -m train.*` subprocess that runs this tree."""
    return {**os.environ, "PYTHONPATH": REPO, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **extra}


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


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """Spectral-Inst built from tests/data/eurosat-ms with the template captioner (80/10/10 patches)."""
    from train.spectral_inst import BuildConfig, build_dataset

    out = tmp_path_factory.mktemp("data") / "spectral-inst"
    build_dataset(BuildConfig(output=str(out), eurosat=os.path.join(DATA, "eurosat-ms")))
    return str(out)


@pytest.fixture(scope="session")
def llama3_llm_dir(tmp_path_factory):
    """A tiny random LLM in Llama-3's format (tokenizer, chat template, 2-layer LlamaForCausalLM in bfloat16)."""
    from fixtures.llama3 import make_llama3_llm

    return str(make_llama3_llm(tmp_path_factory.mktemp("llm") / "llama3-tiny"))


@pytest.fixture(scope="session")
def llama3_model_dir(llama3_llm_dir, tmp_path_factory):
    """`spectral-llava build --llm DIR` around the tiny Llama-3 LLM, tiny official-format tower, 16 visual tokens."""
    out = tmp_path_factory.mktemp("models") / "llama3"
    done = subprocess.run(
        [sys.executable, "-m", "spectral_llava_cli", "build", str(out), "--llm", llama3_llm_dir,
         "--vision", TINY_CHECKPOINT, "--image-size", "32", "--layout", "spectral_mean"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return str(out)
