"""Options of `spectral-llava map` and of `map_scene`, defined once: a dataclass whose field metadata holds the help
text, parsed by transformers' `HfArgumentParser` and passed whole to `map_scene(source, model, processor, output,
options)`. No torch import here: `--help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from spectral_llava.processing.options import BandNamesOptions, RadiometryOptions

Task = Literal["classification", "caption", "both"]
Engine = Literal["local", "ray"]
TASKS = get_args(Task)
ENGINES = get_args(Engine)


@dataclass(kw_only=True)
class MapOptions(RadiometryOptions, BandNamesOptions):
    """How `map_scene` tiles a scene and runs the model on it (the input, model and output are arguments); the
    radiometric handling (`input_offset`, `input_scale`, `strict`) reaches every tile as `self.radiometry`, the
    band names of an unnamed multi-band file (`band_names`) the reader as `self.names`."""

    task: Task = field(default="classification", metadata={"help": "labels, captions or both for every tile"})
    tile_size: int | None = field(default=None, metadata={
        "help": "tile side in 10 m pixels (default: the model's image size, 128 = 1.28 km)", "metavar": "PX"})
    stride: int | None = field(default=None, metadata={"help": "pixels between tiles (default: --tile-size)",
                                                       "metavar": "PX"})
    batch_size: int = field(default=8, metadata={"help": "tiles per model call"})
    max_tiles: int | None = field(default=None, metadata={
        "help": "map at most N tiles, an evenly spaced sub-grid spread over the whole scene (a preview of a large "
                "scene; default: every tile)", "metavar": "N"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "generated tokens per answer (default 48 for labels, 64 for captions)", "metavar": "N"})
    workers: int | None = field(default=None, metadata={
        "help": "DataLoader workers reading tiles while the model runs (default 1; 0 reads in the main process)",
        "metavar": "N"})
    engine: Engine = field(default="local", metadata={"help": "run locally or on a Ray cluster"})
    ray_address: str | None = field(default=None, metadata={
        "help": "Ray cluster to join (e.g. auto or ray://head:10001; default: start a local instance)",
        "metavar": "ADDR"})
    ray_actors: int = field(default=1, metadata={"help": "model actors", "metavar": "N"})
    ray_cpus_per_actor: float = field(default=1, metadata={"help": "CPUs per model actor", "metavar": "C"})
    ray_gpus_per_actor: float = field(default=0, metadata={"help": "GPUs per model actor", "metavar": "G"})
    resume: bool = field(default=False, metadata={"help": "continue a killed run from its checkpoints"})
    overview: str | None = field(default=None, metadata={
        "help": "overview image (default: OUT_overview.png beside OUT)", "metavar": "PNG"})
    no_overview: bool = field(default=False, metadata={"help": "write no overview image"})

    def __post_init__(self):
        RadiometryOptions.__post_init__(self)
        BandNamesOptions.__post_init__(self)
        for name, allowed in (("task", TASKS), ("engine", ENGINES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        for name in ("tile_size", "stride", "batch_size", "max_tiles", "max_new_tokens", "ray_actors"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive integer")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers {self.workers}: expected 0 or more")

    def overview_path(self, output: Path) -> Path | None:
        """The overview PNG of a run writing `output`: None with `no_overview`, else `overview`, else
        OUT_overview.png beside the output."""
        if self.no_overview:
            return None
        return Path(self.overview) if self.overview else output.with_name(f"{output.stem}_overview.png")
