"""Prompts tokenised without their images."""

from __future__ import annotations


def expand_image_tokens(processor, text: str) -> str:
    """`text` with every `<image>` repeated `processor.num_image_tokens` times: the processor's own expansion, for
    texts tokenised without images (answers, and prompts whose images come from a feature cache)."""
    return text.replace(processor.image_token, processor.image_token * processor.num_image_tokens)
