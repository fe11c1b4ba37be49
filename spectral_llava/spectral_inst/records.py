"""Training records: alignment (two variants per patch) and instructions (LLaVA conversations with task tokens)."""

from __future__ import annotations

import random

from spectral_llava.inference.labels import format_labels


ALIGNMENT_PROMPTS = (
    "Describe this image.",
    "What does this satellite image show?",
    "Give a short description of the scene.",
    "Summarise the content of this image.",
)
CAPTION_QUESTIONS = (
    "Describe this multispectral satellite image.",
    "Write a description of this Sentinel-2 scene.",
    "What can you see in this image? Describe the scene.",
    "Provide a detailed description of the land cover in this image.",
    "Describe the scene captured by this satellite patch.",
)
CLASSIFICATION_QUESTIONS = (
    "Which land-cover classes are present in this image?",
    "Classify this Sentinel-2 patch into its land-cover classes.",
    "List the land-cover labels of this scene.",
    "What land-cover categories does this image contain?",
    "Assign the land-cover labels to this multispectral image.",
)


def _conversation(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def alignment_records(row: dict, seed: int = 0) -> list[dict]:
    """Two stage-1 records per patch: ``variant`` "labels" (format_labels text) and "description"."""
    records = []
    for variant, answer in (("labels", format_labels(row["labels"])), ("description", row["caption"])):
        rng = random.Random(f"{seed}:{row['id']}:align:{variant}")
        records.append({
            "id": f"{row['id']}-align-{variant}", "patch_id": row["id"], "variant": variant,
            "image": row["image_path"], "rgb_path": row["rgb_path"],
            "conversations": _conversation(rng.choice(ALIGNMENT_PROMPTS), answer),
        })
    return records


def instruction_records(row: dict, seed: int = 0) -> list[dict]:
    """Two stage-2 records per patch: ``[caption]`` -> description, ``[classification]`` -> format_labels."""
    records = []
    for task, questions, answer in (
        ("caption", CAPTION_QUESTIONS, row["caption"]),
        ("classification", CLASSIFICATION_QUESTIONS, format_labels(row["labels"])),
    ):
        rng = random.Random(f"{seed}:{row['id']}:{task}")
        records.append({
            "id": f"{row['id']}-{task}", "patch_id": row["id"], "task": task,
            "image": row["image_path"], "rgb_path": row["rgb_path"],
            "conversations": _conversation(f"[{task}] {rng.choice(questions)}", answer),
        })
    return records


def dataset_features():
    from datasets import Features, List, Value

    conversation = List({"from": Value("string"), "value": Value("string")})
    string, number, flag = Value("string"), Value("float64"), Value("bool")
    patches = Features({
        "id": string, "source": string, "split": string, "image_path": string, "rgb_path": string,
        "labels": List(string), "label_source": string, "country": string, "country_source": string,
        "acquisition_date": string, "season": string, "latitude": number, "longitude": number,
        "crs": string, "height": Value("int32"), "width": Value("int32"), "snow": flag, "cloud": flag,
        "flag_source": string, "reben_patch_id": string,
        "ndvi_mean": number, "ndwi_mean": number, "ndbi_mean": number, "ndsi_mean": number,
        "vegetation_fraction": number, "water_fraction": number, "built_fraction": number,
        "snow_fraction": number, "cloud_fraction": number, "valid_fraction": number,
        "caption": string, "caption_prompt": string, "captioner": string,
    })
    alignment = Features({"id": string, "patch_id": string, "variant": string, "image": string,
                          "rgb_path": string, "conversations": conversation})
    instructions = Features({"id": string, "patch_id": string, "task": string, "image": string,
                             "rgb_path": string, "conversations": conversation})
    return {"patches": patches, "alignment": alignment, "instructions": instructions}
