"""The model's answer contract: the label vocabularies and the one classification answer format, shared by the
dataset builder (which writes the answers the model learns), generation, scene mapping and evaluation.

Classification answers are produced by :func:`format_labels` and read back by :func:`parse_labels`:
``"Labels: " + "; ".join(sorted(labels))`` (semicolons, because reBEN names contain commas; alphabetical order,
which is also the order of the reBEN parquet).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence


# The 19-class BigEarthNet nomenclature (Sumbul et al. 2021), in its official order; reBEN uses it.
BEN19_LABELS = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
# CORINE level-3 names of BigEarthNet v1 (43 classes) -> the 19-class nomenclature. Classes that the
# 19-class nomenclature drops (roads, ports, airports, mines, dumps, construction, green urban, sport,
# bare rock, burnt areas, intertidal flats) map to nothing. Used only for v1 patches without a reBEN row.
BEN43_TO_19 = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Pastures": "Pastures",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}
BEN43_DROPPED = frozenset({
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities", "Bare rock",
    "Burnt areas", "Intertidal flats",
})
# The 43 CORINE classes of BigEarthNet v1 in their official order (the label order of GEO-Bench's m-bigearthnet).
BEN43_LABELS = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites", "Dump sites",
    "Construction sites", "Green urban areas", "Sport and leisure facilities", "Non-irrigated arable land",
    "Permanently irrigated land", "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves",
    "Pastures", "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation", "Agro-forestry areas",
    "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Natural grassland", "Moors and heathland",
    "Sclerophyllous vegetation", "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock",
    "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes", "Salines",
    "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons", "Estuaries", "Sea and ocean",
)
EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
EUROSAT_PHRASES = {
    "AnnualCrop": "annual cropland", "Forest": "forest", "HerbaceousVegetation": "herbaceous vegetation",
    "Highway": "a highway", "Industrial": "industrial buildings", "Pasture": "pasture",
    "PermanentCrop": "permanent crops", "Residential": "residential buildings", "River": "a river",
    "SeaLake": "a sea or lake",
}
LABEL_PREFIX = "Labels:"
LABEL_SEPARATOR = "; "


def format_labels(labels: Iterable[str]) -> str:
    """The one classification answer format: ``"Labels: A; B"``, labels sorted alphabetically, unique."""
    unique = sorted({label.strip() for label in labels if label and label.strip()})
    for label in unique:
        if ";" in label or "\n" in label:
            raise ValueError(f"label {label!r} contains ';' or a newline and cannot be formatted")
    return f"{LABEL_PREFIX} {LABEL_SEPARATOR.join(unique)}".rstrip()


def parse_labels(text: str, vocabulary: Sequence[str] | None = None) -> list[str]:
    """Read a :func:`format_labels` answer back into a sorted list of labels.

    The text after the first ``Labels:`` (case-insensitive) up to the end of that line is split on ``;``;
    without the prefix the first non-empty line is used. With ``vocabulary``, labels are matched
    case-insensitively to it (canonical spelling returned) and unknown ones are dropped.
    """
    match = re.search(re.escape(LABEL_PREFIX), text, flags=re.IGNORECASE)
    if match:
        line = text[match.end():].split("\n", 1)[0]
    else:
        line = next((ln for ln in text.splitlines() if ln.strip()), "")
    labels = {part.strip().rstrip(".").strip() for part in line.split(";")}
    labels.discard("")
    if vocabulary is not None:
        canonical = {name.lower(): name for name in vocabulary}
        labels = {canonical[label.lower()] for label in labels if label.lower() in canonical}
    return sorted(labels)
