"""The Hub model card (README.md) of a Spectral-LLaVA model dir, rendered from its config and its provenance.

Provenance is stored, not inferred: `provenance.json` in every model dir the builder or a training stage writes
holds what the parts are and what data trained them:

    {"vision_tower": "random (untrained)" | checkpoint name | Hub id, "language_model": Hub id or dir name (a Hub id
     built at a `--revision` as ORG/NAME@REVISION),
     "training": [{"stage": "align" | "finetune", "base_model": DIR, "dataset": DIR, "dataset_hub_id": ID | null,
                   "captioner": "template" | ..., "sources": ["eurosat", ...], "patches": {"eurosat": N, ...},
                   "split": "train", "records": N, "steps": N, "epochs": E, "batch_size": B, "grad_accum": K,
                   "world_size": P, "effective_batch_size": B*K*P, "optimizer": ..., "lr": LR,
                   "lr_scheduler": "cosine", "warmup_ratio": R, "seed": S,
                   "stage_options": {"text": ...} | {"lora_r": ..., "lora_alpha": ..., "lora_dropout": ...}}, ...]}

The card's training recipe is rendered from `training` (what each stage really ran with), and its `datasets:`
metadata lists only the Hub datasets of `training`, i.e. the data this model was trained on.
"""

import json
import os

from spectral_llava.utils.hub import is_hub_id

from ..configuration_spectral_llava import num_visual_tokens

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "model_card_template.md")
PROVENANCE_FILE = "provenance.json"
RANDOM_TOWER = "random (untrained)"  # the provenance's vision_tower of a randomly initialised tower
SOURCE_NAMES = {"reben": "reBEN (BigEarthNet v2)", "bigearthnet-v1": "BigEarthNet v1", "eurosat": "EuroSAT"}


def read_provenance(model_dir) -> dict:
    """The provenance stored in `model_dir` ({} for a dir written before provenance was stored)."""
    path = os.path.join(model_dir, PROVENANCE_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


ALIGNMENT_TEXT = {"class-labels": "class-label text", "scene-description": "scene descriptions"}
PAPER_RECIPE = ("The paper's recipe is one epoch per stage at effective batch 8 (stage 1) and 64 (stage 2) on "
                "Spectral-Inst built from BigEarthNet; the project repository trains with `accelerate launch -m "
                "spectral_llava.train.align` and `-m spectral_llava.train.finetune`.")


def _plural(count, noun: str, plural: str | None = None) -> str:
    return f"{count:g} {noun if count == 1 else plural or noun + 's'}"


def _stage_description(stage: dict) -> str:
    options = stage.get("stage_options", {})
    if stage["stage"] == "align":
        text = ALIGNMENT_TEXT.get(options.get("text"), "class-label text or scene descriptions")
        return ("Stage 1, alignment (`align`): tower and LLM frozen, the projector learned to map SpectralGPT "
                f"features onto the LLM's word embeddings from {text}")
    if stage["stage"] == "finetune":
        lora = (f"LoRA (r={options['lora_r']}, alpha {options['lora_alpha']}, dropout {options['lora_dropout']})"
                if "lora_r" in options else "LoRA")
        return (f"Stage 2, instruction tuning (`finetune`): the projector and {lora} on the LLM's attention and MLP "
                "layers learned from conversations with the task tokens `[caption]` and `[classification]`")
    return f"`{stage['stage']}`"


def _stage_recipe(stage: dict) -> str:
    """What one stage of the provenance ran with: steps, batch, optimizer, schedule and data."""
    dataset = stage.get("dataset_hub_id") or "a local Spectral-Inst build"
    if "patches" in stage:
        per_source = ", ".join(f"{SOURCE_NAMES.get(source, source)} {count}"
                               for source, count in stage["patches"].items())
        patches = _plural(sum(stage["patches"].values()), "patch", "patches")
        data = (f"{_plural(stage['records'], 'record')} of {patches} ({per_source}; {stage['captioner']} captions) "
                f"from the `{stage['split']}` split of {dataset}")
    else:  # a provenance written before the hyper-parameters were stored
        sources = ", ".join(SOURCE_NAMES.get(source, source) for source in stage.get("sources", []))
        data = (f"{_plural(stage['records'], 'record')} of the `{stage['split']}` split of {dataset} (patches from "
                f"{sources or 'unknown sources'})")
    if "effective_batch_size" not in stage:
        return f"- {_stage_description(stage)}: {_plural(stage['steps'], 'step')} on {data}."
    return (f"- {_stage_description(stage)}: {_plural(stage['steps'], 'optimizer step')} "
            f"({_plural(stage['epochs'], 'epoch')}) of effective batch {stage['effective_batch_size']} "
            f"({stage['batch_size']} per process x {_plural(stage['grad_accum'], 'accumulation step')} x "
            f"{_plural(stage['world_size'], 'process', 'processes')}), Adam without weight decay, peak learning rate "
            f"{stage['lr']:g} with cosine decay after {stage['warmup_ratio']:.0%} warm-up, seed {stage['seed']}; "
            f"on {data}.")


def training_summary(training: list) -> str:
    """The training recipe of this checkpoint, one paragraph per stage of the provenance, or a note that it is
    untrained."""
    if not training:
        return ("This checkpoint has not been trained: it was composed by `spectral-llava build`, and its projector "
                "is freshly initialised. " + PAPER_RECIPE)
    return "\n".join(_stage_recipe(stage) for stage in training) + "\n\n" + PAPER_RECIPE


def render_model_card(config, provenance=None, evaluation=None):
    """Fill the template with the architecture of `config` and the `provenance` dict; `evaluation` is markdown."""
    provenance = provenance or {}
    vision_source = provenance.get("vision_tower", "SpectralGPT")
    llm_source = provenance.get("language_model", "a LLaMA-family LLM")
    base_model = llm_source.split("@", 1)[0]  # the Hub's base_model metadata names a repo, not a revision
    training = provenance.get("training", [])
    hub_datasets = sorted({stage["dataset_hub_id"] for stage in training if stage.get("dataset_hub_id")})
    vision = config.vision_config
    with open(TEMPLATE_PATH) as f:
        template = f.read()
    return template.format(
        base_model="base_model:\n- " + base_model + "\n" if is_hub_id(base_model) else "",
        datasets="datasets:\n" + "".join(f"- {name}\n" for name in hub_datasets) if hub_datasets else "",
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
        training=training_summary(training),
        evaluation=evaluation or "No evaluation has been run on this checkpoint yet (`spectral-llava evaluate`).",
    )
