"""8-bit / 4-bit (QLoRA) base weights for stage 2 (`--load-in-8bit` / `--load-in-4bit`), bitsandbytes on CUDA.

Stage 1 has no such options: transformers' Trainer trains a quantized model only through adapters.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from .options import TrainOptions

# never quantized: the frozen tower (its features are cached in float32), the trained projector, the output layer.
# Full module paths: transformers 5 matches a skip entry from the start of a module's name or as its suffix (a bare
# "vision_tower" no longer matches "model.vision_tower.*"), transformers 4 matched it anywhere in the name.
NOT_QUANTIZED = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def fsdp_enabled() -> bool:
    """True in a process that `accelerate launch` started with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def quantization_config(options: TrainOptions):
    """bitsandbytes config for the stage's --load-in-8bit / --load-in-4bit, None without them; a ValueError naming
    what is missing where they cannot run (bitsandbytes needs a CUDA GPU; one GPU or DDP)."""
    load_in_8bit, load_in_4bit = getattr(options, "load_in_8bit", False), getattr(options, "load_in_4bit", False)
    if not (load_in_8bit or load_in_4bit):
        return None
    flag = "--load-in-4bit" if load_in_4bit else "--load-in-8bit"
    if fsdp_enabled() or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise ValueError(f"{flag} runs on one GPU or with DDP (multi_gpu_ddp.yaml), not under FSDP or DeepSpeed")
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (none is visible to torch here)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes, or pip install -e '.[qlora]')")
    if missing:
        raise ValueError(f"{flag} needs {' and '.join(missing)}; without them train the bf16 model (--bf16) and "
                         "see the memory table in docs/training.md")
    return bitsandbytes_config(4 if load_in_4bit else 8)


def bitsandbytes_config(bits: int):
    """8: LLM.int8; 4: QLoRA's NF4 with double quantisation and bf16 compute. The tower, projector and lm_head stay
    unquantized."""
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=NOT_QUANTIZED)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=NOT_QUANTIZED)
