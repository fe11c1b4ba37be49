"""The SpectralGPT vision tower: tubelet embeddings with spatial and spectral positions, pre-norm ViT blocks.

Remote code: this file is copied next to saved models and converted towers and imports only its sibling
configuration file.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_spectral_llava import SpectralGPTConfig


class SpectralGPTEmbeddings(nn.Module):
    """Conv3d tubelet embedding plus separate spatial and spectral position embeddings."""

    def __init__(self, config: SpectralGPTConfig):
        super().__init__()
        self.config = config
        p, t = config.patch_size, config.bands_per_group
        self.patch_embedding = nn.Conv3d(1, config.hidden_size, kernel_size=(t, p, p), stride=(t, p, p))
        grid = config.image_size // p
        self.spatial_position_embedding = nn.Parameter(torch.randn(1, grid * grid, config.hidden_size) * 0.02)
        self.spectral_position_embedding = nn.Parameter(
            torch.randn(1, config.num_spectral_groups, config.hidden_size) * 0.02
        )

    def reset_position_embeddings(self):
        nn.init.normal_(self.spatial_position_embedding, std=self.config.initializer_range)
        nn.init.normal_(self.spectral_position_embedding, std=self.config.initializer_range)

    def spatial_positions(self, height, width):
        """Spatial position grid for an h x w patch grid, bicubically resized when it differs from training."""
        grid = self.config.image_size // self.config.patch_size
        if (height, width) == (grid, grid):
            return self.spatial_position_embedding
        dim = self.spatial_position_embedding.shape[-1]
        table = self.spatial_position_embedding.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        table = F.interpolate(table.float(), size=(height, width), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, height * width, dim).to(self.spatial_position_embedding.dtype)

    def forward(self, pixel_values):
        channels, height, width = pixel_values.shape[1:]
        p = self.config.patch_size
        if channels != self.config.num_channels:
            raise ValueError(f"pixel_values has {channels} bands, the tower expects {self.config.num_channels}")
        if height < p or width < p or height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a positive multiple of the patch size {p}")
        weight = self.patch_embedding.weight
        tubelets = self.patch_embedding(pixel_values.to(weight.dtype).unsqueeze(1))  # (B, D, T, h, w)
        groups, h, w = tubelets.shape[2:]
        tokens = tubelets.flatten(2).transpose(1, 2)  # (B, T*h*w, D), spectral-group-major
        spatial = self.spatial_positions(h, w).repeat(1, groups, 1)
        spectral = self.spectral_position_embedding.repeat_interleave(h * w, dim=1)
        return tokens + spatial + spectral


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Softmax attention written out, so that the weights (B, heads, L, L) can be returned."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class SpectralGPTAttention(nn.Module):
    """Bidirectional multi-head self-attention through transformers' attention interface.

    `config._attn_implementation` picks the kernel: "sdpa" (default), "eager" (returns the attention weights),
    "flash_attention_2" or any function registered in `ALL_ATTENTION_FUNCTIONS`.
    """

    def __init__(self, config: SpectralGPTConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.head_dim = dim // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, hidden_states, **kwargs: Unpack[TransformersKwargs]):
        batch, length, _ = hidden_states.shape
        heads_shape = (batch, length, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(heads_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(heads_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(heads_shape).transpose(1, 2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attended, weights = attention_interface(
            self, query, key, value, None, scaling=self.scaling, dropout=0.0, is_causal=False, **kwargs
        )
        return self.out_proj(attended.reshape(batch, length, -1)), weights


class SpectralGPTMLP(nn.Module):
    def __init__(self, config: SpectralGPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(F.gelu(self.fc1(hidden_states)))  # exact (erf) GELU, as SpectralGPT


def _in_autocast_dtype(tensor):
    """Under autocast, cast a LayerNorm output (which autocast keeps in fp32) once instead of once per Linear."""
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return tensor.to(torch.get_autocast_dtype(device))
    return tensor


class SpectralGPTLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: SpectralGPTConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SpectralGPTAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SpectralGPTMLP(config)

    def forward(self, hidden_states, **kwargs: Unpack[TransformersKwargs]):
        attended, attention_weights = self.self_attn(_in_autocast_dtype(self.layer_norm1(hidden_states)), **kwargs)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(_in_autocast_dtype(self.layer_norm2(hidden_states))), attention_weights


class SpectralGPTPreTrainedModel(PreTrainedModel):
    config_class = SpectralGPTConfig
    base_model_prefix = "spectralgpt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["SpectralGPTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SpectralGPTEmbeddings):
            module.reset_position_embeddings()


class SpectralGPTVisionModel(SpectralGPTPreTrainedModel):
    """The SpectralGPT encoder (no masking, no CLS token).

    Returns `last_hidden_state` (B, T*h*w, D) after the final LayerNorm, `pooler_output` its token mean, with
    `output_hidden_states=True` the embeddings plus the output of each block, and with `output_attentions=True`
    each block's attention weights (B, heads, T*h*w, T*h*w) (under `attn_implementation="eager"`; "sdpa" and
    flash attention do not compute them).
    """

    def __init__(self, config: SpectralGPTConfig):
        super().__init__(config)
        self.embeddings = SpectralGPTEmbeddings(config)
        self.layers = nn.ModuleList(SpectralGPTLayer(config) for _ in range(config.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    @can_return_tuple
    def forward(
        self,
        pixel_values,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden_states = self.embeddings(pixel_values)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            hidden_states, attention_weights = layer(hidden_states, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(attention_weights)
        last_hidden_state = self.post_layernorm(hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=1),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


SpectralGPTConfig.register_for_auto_class()
SpectralGPTVisionModel.register_for_auto_class("AutoModel")

__all__ = ["SpectralGPTPreTrainedModel", "SpectralGPTVisionModel"]
