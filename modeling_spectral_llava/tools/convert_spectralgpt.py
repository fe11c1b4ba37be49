"""Convert an official SpectralGPT checkpoint (`SpectralGPT.pth`, `SpectralGPT+.pth`) into a transformers model dir.

The official format is `torch.save({"model": state_dict})` (or a bare state dict) holding the MAE encoder and
decoder. Only the encoder is kept; its shape (patch size, bands per group, groups, image size, width, depth) is
read off the tensors. The number of heads is not stored: it defaults to width / 64 (ViT-B: 12, the published
checkpoints), announced in the log, and `--num-heads` overrides it.

The published checkpoints are the SpectralGPT authors' release (https://github.com/danfenghong/IEEE_TPAMI_SpectralGPT,
weights on Zenodo, record 8412455): `SpectralGPT.pth` (pretrained 200 epochs on fMoW-Sentinel, 96x96 input) and
`SpectralGPT+.pth` (continually pretrained 100 more epochs on BigEarthNet, 128x128; the encoder the paper uses).
"""

import logging
import os
import pickle
import re

import torch

from ..configuration_spectral_llava import SPECTRALGPT_BANDS, SpectralGPTConfig
from spectral_llava.utils.fileio import write_dir_atomically
from ..modeling_spectralgpt import SpectralGPTVisionModel

logger = logging.getLogger(__name__)

# official encoder key pattern -> our parameter name
_KEY_RULES = [
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"pos_embed_spatial", "embeddings.spatial_position_embedding"),
    (r"pos_embed_temporal", "embeddings.spectral_position_embedding"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.attn\.([qkv])\.(weight|bias)", r"layers.\1.self_attn.\2_proj.\3"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layers.\1.self_attn.out_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]
_DECODER_KEY = re.compile(r"(decoder_.*|mask_token)")


def rename_key(key):
    """Our parameter name for an official encoder key, None for a decoder key; raises for anything else."""
    if _DECODER_KEY.fullmatch(key):
        return None
    for pattern, replacement in _KEY_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(key)


def load_official_state_dict(path):
    """Read a SpectralGPT checkpoint safely (`weights_only=True`), with errors that name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SpectralGPT checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused by torch.load(weights_only=True): the file holds objects other than tensors "
            f"and plain containers, so it is not loaded ({str(err).splitlines()[0]})"
        ) from err
    except Exception as err:  # torch raises many types for damaged files (zip, EOF, unpickler stack errors)
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {err}") from err
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: expected {{'model': state_dict}} or a state dict of tensors")
    return state_dict


def infer_config(state_dict, num_heads=None, source="checkpoint"):
    """SpectralGPTConfig read off the encoder tensor shapes."""
    required = ["patch_embed.proj.weight", "pos_embed_spatial", "pos_embed_temporal", "norm.weight"]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(f"{source}: missing encoder keys {missing}")
    width, in_channels, bands_per_group, patch, patch_w = state_dict["patch_embed.proj.weight"].shape
    if in_channels != 1 or patch != patch_w:
        raise ValueError(f"{source}: patch_embed.proj.weight has shape "
                         f"{tuple(state_dict['patch_embed.proj.weight'].shape)}, expected (D, 1, t, p, p)")
    groups = state_dict["pos_embed_temporal"].shape[1]
    grid = round(state_dict["pos_embed_spatial"].shape[1] ** 0.5)
    if grid * grid != state_dict["pos_embed_spatial"].shape[1]:
        raise ValueError(f"{source}: pos_embed_spatial has {state_dict['pos_embed_spatial'].shape[1]} positions, "
                         "not a square grid")
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if num_heads is None:
        num_heads = max(1, width // 64)
        logger.warning("%s: a checkpoint does not store its number of attention heads; assuming width / 64 = %d / 64 "
                       "= %d (head size 64, as in the published ViT-B checkpoints). If it was trained with another "
                       "count, pass it: `spectral-llava convert-spectralgpt CHECKPOINT DIR --num-heads N` (then "
                       "`spectral-llava build --vision DIR`).", source, width, num_heads)
    hidden = state_dict["blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * width
    num_channels = groups * bands_per_group
    return SpectralGPTConfig(
        image_size=grid * patch,
        patch_size=patch,
        num_channels=num_channels,
        bands_per_group=bands_per_group,
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        mlp_ratio=hidden / width,
        qkv_bias="blocks.0.attn.q.bias" in state_dict or depth == 0,
        band_names=SPECTRALGPT_BANDS if num_channels == 12 else [f"band_{i}" for i in range(num_channels)],
    )


def convert_state_dict(state_dict, config, source="checkpoint"):
    """Map the official encoder keys onto `SpectralGPTVisionModel`, refusing anything that does not fit."""
    with torch.device("meta"):  # shapes only, no allocation
        expected = SpectralGPTVisionModel(config).state_dict()
    converted, unexpected = {}, []
    for key, tensor in state_dict.items():
        try:
            new_key = rename_key(key)
        except KeyError:
            unexpected.append(key)
            continue
        if new_key is not None:
            converted[new_key] = tensor
    unexpected += [k for k in converted if k not in expected]
    missing = sorted(set(expected) - set(converted))
    mis_shaped = [
        f"{k}: {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
        for k in converted
        if k in expected and converted[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing encoder keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {sorted(unexpected)}")
    if mis_shaped:
        problems.append(f"mis-shaped keys {mis_shaped}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return converted


def load_spectralgpt_checkpoint(path, num_heads=None):
    """`SpectralGPTVisionModel` holding the encoder of an official checkpoint."""
    state_dict = load_official_state_dict(path)
    config = infer_config(state_dict, num_heads=num_heads, source=os.fspath(path))
    model = SpectralGPTVisionModel(config)
    model.load_state_dict(convert_state_dict(state_dict, config, source=os.fspath(path)), strict=True)
    return model.eval()


def convert(checkpoint, output_dir, num_heads=None):
    model = load_spectralgpt_checkpoint(checkpoint, num_heads=num_heads)
    write_dir_atomically(model.save_pretrained, output_dir)
    c = model.config
    logger.info(
        "converted %s -> %s (ViT %dx%d, patch %d, %d bands in groups of %d, width %d, depth %d, heads %d)",
        checkpoint, output_dir, c.image_size, c.image_size, c.patch_size, c.num_channels, c.bands_per_group,
        c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
    )
    return model
