"""Render a `spectral-llava map --output map.tif` label raster as a PNG with its own colour table and class names (what
a GIS shows), as in docs/images/label_raster.png.

    python scripts/render_label_raster.py map.tif out.png [--title TEXT]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def render(raster: str, output: str, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    from spectral_llava.scene.label_raster import NODATA, read_label_raster
    from spectral_llava.utils.fileio import write_file_atomically

    content = read_label_raster(raster)
    labels = content["labels"]
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)  # no-data stays transparent
    for value, colour in content["colours"].items():
        rgba[labels == value] = colour
    counts = {name: int((labels == value).sum()) for value, name in enumerate(content["classes"])}
    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    axes.imshow(rgba, interpolation="nearest")
    axes.set_axis_off()
    handles = [Patch(facecolor=np.asarray(content["colours"][value]) / 255, label=f"{value}: {name} ({counts[name]})")
               for value, name in enumerate(content["classes"])]
    if (labels == NODATA).any():
        skipped = int((labels == NODATA).sum())
        handles.append(Patch(facecolor="white", edgecolor="0.6", label=f"{NODATA}: no-data ({skipped})"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    axes.set_title(title or os.path.basename(raster), fontsize=9)
    try:
        write_file_atomically(output, lambda tmp: figure.savefig(tmp, bbox_inches="tight", format="png"))
    finally:
        plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster")
    parser.add_argument("output")
    parser.add_argument("--title")
    args = parser.parse_args()
    render(args.raster, args.output, args.title)


if __name__ == "__main__":
    main()
