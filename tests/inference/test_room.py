"""The inference room's own surface: a model dir loaded for use, precision detection, lazy public names."""

import importlib
import subprocess
import sys

import pytest
import torch

import spectral_llava.inference as inference
from spectral_llava.inference import load_for_inference, native_bf16


def test_load_for_inference_chooses_device_and_dtype(tiny_model_dir):
    model, processor = load_for_inference(tiny_model_dir, device="cpu", dtype=torch.bfloat16)
    assert not model.training and model.device == torch.device("cpu")
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    model, processor = load_for_inference(tiny_model_dir, device="cpu")
    assert next(model.parameters()).dtype == torch.float32
    # the processor keeps the dir's own radiometric handling: callers pass their settings with each call
    assert processor.image_processor.input_offset is None and processor.image_processor.strict is False


def test_load_for_inference_names_a_dir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"--model {tmp_path}: .*no config.json"):
        load_for_inference(tmp_path)


def test_native_bf16_decides_the_tile_annotators_precision(tiny_model):
    from spectral_llava.scene.inference import TileAnnotator

    assert native_bf16(torch.device("meta")) is False  # neither CUDA nor a CPU: never native
    annotator = TileAnnotator(*tiny_model)
    assert annotator.bf16 is native_bf16(torch.device("cpu"))
    assert annotator.precision == ("bfloat16 autocast (tower)" if annotator.bf16 else "float32")
    assert TileAnnotator(*tiny_model, bf16=False).precision == "float32"


def test_every_public_name_resolves_to_its_module():
    for name in inference.__all__:
        value = getattr(inference, name)
        module = importlib.import_module(f"spectral_llava.inference.{inference._EXPORTS[name]}")
        assert getattr(module, name) is value, name
    assert inference.load_model_and_processor.__module__ == "spectral_llava.modeling_spectral_llava.tools.loading"
    with pytest.raises(AttributeError, match="'spectral_llava.inference' has no attribute 'nothing'"):
        inference.nothing


def test_options_and_label_format_load_without_torch():
    """What `--help` and the dataset builder need from the room imports no torch."""
    code = ("import sys; from spectral_llava.inference import CaptionOptions, format_labels, mentioned_classes; "
            "import spectral_llava.inference.options, spectral_llava.inference.labels; "
            "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
