"""The overview PNG of a mapped scene: an RGB quicklook with the tiles coloured by their first label (the colours
of the web app's map, `palette.label_colours`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectral_llava.processing.rendering import TRUE_COLOUR, stretch_rgb
from spectral_llava.utils.fileio import write_file_atomically

from .palette import NO_LABEL, label_colours
from .tiling import owned_windows


def quicklook(reader, max_size: int = 1024) -> np.ndarray:
    """(h, w, 3) uint8 RGB of the scene: B04/B03/B02 block-averaged, stretched between the 2nd and 98th percentiles
    of the valid pixels of all three bands, gamma 1.8; no-data black."""
    rgb = reader.read_overview(TRUE_COLOUR, max_size)
    return stretch_rgb(rgb, np.isfinite(rgb) & (rgb > 0), gamma=1.8)


def first_labels(rows: list[dict]) -> list[str]:
    """Each row's first label, NO_LABEL for a row without labels."""
    return [row["labels"][0] if len(row["labels"]) else NO_LABEL for row in rows]


def overview_figure(reader, rows: list[dict], tiles: list, title: str, max_size: int = 1024):
    """The matplotlib figure of `write_overview`: the quicklook, each mapped tile's owned part (`owned_windows`: no
    overlaps) filled in its first label's colour (`palette.label_colours`, as on the web app's map; tiles without
    a label in grey) and a legend counting tiles per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch, Rectangle

    image = quicklook(reader, max_size)
    scale_y, scale_x = image.shape[0] / reader.height, image.shape[1] / reader.width
    firsts = first_labels(rows)
    colours = label_colours(firsts)
    windows = owned_windows([tiles[row["tile_index"]] for row in rows])
    figure, axes = plt.subplots(figsize=(9, 9 * image.shape[0] / image.shape[1] + 0.6), dpi=120)
    axes.imshow(image, interpolation="nearest")
    for (x0, y0, x1, y1), first in zip(windows, firsts):
        axes.add_patch(Rectangle((x0 * scale_x - 0.5, y0 * scale_y - 0.5), (x1 - x0) * scale_x, (y1 - y0) * scale_y,
                                 facecolor=(*to_rgb(colours[first]), 0.45), edgecolor=colours[first], linewidth=0.5))
    counts = {label: firsts.count(label) for label in colours}
    handles = [Patch(facecolor=colour, label=f"{label} ({counts[label]})") for label, colour in colours.items()]
    if handles:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    axes.set_title(title, fontsize=9)
    axes.set_axis_off()
    return figure


def write_overview(path: Path, reader, rows: list[dict], tiles: list, title: str, max_size: int = 1024) -> None:
    """Render `overview_figure` to a PNG, written atomically."""
    import matplotlib.pyplot as plt

    figure = overview_figure(reader, rows, tiles, title, max_size)
    try:
        write_file_atomically(path, lambda tmp: figure.savefig(tmp, bbox_inches="tight", format="png"))
    finally:
        plt.close(figure)
