"""Stage 1, alignment: the tower and the LLM stay frozen, only the projector learns (paper section V-A-1).

    accelerate launch -q -m spectral_llava.train.align --model DIR --dataset DIR --output DIR [--text class-labels|scene-description]

The projector is trained on the `alignment` records of a build-dataset output (class-label text or scene
descriptions), loss on the answer tokens only. Exports OUTPUT/model: a complete model dir (weights, processor,
remote code, provenance, model card) with the trained projector, the `--model` of stage 2.
"""

from __future__ import annotations

import os

from spectral_llava.modeling_spectral_llava.tools.build import save_model_dir

from .options import TEXT_VARIANTS, AlignOptions
from .trainer import Stage, main, run_stage


def select_records(records, options: AlignOptions):
    variant = TEXT_VARIANTS[options.text]
    return records.select([i for i, value in enumerate(records["variant"]) if value == variant])


def prepare_model(model, options: AlignOptions):
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    return model


def export_model(model, processor, output_dir, options: AlignOptions, provenance: dict) -> dict:
    model_dir = os.path.join(output_dir, "model")
    save_model_dir(model, processor, model_dir, provenance)
    return {"model": model_dir}


ALIGN = Stage(name="align", subset="alignment", options=AlignOptions, select=select_records, prepare=prepare_model,
              export=export_model)


def run_alignment(model_dir, dataset_dir, output_dir, **options) -> dict:
    """Stage 1 in-process. `options`: the fields of `train.options.AlignOptions` (max_steps, epochs, text, ...).

    Returns {"first_loss", "final_loss", "train_loss", "steps", "seconds", "outputs": {"model", ...}, ...}.
    """
    return run_stage(ALIGN, model_dir, dataset_dir, output_dir, AlignOptions(**options))


if __name__ == "__main__":
    raise SystemExit(main(ALIGN))
