"""Spectral-LLaVA, shaped like transformers' Llava: the SpectralGPT tower (`modeling_spectralgpt.py`), a projector
and a LLaMA-family LLM.

Remote code: this file is copied next to saved models and imports only its sibling configuration and tower files.
"""

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_spectral_llava import (
    SpectralLlavaConfig,
    num_visual_tokens,
    visual_feature_width,
)
from .modeling_spectralgpt import SpectralGPTEmbeddings, SpectralGPTVisionModel

# The KV-cache argument and output field is `cache` from transformers 5.24 on and `past_key_values` before: use
# whichever this installed version's output classes declare.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _cache_argument(function):
    """Declare a method's `cache` parameter under the installed transformers' name.

    The method body always receives `cache`. From 5.24 the signature says `cache` and `past_key_values=` still
    works with a deprecation warning, as in transformers' own models; before 5.24 the signature says
    `past_key_values`, the name `generate()` validates and passes there.
    """
    if CACHE_FIELD == "cache":
        return deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache")(function)

    @functools.wraps(function)
    def wrapper(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return function(*args, **kwargs)

    signature = inspect.signature(function)
    wrapper.__signature__ = signature.replace(parameters=[
        parameter.replace(name="past_key_values") if parameter.name == "cache" else parameter
        for parameter in signature.parameters.values()
    ])
    return wrapper


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


@dataclass
class SpectralLlavaModelOutputWithPast(BaseModelOutputWithPast):
    """`image_outputs`: `get_image_features`' output for the images merged in this call (the tower's outputs, with
    the projected visual tokens (B_images, N_vis, d_llm) as `pooler_output`); None when no image was encoded."""

    image_outputs: BaseModelOutputWithPooling | None = None

    @property
    def image_hidden_states(self):
        """The projected visual tokens (B_images, N_vis, d_llm), when images were encoded."""
        return None if self.image_outputs is None else self.image_outputs.pooler_output


@dataclass
class SpectralLlavaCausalLMOutputWithPast(CausalLMOutputWithPast):
    """`image_outputs`: `get_image_features`' output for the images merged in this call (the tower's outputs, with
    the projected visual tokens (B_images, N_vis, d_llm) as `pooler_output`); None when no image was encoded."""

    image_outputs: BaseModelOutputWithPooling | None = None

    @property
    def image_hidden_states(self):
        """The projected visual tokens (B_images, N_vis, d_llm), when images were encoded."""
        return None if self.image_outputs is None else self.image_outputs.pooler_output


class SpectralLlavaPreTrainedModel(PreTrainedModel):
    config_class = SpectralLlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpectralGPTLayer", "LlamaDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # decoding steps (no images) compile without graph breaks and run with a static cache
    _can_compile_fullgraph = True
    _skip_keys_device_placement = ["past_key_values", "cache"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SpectralGPTEmbeddings):
            module.reset_position_embeddings()


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

    def encode_images(self, pixel_values, output_attentions=None, output_hidden_states=None):
        """Tower pass: (the tower's outputs, its features at `vision_feature_layer` (B, T*h*w, D)).

        The tower's hidden states are returned when `output_hidden_states` (or the tower config) asks for them;
        a `vision_feature_layer` other than -1 reads them without returning them otherwise.
        """
        layer = self.config.vision_feature_layer
        if output_hidden_states is None:
            output_hidden_states = self.vision_tower.config.output_hidden_states
        outputs = self.vision_tower(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states or layer != -1,
            return_dict=True,
        )
        features = outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]
        if not output_hidden_states:
            outputs.hidden_states = None
        return outputs, features

    def select_vision_features(self, pixel_values):
        """The tower's output at `vision_feature_layer`, (B, T*h*w, D): what the feature cache stores."""
        return self.encode_images(pixel_values, output_hidden_states=False)[1]

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

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        """Encode images: the tower's outputs, with the projected visual tokens (B, N_vis, d_llm) as `pooler_output`.

        From `pixel_values` (B, C, S, S): `last_hidden_state`, and `hidden_states` / `attentions` on request
        (`output_hidden_states`, `output_attentions`), are the tower's. From `vision_features`, cached tower
        features at `vision_feature_layer` (B, T*h*w, D), the tower does not run and `last_hidden_state` holds them.
        `return_dict=False` gives the tuple of the fields that are set.
        """
        if vision_features is None:
            if pixel_values is None:
                raise ValueError("get_image_features needs pixel_values or vision_features")
            image_outputs, vision_features = self.encode_images(
                pixel_values, kwargs.get("output_attentions"), kwargs.get("output_hidden_states")
            )
        else:
            image_outputs = BaseModelOutputWithPooling(last_hidden_state=vision_features)
        tokens = self.arrange_visual_tokens(vision_features).to(self.multi_modal_projector.linear_1.weight.dtype)
        image_outputs.pooler_output = self.multi_modal_projector(tokens)
        return image_outputs

    def _image_token_mask(self, input_ids, inputs_embeds):
        """(B, L) bool mask of the `<image>` positions, read from `input_ids` or, without them, from the embeddings."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        image_embedding = self.get_input_embeddings()(
            torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
        )
        return (inputs_embeds == image_embedding).all(-1)

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features):
        """Mask of the `<image>` positions; raises when their count differs from the number of visual tokens."""
        mask = self._image_token_mask(input_ids, inputs_embeds)
        n_tokens, (n_images, per_image) = int(mask.sum()), image_features.shape[:2]
        if n_tokens != n_images * per_image:
            raise ValueError(
                f"the text holds {n_tokens} <image> tokens but {n_images} image(s) give {n_images * per_image} "
                f"visual tokens ({per_image} each): expand each <image> with the processor"
            )
        return mask.unsqueeze(-1).expand_as(inputs_embeds)

    def _images_already_cached(self, input_ids, inputs_embeds, cache):
        """True when continuing from a filled KV cache with no `<image>` in the new tokens: images passed again
        with a continued prompt are already in the cache."""
        if cache is None or cache.get_seq_length() == 0:
            return False
        return not bool(self._image_token_mask(input_ids, inputs_embeds).any())

    @can_return_tuple
    @_cache_argument
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | SpectralLlavaModelOutputWithPast:
        r"""`vision_features`: cached tower features at `vision_feature_layer` (B, T*h*w, D), instead of
        `pixel_values`. `cache`: the KV cache (`past_key_values` before transformers 5.24)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_outputs = None
        has_images = pixel_values is not None or vision_features is not None
        if has_images and not self._images_already_cached(input_ids, inputs_embeds, cache):
            image_outputs = self.get_image_features(pixel_values, vision_features, return_dict=True, **kwargs)
            image_features = image_outputs.pooler_output
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.dtype))
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **{CACHE_FIELD: cache},
            **kwargs,
        )
        return SpectralLlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_FIELD: outputs.get(CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
        )


