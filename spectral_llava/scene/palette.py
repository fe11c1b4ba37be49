"""The label colours of mapped tiles, defined once for the overview PNG, the label raster's colour table and the web
app's Leaflet map: the name of a tile without a label, the colour-blind-friendly qualitative palette (Okabe-Ito, then
Tableau 10 for more labels) and the rule that gives each label its colour. No imports: every reader of it is light."""

NO_LABEL = "(no label)"
NO_LABEL_COLOUR = "#777777"
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#4E79A7", "#F28E2B",
           "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC")


def class_colours(first_labels) -> dict:
    """{label: "#RRGGBB"} of the tiles' first labels (NO_LABEL for a tile without one), most frequent first (ties
    by name): PALETTE in order (repeating past its end), NO_LABEL grey."""
    counts: dict = {}
    for label in first_labels:
        counts[label] = counts.get(label, 0) + 1
    ordered = sorted(counts, key=lambda label: (-counts[label], label))
    return {label: PALETTE[index % len(PALETTE)] if label != NO_LABEL else NO_LABEL_COLOUR
            for index, label in enumerate(ordered)}
