"""A saved model dir loaded for use: the one loader (`load_model_and_processor`, model tools), the model in eval
mode on the chosen device and dtype. Radiometric handling is not set here: callers pass their `RadiometrySettings`
with each call that reads images."""

from __future__ import annotations

import os

import torch

from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor


def load_for_inference(model_dir: str | os.PathLike, device: str = "auto", dtype: torch.dtype | str = torch.float32):
    """(SpectralLlavaForConditionalGeneration in eval mode, SpectralLlavaProcessor) of `model_dir`, for generation.

    `device`: "auto" (CUDA when available, else CPU) or a device name; `dtype`: a torch dtype, or "auto" for the
    dtype the dir is stored in.
    """
    model, processor = load_model_and_processor(model_dir, device=device, dtype=dtype)
    return model.eval(), processor
