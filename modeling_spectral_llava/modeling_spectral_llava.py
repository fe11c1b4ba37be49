"""SpectralGPT vision tower and Spectral-LLaVA, shaped like transformers' Llava.

Remote code: this file is copied next to saved models and imports only its sibling configuration file.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast

from .configuration_spectral_llava import (
    SpectralGPTConfig,
    SpectralLlavaConfig,
    num_visual_tokens,
    visual_feature_width,
)


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


class SpectralGPTAttention(nn.Module):
    def __init__(self, config: SpectralGPTConfig):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, hidden_states):
        batch, length, dim = hidden_states.shape

        def heads(x):
            return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

        q, k, v = heads(self.q_proj(hidden_states)), heads(self.k_proj(hidden_states)), heads(self.v_proj(hidden_states))
        attended = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, dim))


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

    def forward(self, hidden_states):
        hidden_states = hidden_states + self.self_attn(_in_autocast_dtype(self.layer_norm1(hidden_states)))
        return hidden_states + self.mlp(_in_autocast_dtype(self.layer_norm2(hidden_states)))


class SpectralGPTPreTrainedModel(PreTrainedModel):
    config_class = SpectralGPTConfig
    base_model_prefix = "spectralgpt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["SpectralGPTLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SpectralGPTEmbeddings):
            module.reset_position_embeddings()


class SpectralGPTVisionModel(SpectralGPTPreTrainedModel):
    """The SpectralGPT encoder (no masking, no CLS token).

    Returns `last_hidden_state` (B, T*h*w, D) after the final LayerNorm, `pooler_output` its token mean, and with
    `output_hidden_states=True` the embeddings plus the output of each block.
    """

    def __init__(self, config: SpectralGPTConfig):
        super().__init__(config)
        self.embeddings = SpectralGPTEmbeddings(config)
        self.layers = nn.ModuleList(SpectralGPTLayer(config) for _ in range(config.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    def forward(self, pixel_values, output_hidden_states=None, return_dict=None, **kwargs):
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        hidden_states = self.embeddings(pixel_values)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        last_hidden_state = self.post_layernorm(hidden_states)
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=1),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )
        return output if return_dict is not False else output.to_tuple()


class SpectralLlavaProjector(nn.Module):
    def __init__(self, config: SpectralLlavaConfig):
        super().__init__()
        width, llm_width = visual_feature_width(config), config.text_config.hidden_size
        self.linear_1 = nn.Linear(width, llm_width)
        if config.projector_type == "mlp2x_gelu":
            self.act = nn.GELU()
            self.linear_2 = nn.Linear(llm_width, llm_width)

    def forward(self, features):
        hidden_states = self.linear_1(features)
        if hasattr(self, "linear_2"):
            hidden_states = self.linear_2(self.act(hidden_states))
        return hidden_states


# The KV-cache field is `cache` from transformers 5.24 on and `past_key_values` before: use whichever this
# installed version's output classes declare.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class SpectralLlavaModelOutputWithPast(BaseModelOutputWithPast):
    """`image_hidden_states`: the projected visual tokens (B_images, N_vis, d_llm) when images were encoded."""

    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class SpectralLlavaCausalLMOutputWithPast(CausalLMOutputWithPast):
    """`image_hidden_states`: the projected visual tokens (B_images, N_vis, d_llm) when images were encoded."""

    image_hidden_states: torch.FloatTensor | None = None


class SpectralLlavaPreTrainedModel(PreTrainedModel):
    config_class = SpectralLlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpectralGPTLayer", "LlamaDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement = ["past_key_values", "cache"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SpectralGPTEmbeddings):
            module.reset_position_embeddings()


def _cache_of(kwargs):
    """The KV cache argument, whatever transformers calls it (`past_key_values`; `cache` from 5.24)."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache if cache is not None and hasattr(cache, "get_seq_length") else None


