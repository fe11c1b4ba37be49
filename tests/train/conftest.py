"""Fixtures of the training tests: a Spectral-Inst build of the EuroSAT samples and a 2-step stage 1 run."""

import pytest
from testing_utils import EUROSAT, QUICK_TRAINING


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """Spectral-Inst built from tests/data/eurosat-ms with the template captioner (80/10/10 patches)."""
    from spectral_llava.spectral_inst import BuildConfig, build_dataset

    out = tmp_path_factory.mktemp("data") / "spectral-inst"
    build_dataset(BuildConfig(output=str(out), eurosat=EUROSAT))
    return str(out)


@pytest.fixture(scope="session")
def model_and_processor(tiny_model_dir):
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

    return load_model_and_processor(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def aligned(tiny_model_dir, dataset_dir, tmp_path_factory):
    """Stage 1 (uncached), 2 steps on class-label text."""
    from spectral_llava.train.align import run_alignment

    out = tmp_path_factory.mktemp("align") / "uncached"
    return run_alignment(tiny_model_dir, dataset_dir, out, max_steps=2, text="class-labels", **QUICK_TRAINING)
