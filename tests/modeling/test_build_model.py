import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import TINY_CHECKPOINT, TINY_VISION

from spectral_llava.modeling_spectral_llava.tools.build import load_vision_tower
from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import SpectralLlavaConfig, num_visual_tokens
from spectral_llava.cli import main


def test_random_tower_is_announced_as_untrained():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        load_vision_tower("random", image_size=32, overrides=TINY_VISION)


@pytest.fixture(scope="module")
def built_from_checkpoint(tmp_path_factory, tiny_llm_dir):
    """`spectral-llava build` around the tiny official-format checkpoint, logged lines captured."""
    out = tmp_path_factory.mktemp("build") / "model"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("spectral_llava.modeling_spectral_llava")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        code = main(["build", str(out), "--vision", TINY_CHECKPOINT, "--llm", tiny_llm_dir, "--image-size", "32",
                     "--layout", "spectral_concat", "--spatial-pool", "2"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert code == 0
    return out, "\n".join(record.getMessage() for record in records)


def test_build_writes_a_complete_model_dir(built_from_checkpoint):
    out, log = built_from_checkpoint
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "processor_config.json", "chat_template.jinja", "README.md",
            "tokenizer.json", "tokenizer_config.json", "configuration_spectral_llava.py",
            "modeling_spectral_llava.py", "modeling_spectralgpt.py", "image_processing_spectral_llava.py",
            "sentinel2_io.py", "sentinel2_bands.py", "sentinel2_stac.py", "radiometry.py", "radiometry_settings.py",
            "processing_spectral_llava.py"} <= files
    assert not {"scene_reader.py", "rendering.py", "options.py"} & files  # not remote code
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == (
        "modeling_spectral_llava.SpectralLlavaForConditionalGeneration")
    assert config["auto_map"]["AutoModel"] == "modeling_spectral_llava.SpectralLlavaModel"
    assert "16 visual tokens" not in log and "4 visual tokens per image" in log  # 4x4 grid pooled by 2


def test_built_tower_holds_the_checkpoint_and_processor_agrees(built_from_checkpoint):
    from transformers import AutoProcessor, AutoTokenizer

    out, _ = built_from_checkpoint
    official = torch.load(TINY_CHECKPOINT, weights_only=True)["model"]
    weights = load_file(out / "model.safetensors")
    assert torch.equal(weights["model.vision_tower.layers.1.mlp.fc2.weight"], official["blocks.1.mlp.fc2.weight"])
    assert torch.equal(weights["model.vision_tower.embeddings.spatial_position_embedding"],
                       official["pos_embed_spatial"])
    config = SpectralLlavaConfig.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert processor.num_image_tokens == num_visual_tokens(config) == 4
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    for token in ("<image>", "[caption]", "[classification]"):
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1
    assert weights["model.language_model.embed_tokens.weight"].shape[0] == len(tokenizer)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-text-to-text" in card and "spectralgpt_mae_tiny.pth" in card
    assert json.loads((out / "provenance.json").read_text()) == {
        "vision_tower": "spectralgpt_mae_tiny.pth", "language_model": "tiny-llama", "training": []}


def test_build_refuses_unknown_sources(tmp_path, capsys):
    assert main(["build", str(tmp_path / "m"), "--llm", str(tmp_path / "no-llm")]) == 2
    assert "no-llm" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses a layout outside the choices
        main(["build", str(tmp_path / "m"), "--layout", "grid"])
    assert "invalid choice: 'grid'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_is_dequantised_once_into_a_plain_llama_cache(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from spectral_llava.modeling_spectral_llava.tools.build import load_llm, smollm2_gguf_path

    monkeypatch.setenv("SPECTRAL_LLAVA_CACHE", str(tmp_path))
    model, tokenizer = load_llm("smollm2")
    cached = tmp_path / "smollm2-135m-instruct"
    assert type(model) is LlamaForCausalLM and (cached / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())
    mtime = os.path.getmtime(cached / "model.safetensors")
    load_llm("smollm2")  # second call reads the cache, does not dequantise again
    assert os.path.getmtime(cached / "model.safetensors") == mtime
    folder, name = os.path.split(smollm2_gguf_path())
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    ids = tokenizer("A river crosses farmland.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf(ids).logits)