class SpectralLlavaModel(SpectralLlavaPreTrainedModel):
    """SpectralGPT tower, projector and the LLM backbone (no LM head)."""

    def __init__(self, config: SpectralLlavaConfig):
        super().__init__(config)
        self.vision_tower = SpectralGPTVisionModel(config.vision_config)
        self.multi_modal_projector = SpectralLlavaProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def freeze_vision_tower(self):
        """Freeze the tower (the paper keeps SpectralGPT frozen in both stages)."""
        self.vision_tower.requires_grad_(False)
        self.vision_tower.eval()

    def select_vision_features(self, pixel_values):
        """The tower's output at `vision_feature_layer`, (B, T*h*w, D)."""
        layer = self.config.vision_feature_layer
        outputs = self.vision_tower(pixel_values, output_hidden_states=layer != -1, return_dict=True)
        return outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]

    def arrange_visual_tokens(self, features):
        """(B, T*h*w, D) tower features -> (B, N_vis, width) following the layout and spatial pool."""
        vision = self.config.vision_config
        batch, length, dim = features.shape
        groups = vision.num_spectral_groups
        side = int(round((length // groups) ** 0.5))
        grid = features.view(batch, groups, side, side, dim)
        pool = self.config.spatial_pool
        if pool > 1:
            pooled = F.avg_pool2d(grid.permute(0, 1, 4, 2, 3).reshape(batch, groups * dim, side, side), pool)
            side //= pool
            grid = pooled.view(batch, groups, dim, side, side).permute(0, 1, 3, 4, 2)
        layout = self.config.visual_token_layout
        if layout == "tokens":
            return grid.reshape(batch, groups * side * side, dim)
        if layout == "spectral_mean":
            return grid.mean(dim=1).reshape(batch, side * side, dim)
        return grid.permute(0, 2, 3, 1, 4).reshape(batch, side * side, groups * dim)  # spectral_concat

    def get_image_features(self, pixel_values=None, vision_features=None):
        """Projected visual tokens (B, N_vis, d_llm) from pixels, or from cached tower features (B, T*h*w, D)."""
        if vision_features is None:
            vision_features = self.select_vision_features(pixel_values)
        tokens = self.arrange_visual_tokens(vision_features)
        return self.multi_modal_projector(tokens.to(self.multi_modal_projector.linear_1.weight.dtype))

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features):
        """Mask of the `<image>` positions; raises when their count differs from the number of visual tokens."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        n_tokens, (n_images, per_image) = int(mask.sum()), image_features.shape[:2]
        if n_tokens != n_images * per_image:
            raise ValueError(
                f"the text holds {n_tokens} <image> tokens but {n_images} image(s) give {n_images * per_image} "
                f"visual tokens ({per_image} each): expand each <image> with the processor"
            )
        return mask.unsqueeze(-1).expand_as(inputs_embeds)

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        vision_features=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        cache = _cache_of(kwargs)
        decoding = cache is not None and cache.get_seq_length() > 0
        image_features = None
        has_images = pixel_values is not None or vision_features is not None
        # Images are merged at prefill only: later steps read them from the KV cache.
        if has_images and not decoding:
            image_features = self.get_image_features(pixel_values, vision_features)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.dtype))
        outputs = self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        return SpectralLlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_FIELD: outputs.get(CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class SpectralLlavaForConditionalGeneration(SpectralLlavaPreTrainedModel, GenerationMixin):
    """Spectral-LLaVA with the LM head: loss from `labels` (-100 ignored) and `generate`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: SpectralLlavaConfig):
        super().__init__(config)
        self.model = SpectralLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def get_image_features(self, pixel_values=None, vision_features=None):
        return self.model.get_image_features(pixel_values, vision_features)

    def freeze_vision_tower(self):
        self.model.freeze_vision_tower()

    @property
    def vision_tower(self):
        return self.model.vision_tower

    @property
    def multi_modal_projector(self):
        return self.model.multi_modal_projector

    @property
    def language_model(self):
        return self.model.language_model

    @property
    def num_image_tokens(self):
        return num_visual_tokens(self.config)

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        vision_features=None,
        logits_to_keep=0,
        **kwargs,
    ):
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            vision_features=vision_features,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size)
        return SpectralLlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: outputs.get(CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )

    def prepare_inputs_for_generation(self, *args, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        if _cache_of(model_inputs) is not None and _cache_of(model_inputs).get_seq_length() > 0:
            model_inputs.pop("pixel_values", None)  # decoding steps read the image from the cache
            model_inputs.pop("vision_features", None)
        return model_inputs

    def select_vision_features(self, pixel_values):
        """The tower's output at `vision_feature_layer`, (B, T*h*w, D) (what a feature cache stores)."""
        return self.model.select_vision_features(pixel_values)

    def arrange_visual_tokens(self, features):
        """(B, T*h*w, D) tower features -> (B, N_vis, width), the projector's input."""
        return self.model.arrange_visual_tokens(features)


SpectralGPTConfig.register_for_auto_class()
SpectralLlavaConfig.register_for_auto_class()
SpectralGPTVisionModel.register_for_auto_class("AutoModel")
SpectralLlavaModel.register_for_auto_class("AutoModel")
SpectralLlavaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
