"""The Hub model card (README.md) of a Spectral-LLaVA model dir, rendered from its config."""

import os

from .configuration_spectral_llava import num_visual_tokens

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "model_card_template.md")


def render_model_card(config, vision_source="SpectralGPT", llm_source="a LLaMA-family LLM", evaluation=None):
    """Fill the template with the architecture of `config`; `evaluation` is a markdown table or None."""
    vision = config.vision_config
    with open(TEMPLATE_PATH) as f:
        template = f.read()
    return template.format(
        base_model=llm_source if "/" in llm_source else "HuggingFaceTB/SmolLM2-135M-Instruct",
        vision_source=vision_source,
        llm_source=llm_source,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        bands=" ".join(vision.band_names),
        bands_per_group=vision.bands_per_group,
        width=vision.hidden_size,
        depth=vision.num_hidden_layers,
        layout=config.visual_token_layout,
        spatial_pool=config.spatial_pool,
        num_tokens=num_visual_tokens(config),
        projector=config.projector_type,
        evaluation=evaluation or "No evaluation has been run on this checkpoint yet (`spectral-llava evaluate`).",
    )
