"""Spectral-Inst: the instruction dataset builder (paper section IV) and the reader of its output.

Per patch (BigEarthNet v2 "reBEN", BigEarthNet v1, EuroSAT): `sources` discovers it with what its metadata says,
`patches` reads the bands, renders an RGB PNG and caches a metadata record, `captioners` describes it, `records`
turns it into alignment and instruction conversations, and `builder` assembles the `datasets.DatasetDict` folders,
the dataset card (`card`) and the Hub upload (`hub`); `dataset` reads a finished build (`load_split`, `load_patches`,
`resolve_image_path`). The label vocabularies and the one classification answer format (`format_labels` /
`parse_labels`) are the model's answer contract, in `spectral_llava.inference.labels`. Details:
docs/spectral_inst.md.
"""

from .builder import BuildConfig, build_dataset
from .captioners import (HFImageTextCaptioner, LLMCaptioner, TemplateCaptioner, llm_messages, make_captioner,
                         metadata_facts, metadata_prompt, trim_to_sentence)
from .dataset import load_build_info, load_patches, load_split, resolve_image_path
from .geo import COUNTRY_BOUNDS, parse_acquisition_date, season_of
from .hub import push_dataset
from .patches import INDEX_DEFINITIONS, THRESHOLDS, process_patch, spectral_summary
from .records import alignment_records, instruction_records
from .sources import SOURCES, SPLITS, PatchTask, list_eurosat, load_reben_metadata, stratified_split

__all__ = [
    "COUNTRY_BOUNDS", "INDEX_DEFINITIONS", "SOURCES", "SPLITS", "THRESHOLDS", "BuildConfig", "HFImageTextCaptioner",
    "LLMCaptioner", "PatchTask", "TemplateCaptioner", "alignment_records", "build_dataset", "instruction_records",
    "list_eurosat", "llm_messages", "load_build_info", "load_patches", "load_reben_metadata", "load_split",
    "make_captioner", "metadata_facts", "metadata_prompt", "parse_acquisition_date", "process_patch", "push_dataset",
    "resolve_image_path", "season_of", "spectral_summary", "stratified_split", "trim_to_sentence",
]
