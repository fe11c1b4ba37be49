"""Tile tables on disk: GeoParquet, GeoJSON, GeoPackage (each written atomically), and the checkpoint shards of a
run in progress. The fourth output format, the COG label raster (`.tif`), is `label_raster`'s."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

from spectral_llava.utils.fileio import atomic_write_text, write_file_atomically

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = {".parquet": "GeoParquet", ".geojson": "GeoJSON", ".gpkg": "GeoPackage", ".tif": "COG",
                  ".tiff": "COG"}
METADATA_KEY = "spectral_llava"
GPKG_LAYER = "tiles"


def output_format(output: Path) -> str:
    """The format of an output path by its extension; a clear error for any other extension."""
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"output {output}: unknown extension {output.suffix or '(none)'!r}; use .parquet (GeoParquet "
                         "in the scene's CRS), .geojson (RFC 7946, WGS84), .gpkg (GeoPackage) or .tif (a Cloud-"
                         "Optimized GeoTIFF label raster, one pixel per tile step)")
    return OUTPUT_FORMATS[suffix]


def tile_frame(rows: list[dict], crs):
    """GeoDataFrame of the tile rows (their "geometry" are shapely polygons in `crs`)."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    return frame[[column for column in frame.columns if column != "geometry"] + ["geometry"]]


def write_tiles(rows: list[dict], crs, output: Path, metadata: dict) -> None:
    """Write the rows to `output` (format by extension), with `metadata` in the file under "spectral_llava": the
    Parquet key-value metadata, a GeoJSON foreign member, the GeoPackage layer's metadata."""
    fmt = output_format(output)
    frame = tile_frame(rows, crs)
    text = json.dumps(metadata, sort_keys=True, default=str)
    if fmt == "GeoParquet":
        write_file_atomically(output, lambda tmp: _write_geoparquet(frame, tmp, text))
    elif fmt == "GeoJSON":
        write_file_atomically(output, lambda tmp: _write_geojson(frame, tmp, metadata))
    else:
        write_file_atomically(output, lambda tmp: _write_gpkg(frame, tmp, text))


def _write_geoparquet(frame, path: str, metadata_text: str) -> None:
    import pyarrow.parquet as pq

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*crs.*", category=UserWarning)  # pixel geometries: no CRS
        frame.to_parquet(path, index=False)
    table = pq.read_table(path)
    table = table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY.encode(): metadata_text.encode()})
    pq.write_table(table, path)


def _write_geojson(frame, path: str, metadata: dict) -> None:
    import shapely

    wgs84 = frame.to_crs("EPSG:4326")
    wgs84["geometry"] = shapely.orient_polygons(wgs84.geometry.values, exterior_cw=False)  # RFC 7946 winding
    collection = json.loads(wgs84.to_json(drop_id=True, na="drop"))
    collection.pop("crs", None)  # RFC 7946: WGS84 longitude/latitude, no crs member
    collection[METADATA_KEY] = metadata
    with open(path, "w", encoding="utf-8") as f:
        json.dump(collection, f, default=str)


def _write_gpkg(frame, path: str, metadata_text: str) -> None:
    import pyogrio

    os.remove(path)  # the empty temporary file: GDAL's GeoPackage driver creates the file itself
    frame = frame.copy()
    if "labels" in frame.columns:  # GeoPackage has no list columns: a JSON array per row
        frame["labels"] = [json.dumps(list(labels)) for labels in frame["labels"]]
    pyogrio.write_dataframe(frame, path, layer=GPKG_LAYER, driver="GPKG",
                            layer_metadata={METADATA_KEY: metadata_text})


def read_tiles(path: str | os.PathLike):
    """(GeoDataFrame, metadata dict) of a `spectral-llava map` output, in the file's CRS, `labels` as lists."""
    import geopandas as gpd

    path = Path(path)
    fmt = output_format(path)
    if fmt == "COG":
        raise ValueError(f"{path} is a label raster, not a tile table: read it with "
                         "spectral_llava.scene.label_raster.read_label_raster (or rasterio)")
    if fmt == "GeoParquet":
        import pyarrow.parquet as pq

        frame = gpd.read_parquet(path)
        frame["labels"] = [list(labels) for labels in frame["labels"]]
        metadata = json.loads(pq.read_schema(path).metadata[METADATA_KEY.encode()])
    elif fmt == "GeoJSON":
        frame = gpd.read_file(path)
        metadata = json.loads(path.read_text(encoding="utf-8"))[METADATA_KEY]
        frame["labels"] = [json.loads(labels) if isinstance(labels, str) else list(labels)
                           for labels in frame["labels"]]
    else:
        import pyogrio

        frame = gpd.read_file(path, layer=GPKG_LAYER)
        frame["labels"] = [json.loads(labels) for labels in frame["labels"]]
        metadata = json.loads(pyogrio.read_info(path, layer=GPKG_LAYER)["layer_metadata"][METADATA_KEY])
    return frame, metadata


class Checkpoints:
    """Partial results of a run: one Parquet shard per finished batch in a hidden work dir beside the output
    (`.OUT.work/`), with `plan.json` describing the run. A shard is written atomically and named by its batch, so
    a batch done twice (after a kill) is stored once; `--resume` continues with the batches that have no shard."""

    def __init__(self, output: Path):
        self.dir = output.parent / f".{output.name}.work"

    def start(self, plan: dict, resume: bool) -> set[int]:
        """Prepare the work dir for `plan`; returns the batches already done (none unless resuming)."""
        plan_file = self.dir / "plan.json"
        if resume and plan_file.is_file():
            previous = json.loads(plan_file.read_text())
            changed = {key: (previous.get(key), value) for key, value in plan.items() if previous.get(key) != value}
            if changed:
                details = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())
                raise ValueError(f"--resume: the partial run in {self.dir} used other settings ({details}); rerun "
                                 "without --resume to start over")
            done = self.done()
            logger.info("resuming from %s: %d batch(es) already done", self.dir, len(done))
            return done
        if self.dir.exists():
            logger.info("discarding the partial run in %s (pass --resume to continue it)", self.dir)
            shutil.rmtree(self.dir)
        elif resume:
            logger.info("--resume: no partial run in %s, starting from the beginning", self.dir)
        self.dir.mkdir(parents=True)
        atomic_write_text(plan_file, json.dumps(plan, indent=1, sort_keys=True))
        return set()

    def _shard(self, batch: int) -> Path:
        return self.dir / f"batch-{batch:07d}.parquet"

    def done(self) -> set[int]:
        return {int(path.stem.split("-")[1]) for path in self.dir.glob("batch-*.parquet")}

    def write(self, batch: int, rows: list[dict]) -> None:
        import pandas as pd

        write_file_atomically(self._shard(batch), lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))

    def rows(self) -> list[dict]:
        import pandas as pd

        rows = []
        for path in sorted(self.dir.glob("batch-*.parquet")):
            for row in pd.read_parquet(path).to_dict("records"):
                if "labels" in row:
                    row["labels"] = [str(label) for label in row["labels"]]
                rows.append(row)
        return rows

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
