import glob
import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from testing_utils import DATA, REFERENCE, TINY_VISION
from safetensors.torch import load_file

from spectral_llava.modeling_spectral_llava.tools.build import compose, load_vision_tower, resize_position_grid
from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import (
    SpectralGPTConfig,
    SpectralLlavaConfig,
    num_visual_tokens,
)
from spectral_llava.modeling_spectral_llava.tools.convert_spectralgpt import (
    convert,
    convert_state_dict,
    infer_config,
    load_official_state_dict,
    load_spectralgpt_checkpoint,
)
from spectral_llava.modeling_spectral_llava.modeling_spectral_llava import SpectralLlavaForConditionalGeneration
from spectral_llava.modeling_spectral_llava.modeling_spectralgpt import SpectralGPTVisionModel

LOCAL_REFERENCE = os.path.join(DATA, "spectralgpt-reference")


def reference_configs():
    """Every reference configuration: the in-repo copy, plus all of ../shared/reference/spectralgpt when present."""
    found = {os.path.basename(p)[: -len(".json")]: os.path.dirname(p)
             for p in glob.glob(os.path.join(LOCAL_REFERENCE, "spectralgpt_mae_*.json"))}
    for path in glob.glob(os.path.join(REFERENCE, "spectralgpt_mae_*.json")):
        found[os.path.basename(path)[: -len(".json")]] = os.path.dirname(path)
    return sorted(found.items())


def relative_error(got, want):
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("name,folder", reference_configs())
def test_tower_reproduces_official_outputs(name, folder, tmp_path):
    spec = json.loads(Path(os.path.join(folder, f"{name}.json")).read_text())
    io = load_file(os.path.join(folder, f"{name}_io.safetensors"))
    # through the converter CLI's function and the saved dir, as a user would
    convert(os.path.join(folder, f"{name}.pth"), tmp_path / "tower", num_heads=spec["heads"])
    tower = SpectralGPTVisionModel.from_pretrained(tmp_path / "tower").eval()
    config = tower.config
    assert (config.image_size, config.patch_size, config.bands_per_group) == (spec["img"], spec["patch"], spec["t_patch"])
    assert (config.hidden_size, config.num_hidden_layers) == (spec["embed"], spec["depth"])
    with torch.no_grad():
        out = tower(io["pixel_values"], output_hidden_states=True)
    assert len(out.hidden_states) == spec["depth"] + 1
    for key, want in io.items():
        if key == "pixel_values":
            continue
        got = out.last_hidden_state if key == "last_hidden_state" else out.hidden_states[int(key.split(".")[1])]
        assert got.shape == want.shape
        assert relative_error(got, want) < 1e-5, key


def test_published_vitb_key_set_maps_completely():
    shapes = json.loads(Path(os.path.join(LOCAL_REFERENCE, "spectralgpt_vitb_128_keys.json")).read_text())
    state_dict = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = infer_config(state_dict)
    assert (config.image_size, config.patch_size, config.bands_per_group, config.num_channels) == (128, 8, 3, 12)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    converted = convert_state_dict(state_dict, config)
    with torch.device("meta"):
        expected = SpectralGPTVisionModel(config).state_dict()
    assert set(converted) == set(expected)  # every encoder key used
    decoder = [k for k in shapes if k.startswith("decoder_") or k == "mask_token"]
    assert len(converted) + len(decoder) == len(shapes)  # every other key recognised as decoder
    n_params = sum(torch.Size(shapes[k]).numel() for k in shapes if k not in decoder)
    assert abs(n_params / 1e6 - 85.4) < 0.1


def _tiny_state_dict():
    return torch.load(os.path.join(LOCAL_REFERENCE, "spectralgpt_mae_tiny.pth"), weights_only=True)["model"]


def test_converter_refuses_missing_unexpected_and_misshaped_keys(tmp_path):
    state_dict = _tiny_state_dict()
    config = infer_config(state_dict)
    broken = dict(state_dict)
    del broken["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing encoder keys \['layers.1.mlp.fc2.bias'\]"):
        convert_state_dict(broken, config)
    with pytest.raises(ValueError, match=r"unexpected keys \['head.weight'\]"):
        convert_state_dict({**state_dict, "head.weight": torch.zeros(10, 64)}, config)
    with pytest.raises(ValueError, match=r"mis-shaped keys \['layers.0.self_attn.q_proj.weight"):
        convert_state_dict({**state_dict, "blocks.0.attn.q.weight": torch.zeros(64, 32)}, config)
    bare = tmp_path / "bare.pth"
    torch.save(state_dict, bare)  # a bare state dict is accepted too
    assert load_spectralgpt_checkpoint(bare, num_heads=4).config.num_hidden_layers == 2


