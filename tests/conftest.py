"""Shared fixtures: real Sentinel-2 samples (tests/data), a tiny random Llama with SmolLM2's tokenizer (unit tests,
as transformers' own model tests use tiny random configs), a tiny random LLM in Llama-3's format (tests/fixtures) and
the real SmolLM2 (integration tests only)."""

import gc
import os
import shutil
import tempfile
import warnings

# The tests' models are tiny: a second torch (OpenMP) thread only adds hand-offs, which made generation ~10x slower
# in CPU and wall time on a shared 2-core machine (measured). Set before anything imports torch; the processes the
# tests start inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
# The web-app servers of this session keep uploads in a folder of their own: gradio files an upload under a name
# made from its content in GRADIO_TEMP_DIR (default /tmp/gradio) and deletes every file its app created when the app
# closes, so two test sessions at once deleted each other's uploads of the same sample files (flaky browser tests).
GRADIO_TEMP_DIR = tempfile.mkdtemp(prefix="spectral-llava-tests-gradio-")
os.environ["GRADIO_TEMP_DIR"] = GRADIO_TEMP_DIR

import pytest  # noqa: E402
from testing_utils import (DATA, TINY_CHECKPOINT, TINY_VISION, eurosat_subset, save_tiny_llama,  # noqa: E402
                           smollm2_tokenizer)


def pytest_unconfigure(config):
    shutil.rmtree(GRADIO_TEMP_DIR, ignore_errors=True)


def pytest_collection_finish(session):
    """Put what collection imported (torch, transformers and the rest: ~400k objects) out of the garbage collector's
    sight: the full collections that every Trainer run ends with (accelerate's free_memory) then cost a third."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, tokenizer):
    """A randomly initialised LlamaForCausalLM (seed 0) saved with SmolLM2's tokenizer and generation config."""
    return save_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama", tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_llm_dir):
    """A complete saved model dir: tiny random tower (32x32) + tiny random Llama, spectral_mean layout (16 tokens)."""
    from spectral_llava.modeling_spectral_llava.tools.build import build_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_model(out, llm=tiny_llm_dir, image_size=32, layout="spectral_mean", vision_overrides=TINY_VISION)
    return str(out)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, processor) of `tiny_model_dir` through the repository's loader, on CPU; tests must not modify them."""
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

    return load_model_and_processor(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def small_eurosat(tmp_path_factory):
    """3 classes x 4 real EuroSAT patches (symlinks), enough for t-SNE and every probe ratio."""
    return eurosat_subset(tmp_path_factory.mktemp("eurosat"))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_eurosat):
    """Spectral-Inst from `small_eurosat` and one BigEarthNet v1 patch (template captions)."""
    import shutil

    from spectral_llava.spectral_inst import BuildConfig, build_dataset

    root = tmp_path_factory.mktemp("dataset") / "inst"
    ben = tmp_path_factory.mktemp("ben")
    patch = "S2B_MSIL2A_20170924T93020_69_24"
    # copied, not linked: the builder's folder walk does not follow symlinked folders
    shutil.copytree(os.path.join(DATA, "bigearthnet-v1", patch), ben / patch)
    build_dataset(BuildConfig(output=str(root), eurosat=small_eurosat, bigearthnet_v1=str(ben)))
    return str(root)


@pytest.fixture(scope="session")
def smollm2():
    """(LlamaForCausalLM, tokenizer) of the embedded SmolLM2, loaded once; integration tests must not modify them."""
    from spectral_llava.modeling_spectral_llava.tools.build import load_llm

    return load_llm("smollm2")


@pytest.fixture(scope="session")
def llama3_llm_dir(tmp_path_factory):
    """A tiny random LLM in Llama-3's format (tokenizer, chat template, 2-layer LlamaForCausalLM in bfloat16)."""
    from fixtures.llama3 import make_llama3_llm

    return str(make_llama3_llm(tmp_path_factory.mktemp("llm") / "llama3-tiny"))


@pytest.fixture(scope="session")
def llama3_model_dir(llama3_llm_dir, tmp_path_factory):
    """`spectral-llava build --llm DIR` around the tiny Llama-3 LLM, tiny official-format tower, 16 visual tokens."""
    from spectral_llava.cli import main

    out = tmp_path_factory.mktemp("models") / "llama3"
    assert main(["build", str(out), "--llm", llama3_llm_dir, "--vision", TINY_CHECKPOINT, "--image-size", "32",
                 "--layout", "spectral_mean"]) == 0
    return str(out)
