"""Stage 2, instruction tuning: LoRA on the LLM plus the projector, tower frozen (paper section V-A-2).

    accelerate launch -q -m spectral_llava.train.finetune --model STAGE1/model --dataset DIR --output DIR [--lora-r 128 ...]

Trains on the `instructions` records (`[caption]` and `[classification]` task-token prompts). Exports
OUTPUT/adapter (a peft adapter that also carries the trained projector) and OUTPUT/merged (a complete model dir
with LoRA merged into the LLM). `--load-in-8bit` / `--load-in-4bit` (QLoRA, bitsandbytes on CUDA) keep the frozen LLM
weights quantized during training; the export merges into the unquantized starting weights.
"""

from __future__ import annotations

import os

from spectral_llava.modeling_spectral_llava.tools.build import save_model_dir
from spectral_llava.utils.fileio import write_dir_atomically

from .lora import lora_config
from .options import FinetuneOptions
from .trainer import Stage, main, run_stage


def select_records(records, options: FinetuneOptions):
    return records


def prepare_model(model, options: FinetuneOptions):
    from peft import get_peft_model

    model.requires_grad_(False)
    return get_peft_model(model, lora_config(options.lora_r, options.lora_alpha, options.lora_dropout))


def export_model(model, processor, output_dir, options: FinetuneOptions, provenance: dict) -> dict:
    adapter_dir = os.path.join(output_dir, "adapter")
    merged_dir = os.path.join(output_dir, "merged")
    model.peft_config["default"].base_model_name_or_path = provenance["training"][-1]["base_model"]
    write_dir_atomically(model.save_pretrained, adapter_dir)
    merged = model.merge_and_unload()
    save_model_dir(merged, processor, merged_dir, provenance)
    return {"adapter": adapter_dir, "merged": merged_dir}


FINETUNE = Stage(name="finetune", subset="instructions", options=FinetuneOptions, select=select_records,
                 prepare=prepare_model, export=export_model)


def run_finetune(model_dir, dataset_dir, output_dir, **options) -> dict:
    """Stage 2 in-process. `options`: the fields of `train.options.FinetuneOptions` (max_steps, lora_r, ...).

    Returns {"first_loss", "final_loss", "train_loss", "steps", "seconds", "outputs": {"adapter", "merged", ...}}.
    """
    return run_stage(FINETUNE, model_dir, dataset_dir, output_dir, FinetuneOptions(**options))


if __name__ == "__main__":
    raise SystemExit(main(FINETUNE))
