"""The build: discovery, per-patch processing, captions and assembly into ``datasets.DatasetDict`` folders.

``build_dataset(BuildConfig(...))`` writes ``OUTPUT/patches``, ``OUTPUT/alignment`` and ``OUTPUT/instructions``
(saved with ``save_to_disk``, keyed by split), ``OUTPUT/README.md`` (dataset card), ``OUTPUT/build_info.json``
(image roots, thresholds, radiometric handling) and ``OUTPUT/report.json`` (skipped patches). It is resumable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from spectral_llava.utils.fileio import atomic_write_json, atomic_write_text, replace_dir
from spectral_llava.processing.options import BandNamesOptions, RadiometryOptions
from spectral_llava.processing.rendering import RGB_PERCENTILES

from .captioners import caption_all, caption_of, make_captioner
from .card import dataset_card
from .hub import push_dataset
from .patches import INDEX_DEFINITIONS, THRESHOLDS, process_all, read_record
from .records import alignment_records, dataset_features, instruction_records
from .sources import (SOURCES, SPLITS, PatchTask, assign_missing_splits, discover_bigearthnet_v1, discover_eurosat,
                      discover_reben, load_reben_metadata)

logger = logging.getLogger(__name__)


@dataclass
class BuildConfig(RadiometryOptions, BandNamesOptions):
    """Options of `build_dataset` and `spectral-llava build-dataset` (help texts are the CLI's). The radiometric
    handling (`input_offset`, `input_scale`, `strict`: implausible values skip the patch, reported) applies to every
    patch read, `band_names` to every multi-band file (recorded in build_info.json: training and evaluation read
    the images with them)."""

    output: str = field(metadata={"help": "output folder (resumable)", "metavar": "DIR"})
    bigearthnet: str | None = field(default=None, metadata={"help": "reBEN (BigEarthNet v2) patch folders",
                                                            "metavar": "ROOT"})
    metadata: list[str] | None = field(default=None, metadata={
        "help": "the official reBEN metadata.parquet (and its snow/cloud/shadow parquet, if wanted)",
        "metavar": "PARQUET"})
    bigearthnet_v1: str | None = field(default=None, metadata={
        "help": "BigEarthNet v1 patch folders (labels via the parquet's s2v1_name when --metadata)", "metavar": "ROOT"})
    eurosat: str | None = field(default=None, metadata={"help": "EuroSAT-MS class folders of GeoTIFFs",
                                                        "metavar": "ROOT"})
    splits: list[str] | None = field(default=None, metadata={"help": "keep these splits", "aliases": ["--split"],
                                                             "choices": SPLITS})
    countries: list[str] | None = field(default=None, metadata={
        "help": "keep these countries (space- or comma-separated)", "metavar": "COUNTRY"})
    max_patches: int | None = field(default=None, metadata={"help": "seeded random sample of at most N patches",
                                                            "metavar": "N"})
    skip_snow: bool = field(default=False, metadata={"help": "drop patches flagged with seasonal snow"})
    skip_cloud: bool = field(default=False, metadata={"help": "drop patches flagged with cloud or shadow"})
    captioner: str = field(default="template", metadata={"help": "template | llm:smollm2 | llm:DIR | hf:MODEL_ID_OR_DIR"})
    num_proc: int = field(default=1, metadata={"help": "worker processes for reading patches"})
    seed: int = field(default=0, metadata={"help": "seed of splits, sampling and phrasing"})
    shard: str | None = field(default=None, metadata={
        "help": "process only this hash shard of the patches into OUTPUT/.work and stop; a final run without "
                "--shard assembles", "metavar": "INDEX/COUNT"})
    max_new_tokens: int = field(default=96, metadata={"help": "caption length for model captioners"})
    caption_batch_size: int = field(default=8, metadata={"help": "records per captioning batch"})
    push_to_hub: str | None = field(default=None, metadata={"help": "upload OUTPUT to this Hub dataset repo",
                                                            "metavar": "REPO_ID"})
    hub_dry_run: bool = field(default=False, metadata={"help": "print the Hub calls instead of uploading"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})

    def __post_init__(self):
        RadiometryOptions.__post_init__(self)
        BandNamesOptions.__post_init__(self)
        if isinstance(self.metadata, (str, os.PathLike)):
            self.metadata = [self.metadata]
        if self.countries:
            self.countries = [part.strip() for value in self.countries for part in value.split(",") if part.strip()]
        for name in ("max_patches", "num_proc", "max_new_tokens", "caption_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive integer")
        self.shard_index  # validates --shard

    @property
    def shard_index(self) -> tuple[int, int] | None:
        """(INDEX, COUNT) of `shard`, or None."""
        if self.shard is None:
            return None
        try:
            index, count = (int(part) for part in str(self.shard).split("/"))
        except ValueError:
            raise ValueError(f"--shard {self.shard!r}: expected INDEX/COUNT, e.g. 0/8") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {self.shard!r}: need 0 <= INDEX < COUNT")
        return index, count


def _keep(item: dict, config: BuildConfig, final: bool) -> str | None:
    """Why a patch is filtered out, or None. Unknown fields (None) pass until the final check."""
    if config.splits and item.get("split") not in config.splits:
        return "split"
    country = item.get("country")
    if config.countries and (country is not None or final) and country not in config.countries:
        return "country"
    if config.skip_snow and item.get("snow"):
        return "snow"
    if config.skip_cloud and item.get("cloud"):
        return "cloud"
    return None


def discover(config: BuildConfig) -> tuple[list[PatchTask], list[dict], dict[str, str]]:
    """All tasks of the configured sources (sorted, filtered, sampled), skipped entries and image roots."""
    if not (config.bigearthnet or config.bigearthnet_v1 or config.eurosat):
        raise ValueError("give at least one of --bigearthnet, --bigearthnet-v1, --eurosat")
    if config.bigearthnet and not config.metadata:
        raise ValueError("--bigearthnet needs --metadata (the reBEN parquet holds the labels and splits)")
    for name in config.splits or []:
        if name not in SPLITS:
            raise ValueError(f"--split {name!r}: expected one of {SPLITS}")
    metadata = load_reben_metadata(config.metadata) if config.metadata else None
    tasks, skipped, roots = [], [], {}
    if config.bigearthnet:
        found, bad = discover_reben(config.bigearthnet, metadata)
        tasks += found
        skipped += bad
        roots["reben"] = str(Path(config.bigearthnet).resolve())
    if config.bigearthnet_v1:
        found, bad = discover_bigearthnet_v1(config.bigearthnet_v1, metadata)
        reben_ids = {t.id for t in tasks if t.source == "reben"}
        for task in found:
            if task.reben_patch_id in reben_ids:
                skipped.append({"id": task.id, "path": task.path,
                                "reason": f"duplicate of reBEN patch {task.reben_patch_id}"})
            else:
                tasks.append(task)
        skipped += bad
        roots["bigearthnet-v1"] = str(Path(config.bigearthnet_v1).resolve())
    if config.eurosat:
        found, bad = discover_eurosat(config.eurosat, config.seed)
        tasks += found
        skipped += bad
        roots["eurosat"] = str(Path(config.eurosat).resolve())
    counts = Counter(t.id for t in tasks)
    if len(counts) != len(tasks):
        duplicates = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise ValueError(f"patch ids are not unique across the sources, e.g. {duplicates}")
    assign_missing_splits(tasks, config.seed)
    tasks = [t for t in tasks if _keep(vars(t), config, final=False) is None]
    tasks.sort(key=lambda t: (SOURCES.index(t.source), t.id))
    if config.max_patches is not None and len(tasks) > config.max_patches:
        sample = random.Random(config.seed).sample(range(len(tasks)), config.max_patches)
        tasks = [tasks[i] for i in sorted(sample)]
    return tasks, skipped, roots


def _in_shard(patch_id: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    index, count = shard
    return int(hashlib.sha1(patch_id.encode()).hexdigest(), 16) % count == index


def _rows_generator(path: str):
    """Rows from a JSON-lines spool file (lets ``Dataset.from_generator`` write Arrow shards streaming)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _save_dataset_dict(spools: dict[str, str], features, target: Path, scratch: Path) -> dict[str, int]:
    """Stream every split's spool into Arrow, save the DatasetDict next to ``target`` and swap it in."""
    from datasets import Dataset, DatasetDict

    splits = {}
    for split, spool in sorted(spools.items(), key=lambda item: SPLITS.index(item[0])):
        splits[split] = Dataset.from_generator(_rows_generator, features=features, gen_kwargs={"path": spool},
                                               cache_dir=str(scratch / "cache" / target.name / split))
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict(splits).save_to_disk(str(staging))
    replace_dir(staging, target)
    return {split: len(ds) for split, ds in splits.items()}


def _with_task_metadata(record: dict, task: PatchTask) -> dict:
    """The record with the split and, for reBEN-labelled patches, the parquet's current labels, country and
    flags (the metadata is authoritative and may have been added or updated since the record was cached)."""
    row = dict(record, split=task.split)
    if task.label_source == "reben":
        row.update(labels=list(task.labels), label_source="reben", country=task.country, country_source="metadata",
                   snow=task.snow, cloud=task.cloud, flag_source="metadata", reben_patch_id=task.reben_patch_id)
    return row


def assemble(tasks: list[PatchTask], captioner, config: BuildConfig) -> tuple[dict, dict[str, int]]:
    """Write OUTPUT/patches, OUTPUT/alignment, OUTPUT/instructions from the cached records of ``tasks``.

    Rows are streamed: records are read one at a time into per-split JSON-lines spools, which
    ``Dataset.from_generator`` turns into Arrow shards. Returns the split sizes and the filter counts.
    """
    output = Path(config.output)
    features = dataset_features()
    filtered: dict[str, int] = {}
    scratch = Path(tempfile.mkdtemp(prefix=".assemble-", dir=output / ".work"))
    try:
        handles, spools = {}, {name: {} for name in features}
        for task in tasks:  # sorted order: stable row order across re-runs
            row = _with_task_metadata(read_record(output, task.id), task)
            reason = _keep(row, config, final=True)
            if reason:
                filtered[reason] = filtered.get(reason, 0) + 1
                continue
            row["caption"], row["caption_prompt"] = caption_of(row, captioner, output)
            row["captioner"] = captioner.name
            outputs = {"patches": [row], "alignment": alignment_records(row, config.seed),
                       "instructions": instruction_records(row, config.seed)}
            for name, rows in outputs.items():
                key = (name, task.split)
                if key not in handles:
                    spools[name][task.split] = str(scratch / f"{name}-{task.split}.jsonl")
                    handles[key] = open(spools[name][task.split], "w", encoding="utf-8")
                for item in rows:
                    handles[key].write(json.dumps({k: item.get(k) for k in features[name]}) + "\n")
        for handle in handles.values():
            handle.close()
        if not spools["patches"]:
            raise ValueError(f"no patch survived processing and filters (filtered: {filtered}); nothing to write")
        sizes = {name: _save_dataset_dict(spools[name], features[name], output / name, scratch)
                 for name in features}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sizes, filtered


def describe_build(config: BuildConfig, captioner: str, roots: dict[str, str], sizes: dict) -> dict:
    """OUTPUT/build_info.json: the image roots that resolve `image_path`, and how every field was made."""
    return {
        "image_roots": roots,
        "image_path": "'<source>/<path under image_roots[source]>'; resolve with resolve_image_path()",
        "rgb_root": "the folder of this file (rgb_path is relative to it)",
        "rgb_stretch": f"B04/B03/B02, one joint {RGB_PERCENTILES[0]:g}-{RGB_PERCENTILES[1]:g} percentile stretch "
                       "over the valid pixels of the patch, no-data black",
        "label_format": "format_labels(): 'Labels: ' + '; '.join(sorted(labels))",
        "indices": INDEX_DEFINITIONS,
        "thresholds": THRESHOLDS,
        "radiometry": {**config.radiometry.cache_key(), "strict": config.strict,
                       "rules": "processing/radiometry.py; each record's `radiometry` says what was applied"},
        "band_names": config.names,
        "captioner": captioner,
        "seed": config.seed,
        "hub_repo_id": config.push_to_hub,
        "filters": {"splits": config.splits, "countries": config.countries, "max_patches": config.max_patches,
                    "skip_snow": config.skip_snow, "skip_cloud": config.skip_cloud},
        "sizes": sizes,
    }


def build_dataset(config: BuildConfig) -> dict:
    """Run the whole build (resumable) and return the report that is also written to OUTPUT/report.json."""
    output = Path(config.output)
    (output / ".work").mkdir(parents=True, exist_ok=True)
    captioner = make_captioner(config.captioner, config.seed, config.max_new_tokens)
    started = time.perf_counter()
    tasks, skipped, roots = discover(config)
    tasks = [t for t in tasks if _in_shard(t.id, config.shard_index)]
    logger.info("discovered %d patches to build into %s", len(tasks), output)
    ready, errors = process_all(tasks, str(output), config.num_proc, config.radiometry, config.names)
    processing_seconds = time.perf_counter() - started
    report = {
        "output": str(output.resolve()),
        "captioner": captioner.name,
        "patches_requested": len(tasks),
        "patches_ok": len(ready),
        "skipped": sorted(skipped + errors, key=lambda item: item["id"]),
        "processing_seconds": round(processing_seconds, 3),
        "shard": config.shard,
    }
    if config.shard is not None:
        index, count = config.shard_index
        atomic_write_json(output / ".work" / f"report-shard-{index}-of-{count}.json", report)
        logger.info("shard %s done: %d records cached under %s/.work; run without --shard to assemble",
                    config.shard, len(ready), output)
        return report
    report["captions_generated"] = caption_all(ready, captioner, str(output), config.caption_batch_size)
    sizes, filtered = assemble(ready, captioner, config)
    report.update({"filtered_after_processing": filtered, "sizes": sizes,
                   "total_seconds": round(time.perf_counter() - started, 3)})
    build_info = describe_build(config, captioner.name, roots, sizes)
    atomic_write_json(output / "build_info.json", build_info)
    atomic_write_text(output / "README.md", dataset_card(build_info, report))
    atomic_write_json(output / "report.json", report)
    logger.info("wrote %s (patches %s); report: %s", output, sizes["patches"], output / "report.json")
    if config.push_to_hub:
        report["hub"] = push_dataset(output, config.push_to_hub, dry_run=config.hub_dry_run, private=config.hub_private)
    return report
