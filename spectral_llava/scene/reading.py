"""Reading and preprocessing batches of tiles (run in DataLoader workers or Ray tasks while the model works)."""

from __future__ import annotations

import numpy as np
import torch

from spectral_llava.processing.radiometry_settings import RadiometrySettings

from .tiling import Tile


class TileBatches(torch.utils.data.Dataset):
    """Item k: the tiles of planned batch k, read through `reader` (a SceneReader) and preprocessed by
    `image_processor` (`normalise` + `resize`, as its call does) with the user's radiometric handling `radiometry`
    (a `RadiometrySettings`; default the processor's own) as the scene resolved it: `resolved` (a
    `processing.radiometry.ResolvedRadiometry` decided once for the scene), or None to let each tile's values
    decide (the float-reflectance rule).

    A tile's `valid_fraction` is the share of its pixels that hold data (finite and not the processor's
    `nodata_value`) in every band the scene has; tiles with none are not preprocessed (skipped, never shown to the
    model). Returns {"batch": k, "tiles": [index, ...], "valid_fraction": [...], "mapped": [bool, ...],
    "pixel_values": (n_mapped, C, S, S)}; a bad input (ValueError, FileNotFoundError) comes back as
    {"batch": k, "error": message, "error_type": name}, so that it leaves a worker with its message intact.
    """

    def __init__(self, reader, tiles: list[Tile], batches: list[list[int]], image_processor,
                 radiometry: RadiometrySettings | None = None, resolved=None):
        self.reader = reader
        self.tiles = tiles
        self.batches = batches
        self.image_processor = image_processor
        self.radiometry = radiometry
        self.resolved = resolved

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict:
        try:
            return self.read_batch(k)
        except (ValueError, FileNotFoundError) as err:
            return {"batch": k, "error": str(err), "error_type": type(err).__name__}

    def read_batch(self, k: int) -> dict:
        indices = self.batches[k]
        normalised, fractions = [], []
        nodata = getattr(self.image_processor, "nodata_value", 0)
        for index in indices:
            tile = self.tiles[index]
            window = self.reader.read(tile.y, tile.x, tile.size, tile.size)
            valid = np.isfinite(window.data)
            if nodata is not None:
                valid &= window.data != nodata
            fraction = float(valid.all(axis=0).mean())
            fractions.append(fraction)
            if fraction > 0:
                values, _, _ = self.image_processor.normalise(window, radiometry=self.radiometry,
                                                              resolved=self.resolved)
                normalised.append(values)
        if normalised:
            pixel_values = self.image_processor.resize(normalised)
        else:
            size = self.image_processor.image_size
            pixel_values = torch.empty((0, len(self.image_processor.band_names), size, size))
        return {"batch": k, "tiles": list(indices), "valid_fraction": fractions,
                "mapped": [fraction > 0 for fraction in fractions], "pixel_values": pixel_values}
