"""`map_scene`: a Sentinel-2 scene in, one georeferenced row of labels (and captions) per tile out.

The job in steps: open the scene and check it can be mapped (`open_scene`, `check_georeferencing`), plan its tiles
and radiometry (`plan_scene`), start or resume the checkpoints, run an engine over the pending batches
(`run_engine`), assemble one row per mapped tile (`assemble_rows`), write the table and the overview
(`write_outputs`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .engine import run_local
from .inference import TileAnnotator
from .options import MapOptions
from .outputs import Checkpoints, output_format, write_tiles
from .reading import TileBatches
from .tiling import Tile, batches_of, owned_windows, plan_tiles, tile_id

logger = logging.getLogger(__name__)

EDGE_RULE = ("tiles are tile_size px, stride px apart from the top-left corner; where the scene's width or height is "
             "not covered, one more tile is placed flush with the right/bottom edge (shifted inward, overlapping its "
             "neighbour), so every tile is full size; a scene smaller than one tile is refused")
NODATA_RULE = ("valid_fraction = share of a tile's pixels holding data in every band; tiles with none are skipped "
               "(no row) and counted as skipped_nodata")


@dataclass
class MapResult:
    """What `map_scene` wrote: `output` (the tile table), `overview` (PNG or None), `rows` (one dict per mapped tile,
    sorted by row and column: tile_id, row, col, labels, caption / classification_text by task, valid_fraction,
    geometry as a shapely polygon in `crs`), `counts` (tiles, mapped, skipped_nodata, edge_shifted, resumed),
    `metadata` (what the file's metadata holds) and `drawn` (per row, the polygon of the part of its tile that maps
    draw, `tiling.owned_windows`: overlaps split halfway, so each point shows one tile)."""

    output: Path
    overview: Path | None
    rows: list[dict]
    counts: dict
    crs: object = None
    metadata: dict = field(default_factory=dict)
    drawn: list = field(default_factory=list)


@dataclass
class ScenePlan:
    """What a run does with a scene: its tiles in batches, the radiometry resolved once for it (`resolved`, or None
    when each tile's values decide) and `description`, the run's settings that a resumed run must match."""

    product: str
    tiles: list[Tile]
    batches: list[list[int]]
    tile_size: int
    stride: int
    resolved: object
    description: dict


def map_scene(source, model, processor, output, options: MapOptions | None = None, progress=None) -> MapResult:
    """Tile a scene, label (and/or caption) every tile with the model, write one row per tile.

    source: a multi-band GeoTIFF / COG (a path or an http(s):// / s3:// URL), a band folder (Major-TOM,
      BigEarthNet, SSL4EO), a SAFE product or its granule / IMG_DATA folder, or a STAC item (a `.json` file, an item
      URL, an item dict or a `pystac.Item`; its band assets are read windowed from their hrefs, its id, datetime and
      links go into the output's metadata["stac"]).
    model, processor: loaded Spectral-LLaVA objects (`engine="ray"` reloads the model in each actor from
      `model.name_or_path`, which must then be a model dir every Ray node can read).
    output: `.parquet` (GeoParquet, the scene's CRS), `.geojson` (RFC 7946, WGS84), `.gpkg` or `.tif` (a COG label
      raster, one pixel per tile step: `label_raster`); written atomically.
    options: a `MapOptions` (default: its defaults): task, tile size and stride (edges follow `EDGE_RULE`, no-data
      tiles `NODATA_RULE`), batch size, engine, resume, overview and the radiometric handling, decided once for the
      scene (`scene_radiometry`), applied to every window and recorded in the output's metadata["radiometry"];
      `max_tiles` maps at most that many tiles, spread over the whole scene (`tiling.spread_tiles`). A scene over
      `SCENE_WINDOW_LIMIT` (4 x 4 Sentinel-2 tiles, `processing.sentinel2_io`) is refused from its headers.
    progress: `progress(done, total)` is called as tiles finish.
    """
    options = options if options is not None else MapOptions()
    output = Path(output)
    output_format(output)
    reader = open_scene(scene_source(source), processor.image_processor, options.names)
    try:
        check_georeferencing(reader, output)
        plan = plan_scene(reader, model, processor.image_processor, options)
        checkpoints = Checkpoints(output)
        done = checkpoints.start(plan.description, options.resume)
        resumed = sum(len(plan.batches[k]) for k in done)
        precision = run_engine(reader, plan, checkpoints, done, model, processor, options, progress)
        rows = assemble_rows(checkpoints.rows(), plan, reader.transform)
        result = write_outputs(output, reader, plan, rows, options, precision, resumed)
        checkpoints.remove()
        return result
    finally:
        reader.close()


def scene_source(source):
    """A local path made absolute (what the metadata and checkpoints record); URLs and STAC items as given."""
    from spectral_llava.processing.sentinel2_io import is_remote, is_stac_source

    if isinstance(source, (str, os.PathLike)) and not is_remote(os.fspath(source)) and not is_stac_source(source):
        return os.path.abspath(os.fspath(source))
    return source


def open_scene(source, image_processor, band_names=None):
    """A `SceneReader` of `source` (headers only) holding every band the model reads, else a ValueError naming the
    missing ones. `band_names`: the bands of a multi-band file whose header does not name them (`--band-names`;
    band folders ignore it)."""
    from spectral_llava.processing.scene_reader import SceneReader
    from spectral_llava.processing.sentinel2_io import detect_layout

    reader = SceneReader(source, select_bands=image_processor.band_names, resampling=image_processor.resampling,
                         band_names=band_names if detect_layout(source).kind == "file" else None)
    missing = [band for band in image_processor.band_names if band not in reader.band_names]
    if missing:
        reader.close()
        hint = ("its band assets (identified by eo:bands / bands) lack them" if reader.stac is not None else
                "for a SAFE product pass the .SAFE folder or the granule's IMG_DATA folder, which hold every band")
        raise ValueError(f"{reader.source}: band(s) {', '.join(missing)} missing; the model reads "
                         f"{', '.join(image_processor.band_names)} ({hint})")
    return reader


def check_georeferencing(reader, output: Path) -> None:
    """A scene without a CRS cannot be written as GeoJSON (WGS84); other formats get footprints in pixel
    coordinates, warned."""
    if reader.crs is not None:
        return
    if output_format(output) == "GeoJSON":
        raise ValueError(f"{reader.source} has no georeferencing (no CRS): GeoJSON needs WGS84 coordinates; write "
                         ".parquet or .gpkg to get tile footprints in pixel coordinates")
    warnings.warn(f"{reader.source} has no georeferencing (no CRS): tile footprints are written in pixel coordinates "
                  "(x = column, y = row of the 10 m grid) without a CRS", stacklevel=3)


def plan_scene(reader, model, image_processor, options: MapOptions) -> ScenePlan:
    """The tiles (`plan_tiles`) in batches (`batches_of`) and the radiometry (`scene_radiometry`) of the run."""
    tile_size = int(options.tile_size or image_processor.image_size)
    stride = int(options.stride or tile_size)
    tiles = plan_tiles(reader.height, reader.width, tile_size, stride, where=reader.source, max_tiles=options.max_tiles)
    batches = batches_of(tiles, options.batch_size)
    product = reader.product
    resolved, radiometry = scene_radiometry(reader, options.radiometry)
    description = {"source": reader.source, "product_id": product, "height": reader.height, "width": reader.width,
                   "tile_size": tile_size, "stride": stride, "batch_size": options.batch_size, "task": options.task,
                   "max_new_tokens": options.max_new_tokens, "model": model_fingerprint(model),
                   "radiometry": radiometry, "max_tiles": options.max_tiles,
                   **({"band_names": options.names} if options.names else {})}
    logger.info("%s: %dx%d px, %d tiles of %d px (stride %d, %d shifted inward at the edges) in %d batches of %d",
                reader.source, reader.height, reader.width, len(tiles), tile_size, stride,
                sum(tile.shifted for tile in tiles), len(batches), options.batch_size)
    logger.info("radiometry: %s", radiometry)
    return ScenePlan(product, tiles, batches, tile_size, stride, resolved, description)


def model_fingerprint(model) -> dict:
    return {"name_or_path": str(getattr(model, "name_or_path", "") or ""),
            "config_sha256": hashlib.sha256(model.config.to_json_string(use_diff=False).encode()).hexdigest()}


def scene_radiometry(reader, radiometry):
    """(`ResolvedRadiometry` applied to every tile, or None, and its description for the output's metadata) of the
    user's settings `radiometry` (a `RadiometrySettings`) for the scene, decided once from the explicit values, the
    product metadata, GeoTIFF tags or product name (`processing.radiometry.resolve_radiometry`). Float data that
    only a product name (or nothing) describes is left to each tile's values (the float-reflectance rule): None."""
    import numpy as np

    from spectral_llava.processing.radiometry import resolve_radiometry

    resolved = resolve_radiometry(reader.stac if reader.stac is not None else reader.source, radiometry)
    description = {**resolved.as_dict(), "strict": radiometry.strict}
    if resolved.source in ("product_name", "none") and np.issubdtype(np.dtype(reader.dtype), np.floating):
        description["per_tile"] = ("float data: each tile in reflectance range 0..1.5 is scaled by 10000 "
                                   "(float_reflectance), the others take the rule above")
        return None, description
    return resolved, description


def run_engine(reader, plan: ScenePlan, checkpoints: Checkpoints, done: set[int], model, processor,
               options: MapOptions, progress=None) -> str:
    """Annotate the planned batches not `done` with the options' engine, checkpointing each batch as it finishes
    and calling `progress(done, total)`; returns the precision the model ran in. A bad input (ValueError,
    FileNotFoundError) removes the checkpoints: resuming cannot help."""
    total = len(plan.tiles)
    finished = sum(len(plan.batches[k]) for k in done)
    bar = tqdm(total=total, initial=finished, unit="tile", desc=f"map {plan.product}")

    def on_batch(k: int, rows: list[dict]) -> None:
        nonlocal finished
        checkpoints.write(k, rows)
        finished += len(rows)
        bar.update(len(rows))
        if progress is not None:
            progress(finished, total)

    pending = [k for k in range(len(plan.batches)) if k not in done]
    reading = TileBatches(reader, plan.tiles, plan.batches, processor.image_processor, options.radiometry,
                          plan.resolved)
    try:
        if progress is not None:
            progress(finished, total)
        if options.engine == "local":
            annotator = TileAnnotator(model, processor, options.task, options.max_new_tokens)
            run_local(reading, pending, annotator, on_batch, options.workers)
            return annotator.precision
        from .ray_engine import run_ray

        return run_ray(reading, pending, model, options.task, options.max_new_tokens, on_batch,
                       ray_address=options.ray_address, actors=options.ray_actors,
                       cpus_per_actor=options.ray_cpus_per_actor, gpus_per_actor=options.ray_gpus_per_actor)
    except (ValueError, FileNotFoundError):
        checkpoints.remove()
        raise
    finally:
        bar.close()


def assemble_rows(stored: list[dict], plan: ScenePlan, transform) -> list[dict]:
    """One row per mapped tile from the checkpoint rows, in tile order, with its id and footprint polygon."""
    rows = []
    for checkpoint in sorted(stored, key=lambda row: row["tile_index"]):
        if not checkpoint["mapped"]:
            continue
        tile = plan.tiles[checkpoint["tile_index"]]
        row = {"tile_id": tile_id(plan.product, plan.tile_size, plan.stride, tile.row, tile.col), "row": tile.row,
               "col": tile.col, "labels": list(checkpoint["labels"])}
        for column in ("caption", "classification_text"):
            if column in checkpoint:
                row[column] = checkpoint[column]
        row["valid_fraction"] = float(checkpoint["valid_fraction"])
        row["geometry"] = _footprint(transform, tile)
        row["tile_index"] = tile.index
        rows.append(row)
    return rows


def _footprint(transform, tile: Tile):
    return _window_polygon(transform, (tile.x, tile.y, tile.x + tile.size, tile.y + tile.size))


def _window_polygon(transform, window):
    import shapely

    x0, y0, x1, y1 = window
    return shapely.Polygon([transform @ corner for corner in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])


def write_outputs(output: Path, reader, plan: ScenePlan, rows: list[dict], options: MapOptions, precision: str,
                  resumed: int) -> MapResult:
    """Write the tile table with the run's metadata, and the overview PNG unless the options say none."""
    total, shifted = len(plan.tiles), sum(tile.shifted for tile in plan.tiles)
    counts = {"tiles": total, "mapped": len(rows), "skipped_nodata": total - len(rows), "edge_shifted": shifted,
              "resumed": resumed}
    georeferenced = reader.crs is not None
    pixel_size = abs(reader.transform.a) if georeferenced else None
    metadata = {"source": reader.source, "product_id": plan.product, "model": plan.description["model"],
                "task": options.task, "tile_size_px": plan.tile_size, "stride_px": plan.stride,
                "max_tiles": options.max_tiles,
                "tile_size_m": plan.tile_size * pixel_size if pixel_size else None,
                "crs": reader.crs.to_string() if georeferenced else None, "georeferenced": georeferenced,
                "radiometry": plan.description["radiometry"], "precision": precision, "engine": options.engine,
                "edge_rule": EDGE_RULE, "nodata_rule": NODATA_RULE, "counts": counts}
    if reader.stac is not None:
        metadata["stac"] = reader.stac.summary()
    table = [{key: value for key, value in row.items() if key != "tile_index"} for row in rows]
    if output_format(output) == "COG":
        from .label_raster import write_label_raster

        metadata["raster"] = write_label_raster(output, table, plan.tiles, reader.transform, reader.crs, plan.stride,
                                                metadata)
    else:
        write_tiles(table, reader.crs, output, metadata)
    overview = options.overview_path(output)
    if overview is not None:
        from .overview import write_overview

        write_overview(overview, reader, rows, plan.tiles, f"{plan.product} - {options.task} - {len(rows)} tiles")
    logger.info("wrote %s (%d tiles mapped, %d all no-data skipped, %d edge tiles shifted inward, %d resumed)%s",
                output, counts["mapped"], counts["skipped_nodata"], shifted, resumed,
                f" and {overview}" if overview else "")
    drawn = [_window_polygon(reader.transform, window)
             for window in owned_windows([plan.tiles[row["tile_index"]] for row in rows])]
    return MapResult(output, overview, table, counts, reader.crs, metadata, drawn)
