"""Processor of jina-clip-v2: XLM-RoBERTa SentencePiece tokenizer + CLIP-style 512 px image preprocessing."""

from __future__ import annotations

from typing import Any

from transformers import BatchFeature, ProcessorMixin


class JinaCLIPProcessor(ProcessorMixin):
    """Pairs the XLM-RoBERTa tokenizer with a `CLIPImageProcessor`.

    The image side matches upstream `JinaCLIPImageProcessor`: bicubic resize of the shortest edge to `image_size`,
    centre crop, OpenAI CLIP mean/std.

    Args:
        image_processor: a `CLIPImageProcessor` (or its fast variant).
        tokenizer: an `XLMRobertaTokenizer`.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer)

    def __call__(self, text=None, images=None, **kwargs: Any) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`; returns `input_ids`, `attention_mask` and `pixel_values`."""
        if text is None and images is None:
            raise ValueError("JinaCLIPProcessor needs `text`, `images` or both")
        return_tensors = kwargs.pop("return_tensors", None)
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.tokenizer(text, return_tensors=return_tensors, **kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["JinaCLIPProcessor"]
