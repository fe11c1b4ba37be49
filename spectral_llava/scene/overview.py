"""The overview PNG of a mapped scene: an RGB quicklook with the tiles coloured by their first label."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectral_llava.processing.rendering import TRUE_COLOUR, stretch_rgb
from spectral_llava.utils.fileio import write_file_atomically

from .palette import NO_LABEL


def quicklook(reader, max_size: int = 1024) -> np.ndarray:
    """(h, w, 3) uint8 RGB of the scene: B04/B03/B02 block-averaged, stretched between the 2nd and 98th percentiles
    of the valid pixels of all three bands, gamma 1.8; no-data black."""
    rgb = reader.read_overview(TRUE_COLOUR, max_size)
    return stretch_rgb(rgb, np.isfinite(rgb) & (rgb > 0), gamma=1.8)


def label_colours(labels: list[str]) -> dict:
    """A distinct colour per label (tab20, then hsv), in the order given."""
    import matplotlib

    palette = list(matplotlib.colormaps["tab20"].colors)
    if len(labels) > len(palette):
        palette += [matplotlib.colormaps["hsv"](k / len(labels)) for k in range(len(labels) - len(palette))]
    return dict(zip(labels, palette))


def write_overview(path: Path, reader, rows: list[dict], tiles: list, title: str, max_size: int = 1024) -> None:
    """Render the quicklook with each mapped tile filled in its first label's colour (tiles without a label are
    outlined in grey) and a legend counting tiles per label; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    image = quicklook(reader, max_size)
    scale_y, scale_x = image.shape[0] / reader.height, image.shape[1] / reader.width
    firsts = [row["labels"][0] if len(row["labels"]) else NO_LABEL for row in rows]
    counts = {label: firsts.count(label) for label in dict.fromkeys(sorted(set(firsts) - {NO_LABEL}))}
    colours = label_colours(list(counts))
    figure, axes = plt.subplots(figsize=(9, 9 * image.shape[0] / image.shape[1] + 0.6), dpi=120)
    axes.imshow(image, interpolation="nearest")
    for row, first in zip(rows, firsts):
        tile = tiles[row["tile_index"]]
        xy = (tile.x * scale_x - 0.5, tile.y * scale_y - 0.5)
        size = (tile.size * scale_x, tile.size * scale_y)
        if first == NO_LABEL:
            axes.add_patch(Rectangle(xy, *size, fill=False, edgecolor="0.6", linewidth=0.5))
        else:
            axes.add_patch(Rectangle(xy, *size, facecolor=(*colours[first][:3], 0.45), edgecolor=colours[first],
                                     linewidth=0.5))
    handles = [Patch(facecolor=colours[label], label=f"{label} ({count})") for label, count in counts.items()]
    if NO_LABEL in firsts:
        handles.append(Patch(fill=False, edgecolor="0.6", label=f"{NO_LABEL} ({firsts.count(NO_LABEL)})"))
    if handles:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    axes.set_title(title, fontsize=9)
    axes.set_axis_off()
    try:
        write_file_atomically(path, lambda tmp: figure.savefig(tmp, bbox_inches="tight", format="png"))
    finally:
        plt.close(figure)
