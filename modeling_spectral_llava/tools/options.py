"""Options of `spectral-llava build` and `convert-spectralgpt`, defined once: dataclasses whose field metadata holds
the help text, parsed by transformers' `HfArgumentParser`. This module imports neither torch nor transformers, so the
command line answers `--help` without loading them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class BuildOptions:
    """What `build_model` composes: a SpectralGPT tower, a LLaMA-family LLM and a new projector."""

    vision: str = field(default="random", metadata={
        "help": "random | SpectralGPT CHECKPOINT.pth | converted TOWER_DIR | Hub id of a converted tower"})
    vision_revision: str | None = field(default=None, metadata={"help": "branch, tag or commit of a --vision Hub id"})
    llm: str = field(default="smollm2", metadata={
        "help": "smollm2 (embedded SmolLM2-135M-Instruct) | LLM_DIR | Hub id, e.g. meta-llama/Meta-Llama-3-8B-Instruct "
                "(HF_HOME, HF_HUB_OFFLINE, HF_TOKEN apply)"})
    revision: str | None = field(default=None, metadata={"help": "branch, tag or commit of an --llm Hub id"})
    llm_dtype: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata={
        "help": "dtype the model is stored in: auto = the LLM config's (bf16 for Llama-3), or explicit"})
    image_size: int = field(default=128, metadata={"help": "input size in pixels (a multiple of the patch size)"})
    layout: Literal["tokens", "spectral_concat", "spectral_mean"] = field(default="tokens", metadata={
        "help": "visual-token layout: every tubelet, spectral groups concatenated or averaged per position"})
    spatial_pool: int = field(default=1, metadata={"help": "average-pool the patch grid by this factor"})
    projector: Literal["linear", "mlp2x_gelu"] = field(default="linear", metadata={"help": "projector type"})
    seed: int = field(default=0, metadata={"help": "seed of the random tower and the projector initialisation"})


@dataclass
class ConvertOptions:
    num_heads: int | None = field(default=None, metadata={
        "help": "attention heads, not stored in checkpoints (default: width / 64, 12 for ViT-B)"})


def prefer_hyphens(parser):
    """List `--max-steps` before its `--max_steps` spelling in usage and help (HfArgumentParser accepts both)."""
    for action in parser._actions:
        action.option_strings.sort(key=lambda option: "_" in option)
    return parser
