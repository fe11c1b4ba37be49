"""Captioners: ``template`` (deterministic), ``llm:smollm2|DIR`` (a text LLM), ``hf:MODEL`` (image-text-to-text).

Model captions are cached in ``OUTPUT/.work/captions/<key>/<hh>/<id>.json`` (key: ``llm-<spec>-<sha1[:8]>`` or
``hf-...``) together with their prompt; template captions are computed during assembly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from datetime import date
from pathlib import Path
from typing import Sequence

from spectral_llava.inference.labels import EUROSAT_PHRASES
from spectral_llava.utils.fileio import atomic_write_json

from .patches import bucket, read_record
from .sources import PatchTask

logger = logging.getLogger(__name__)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _percent(fraction: float) -> str:
    return f"{round(100 * fraction)}%"


def _label_phrase(labels: Sequence[str]) -> str:
    names = [EUROSAT_PHRASES.get(label, label.lower()) for label in labels]
    if not names:
        return "unlabelled land cover"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _place_phrase(record: dict) -> str:
    hemisphere_lat = "N" if record["latitude"] >= 0 else "S"
    hemisphere_lon = "E" if record["longitude"] >= 0 else "W"
    coords = (f"{abs(record['latitude']):.2f}\u00b0{hemisphere_lat}, "
              f"{abs(record['longitude']):.2f}\u00b0{hemisphere_lon}")
    return f"{record['country']} ({coords})" if record.get("country") else coords


def metadata_facts(record: dict) -> str:
    """The facts a model captioner is conditioned on (labels, place, date, spectral summary, flags), one per line."""
    lines = [f"- Land cover: {'; '.join(record['labels']) or 'unknown'}", f"- Location: {_place_phrase(record)}"]
    if record.get("acquisition_date"):
        lines.append(f"- Date: {record['acquisition_date']} ({record['season']})")
    lines += [
        f"- Vegetation: {_percent(record['vegetation_fraction'])} of the pixels have NDVI > 0.3 "
        f"(mean NDVI {record['ndvi_mean']:.2f})",
        f"- Water: {_percent(record['water_fraction'])} of the pixels (mean NDWI {record['ndwi_mean']:.2f}); "
        f"built-up or bare: {_percent(record['built_fraction'])} (mean NDBI {record['ndbi_mean']:.2f})",
        f"- Snow: {_percent(record['snow_fraction'])} of the pixels (mean NDSI {record['ndsi_mean']:.2f}); "
        f"seasonal snow: {'yes' if record['snow'] else 'no'}; cloud or shadow: {'yes' if record['cloud'] else 'no'}",
    ]
    return "\n".join(lines)


def _scene_size(record: dict) -> str:
    return f"{record['width'] * 10} m x {record['height'] * 10} m"


def metadata_prompt(record: dict) -> str:
    """The prompt of image-text-to-text captioners: an instruction plus :func:`metadata_facts`."""
    return (f"Describe this {_scene_size(record)} Sentinel-2 satellite image in two or three sentences for a "
            "land-cover analyst: the land cover, the season and what the spectral indices indicate. Use only "
            "these facts and what you see; do not invent objects.\n" + metadata_facts(record))


LLM_SYSTEM_PROMPT = ("You describe Sentinel-2 satellite images for land-cover analysts. Use only the facts you "
                     "are given; do not invent objects, events or numbers.")
# One worked example (a made-up Serbian patch) keeps small text LLMs on task and in format.
_LLM_EXAMPLE_RECORD = {
    "labels": ["Arable land", "Broad-leaved forest"], "country": "Serbia", "latitude": 45.3, "longitude": 20.1,
    "acquisition_date": "2017-08-10", "season": "summer", "vegetation_fraction": 0.64, "ndvi_mean": 0.48,
    "water_fraction": 0.0, "ndwi_mean": -0.45, "built_fraction": 0.21, "ndbi_mean": -0.1, "snow_fraction": 0.0,
    "ndsi_mean": -0.4, "snow": False, "cloud": False, "width": 120, "height": 120,
}
_LLM_EXAMPLE_DESCRIPTION = (
    "A summer Sentinel-2 view of farmland in Serbia: arable fields, some of them bare after the harvest, "
    "bordered by patches of broad-leaved forest. About two thirds of the scene is green vegetation, and there "
    "is no water, snow or cloud."
)


def llm_messages(record: dict) -> list[dict]:
    """Chat messages of the text-LLM captioner: system prompt, the worked example, then the record's facts."""
    def ask(facts_of: dict) -> dict:
        return {"role": "user", "content": f"Facts about a {_scene_size(facts_of)} Sentinel-2 image:\n"
                                           f"{metadata_facts(facts_of)}\nDescribe the image in two sentences."}

    return [{"role": "system", "content": LLM_SYSTEM_PROMPT}, ask(_LLM_EXAMPLE_RECORD),
            {"role": "assistant", "content": _LLM_EXAMPLE_DESCRIPTION}, ask(record)]