def test_converter_announces_its_head_count_assumption(tmp_path, caplog):
    """The tiny reference checkpoint has 4 heads of width 16: the width / 64 default (1 head) is announced with the
    flag that overrides it, and the flag silences it."""
    from spectral_llava.cli import main

    checkpoint = os.path.join(LOCAL_REFERENCE, "spectralgpt_mae_tiny.pth")
    with caplog.at_level(logging.WARNING):
        assert main(["convert-spectralgpt", checkpoint, str(tmp_path / "assumed")]) == 0
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "does not store its number of attention heads; assuming width / 64 = 64 / 64 = 1" in message
    assert "convert-spectralgpt CHECKPOINT DIR --num-heads N" in message and checkpoint in message
    assert json.loads((tmp_path / "assumed" / "config.json").read_text())["num_attention_heads"] == 1

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["convert-spectralgpt", checkpoint, str(tmp_path / "given"), "--num-heads", "4"]) == 0
    assert not [record for record in caplog.records if "attention heads" in record.getMessage()]
    assert json.loads((tmp_path / "given" / "config.json").read_text())["num_attention_heads"] == 4


def test_converter_clear_errors_for_bad_files(tmp_path):
    source = os.path.join(LOCAL_REFERENCE, "spectralgpt_mae_tiny.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(Path(source).read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"truncated\.pth: not a readable PyTorch checkpoint"):
        load_official_state_dict(truncated)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"corrupt\.pth"):
        load_official_state_dict(corrupt)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": _tiny_state_dict(), "args": pickle.PickleError("an arbitrary object")}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe\.pth: refused by torch.load\(weights_only=True\)"):
        load_official_state_dict(unsafe)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_official_state_dict(tmp_path / "missing.pth")


def test_convert_cli_writes_dir_that_automodel_loads(tmp_path, capsys):
    from transformers import AutoModel

    from spectral_llava.cli import main

    out = tmp_path / "tower"
    assert main(["convert-spectralgpt", os.path.join(LOCAL_REFERENCE, "spectralgpt_mae_tiny.pth"), str(out),
                 "--num-heads", "4"]) == 0
    assert {"config.json", "model.safetensors", "modeling_spectralgpt.py",
            "configuration_spectral_llava.py"} <= set(os.listdir(out))
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_spectralgpt.SpectralGPTVisionModel"
    tower = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert type(tower).__name__ == "SpectralGPTVisionModel"
    io = load_file(os.path.join(LOCAL_REFERENCE, "spectralgpt_mae_tiny_io.safetensors"))
    with torch.no_grad():
        got = tower(io["pixel_values"]).last_hidden_state
    assert relative_error(got, io["last_hidden_state"]) < 1e-5
    assert main(["convert-spectralgpt", str(tmp_path / "nope.pth"), str(tmp_path / "x")]) == 2
    assert "nope.pth" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_other_image_sizes_interpolate_the_spatial_grid():
    torch.manual_seed(0)
    tower = SpectralGPTVisionModel(SpectralGPTConfig(image_size=32, **TINY_VISION)).eval()
    pixels = torch.randn(1, 12, 64, 64)
    with torch.no_grad():
        runtime = tower(pixels).last_hidden_state
        assert runtime.shape == (1, 4 * 8 * 8, 64)
        resize_position_grid(tower, 64)  # what `build --image-size` does to a checkpoint of another size
        assert tower.config.image_size == 64
        resized = tower(pixels).last_hidden_state
    assert torch.allclose(runtime, resized, atol=1e-6)
    with pytest.raises(ValueError, match="not a positive multiple of the patch size 8"):
        tower(torch.randn(1, 12, 4, 4))


@pytest.mark.parametrize("layout,pool,tokens,width", [
    ("tokens", 1, 4 * 16, 64), ("tokens", 2, 4 * 4, 64), ("spectral_concat", 1, 16, 4 * 64),
    ("spectral_mean", 2, 4, 64), ("spectral_mean", 4, 1, 64),
])
def test_visual_token_count_matches_features(layout, pool, tokens, width):
    vision = SpectralGPTConfig(image_size=32, **TINY_VISION)
    text = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 100}
    config = SpectralLlavaConfig(vision, text, image_token_id=99, visual_token_layout=layout, spatial_pool=pool,
                                 projector_type="mlp2x_gelu")
    model = SpectralLlavaForConditionalGeneration(config).eval()
    assert num_visual_tokens(config) == tokens
    assert model.multi_modal_projector.linear_1.in_features == width
    with torch.no_grad():
        assert model.get_image_features(torch.randn(3, 12, 32, 32)).pooler_output.shape == (3, tokens, 32)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="spatial_pool=3"):
        SpectralLlavaConfig(SpectralGPTConfig(image_size=32), spatial_pool=3)
    with pytest.raises(ValueError, match="visual_token_layout='grid'"):
        SpectralLlavaConfig(visual_token_layout="grid")
    with pytest.raises(ValueError, match="band_names has 3 entries"):
        SpectralGPTConfig(band_names=["B02", "B03", "B04"])


