"""SpectralLlavaProcessor: the SpectralGPT image processor plus the LLM tokenizer, `<image>` expansion and chat template.

Remote code: imports only its sibling `image_processing_spectral_llava` and third-party libraries. The number of
visual tokens per image comes from the processor config (`num_image_tokens`, written by the builder from the model
config) or, without it, from `default_num_image_tokens`, never from the modeling code.
"""

import os

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, Unpack

from .image_processing_spectral_llava import SpectralImageProcessorKwargs, flatten_images

# SpectralGPT cuts 3 consecutive bands into one tubelet; the model's default "tokens" layout keeps every tubelet.
BANDS_PER_TUBELET = 3


class SpectralLlavaProcessorKwargs(ProcessingKwargs, total=False):
    """Call options of `SpectralLlavaProcessor`, routed by modality through `_merge_kwargs`.

    Pass them flat (`padding="max_length"`, `band_names=[...]`, `return_tensors="np"`) or grouped: `text_kwargs`
    (the tokenizer's, plus `return_mm_token_type_ids`: 1 at image tokens), `images_kwargs`
    (`SpectralImageProcessorKwargs`: `band_names`, `resampling`, `return_metadata`, `return_band_mask`,
    `do_rescale`, `rescale_factor`, ...), `common_kwargs` (every modality). Defaults: PyTorch tensors, batches
    padded (on the left) to their longest prompt, no `band_mask`.
    """

    images_kwargs: SpectralImageProcessorKwargs
    # per modality rather than under "common_kwargs", which transformers < 5.24 updates in place with the caller's
    _defaults = {
        "text_kwargs": {"padding": True, "return_tensors": "pt"},
        "images_kwargs": {"return_tensors": "pt", "return_band_mask": False},
    }


