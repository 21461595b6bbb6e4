"""Processor of jina-clip-v2: XLM-RoBERTa SentencePiece tokenizer + CLIP-style 512 px image preprocessing."""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin


class JinaCLIPProcessor(ProcessorMixin):
    """Pairs the XLM-RoBERTa tokenizer with a `CLIPImageProcessor`.

    The image side matches upstream `JinaCLIPImageProcessor`: bicubic resize of the shortest edge to `image_size`,
    centre crop, OpenAI CLIP mean/std.

    Calls follow transformers' generic processor protocol (`ProcessorMixin.__call__`): flat kwargs or
    `text_kwargs=` / `images_kwargs=` / `common_kwargs=`, each routed to the tokenizer or the image processor.

    Args:
        image_processor: a `CLIPImageProcessor` (or its fast variant).
        tokenizer: an `XLMRobertaTokenizer`.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer)


__all__ = ["JinaCLIPProcessor"]
