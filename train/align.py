"""Stage 1, alignment: the tower and the LLM stay frozen, only the projector learns (paper section V-A-1).

    accelerate launch -m train.align --model DIR --dataset DIR --output DIR [--text class-labels|scene-description]

The projector is trained on the `alignment` records of a build-dataset output (class-label text or scene
descriptions), loss on the answer tokens only. Exports OUTPUT/model: a complete model dir (weights, processor,
remote code, model card) with the trained projector, the `--model` of stage 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from modeling_spectral_llava.build import save_model_dir
from train.common import Stage, TrainOptions, card_fields, main, run_stage

TEXT_VARIANTS = {"class-labels": "labels", "scene-description": "description"}


@dataclass
class AlignOptions(TrainOptions):
    text: str = "scene-description"


def select_records(records, options: AlignOptions):
    if options.text not in TEXT_VARIANTS:
        raise ValueError(f"--text {options.text!r}: expected one of {sorted(TEXT_VARIANTS)}")
    variant = TEXT_VARIANTS[options.text]
    return records.select([i for i, value in enumerate(records["variant"]) if value == variant])


def prepare_model(model, options: AlignOptions):
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    return model


def export_model(model, processor, output_dir, options: AlignOptions, base_model_dir) -> dict:
    model_dir = os.path.join(output_dir, "model")
    save_model_dir(model, processor, model_dir, card_fields(model, base_model_dir))
    return {"model": model_dir}


ALIGN = Stage(
    name="align",
    subset="alignment",
    defaults={"epochs": 1.0, "batch_size": 8, "grad_accum": 1, "lr": 1e-3},  # paper: effective batch 8, Adam
    select=select_records,
    prepare=prepare_model,
    export=export_model,
)


def add_align_arguments(parser):
    parser.add_argument("--text", default="scene-description", choices=sorted(TEXT_VARIANTS),
                        help="alignment targets: class-label text or scene descriptions (default scene-description)")


def run_alignment(model_dir, dataset_dir, output_dir, **options) -> dict:
    """Stage 1 in-process. `options`: the fields of AlignOptions (max_steps, epochs, batch_size, text, ...).

    Returns {"first_loss", "final_loss", "train_loss", "steps", "seconds", "outputs": {"model", ...}, ...}.
    """
    return run_stage(ALIGN, model_dir, dataset_dir, output_dir, AlignOptions(**options))


if __name__ == "__main__":
    raise SystemExit(main(ALIGN, add_align_arguments, AlignOptions))
