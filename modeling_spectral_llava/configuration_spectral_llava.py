"""Configurations of the SpectralGPT vision tower and of Spectral-LLaVA.

Remote code: this file is copied next to saved models and imports nothing from this repository.
"""

from transformers import AutoConfig, PretrainedConfig

# The 12 Sentinel-2 bands SpectralGPT was trained on, in its channel order (B10, cirrus, is dropped).
SPECTRALGPT_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]

VISUAL_TOKEN_LAYOUTS = ("tokens", "spectral_concat", "spectral_mean")
PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


class SpectralGPTConfig(PretrainedConfig):
    r"""Configuration of the SpectralGPT encoder, a 3D spatial-spectral ViT.

    The image (B, num_channels, S, S) is cut into tubelets of `bands_per_group` consecutive bands by
    `patch_size` x `patch_size` pixels, giving `num_channels // bands_per_group` spectral groups of an
    (S / patch_size)^2 spatial grid. Tokens are spectral-group-major: index = group * h * w + row * w + col.

    Args:
        image_size: side of the square input the position grid was trained for. Other sizes (multiples of
            `patch_size`) work: the spatial position grid is resized by bicubic interpolation.
        patch_size: spatial side of a tubelet in pixels.
        num_channels: number of input bands.
        bands_per_group: spectral depth of a tubelet.
        hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio: transformer shape.
        layer_norm_eps: epsilon of every LayerNorm.
        qkv_bias: whether the query/key/value projections have biases.
        band_names: canonical Sentinel-2 name of each input channel, in order.
        initializer_range: std of the normal initialisation of linear layers and position embeddings.
    """

    model_type = "spectralgpt"

    def __init__(
        self,
        image_size=128,
        patch_size=8,
        num_channels=12,
        bands_per_group=3,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        mlp_ratio=4.0,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        band_names=None,
        initializer_range=0.02,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.bands_per_group = bands_per_group
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.mlp_ratio = mlp_ratio
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.band_names = list(band_names) if band_names is not None else list(SPECTRALGPT_BANDS)
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        if num_channels % bands_per_group:
            raise ValueError(f"num_channels={num_channels} is not a multiple of bands_per_group={bands_per_group}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}")
        if len(self.band_names) != num_channels:
            raise ValueError(f"band_names has {len(self.band_names)} entries but num_channels={num_channels}")

    @property
    def num_spectral_groups(self):
        return self.num_channels // self.bands_per_group

    @property
    def intermediate_size(self):
        return int(self.hidden_size * self.mlp_ratio)


class SpectralLlavaConfig(PretrainedConfig):
    r"""Configuration of Spectral-LLaVA: SpectralGPT tower -> projector -> LLaMA-family LLM.

    Args:
        vision_config: a `SpectralGPTConfig` (or its dict).
        text_config: the LLM's config (or its dict with a `model_type`; default a `LlamaConfig`).
        image_token_id: id of the `<image>` placeholder token; each placeholder receives one visual token.
        projector_type: "linear" (the paper's) or "mlp2x_gelu" (LLaVA-1.5's).
        vision_feature_layer: -1 takes the tower's final, normalised output; k >= 0 takes `hidden_states[k]`
            (0 = embeddings, k = output of block k) and -k counts from the end of `hidden_states`.
        visual_token_layout: how the (groups x h x w) tokens become visual tokens: "tokens" keeps all of them,
            "spectral_concat" concatenates the groups of each position (h*w tokens of width groups*D),
            "spectral_mean" averages them (h*w tokens of width D).
        spatial_pool: integer stride of an average pool over the h x w grid (1 = no pooling).
    """

    model_type = "spectral_llava"
    sub_configs = {"vision_config": SpectralGPTConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        image_token_id=None,
        projector_type="linear",
        vision_feature_layer=-1,
        visual_token_layout="tokens",
        spatial_pool=1,
        **kwargs,
    ):
        if vision_config is None:
            vision_config = SpectralGPTConfig()
        elif isinstance(vision_config, dict):
            vision_config = SpectralGPTConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        if text_config is None:
            text_config = AutoConfig.for_model("llama")
        elif isinstance(text_config, dict):
            text_config = AutoConfig.for_model(**text_config)
        self.vision_config = vision_config
        self.text_config = text_config
        self.image_token_id = image_token_id
        self.projector_type = projector_type
        self.vision_feature_layer = vision_feature_layer
        self.visual_token_layout = visual_token_layout
        self.spatial_pool = spatial_pool
        kwargs.setdefault("tie_word_embeddings", getattr(text_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type={projector_type!r}; expected one of {PROJECTOR_TYPES}")
        if visual_token_layout not in VISUAL_TOKEN_LAYOUTS:
            raise ValueError(f"visual_token_layout={visual_token_layout!r}; expected one of {VISUAL_TOKEN_LAYOUTS}")
        grid = vision_config.image_size // vision_config.patch_size
        if spatial_pool < 1 or grid % spatial_pool:
            raise ValueError(f"spatial_pool={spatial_pool} must be a positive divisor of the {grid}x{grid} patch grid")


def visual_feature_width(config):
    """Width of one visual token before the projector."""
    vision = config.vision_config
    if config.visual_token_layout == "spectral_concat":
        return vision.num_spectral_groups * vision.hidden_size
    return vision.hidden_size


def num_visual_tokens(config):
    """Number of visual tokens one image becomes: the one place this is computed.

    The processor expands each `<image>` placeholder to this many tokens; the builder stores the number in the
    processor's config.
    """
    vision = config.vision_config
    side = vision.image_size // vision.patch_size // config.spatial_pool
    if config.visual_token_layout == "tokens":
        return vision.num_spectral_groups * side * side
    return side * side
