"""`map_scene`: a Sentinel-2 scene in, one georeferenced row of labels (and captions) per tile out."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .inference import TileAnnotator, task_list
from .outputs import Checkpoints, output_format, write_tiles
from .reading import TileBatches
from .tiling import batches_of, plan_tiles, tile_id

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
EDGE_RULE = ("tiles are tile_size px, stride px apart from the top-left corner; where the scene's width or height is "
             "not covered, one more tile is placed flush with the right/bottom edge (shifted inward, overlapping its "
             "neighbour), so every tile is full size; a scene smaller than one tile is refused")
NODATA_RULE = ("valid_fraction = share of a tile's pixels holding data in every band; tiles with none are skipped "
               "(no row) and counted as skipped_nodata")


@dataclass
class MapResult:
    """What `map_scene` wrote: `output` (the tile table), `overview` (PNG or None), `rows` (one dict per mapped tile,
    sorted by row and column: tile_id, row, col, labels, caption / classification_text by task, valid_fraction,
    geometry as a shapely polygon in `crs`), `counts` (tiles, mapped, skipped_nodata, edge_shifted, resumed) and
    `metadata` (what the file's metadata holds)."""

    output: Path
    overview: Path | None
    rows: list[dict]
    counts: dict
    crs: object = None
    metadata: dict = field(default_factory=dict)


def default_overview(output: Path) -> Path:
    return output.with_name(f"{output.stem}_overview.png")


def model_fingerprint(model) -> dict:
    return {"name_or_path": str(getattr(model, "name_or_path", "") or ""),
            "config_sha256": hashlib.sha256(model.config.to_json_string(use_diff=False).encode()).hexdigest()}


def scene_radiometry(reader, input_offset, input_scale, strict: bool):
    """(Radiometry applied to every tile, or None, and its description for the output's metadata) of the scene's
    radiometric handling, decided once from the explicit values, the product metadata, GeoTIFF tags or product name
    (`processing.radiometry.resolve_radiometry`). Float data that only a product name (or nothing) describes is
    left to each tile's values (the float-reflectance rule): None."""
    import numpy as np

    from spectral_llava.processing.radiometry import resolve_radiometry

    resolved = resolve_radiometry(reader.source, input_offset=input_offset, input_scale=input_scale)
    description = {**resolved.as_dict(), "strict": strict}
    if resolved.source in ("product_name", "none") and np.issubdtype(np.dtype(reader.dtype), np.floating):
        description["per_tile"] = ("float data: each tile in reflectance range 0..1.5 is scaled by 10000 "
                                   "(float_reflectance), the others take the rule above")
        return None, description
    return resolved, description


def _footprint(transform, tile) -> "object":
    import shapely

    corners = [(tile.x, tile.y), (tile.x + tile.size, tile.y), (tile.x + tile.size, tile.y + tile.size),
               (tile.x, tile.y + tile.size)]
    return shapely.Polygon([transform @ corner for corner in corners])


def map_scene(source, model, processor, output, *, task: str = "classification", tile_size: int | None = None,
              stride: int | None = None, batch_size: int = 8, engine: str = "local", ray_address: str | None = None,
              resume: bool = False, overview=None, input_offset: float | None = None,
              input_scale: float | None = None, strict: bool = False, progress=None,
              max_new_tokens: int | dict | None = None, num_workers: int | None = None, ray_actors: int = 1,
              ray_cpus_per_actor: float = 1, ray_gpus_per_actor: float = 0, max_tiles: int | None = None) -> MapResult:
    """Tile a scene, label (and/or caption) every tile with the model, write one row per tile.

    source: a multi-band GeoTIFF / COG, a band folder (Major-TOM, BigEarthNet, SSL4EO), a SAFE product or its
      granule / IMG_DATA folder. model, processor: loaded Spectral-LLaVA objects (`engine="ray"` reloads the model in
      each actor from `model.name_or_path`, which must then be a model dir every Ray node can read).
    output: `.parquet` (GeoParquet, the scene's CRS), `.geojson` (RFC 7946, WGS84) or `.gpkg`; written atomically.
    task: "classification" | "caption" | "both". tile_size, stride: pixels of the 10 m grid (default: the model's
      image size, no overlap); edges follow `EDGE_RULE`, no-data tiles `NODATA_RULE`. max_tiles: map at most that
      many tiles, spread over the whole scene (`tiling.spread_tiles`). A scene over `SCENE_WINDOW_LIMIT` (4 x 4
      Sentinel-2 tiles, `processing.sentinel2_io`) is refused from its headers.
    batch_size: tiles per model call. resume: continue a killed run from its checkpoints (`.OUT.work/` beside the
      output). overview: PNG path (default OUT_overview.png beside the output; False for none).
    input_offset, input_scale, strict: radiometric handling, as the image processor takes them; decided once for
      the scene (`scene_radiometry`), applied to every window and recorded in the output's metadata["radiometry"].
    progress: `progress(done, total)` is called as tiles finish. num_workers: DataLoader workers reading windows
      while the model runs (default 1; 0 reads in the main process). ray_actors, ray_cpus_per_actor,
      ray_gpus_per_actor: the Ray model-actor pool.
    """
    output = Path(output)
    output_format(output)
    task_list(task)
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; expected one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    from spectral_llava.processing.scene_reader import SceneReader
    from spectral_llava.processing.sentinel2_io import product_id

    source = os.path.abspath(os.fspath(source))
    image_processor = processor.image_processor
    reader = SceneReader(source, select_bands=image_processor.band_names, resampling=image_processor.resampling)
    missing = [band for band in image_processor.band_names if band not in reader.band_names]
    if missing:
        raise ValueError(f"{source}: band(s) {', '.join(missing)} missing; the model reads "
                         f"{', '.join(image_processor.band_names)} (for a SAFE product pass the .SAFE folder or the "
                         "granule's IMG_DATA folder, which hold every band)")
    georeferenced = reader.crs is not None
    if not georeferenced:
        if output_format(output) == "GeoJSON":
            raise ValueError(f"{source} has no georeferencing (no CRS): GeoJSON needs WGS84 coordinates; write "
                             ".parquet or .gpkg to get tile footprints in pixel coordinates")
        warnings.warn(f"{source} has no georeferencing (no CRS): tile footprints are written in pixel coordinates "
                      "(x = column, y = row of the 10 m grid) without a CRS", stacklevel=2)
    tile_size = int(tile_size or image_processor.image_size)
    stride = int(stride or tile_size)
    tiles = plan_tiles(reader.height, reader.width, tile_size, stride, where=source, max_tiles=max_tiles)
    batches = batches_of(tiles, batch_size)
    product = product_id(source)
    applied, radiometry = scene_radiometry(reader, input_offset, input_scale, strict)
    annotator = TileAnnotator(model, processor, task, max_new_tokens) if engine == "local" else None
    pixel_size = abs(reader.transform.a) if georeferenced else None
    plan = {"source": source, "product_id": product, "height": reader.height, "width": reader.width,
            "tile_size": tile_size, "stride": stride, "batch_size": batch_size, "task": task,
            "max_new_tokens": max_new_tokens, "model": model_fingerprint(model), "radiometry": radiometry,
            "max_tiles": max_tiles}
    shifted = sum(tile.shifted for tile in tiles)
    logger.info("%s: %dx%d px, %d tiles of %d px (stride %d, %d shifted inward at the edges) in %d batches of %d",
                source, reader.height, reader.width, len(tiles), tile_size, stride, shifted, len(batches), batch_size)
    logger.info("radiometry: %s", radiometry)

    checkpoints = Checkpoints(output)
    done = checkpoints.start(plan, resume)
    pending = [k for k in range(len(batches)) if k not in done]
    resumed = sum(len(batches[k]) for k in done)
    total = len(tiles)
    bar = tqdm(total=total, initial=resumed, unit="tile", desc=f"map {product}")
    finished = resumed

    def on_batch(k: int, rows: list[dict]) -> None:
        nonlocal finished
        checkpoints.write(k, rows)
        finished += len(rows)
        bar.update(len(rows))
        if progress is not None:
            progress(finished, total)

    reading = TileBatches(reader, tiles, batches, image_processor, applied, strict)
    try:
        if progress is not None:
            progress(finished, total)
        if engine == "local":
            run_local(reading, pending, annotator, on_batch, num_workers)
            precision = annotator.precision
        else:
            from .ray_engine import run_ray

            precision = run_ray(reading, pending, model, task, max_new_tokens, on_batch, ray_address=ray_address,
                                actors=ray_actors, cpus_per_actor=ray_cpus_per_actor,
                                gpus_per_actor=ray_gpus_per_actor)
    except (ValueError, FileNotFoundError):
        checkpoints.remove()  # a bad input: resuming cannot help, leave nothing behind
        raise
    finally:
        bar.close()
        reader.close()

    rows = []
    for stored in sorted(checkpoints.rows(), key=lambda row: row["tile_index"]):
        if not stored["mapped"]:
            continue
        tile = tiles[stored["tile_index"]]
        row = {"tile_id": tile_id(product, tile_size, stride, tile.row, tile.col), "row": tile.row, "col": tile.col,
               "labels": list(stored["labels"])}
        for column in ("caption", "classification_text"):
            if column in stored:
                row[column] = stored[column]
        row["valid_fraction"] = float(stored["valid_fraction"])
        row["geometry"] = _footprint(reader.transform, tile)
        row["tile_index"] = tile.index
        rows.append(row)
    counts = {"tiles": total, "mapped": len(rows), "skipped_nodata": total - len(rows), "edge_shifted": shifted,
              "resumed": resumed}
    metadata = {"source": source, "product_id": product, "model": plan["model"], "task": task,
                "tile_size_px": tile_size, "stride_px": stride, "max_tiles": max_tiles,
                "tile_size_m": tile_size * pixel_size if pixel_size else None,
                "crs": reader.crs.to_string() if georeferenced else None, "georeferenced": georeferenced,
                "radiometry": radiometry, "precision": precision, "engine": engine, "edge_rule": EDGE_RULE,
                "nodata_rule": NODATA_RULE, "counts": counts}
    overview_path = None if overview is False else Path(overview) if overview else default_overview(output)
    table = [{key: value for key, value in row.items() if key != "tile_index"} for row in rows]
    write_tiles(table, reader.crs, output, metadata)
    if overview_path is not None:
        from .overview import write_overview

        write_overview(overview_path, reader, rows, tiles, f"{product} - {task} - {len(rows)} tiles")
        reader.close()
    checkpoints.remove()
    logger.info("wrote %s (%d tiles mapped, %d all no-data skipped, %d edge tiles shifted inward, %d resumed)%s",
                output, counts["mapped"], counts["skipped_nodata"], shifted, resumed,
                f" and {overview_path}" if overview_path else "")
    return MapResult(output, overview_path, table, counts, reader.crs, metadata)


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
