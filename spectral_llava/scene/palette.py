"""The label colours of mapped tiles, defined once for the overview PNG, the label raster's colour table and the web
app's Leaflet map: the name of a tile without a label, the colour-blind-friendly qualitative palette (Okabe-Ito, then
Tableau 10 for more labels) and `label_colours`, which hands them out, so that a label has the same colour in every
rendering of a map. No imports: every reader of it is light."""

NO_LABEL = "(no label)"
NO_LABEL_COLOUR = "#777777"
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#4E79A7", "#F28E2B",
           "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC")


def label_colours(first_labels) -> dict[str, str]:
    """One colour per label among `first_labels` (each mapped tile's first label, NO_LABEL for none): the palette
    in order of the labels' tile counts, most frequent first (ties alphabetical), NO_LABEL grey."""
    counts: dict[str, int] = {}
    for label in first_labels:
        counts[label] = counts.get(label, 0) + 1
    ordered = sorted((label for label in counts if label != NO_LABEL), key=lambda label: (-counts[label], label))
    colours = {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(ordered)}
    if NO_LABEL in counts:
        colours[NO_LABEL] = NO_LABEL_COLOUR
    return colours
