"""The label colours of mapped tiles, defined once for the overview PNG and the web app's Leaflet map: the name of
a tile without a label, and the colour-blind-friendly qualitative palette (Okabe-Ito, then Tableau 10 for more
labels). No imports: the web app and the overview both read it."""

NO_LABEL = "(no label)"
NO_LABEL_COLOUR = "#777777"
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#4E79A7", "#F28E2B",
           "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC")
