"""The classes of a vocabulary that a free-text answer (a caption) mentions: how scene mapping labels tiles it only
captions, and what evaluation's label consistency counts."""

from __future__ import annotations

import re
from typing import Sequence

from .labels import EUROSAT_PHRASES

# Key phrases that count as a mention of a class. Each is a regular expression matched case-insensitively on
# whole words, with an optional plural "s"/"es" appended. Besides these, the class name itself (CamelCase split
# for EuroSAT) and the phrase the Spectral-Inst template captioner uses for it always match. Rules:
# * longest match first: a matched span is masked, so "industrial buildings" is Industrial only and "salt
#   marsh" Coastal wetlands only, never also Residential / Inland wetlands;
# * generic words shared by several classes ("forest" among the BigEarthNet forests, "water", "vegetation",
#   "field") mention none of them: only distinctive phrases count;
# * a mention preceded in its clause by a negation within three words ("no", "not", "without", "nor",
#   "absence of", "lack of", "free of") is not a mention.
CLASS_PHRASES = {
    # EuroSAT (class folder names)
    "AnnualCrop": [r"annual crop(?:land)?", r"cropland", r"crop ?fields?", r"arable(?: land)?", r"farmland",
                   r"cultivated fields?"],
    "Forest": [r"forest", r"forested", r"woodland"],
    "HerbaceousVegetation": [r"herbaceous(?: vegetation)?", r"shrubland", r"scrubland", r"natural grassland"],
    "Highway": [r"highway", r"motorway", r"freeway", r"expressway", r"major road"],
    "Industrial": [r"industrial(?: buildings| areas?| zones?| units)?", r"factor(?:y|ies)", r"warehouse",
                   r"commercial units"],
    "Pasture": [r"pasture", r"meadow", r"grazing land"],
    "PermanentCrop": [r"permanent crop", r"orchard", r"vineyard", r"olive grove", r"plantation"],
    "Residential": [r"residential(?: buildings| areas?)?", r"houses", r"housing", r"suburb", r"village",
                    r"settlement"],
    "River": [r"river", r"stream", r"watercourse"],
    "SeaLake": [r"sea", r"lake", r"ocean", r"reservoir", r"sea or lake"],
    # BigEarthNet-19
    "Urban fabric": [r"urban fabric", r"urban", r"residential", r"houses", r"housing", r"town", r"city",
                     r"village", r"settlement", r"suburb"],
    "Industrial or commercial units": [r"industrial or commercial units", r"industrial", r"commercial",
                                       r"factor(?:y|ies)", r"warehouse"],
    "Arable land": [r"arable(?: land)?", r"cropland", r"crop ?fields?", r"farmland"],
    "Permanent crops": [r"permanent crop", r"orchard", r"vineyard", r"olive grove", r"fruit trees"],
    "Pastures": [r"pasture", r"meadow", r"grazing land"],
    "Complex cultivation patterns": [r"complex cultivation(?: patterns?)?"],
    "Land principally occupied by agriculture, with significant areas of natural vegetation": [
        r"land principally occupied by agriculture", r"agricultur(?:e|al land) (?:mixed )?with (?:significant "
        r"areas of )?natural vegetation"],
    "Agro-forestry areas": [r"agro-? ?forestry(?: areas?)?"],
    "Broad-leaved forest": [r"broad-? ?leaved(?: forest)?", r"broadleaf(?: forest)?", r"deciduous forest"],
    "Coniferous forest": [r"coniferous(?: forest)?", r"conifer", r"pine forest", r"spruce"],
    "Mixed forest": [r"mixed forest", r"mixed woodland"],
    "Natural grassland and sparsely vegetated areas": [r"natural grassland", r"sparsely vegetated(?: areas?)?",
                                                       r"sparse vegetation"],
    "Moors, heathland and sclerophyllous vegetation": [r"moor", r"moorland", r"heathland", r"heath",
                                                       r"sclerophyllous(?: vegetation)?"],
    "Transitional woodland, shrub": [r"transitional woodland", r"shrub", r"shrubland", r"scrub"],
    "Beaches, dunes, sands": [r"beach", r"dune", r"sand"],
    "Inland wetlands": [r"inland wetland", r"wetland", r"marsh", r"peat ?bog", r"bog", r"swamp", r"fen"],
    "Coastal wetlands": [r"coastal wetland", r"salt ?marsh", r"saline", r"salt pan", r"tidal flat"],
    "Inland waters": [r"inland waters?", r"lake", r"river", r"reservoir", r"pond", r"water ?bod(?:y|ies)",
                      r"water ?courses?", r"canal", r"stream"],
    "Marine waters": [r"marine waters?", r"sea", r"ocean", r"lagoon", r"estuar(?:y|ies)", r"coastal waters?"],
}
NEGATION = re.compile(r"\b(?:no|not|without|nor|absence of|lack of|free of)\b(?:\W+\w+){0,2}\W*$", re.IGNORECASE)


def _class_patterns(vocabulary: Sequence[str]) -> list[tuple[int, str, re.Pattern]]:
    patterns = []
    for name in vocabulary:
        phrases = list(CLASS_PHRASES.get(name, []))
        phrases.append(re.escape(name.lower()))
        phrases.append(re.escape(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()))
        if name in EUROSAT_PHRASES:
            phrases.append(re.escape(re.sub(r"^an? ", "", EUROSAT_PHRASES[name])))
        for phrase in set(phrases):
            regex = re.compile(rf"\b(?:{phrase})(?:e?s)?\b", re.IGNORECASE)
            patterns.append((len(phrase), name, regex))
    return sorted(patterns, key=lambda item: -item[0])


def mentioned_classes(text: str, vocabulary: Sequence[str]) -> list[str]:
    """Classes of `vocabulary` that `text` mentions (see CLASS_PHRASES for the matching rules), sorted."""
    text = text or ""
    masked = list(text)
    found = set()
    for _, name, regex in _class_patterns(vocabulary):
        for match in regex.finditer("".join(masked)):
            start, end = match.span()
            clause = re.split(r"[.;:!?,\n]", text[:start])[-1]
            if not NEGATION.search(clause):
                found.add(name)
            masked[start:end] = " " * (end - start)
    return sorted(found)