@pytest.fixture(scope="module")
def tiny_llava(tiny_llm_dir):
    from spectral_llava.modeling_spectral_llava.tools.build import load_llm

    llm, tokenizer = load_llm(tiny_llm_dir)
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        tower = load_vision_tower("random", image_size=32, overrides=TINY_VISION)
    return compose(tower, llm, tokenizer, layout="spectral_mean"), tokenizer


def _prompt(tokenizer, n_images=1, n_tokens=16):
    text = "<image>" * (n_tokens * n_images) + "\n[caption] Describe this scene."
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=False)
    return tokenizer(prompt, return_tensors="pt")


def test_placeholder_count_mismatch_is_a_clear_error(tiny_llava):
    model, tokenizer = tiny_llava
    with torch.no_grad(), pytest.raises(ValueError, match="holds 15 <image> tokens but 1 image"):
        model(**_prompt(tokenizer, n_tokens=15), pixel_values=torch.randn(1, 12, 32, 32))
    with torch.no_grad(), pytest.raises(ValueError, match="holds 16 <image> tokens but 2 image"):
        model(**_prompt(tokenizer), pixel_values=torch.randn(2, 12, 32, 32))


def test_loss_ignores_minus_100_and_only_projector_gets_gradients(tiny_llava):
    model, tokenizer = tiny_llava
    inputs = _prompt(tokenizer)
    labels = torch.full_like(inputs.input_ids, -100)
    labels[:, -6:] = inputs.input_ids[:, -6:]
    pixels = torch.randn(1, 12, 32, 32)
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    out = model(**inputs, pixel_values=pixels, labels=labels)
    manual = torch.nn.functional.cross_entropy(out.logits[0, -7:-1], inputs.input_ids[0, -6:])
    assert torch.allclose(out.loss, manual, atol=1e-5)
    out.loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.bias"}
    assert model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.freeze_vision_tower()
    assert not any(p.requires_grad for p in model.vision_tower.parameters())


def test_generate_with_cache_equals_without(tiny_llava):
    model, tokenizer = tiny_llava
    inputs = _prompt(tokenizer)
    pixels = torch.randn(1, 12, 32, 32)
    with torch.no_grad():
        cached = model.generate(**inputs, pixel_values=pixels, max_new_tokens=6, do_sample=False)
        uncached = model.generate(**inputs, pixel_values=pixels, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape[1] == inputs.input_ids.shape[1] + 6
    assert torch.equal(cached, uncached)


def test_saved_model_loads_from_its_own_files_in_a_clean_process(tiny_model_dir, tmp_path):
    """Remote code round trip: a process where this repository cannot be imported loads and generates the same."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    band_folder = os.path.join(DATA, "bigearthnet-v1", "S2A_MSIL2A_20170613T101031_87_48")
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys, torch
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("spectral_llava", "modeling_spectral_llava", "processing", "train"):
                    raise ImportError("the repository must not be importable here: " + name)
        sys.meta_path.insert(0, Block())
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({tiny_model_dir!r}, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained({tiny_model_dir!r}, trust_remote_code=True)
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        # the processor reads a band folder with the reader's files that travelled with it (sentinel2_io, _bands)
        processor = AutoProcessor.from_pretrained({tiny_model_dir!r}, trust_remote_code=True)
        torch.save(processor(images={band_folder!r}, text="<image>", return_tensors="pt")["pixel_values"],
                   {str(tmp_path / "pixels.pt")!r})
        print(json.dumps({{"module": type(model).__module__, "base": type(base).__name__,
                          "tokens": out[0].tolist()}}))
    """)
    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True).eval()
    inputs = dict(processor(images=torch.rand(12, 40, 40) * 3000, text="<image>\n[caption] Describe.",
                            return_tensors="pt", band_names=model.config.vision_config.band_names))
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "pixel_values")}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules")
    assert loaded["base"] == "SpectralLlavaModel"
    assert loaded["tokens"] == expected
    expected_pixels = processor(images=band_folder, text="<image>", return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.load(tmp_path / "pixels.pt"), expected_pixels)
