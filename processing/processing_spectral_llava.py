"""SpectralLlavaProcessor: the SpectralGPT image processor plus the LLM tokenizer, `<image>` expansion and chat template.

Remote code: imports only its sibling `image_processing_spectral_llava` and third-party libraries. The number of
visual tokens per image comes from the processor config (`num_image_tokens`, written by the builder from the model
config), never from the modeling code.
"""

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_spectral_llava import flatten_images


# ChatML (the SmolLM2 format). Image content is `{"type": "image", "path": ...}` or `{"type": "image", "image": array}`
# and becomes `<image>` followed by a newline, as in the Spectral-Inst training records.
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

# Task token + default instruction, phrased as in the Spectral-Inst stage-2 records.
TASK_PROMPTS = {
    "caption": "[caption] Describe this multispectral satellite image.",
    "classification": "[classification] Which land-cover classes are present in this image?",
}
# Image-processor call kwargs that the processor passes through (radiometric handling of the inputs).
RADIOMETRY_KWARGS = ("input_offset", "input_scale", "strict")


class SpectralLlavaProcessor(ProcessorMixin):
    r"""Tokenizer + `SpectralImageProcessor` for Spectral-LLaVA.

    `processor(images=..., text=..., return_tensors="pt")`: `images` are GeoTIFF paths, patch folders, arrays or
    tensors (or lists, nested per sample); every `<image>` in `text` is expanded to exactly `num_image_tokens`
    copies, and the number of placeholders must equal the number of images. Padding is on the left (batched
    generation). `input_offset`, `input_scale` and `strict` go to the image processor (radiometric handling).
    Returns `input_ids`, `attention_mask`, `pixel_values`; `band_mask` with `return_band_mask=True`; `metadata`
    (list of dicts, not tensors) with `return_metadata=True`.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=None,
                 image_token="<image>", **kwargs):
        if num_image_tokens is None or int(num_image_tokens) < 1:
            raise ValueError(f"num_image_tokens must be a positive int (the model's visual tokens per image), "
                             f"got {num_image_tokens!r}")
        if tokenizer is None or image_processor is None:
            raise ValueError("SpectralLlavaProcessor needs both image_processor= and tokenizer=")
        image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id or \
                tokenizer.convert_ids_to_tokens(image_token_id) != image_token:
            raise ValueError(f"the tokenizer has no {image_token!r} token; add it as a special token first "
                             "(the builder adds <image>, [caption], [classification])")
        self.num_image_tokens = int(num_image_tokens)
        self.image_token = image_token
        self.image_token_id = image_token_id
        tokenizer.padding_side = "left"
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE, **kwargs)

    def __call__(self, images=None, text=None, return_tensors="pt", padding=None, band_names=None,
                 return_band_mask: bool = False, return_metadata: bool = False, **kwargs) -> BatchFeature:
        for ignored in ("images_kwargs", "text_kwargs", "common_kwargs", "add_special_tokens_map"):
            kwargs.pop(ignored, None)
        radiometry = {key: kwargs.pop(key) for key in RADIOMETRY_KWARGS if key in kwargs}
        sources = flatten_images(images)
        if text is None:
            if not sources:
                raise ValueError("pass images=, text= or both")
            return self.image_processor(sources, band_names=band_names, return_tensors=return_tensors,
                                        return_metadata=return_metadata, **radiometry)
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
            image_inputs = self.image_processor(sources, band_names=band_names, return_tensors="pt",
                                                return_metadata=return_metadata, **radiometry)
            data["pixel_values"] = image_inputs["pixel_values"]
            if return_band_mask:
                data["band_mask"] = image_inputs["band_mask"]
            if return_metadata:
                data["metadata"] = image_inputs["metadata"]
        expanded = [sample.replace(self.image_token, self.image_token * self.num_image_tokens) for sample in texts]
        if padding is None:
            padding = len(expanded) > 1
        text_inputs = self.tokenizer(expanded, padding=padding, **kwargs)
        for row, (ids, count) in enumerate(zip(text_inputs["input_ids"], per_sample)):
            found = sum(1 for token in ids if token == self.image_token_id)
            if found != count * self.num_image_tokens:
                raise ValueError(f"sample {row}: {found} image tokens after tokenisation, expected "
                                 f"{count} x {self.num_image_tokens} (was the text truncated? check max_length)")
        data.update(text_inputs)
        if return_tensors == "np":
            data = {key: value.numpy() if isinstance(value, torch.Tensor) else value for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["metadata"])

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

__all__ = ["SpectralLlavaProcessor", "DEFAULT_CHAT_TEMPLATE", "TASK_PROMPTS"]
