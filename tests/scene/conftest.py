"""Scene-mapping fixtures: a tiny model dir whose answers depend on the image
(`testing_utils.save_image_dependent_model`). The real scenes and SAFE writers are in `sentinel2_samples`."""

import pytest
from testing_utils import save_image_dependent_model


@pytest.fixture(scope="session")
def tiny_map_model_dir(tmp_path_factory):
    return save_image_dependent_model(tmp_path_factory.mktemp("models") / "tiny-map", image_size=32)


@pytest.fixture(scope="session")
def tiny_map_model(tiny_map_model_dir):
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

    return load_model_and_processor(tiny_map_model_dir, device="cpu")
