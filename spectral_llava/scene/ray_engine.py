"""`engine="ray"`: the same planned batches through Ray Data, windows read by CPU tasks, the model in an actor pool.

Each planned batch is one Ray Data row: a read task turns it into pixel values (`TileBatches`, as the local engine's
DataLoader workers do), a model actor annotates it (`TileAnnotator`, as locally), and the driver checkpoints every
finished batch. The batches are the local engine's, so rows equal the local engine's row by row.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import numpy as np

from .engine import annotate_batch, raise_input_error
from .inference import TileAnnotator
from .reading import TileBatches

logger = logging.getLogger(__name__)

PRECISION = "bfloat16 autocast (tower) where the actor's device has native bf16, else float32"
RESULT_COLUMNS = ("batch", "tile_index", "valid_fraction", "mapped", "labels", "caption", "classification_text",
                  "error", "error_type")


def _read_batches(batch: dict, reading: TileBatches) -> dict:
    """Ray Data UDF: read and preprocess each planned batch of `batch["batch"]` (one per row)."""
    rows = [reading[int(k)] for k in batch["batch"]]
    empty = np.zeros((0, len(reading.image_processor.band_names), reading.image_processor.image_size,
                      reading.image_processor.image_size), dtype=np.float32)
    return {
        "batch": np.array([row["batch"] for row in rows]),
        "tiles": [np.asarray(row.get("tiles", []), dtype=np.int64) for row in rows],
        "valid_fraction": [np.asarray(row.get("valid_fraction", []), dtype=np.float64) for row in rows],
        "mapped": [np.asarray(row.get("mapped", []), dtype=bool) for row in rows],
        "pixel_values": [row["pixel_values"].numpy() if "pixel_values" in row else empty for row in rows],
        "error": np.array([row.get("error", "") for row in rows], dtype=object),
        "error_type": np.array([row.get("error_type", "") for row in rows], dtype=object),
    }


class AnnotateBatches:
    """Ray Data model actor: loads the model dir once, annotates each planned batch it is given."""

    def __init__(self, model_dir: str, task: str, max_new_tokens):
        from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor

        model, processor = load_model_and_processor(model_dir)
        self.annotator = TileAnnotator(model, processor, task, max_new_tokens)

    def __call__(self, batch: dict):
        import pandas as pd
        import torch

        rows = []
        for i, k in enumerate(batch["batch"]):
            if batch["error"][i]:
                rows.append({"batch": int(k), "error": batch["error"][i], "error_type": batch["error_type"][i]})
                continue
            item = {"tiles": batch["tiles"][i], "valid_fraction": batch["valid_fraction"][i],
                    "mapped": batch["mapped"][i], "pixel_values": torch.from_numpy(np.ascontiguousarray(
                        batch["pixel_values"][i], dtype=np.float32))}
            rows.extend({**row, "batch": int(k), "error": ""} for row in annotate_batch(self.annotator, item))
        frame = pd.DataFrame(rows)
        for column in RESULT_COLUMNS:
            if column not in frame.columns:
                frame[column] = None
        return frame[list(RESULT_COLUMNS)]


def run_ray(reading: TileBatches, pending: list[int], model, task: str, max_new_tokens, on_batch, *,
            ray_address: str | None = None, actors: int = 1, cpus_per_actor: float = 1,
            gpus_per_actor: float = 0) -> str:
    """Annotate the `pending` batches of `reading` on Ray (joining `ray_address`, or the running / a new local
    instance); `on_batch(k, rows)` is called on the driver as batches finish. Returns the precision used."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RuntimeError("--engine ray needs Ray Data: pip install 'spectral-llava[ray]' (make setup installs it)") \
            from err
    from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor

    model_dir = str(getattr(model, "name_or_path", "") or "")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"engine='ray' loads the model in each actor from its directory, but the model's "
                         f"name_or_path {model_dir!r} is not a saved model dir")
    # The repository's own image-processor class: a remote-code class loaded from a model dir does not unpickle in
    # Ray workers.
    image_processor = SpectralImageProcessor.from_dict(reading.image_processor.to_dict())
    reading = TileBatches(reading.reader, reading.tiles, reading.batches, image_processor, reading.radiometry,
                          reading.resolved)
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        expected = {k: len(reading.batches[k]) for k in pending}
        received = defaultdict(list)
        if not pending:
            return PRECISION
        dataset = ray.data.from_items([{"batch": k} for k in pending], override_num_blocks=len(pending))
        dataset = dataset.map_batches(_read_batches, fn_kwargs={"reading": reading}, batch_size=1, num_cpus=1)
        dataset = dataset.map_batches(AnnotateBatches, batch_size=1, batch_format="numpy",
                                      fn_constructor_kwargs={"model_dir": os.path.abspath(model_dir), "task": task,
                                                             "max_new_tokens": max_new_tokens},
                                      compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                                      num_gpus=gpus_per_actor)
        logger.info("ray: %d batches through %d model actor(s) (%s CPU, %s GPU each)", len(pending), actors,
                    cpus_per_actor, gpus_per_actor)
        for frame in dataset.iter_batches(batch_size=None, batch_format="pandas"):
            for row in frame.to_dict("records"):
                k = int(row.pop("batch"))
                raise_input_error({"error": row.pop("error"), "error_type": row.pop("error_type")})
                received[k].append({key: value for key, value in row.items() if _present(value)})
                if len(received[k]) == expected[k]:
                    on_batch(k, received.pop(k))
        return PRECISION
    finally:
        if started:
            ray.shutdown()


def _present(value) -> bool:
    """Whether a result cell holds a value (columns a task does not produce are None / NaN)."""
    if value is None:
        return False
    return not (isinstance(value, float) and np.isnan(value))

