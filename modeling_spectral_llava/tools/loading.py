"""The one loader of a saved Spectral-LLaVA model dir for this repository's own code (training, evaluation, CLI).

It builds the model and the processor from the repository's classes. A saved dir names its processor parts by
their remote-code classes; loading those with `trust_remote_code` would put a second copy of the processing code
next to the repository's model class in one process, so the parts are instantiated here from the repository's
`SpectralImageProcessor` and the dir's tokenizer and processor config instead. Outside this repository a dir
loads with `AutoModelForImageTextToText` / `AutoProcessor` and `trust_remote_code=True`.
"""

from __future__ import annotations

import inspect
import os

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_dir(model_dir: str | os.PathLike) -> str:
    """`model_dir` as a string, or a FileNotFoundError naming it when it holds no config.json."""
    model_dir = os.fspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a Spectral-LLaVA model dir (no config.json)")
    return model_dir


def load_processor(model_dir: str | os.PathLike):
    """The `SpectralLlavaProcessor` of a saved dir, built from the repository's processing classes."""
    from transformers import AutoTokenizer

    from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
    from spectral_llava.processing.processing_spectral_llava import SpectralLlavaProcessor

    from ..configuration_spectral_llava import SpectralLlavaConfig

    model_dir = check_model_dir(model_dir)
    processor_dict, _ = SpectralLlavaProcessor.get_processor_dict(model_dir)
    # with the config given, AutoTokenizer does not resolve the dir's remote-code config class itself
    config = SpectralLlavaConfig.from_pretrained(model_dir)
    parts = {"image_processor": SpectralImageProcessor.from_pretrained(model_dir),
             "tokenizer": AutoTokenizer.from_pretrained(model_dir, config=config)}
    # the saved settings that __init__ takes (chat template, visual tokens, image token) next to the parts above
    accepted = inspect.signature(SpectralLlavaProcessor.__init__).parameters
    settings = {key: value for key, value in processor_dict.items() if key in accepted and key not in parts}
    return SpectralLlavaProcessor(**parts, **settings)


def load_model_and_processor(model_dir: str | os.PathLike, device: str | None = "auto",
                             dtype: torch.dtype | str = torch.float32, quantization=None):
    """(SpectralLlavaForConditionalGeneration in eval mode, SpectralLlavaProcessor) of a saved model dir.

    `device`: "auto" (CUDA when available, else CPU), a device name, or None to leave the weights where
    `from_pretrained` puts them (CPU; what `Trainer`, FSDP and DeepSpeed expect). `dtype`: a torch dtype, or "auto"
    for the dtype the dir is stored in (bfloat16 for a Llama-3 build). `quantization`: a `BitsAndBytesConfig`
    (`train.quantization`) loads the LLM weights in 8 or 4 bit onto this process's GPU (`LOCAL_RANK`), as
    bitsandbytes requires; `device` is then not used.
    """
    from ..modeling_spectral_llava import SpectralLlavaForConditionalGeneration

    model_dir = check_model_dir(model_dir)
    if quantization is not None:
        model = SpectralLlavaForConditionalGeneration.from_pretrained(
            model_dir, dtype=dtype, quantization_config=quantization,
            device_map={"": int(os.environ.get("LOCAL_RANK", 0))},
        ).eval()
        return model, load_processor(model_dir)
    model = SpectralLlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).eval()
    if device is not None:
        model.to(default_device() if device == "auto" else device)
    return model, load_processor(model_dir)
