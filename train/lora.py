"""Stage 2's LoRA: which LLM layers get adapters, and the peft config. Imports nothing of the project, so that
benchmarks/gpu_check.py trains the same adapters on a machine with only torch, transformers and peft."""

from __future__ import annotations

# the attention and MLP linear layers of the LLM only (the tower has q_proj/k_proj/v_proj too)
LORA_TARGETS = r".*\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def lora_config(r: int, alpha: int, dropout: float):
    """peft `LoraConfig` on `LORA_TARGETS`, with the projector trained and saved beside the adapters."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS,
                      modules_to_save=["multi_modal_projector"])
