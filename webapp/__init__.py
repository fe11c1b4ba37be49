"""Spectral-LLaVA web app (gradio): `spectral-llava app --model DIR`.

`launch(AppConfig(model_dir=...))` loads the model once and serves the page; `build_app(ModelSession, AppConfig)`
returns the gradio Blocks for embedding or tests. See webapp/app.py for the page and the stable API.
"""

from .app import AppConfig, SpectralApp, build_app, launch, serve
from .inputs import InputError, InputLimits
from .model import ModelSession

__all__ = ["AppConfig", "SpectralApp", "build_app", "launch", "serve", "InputError", "InputLimits", "ModelSession"]
