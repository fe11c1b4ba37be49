"""The model behind the app: loaded once, then captions, label lists, streamed chat answers and scene maps.

Captions and labels come from the inference room's functions (`generate_answers`, `classify_images`), so the app
answers exactly what `spectral-llava caption/classify` and the evaluation would. Chat builds the processor's
chat template over the conversation (the image in the first user turn) and streams tokens with transformers'
`TextIteratorStreamer`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import torch
from transformers import TextIteratorStreamer

from spectral_llava.inference.generation import classify_images, generate_answers
from spectral_llava.inference.loading import load_for_inference
from spectral_llava.inference.runtime import single_thread
from spectral_llava.processing.radiometry_settings import RadiometrySettings

logger = logging.getLogger(__name__)


class ModelSession:
    """A Spectral-LLaVA model dir loaded once (`load_for_inference`), shared by every request of the app; every
    image is read with the radiometric handling `radiometry`."""

    def __init__(self, model_dir: str | os.PathLike, max_new_tokens: int = 64, device: str | None = None,
                 radiometry: RadiometrySettings = RadiometrySettings()):
        self.model_dir = str(model_dir)
        logger.info("loading the model from %s", self.model_dir)
        self.model, self.processor = load_for_inference(self.model_dir, device=device or "auto")
        self.max_new_tokens = int(max_new_tokens)
        self.radiometry = radiometry

    @property
    def image_processor(self):
        return self.processor.image_processor

    @property
    def tile_px(self) -> int:
        return int(self.image_processor.image_size)

    def caption(self, source: Path) -> str:
        return generate_answers(self.model, self.processor, [str(source)], "caption",
                                max_new_tokens=self.max_new_tokens, desc="caption",
                                radiometry=self.radiometry)[0]["text"]

    def classify(self, source: Path) -> dict:
        """{"labels": [...] most likely first, "text": the generated answer}."""
        result = classify_images(self.model, self.processor, [str(source)], max_new_tokens=self.max_new_tokens,
                                 radiometry=self.radiometry)[0]
        return {"labels": result["labels"], "text": result["text"]}

    def chat_prompt(self, source: Path, history: list[dict], message: str) -> str:
        """The chat template over the earlier turns and `message`, the image in the first user turn."""
        messages, image_placed = [], False
        for turn in list(history) + [{"role": "user", "content": message}]:
            text = turn["content"] if isinstance(turn["content"], str) else str(turn["content"])
            if turn["role"] == "user" and not image_placed:
                messages.append({"role": "user", "content": [{"type": "image", "path": str(source)},
                                                             {"type": "text", "text": text}]})
                image_placed = True
            else:
                messages.append({"role": turn["role"], "content": [{"type": "text", "text": text}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def chat_stream(self, source: Path, history: list[dict], message: str):
        """Yield the answer to `message` as it grows, token by token (greedy decoding)."""
        prompt = self.chat_prompt(source, history, message)
        inputs = self.processor(images=[str(source)], text=[prompt], return_tensors="pt",
                                radiometry=self.radiometry).to(self.model.device)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure = []

        def generate():
            try:
                with torch.inference_mode(), single_thread():
                    self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                        streamer=streamer, pad_token_id=self.processor.tokenizer.pad_token_id)
            except Exception as err:  # surfaced to the caller below, after the streamer is released
                failure.append(err)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        answer = ""
        for piece in streamer:
            answer += piece
            yield answer
        worker.join()
        if failure:
            raise failure[0]

    def map_options(self, task: str = "classification"):
        """The `scene.MapOptions` of a map: `task`, the model's footprint per tile, the session's `max_new_tokens`
        per answer and radiometric handling."""
        from spectral_llava.scene import MapOptions

        return MapOptions(task=task, max_new_tokens=self.max_new_tokens, **self.radiometry.as_dict())

    def map_tiles(self, source: Path, output: Path, task: str = "classification", progress=None):
        """Tile `source` into `output` with `scene.map_scene` and `map_options(task)` -> MapResult."""
        from spectral_llava.scene import map_scene

        return map_scene(str(source), self.model, self.processor, output, self.map_options(task), progress)