class SpectralLlavaForConditionalGeneration(SpectralLlavaPreTrainedModel, GenerationMixin):
    """Spectral-LLaVA with the LM head: loss from `labels` (-100 ignored) and `generate`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

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

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, vision_features, **kwargs)

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

    @can_return_tuple
    @_cache_argument
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        vision_features: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | SpectralLlavaCausalLMOutputWithPast:
        r"""`labels` (-100 ignored) give the causal-LM loss; `num_items_in_batch` and `shift_labels` in `kwargs` reach
        the loss function (`Trainer` passes them under gradient accumulation and sequence parallelism).
        `logits_to_keep`: an int keeps the last N positions (0 = all), a tensor the positions it indexes."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            vision_features=vision_features,
            return_dict=True,
            **kwargs,
        )
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, kept, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return SpectralLlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: outputs.get(CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
        )

    @_cache_argument
    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        vision_features: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ):
        """As `GenerationMixin`'s (which passes `pixel_values` to the prefill only); `vision_features` likewise:
        decoding steps read the image from the KV cache."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, is_first_iteration=is_first_iteration, **{CACHE_FIELD: cache}, **kwargs
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["vision_features"] = vision_features
        return model_inputs

    def select_vision_features(self, pixel_values):
        """The tower's output at `vision_feature_layer`, (B, T*h*w, D) (what a feature cache stores)."""
        return self.model.select_vision_features(pixel_values)

    def arrange_visual_tokens(self, features):
        """(B, T*h*w, D) tower features -> (B, N_vis, width), the projector's input."""
        return self.model.arrange_visual_tokens(features)


SpectralLlavaConfig.register_for_auto_class()
SpectralLlavaModel.register_for_auto_class("AutoModel")
SpectralLlavaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