class TemplateCaptioner:
    """Deterministic descriptions from labels, metadata and indices; phrasing seeded by patch id and seed."""

    name = "template"
    cacheable = False

    _OPENINGS = (
        "This Sentinel-2 scene{where}{when} shows {labels}.",
        "A multispectral Sentinel-2 patch{where}{when}, covering {labels}.",
        "The image{when} captures {labels}{where}.",
        "Seen from Sentinel-2{when}, this area{where} is dominated by {labels}.",
        "Satellite view{where}{when}: the land cover consists of {labels}.",
    )
    _VEGETATION = (
        "Vegetation is dense: {veg} of the pixels have an NDVI above 0.3 (mean NDVI {ndvi}).",
        "Green vegetation covers about {veg} of the scene, with a mean NDVI of {ndvi}.",
        "The mean NDVI of {ndvi} and {veg} vegetated pixels point to healthy plant cover.",
    )
    _SPARSE = (
        "Vegetation is sparse (mean NDVI {ndvi}, {veg} of the pixels above 0.3).",
        "Little active vegetation is visible: the mean NDVI is only {ndvi}.",
    )
    _WATER = (
        "Open water occupies about {water} of the patch (NDWI above 0).",
        "Water surfaces make up roughly {water} of the pixels.",
    )
    _BUILT = (
        "Built-up or bare surfaces account for about {built} of the area (NDBI above 0).",
        "Around {built} of the pixels have a positive NDBI, typical of built-up or bare ground.",
    )
    _SNOW = (
        "Snow covers about {snow} of the scene (NDSI above 0.4).",
        "Seasonal snow is present, detected on roughly {snow} of the pixels.",
    )
    _CLOUD = (
        "Clouds or haze partly obscure the ground.",
        "Part of the view is affected by clouds or their shadows.",
    )

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.cache_key = "template"

    def prompt(self, record: dict) -> str:
        return f"template(seed={self.seed})"

    def caption(self, record: dict) -> str:
        rng = random.Random(f"{self.seed}:{record['id']}")
        where = f" in {record['country']}" if record.get("country") else ""
        when = ""
        if record.get("season") and record.get("acquisition_date"):
            month = date.fromisoformat(record["acquisition_date"]).strftime("%B %Y")
            when = rng.choice((f" acquired in {month}", f" from {record['season']} ({month})",
                               f" taken in {record['season']} {month[-4:]}"))
        values = {
            "veg": _percent(record["vegetation_fraction"]), "ndvi": f"{record['ndvi_mean']:.2f}",
            "water": _percent(record["water_fraction"]), "built": _percent(record["built_fraction"]),
            "snow": _percent(record["snow_fraction"]),
        }
        sentences = [rng.choice(self._OPENINGS).format(where=where, when=when,
                                                       labels=_label_phrase(record["labels"]))]
        if record["snow"] and record["snow_fraction"] > 0:
            sentences.append(rng.choice(self._SNOW).format(**values))
        elif record["vegetation_fraction"] >= 0.5:
            sentences.append(rng.choice(self._VEGETATION).format(**values))
        else:
            sentences.append(rng.choice(self._SPARSE).format(**values))
        if record["water_fraction"] >= 0.05:
            sentences.append(rng.choice(self._WATER).format(**values))
        if record["built_fraction"] >= 0.1:
            sentences.append(rng.choice(self._BUILT).format(**values))
        if record["cloud"]:
            sentences.append(rng.choice(self._CLOUD))
        return " ".join(sentences)

    def caption_batch(self, records: list[dict], output_dir: str | os.PathLike) -> list[tuple[str, str]]:
        return [(self.caption(record), self.prompt(record)) for record in records]


def trim_to_sentence(text: str) -> str:
    """Drop an unfinished last sentence (generation stopped at max_new_tokens); keep text without any stop."""
    text = " ".join(text.split())
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    if text.endswith((".", "!", "?")) or end < 0:
        return text
    return text[: end + 1]


def _generation_device(model) -> str:
    return str(next(model.parameters()).device)


class LLMCaptioner:
    """A text LLM writes the description from :func:`llm_messages` (greedy decoding, mild repetition penalty).

    The stored prompt is the JSON list of chat messages.
    """

    cacheable = True

    def __init__(self, spec: str, max_new_tokens: int = 96):
        self.spec = spec
        self.name = f"llm:{spec}"
        self.cache_key = "llm-" + _safe_name(spec)[-60:] + "-" + hashlib.sha1(spec.encode()).hexdigest()[:8]
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = 1.15  # greedy small LLMs otherwise loop on one sentence
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is None:
            self._model, self._tokenizer = _load_text_llm(self.spec)
            self._model.eval()
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._tokenizer.padding_side = "left"
        return self._model, self._tokenizer

    def caption_batch(self, records: list[dict], output_dir: str | os.PathLike) -> list[tuple[str, str]]:
        import torch

        model, tokenizer = self._load()
        conversations = [llm_messages(record) for record in records]
        prompts = [json.dumps(messages, ensure_ascii=False) for messages in conversations]
        texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                 for messages in conversations]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(_generation_device(model))
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    repetition_penalty=self.repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        captions = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [(trim_to_sentence(caption), prompt) for caption, prompt in zip(captions, prompts)]