def default_num_image_tokens(image_processor) -> int:
    """Visual tokens per image of a model built with the defaults around this image processor (the "tokens"
    layout, no spatial pooling): every tubelet of the (image_size / patch_size)^2 grid of each spectral group."""
    groups = len(image_processor.band_names) // BANDS_PER_TUBELET
    return groups * (image_processor.image_size // image_processor.patch_size) ** 2


# ChatML, the fallback for an LLM whose tokenizer has no chat template (and the format of SmolLM2 models built before
# the chat format followed the LLM). Image content is `{"type": "image", "path": ...}` or `{"type": "image", "image":
# array}` and becomes `<image>` followed by a newline, as in the Spectral-Inst training records.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

# Put in front of an LLM's own chat template, which takes string content (Llama-3's and SmolLM2's do): each
# message's typed content becomes one string, image parts the `<image>` placeholder and a newline, as in the
# Spectral-Inst records.
FLATTEN_CONTENT = (
    "{%- set flattened = namespace(messages=[]) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set flattened.messages = flattened.messages + [message] -%}"
    "{%- else -%}{%- set text = namespace(value='') -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set text.value = text.value + '<image>\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set text.value = text.value + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set flattened.messages = flattened.messages + [dict(message, content=text.value)] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = flattened.messages -%}"
)


def chat_template_for(llm_chat_template) -> str:
    """The processor's chat template for an LLM: its own template (a string, or a dict of named ones whose "default"
    is used) behind FLATTEN_CONTENT, or ChatML (DEFAULT_CHAT_TEMPLATE) when the LLM's tokenizer has none."""
    if isinstance(llm_chat_template, dict):
        llm_chat_template = llm_chat_template.get("default")
    if not llm_chat_template:
        return DEFAULT_CHAT_TEMPLATE
    if llm_chat_template.startswith(FLATTEN_CONTENT):  # a tokenizer saved in a Spectral-LLaVA model dir
        return llm_chat_template
    return FLATTEN_CONTENT + llm_chat_template


# Task token + default instruction, phrased as in the Spectral-Inst stage-2 records.
TASK_PROMPTS = {
    "caption": "[caption] Describe this multispectral satellite image.",
    "classification": "[classification] Which land-cover classes are present in this image?",
}


class SpectralLlavaProcessor(ProcessorMixin):
    r"""Tokenizer + `SpectralImageProcessor` for Spectral-LLaVA.

    `processor(images=..., text=...)`: `images` are GeoTIFF paths, patch folders, arrays or tensors (or lists,
    nested per sample); every `<image>` in `text` is expanded to exactly `num_image_tokens` copies, and the number of
    placeholders must equal the number of images. Returns `input_ids`, `attention_mask`, `pixel_values` (PyTorch
    tensors, batches padded on the left for generation); options are `SpectralLlavaProcessorKwargs`: e.g.
    `band_names=` for unnamed arrays, `return_metadata=True` adds `metadata` (list of dicts, not tensors),
    `return_band_mask=True` adds `band_mask` (B, C) bool.

    `num_image_tokens` defaults to the count of a default-layout model around `image_processor`
    (`default_num_image_tokens`); the builder stores the model's own count. `chat_template` defaults to the
    tokenizer's own template behind `FLATTEN_CONTENT`, or ChatML when it has none (`chat_template_for`).
    """

    valid_processor_kwargs = SpectralLlavaProcessorKwargs

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=None,
                 image_token="<image>", **kwargs):
        if tokenizer is None or image_processor is None:
            raise ValueError("SpectralLlavaProcessor needs both image_processor= and tokenizer=")
        if num_image_tokens is None:
            num_image_tokens = default_num_image_tokens(image_processor)
        if int(num_image_tokens) < 1:
            raise ValueError(f"num_image_tokens must be a positive int (the model's visual tokens per image), "
                             f"got {num_image_tokens!r}")
        image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id or \
                tokenizer.convert_ids_to_tokens(image_token_id) != image_token:
            raise ValueError(f"the tokenizer has no {image_token!r} token; add it as a special token first "
                             "(the builder adds <image>, [caption], [classification])")
        self.num_image_tokens = int(num_image_tokens)
        self.image_token = image_token
        self.image_token_id = image_token_id
        tokenizer.padding_side = "left"
        chat_template = chat_template or chat_template_for(tokenizer.chat_template)
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images: str | os.PathLike | np.ndarray | torch.Tensor | list | None = None,
                 text: str | list[str] | None = None, **kwargs: Unpack[SpectralLlavaProcessorKwargs]) -> BatchFeature:
        output_kwargs = self._merge_kwargs(
            SpectralLlavaProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        images_kwargs, text_kwargs = output_kwargs["images_kwargs"], output_kwargs["text_kwargs"]
        return_mm_token_type_ids = text_kwargs.pop("return_mm_token_type_ids", False)
        text_kwargs.pop("return_text_replacement_offsets", None)
        return_tensors = text_kwargs.pop("return_tensors", None)
        sources = flatten_images(images)
        if text is None:
            if not sources:
                raise ValueError("pass images=, text= or both")
            return self.image_processor(sources, **images_kwargs)
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(sample, str) for sample in texts):
            raise ValueError("text must be a string or a list of strings")
        per_sample = [sample.count(self.image_token) for sample in texts]
        if sum(per_sample) != len(sources):
            raise ValueError(f"text holds {sum(per_sample)} {self.image_token} placeholder(s) "
                             f"(per sample: {per_sample}) but images= has {len(sources)} image(s); "
                             f"write one {self.image_token} per image")
        data = {}
        if sources:
            image_inputs = self.image_processor(sources, **images_kwargs)
            data.update(image_inputs)
        expanded = [sample.replace(self.image_token, self.image_token * self.num_image_tokens) for sample in texts]
        bos = self.tokenizer.bos_token
        if bos and all(sample.startswith(bos) for sample in texts):
            text_kwargs.setdefault("add_special_tokens", False)  # a chat-rendered prompt (Llama-3's) has its BOS
        text_inputs = self.tokenizer(expanded, **text_kwargs)
        for row, (ids, count) in enumerate(zip(text_inputs["input_ids"], per_sample)):
            found = sum(1 for token in ids if token == self.image_token_id)
            if found != count * self.num_image_tokens:
                raise ValueError(f"sample {row}: {found} image tokens after tokenisation, expected "
                                 f"{count} x {self.num_image_tokens} (was the text truncated? check max_length)")
        data.update(text_inputs)
        if return_mm_token_type_ids:
            data["mm_token_type_ids"] = [[int(token == self.image_token_id) for token in ids]
                                         for ids in text_inputs["input_ids"]]
        if return_tensors == "np":
            data = {key: value.numpy() if isinstance(value, torch.Tensor) else value for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["metadata"])

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholder tokens per image for images of `image_sizes` [(height, width), ...], as serving stacks (vLLM's
        transformers backend) ask before running the processor: every image becomes `num_image_tokens` tokens."""
        vision_data = {}
        if image_sizes is not None:
            vision_data["num_image_tokens"] = [self.num_image_tokens] * len(image_sizes)
            vision_data["num_image_patches"] = [1] * len(image_sizes)
        return MultiModalData(**vision_data)

    def build_prompt(self, task: str = "caption", text: str | None = None, add_generation_prompt: bool = True) -> str:
        """Chat-formatted prompt for one image and a task: `task` is "caption" or "classification" (its task token
        `[caption]` / `[classification]` is prefixed), `text` replaces the default instruction."""
        return self.apply_chat_template(self.build_messages(task, text=text),
                                        add_generation_prompt=add_generation_prompt)

    @staticmethod
    def build_messages(task: str = "caption", image=None, text: str | None = None) -> list[dict]:
        """One user message holding an image (a path, folder or array; or a bare placeholder when None) and the
        task instruction, ready for `apply_chat_template` or the image-text-to-text pipeline."""
        if task not in TASK_PROMPTS:
            raise ValueError(f"task={task!r}; expected one of {sorted(TASK_PROMPTS)}")
        instruction = TASK_PROMPTS[task] if text is None else f"[{task}] {text}"
        if image is None:
            image_part = {"type": "image"}
        elif isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            image_part = {"type": "image", "path": str(image)}
        else:
            image_part = {"type": "image", "image": image}
        return [{"role": "user", "content": [image_part, {"type": "text", "text": instruction}]}]

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        """Decode generated ids (B, T) or (T,) to a list of strings."""
        if isinstance(generated_outputs, torch.Tensor) and generated_outputs.ndim == 1:
            generated_outputs = generated_outputs[None]
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]


SpectralLlavaProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["SpectralLlavaProcessor", "SpectralLlavaProcessorKwargs", "DEFAULT_CHAT_TEMPLATE", "FLATTEN_CONTENT",
           "TASK_PROMPTS", "chat_template_for", "default_num_image_tokens"]
