"""`pipeline("image-text-to-text", model=DIR, trust_remote_code=True)` for multispectral inputs.

transformers' built-in image-text-to-text pipeline loads `images=` with PIL and converts them to RGB, which
destroys 12-band Sentinel-2 input. This subclass hands GeoTIFF paths, patch folders and arrays untouched to the
SpectralLlavaProcessor. A saved model dir selects it through `custom_pipelines` in its config.json; the builder
calls `register_pipeline_in_model_dir(model_dir)` to copy this file there and write that entry.

Remote code: imports only third-party libraries.
"""

import json
import os
import tempfile

from transformers.pipelines.base import Pipeline
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline
from transformers.utils.chat_template_utils import Chat


TASK = "image-text-to-text"
IMAGE_TOKEN = "<image>"
# processor arguments `pipe(...)` takes directly; they travel to the processor as its `processor_kwargs`
PROCESSOR_ARGUMENTS = ("band_names",)


def _is_chat(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and isinstance(value[0], (list, tuple, dict))


class SpectralImageTextToTextPipeline(ImageTextToTextPipeline):
    """Image-text-to-text on Sentinel-2 inputs (never converted to RGB).

    Inputs:
    - chat messages (one conversation or a list of them) whose image parts are `{"type": "image", "path": ...}`
      (GeoTIFF or patch folder) or `{"type": "image", "image": array}`; the processor's chat template is applied;
    - `images=` + `text=`: `text` is the raw prompt with one `<image>` per image. A list of images with a single
      text holding one `<image>` is a batch (the text is used for each image); a list of images with a list of
      texts pairs them; without `text`, each image gets the processor's default `[caption]` chat prompt.
    Output: as the built-in pipeline, `[{"input_text": ..., "generated_text": ...}]` per input.
    """

    def __init__(self, *args, **kwargs):
        # The built-in __init__ requires PIL and checks the model against the library's own classes; a remote-code
        # model is not in that mapping and PIL is not used here.
        Pipeline.__init__(self, *args, **kwargs)

    def __call__(self, images=None, text=None, **kwargs):
        if images is None and text is None:
            raise ValueError("pass chat messages, or images= and text=")
        if _is_chat(text) or (text is None and _is_chat(images)):
            return super().__call__(images=images, text=text, **kwargs)
        if images is None:
            raise ValueError("images= is missing: this pipeline needs a GeoTIFF path, patch folder or array")
        if text is None:
            return super().__call__(text=self._default_chats(images), **kwargs)
        if isinstance(images, (list, tuple)) and isinstance(text, (list, tuple)):
            if len(images) != len(text):
                raise ValueError(f"images= has {len(images)} entries but text= has {len(text)}; pass one text per "
                                 "image (or per list of images)")
            return Pipeline.__call__(self, [{"images": im, "text": t} for im, t in zip(images, text)], **kwargs)
        if isinstance(images, (list, tuple)) and isinstance(text, str) and len(images) > 1 \
                and text.count(IMAGE_TOKEN) == 1:
            return Pipeline.__call__(self, [{"images": image, "text": text} for image in images], **kwargs)
        return Pipeline.__call__(self, {"images": images, "text": text}, **kwargs)

    def _sanitize_parameters(self, processor_kwargs=None, **kwargs):
        processor_kwargs = dict(processor_kwargs or {})
        for name in PROCESSOR_ARGUMENTS:
            if kwargs.get(name) is not None:
                processor_kwargs[name] = kwargs.pop(name)
        return super()._sanitize_parameters(processor_kwargs=processor_kwargs or None, **kwargs)

    def _default_chats(self, images):
        if isinstance(images, (list, tuple)):
            return [self.processor.build_messages("caption", image=image) for image in images]
        return self.processor.build_messages("caption", image=images)

    def preprocess(self, inputs=None, timeout=None, continue_final_message=None, **processing_kwargs):
        if isinstance(inputs, Chat):
            return super().preprocess(inputs, timeout=timeout, continue_final_message=continue_final_message,
                                      **processing_kwargs)
        processor_kwargs = processing_kwargs.pop("processor_kwargs", None) or processing_kwargs
        model_inputs = self.processor(images=inputs["images"], text=inputs["text"], return_tensors="pt",
                                      **processor_kwargs).to(dtype=self.dtype)
        model_inputs["text"] = inputs["text"]
        return model_inputs


CUSTOM_PIPELINES = {
    TASK: {
        "impl": f"pipeline_spectral_llava.{SpectralImageTextToTextPipeline.__name__}",
        "pt": ["AutoModelForImageTextToText"],
        "type": "multimodal",
    }
}


def _write_atomically(path: str, write) -> None:
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def register_pipeline_in_model_dir(model_dir: str) -> None:
    """Make `pipeline("image-text-to-text", model=model_dir, trust_remote_code=True)` use this pipeline.

    Copies this file into `model_dir` and adds `custom_pipelines` to its config.json (both written atomically).
    """
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: save the model into {model_dir} first")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    config["custom_pipelines"] = CUSTOM_PIPELINES
    with open(os.path.abspath(__file__), encoding="utf-8") as source:
        code = source.read()
    _write_atomically(os.path.join(model_dir, os.path.basename(__file__)), lambda f: f.write(code))
    _write_atomically(config_path, lambda f: f.write(json.dumps(config, indent=2, sort_keys=True) + "\n"))


__all__ = ["SpectralImageTextToTextPipeline", "register_pipeline_in_model_dir", "CUSTOM_PIPELINES"]
