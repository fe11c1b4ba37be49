"""The radiometric handling a user asks for: one frozen `RadiometrySettings`, from the command-line flags (or the
Python API) through every layer to the image processor. What it gives for one input is a
`radiometry.ResolvedRadiometry`.

Remote code: copied flat into saved model directories; imports nothing of the project, and nothing heavy (the
command line validates its flags with it before loading torch).
"""

import math
from dataclasses import dataclass

# Bump when a rule of `radiometry.py` changes: feature caches and datasets record it and rebuild.
RULES_VERSION = 1

# What an explicit value must be, by argument.
EXPECTED = {"input_offset": "a finite number", "input_scale": "a positive finite number"}


def out_of_range(input_offset=None, input_scale=None) -> str | None:
    """The argument (a key of EXPECTED) whose explicit value cannot be used, or None."""
    if input_offset is not None and not math.isfinite(input_offset):
        return "input_offset"
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
        return "input_scale"
    return None


@dataclass(frozen=True)
class RadiometrySettings:
    """The radiometric handling a user asks for, passed whole from the flags to the image processor.

    `input_offset` / `input_scale`: explicit values (None: the rules decide; an omitted one of an explicit pair is
    0 / 1); `strict`: implausible values are an error instead of a warning. What they give for one input is a
    `ResolvedRadiometry` (`resolve_radiometry`).
    """

    input_offset: float | None = None
    input_scale: float | None = None
    strict: bool = False

    def __post_init__(self):
        for name in ("input_offset", "input_scale"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "strict", bool(self.strict))
        wrong = out_of_range(self.input_offset, self.input_scale)
        if wrong is not None:
            raise ValueError(f"{wrong}={getattr(self, wrong)!r}: expected {EXPECTED[wrong]}")

    @property
    def explicit(self) -> bool:
        return self.input_offset is not None or self.input_scale is not None

    def cache_key(self) -> dict:
        """What decides the pixel values besides the files themselves (`strict` changes none): for feature-cache
        fingerprints and dataset records."""
        return {"rules_version": RULES_VERSION, "input_offset": self.input_offset, "input_scale": self.input_scale}

    def as_dict(self) -> dict:
        return {"input_offset": self.input_offset, "input_scale": self.input_scale, "strict": self.strict}


__all__ = ["RadiometrySettings", "out_of_range", "EXPECTED", "RULES_VERSION"]
