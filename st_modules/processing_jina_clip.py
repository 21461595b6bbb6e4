"""Processor of jina-clip-v2: XLM-RoBERTa SentencePiece tokenizer + the upstream-exact `JinaCLIPImageProcessor`."""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin


class JinaCLIPProcessor(ProcessorMixin):
    """Pairs the XLM-RoBERTa tokenizer with `JinaCLIPImageProcessor` (upstream's PIL resize and centre crop).

    Calls follow transformers' generic processor protocol (`ProcessorMixin.__call__`): flat kwargs or
    `text_kwargs=` / `images_kwargs=` / `common_kwargs=`, each routed to the tokenizer or the image processor.

    Args:
        image_processor: a `JinaCLIPImageProcessor`.
        tokenizer: an `XLMRobertaTokenizer`.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer)


__all__ = ["JinaCLIPProcessor"]
