"""Evaluation fixtures: a converted tiny SpectralGPT tower dir and GEO-Bench task folders (geobench_data.py)."""

import pytest
from geobench_data import write_m_bigearthnet, write_m_eurosat
from testing_utils import TINY_CHECKPOINT


@pytest.fixture(scope="session")
def tiny_tower_dir(tmp_path_factory):
    """`spectral-llava convert-spectralgpt` of the tiny official-format checkpoint (2 blocks, width 64, 32x32)."""
    from spectral_llava.modeling_spectral_llava.tools.convert_spectralgpt import convert

    out = tmp_path_factory.mktemp("tower") / "tiny-tower"
    convert(TINY_CHECKPOINT, out)
    return str(out)


@pytest.fixture(scope="session")
def m_eurosat(tmp_path_factory):
    return write_m_eurosat(tmp_path_factory.mktemp("geobench") / "m-eurosat")


@pytest.fixture(scope="session")
def m_bigearthnet(tmp_path_factory):
    return write_m_bigearthnet(tmp_path_factory.mktemp("geobench") / "m-bigearthnet")
