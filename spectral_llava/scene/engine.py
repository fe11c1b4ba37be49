"""The local engine, and what both engines do with a read batch: annotate its tiles into checkpoint rows, or raise
the input error a reading worker sent back (`ray_engine` runs the same steps on Ray)."""

from __future__ import annotations

import torch

from .inference import TileAnnotator
from .reading import TileBatches


def run_local(reading: TileBatches, pending: list[int], annotator: TileAnnotator, on_batch,
              num_workers: int | None = None) -> None:
    """Batches `pending` of `reading`, read by DataLoader workers while the model annotates the previous ones."""
    workers = 1 if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(reading, pending), batch_size=None,
                                         num_workers=workers, prefetch_factor=2 if workers else None)
    for item in loader:
        raise_input_error(item)
        on_batch(item["batch"], annotate_batch(annotator, item))


def raise_input_error(item: dict) -> None:
    if item.get("error"):
        raise (FileNotFoundError if item["error_type"] == "FileNotFoundError" else ValueError)(item["error"])


def annotate_batch(annotator: TileAnnotator, item: dict) -> list[dict]:
    """Checkpoint rows of one read batch: every tile, annotated where it holds data."""
    results = iter(annotator(item["pixel_values"]))
    rows = []
    for index, fraction, mapped in zip(item["tiles"], item["valid_fraction"], item["mapped"]):
        row = {"tile_index": int(index), "valid_fraction": float(fraction), "mapped": bool(mapped)}
        row.update(next(results) if mapped else {"labels": []})
        rows.append(row)
    return rows
