"""The one model-dir loader: the repository's model and processor classes, no remote-code copy in the process."""

import logging
import shutil
import sys

import pytest
import torch


def remote_modules():
    return {name for name in sys.modules if name.startswith("transformers_modules")}


def test_loader_uses_the_repository_classes_only(tiny_model_dir, tmp_path):
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
    from spectral_llava.modeling_spectral_llava.modeling_spectral_llava import SpectralLlavaForConditionalGeneration
    from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
    from spectral_llava.processing.processing_spectral_llava import SpectralLlavaProcessor

    copy = shutil.copytree(tiny_model_dir, tmp_path / "never-loaded-before")  # its remote code has no module yet
    before = remote_modules()
    model, processor = load_model_and_processor(copy, device="cpu")
    assert remote_modules() == before  # no remote-code copy of the model or the processor was imported
    assert type(model) is SpectralLlavaForConditionalGeneration and not model.training
    assert type(processor) is SpectralLlavaProcessor and type(processor.image_processor) is SpectralImageProcessor
    assert processor.num_image_tokens == model.num_image_tokens == 16
    assert processor.image_processor.image_size == 32
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id
    assert next(model.parameters()).dtype == torch.float32


def test_processor_takes_the_saved_settings_and_nothing_deprecated(tiny_model_dir, tmp_path):
    """The dir's chat template reaches the processor, and transformers logs nothing while loading it (it logged
    "`ProcessorMixin.from_args_and_dict` is deprecated" on every command)."""
    from spectral_llava.modeling_spectral_llava.tools.loading import load_processor

    copy = shutil.copytree(tiny_model_dir, tmp_path / "edited")
    template = copy / "chat_template.jinja"
    template.write_text(template.read_text() + "{# edited #}")
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process warnings
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        processor = load_processor(copy)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert [record.getMessage() for record in records] == []
    assert processor.chat_template.endswith("{# edited #}")
    assert (processor.num_image_tokens, processor.image_token) == (16, "<image>")


def test_loader_names_a_dir_without_config(tmp_path):
    from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

    with pytest.raises(FileNotFoundError, match=f"--model {tmp_path}: .*no config.json"):
        load_model_and_processor(tmp_path)
