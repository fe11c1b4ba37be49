"""Spectral-LLaVA web app (gradio): `spectral-llava app --model DIR`.

`launch(AppOptions(model=...))` loads the model once and serves the page; `build_app(ModelSession, AppOptions)`
returns the gradio Blocks for embedding or tests. See webapp/app.py for the page and the stable API. The names
below are imported on first use, so that `webapp.options` (what the command line parses) does not load gradio.
"""

import importlib

_EXPORTS = {
    "SpectralApp": "app", "build_app": "app", "launch": "app", "serve": "app",
    "InputError": "inputs", "InputLimits": "inputs", "ModelSession": "model", "AppOptions": "options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