def _load_text_llm(spec: str):
    """``smollm2`` or a model folder -> (causal LM, tokenizer), through ``modeling_spectral_llava.build.load_llm``."""
    from spectral_llava.modeling_spectral_llava.tools.build import load_llm

    return load_llm(spec)


class HFImageTextCaptioner:
    """Any HF image-text-to-text model captions the RGB rendering, prompted with :func:`metadata_prompt`."""

    cacheable = True

    def __init__(self, spec: str, max_new_tokens: int = 96):
        self.spec = spec
        self.name = f"hf:{spec}"
        self.cache_key = "hf-" + _safe_name(spec)[-60:] + "-" + hashlib.sha1(spec.encode()).hexdigest()[:8]
        self.max_new_tokens = max_new_tokens
        self._model = self._processor = None

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.spec)
            self._model = AutoModelForImageTextToText.from_pretrained(self.spec).eval()
        return self._model, self._processor

    def caption_batch(self, records: list[dict], output_dir: str | os.PathLike) -> list[tuple[str, str]]:
        import torch
        from PIL import Image

        model, processor = self._load()
        results = []
        for record in records:  # one at a time: image-token counts may differ between images
            prompt = metadata_prompt(record)
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            with Image.open(Path(output_dir) / record["rgb_path"]) as image:
                inputs = processor(images=image.convert("RGB"), text=text, return_tensors="pt")
            inputs = inputs.to(_generation_device(model))
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = output[0, inputs["input_ids"].shape[1]:]
            results.append((trim_to_sentence(processor.decode(new_tokens, skip_special_tokens=True)), prompt))
        return results


def make_captioner(spec: str, seed: int = 0, max_new_tokens: int = 96):
    """``template`` | ``llm:smollm2`` | ``llm:DIR`` | ``hf:MODEL_ID_OR_DIR``."""
    if spec == "template":
        return TemplateCaptioner(seed)
    kind, _, target = spec.partition(":")
    if kind == "llm" and target:
        return LLMCaptioner(target, max_new_tokens)
    if kind == "hf" and target:
        return HFImageTextCaptioner(target, max_new_tokens)
    raise ValueError(f"--captioner {spec!r}: expected template, llm:smollm2, llm:DIR or hf:MODEL_ID_OR_DIR")


def caption_path(output_dir: str | os.PathLike, captioner, patch_id: str) -> Path:
    return Path(output_dir) / ".work" / "captions" / captioner.cache_key / bucket(patch_id) / f"{patch_id}.json"


def _cached_caption(output_dir: str | os.PathLike, captioner, patch_id: str) -> tuple[str, str] | None:
    try:
        cached = json.loads(caption_path(output_dir, captioner, patch_id).read_text())
        return cached["caption"], cached["prompt"]
    except (OSError, ValueError, KeyError):
        return None


def caption_all(tasks: list[PatchTask], captioner, output_dir: str, batch_size: int = 8) -> int:
    """Generate and cache (one JSON per patch, with its prompt) the model captions still missing.

    The template captioner is cheap and deterministic: its captions are computed during assembly instead.
    Returns the number of captions generated.
    """
    from tqdm.auto import tqdm

    if not captioner.cacheable:
        return 0
    todo = [task for task in tasks if _cached_caption(output_dir, captioner, task.id) is None]
    logger.info("%d captions cached, %d to generate with %s", len(tasks) - len(todo), len(todo), captioner.name)
    for start in tqdm(range(0, len(todo), batch_size), desc=f"captions ({captioner.name})", unit="batch"):
        batch = [read_record(output_dir, task.id) for task in todo[start:start + batch_size]]
        for record, (caption, prompt) in zip(batch, captioner.caption_batch(batch, output_dir)):
            if not caption:
                raise RuntimeError(f"captioner {captioner.name} returned an empty caption for {record['id']}")
            atomic_write_json(caption_path(output_dir, captioner, record["id"]),
                              {"id": record["id"], "captioner": captioner.name, "caption": caption, "prompt": prompt})
    return len(todo)


def caption_of(record: dict, captioner, output_dir: str | os.PathLike) -> tuple[str, str]:
    """(caption, prompt) of a record: computed (template) or read from the caption cache (models)."""
    if not captioner.cacheable:
        return captioner.caption(record), captioner.prompt(record)
    cached = _cached_caption(output_dir, captioner, record["id"])
    if cached is None:
        path = caption_path(output_dir, captioner, record["id"])
        raise FileNotFoundError(f"{path}: caption missing; re-run the build")
    return cached
