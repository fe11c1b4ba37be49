"""The Hub model card (README.md) of a Spectral-LLaVA model dir, rendered from its config and its provenance.

Provenance is stored, not inferred: `provenance.json` in every model dir the builder or a training stage writes
holds what the parts are and what data trained them:

    {"vision_tower": "random (untrained)" | checkpoint name | Hub id, "language_model": Hub id or dir name (a Hub id
     built at a `--revision` as ORG/NAME@REVISION),
     "training": [{"stage": "align" | "finetune", "base_model": DIR, "dataset": DIR, "dataset_hub_id": ID | null,
                   "sources": ["eurosat", ...], "split": "train", "records": N, "steps": N}, ...]}

The card's `datasets:` metadata lists only the Hub datasets of `training`, i.e. the data this model was trained on.
"""

import json
import os

from .configuration_spectral_llava import num_visual_tokens

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "model_card_template.md")
PROVENANCE_FILE = "provenance.json"
SOURCE_NAMES = {"reben": "reBEN (BigEarthNet v2)", "bigearthnet-v1": "BigEarthNet v1", "eurosat": "EuroSAT"}


def read_provenance(model_dir) -> dict:
    """The provenance stored in `model_dir` ({} for a dir written before provenance was stored)."""
    path = os.path.join(model_dir, PROVENANCE_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not os.path.exists(name)


def training_summary(training: list) -> str:
    """One sentence per training stage of the provenance, or a note that the checkpoint is untrained."""
    if not training:
        return "This checkpoint has not been trained: it was composed by `spectral-llava build`."
    lines = []
    for stage in training:
        sources = ", ".join(SOURCE_NAMES.get(source, source) for source in stage.get("sources", []))
        dataset = stage.get("dataset_hub_id") or "a local Spectral-Inst build"
        steps = f"{stage['steps']} step" + ("s" if stage["steps"] != 1 else "")
        lines.append(f"- `{stage['stage']}`: {steps} on {stage['records']} records of the "
                     f"`{stage['split']}` split of {dataset} (patches from {sources or 'unknown sources'}).")
    return "\n".join(lines)


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
        base_model="base_model:\n- " + base_model + "\n" if _is_hub_id(base_model) else "",
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
