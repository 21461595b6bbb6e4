"""LongCLIP processor: CLIP tokenizer at 248 tokens (truncating with the end token kept) plus CLIP image processor."""

from __future__ import annotations

from transformers import BatchFeature, CLIPProcessor

from .token_truncation import truncate_keeping_end_token, warn_truncated


class LongCLIPProcessor(CLIPProcessor):
    """Wraps a `CLIPTokenizer` and a `CLIPImageProcessor` like `CLIPProcessor`.

    Differences from `CLIPProcessor`: text is truncated to `max_length` (default: the tokenizer's
    `model_max_length`, 248) unless `truncation=False`, with the end-of-text token kept last exactly as the
    original Long-CLIP tokenizer does, and one warning when that happens.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)
        self._warned: set[str] = set()

    def to_dict(self) -> dict:
        # Saved configs name the stock class so that AutoProcessor without remote code loads a CLIPProcessor;
        # `auto_map` still selects this class under trust_remote_code.
        output = super().to_dict()
        output["processor_class"] = "CLIPProcessor"
        return output

    def __call__(
        self,
        text=None,
        images=None,
        return_tensors=None,
        padding=False,
        truncation=True,
        max_length: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`.

        Args:
            text: A string or a list of strings.
            images: An image or a list of images (PIL, numpy or torch), as `CLIPImageProcessor` accepts.
            return_tensors: "pt", "np" or None.
            padding: As for tokenizers: False, True/"longest" or "max_length".
            truncation: Truncate to `max_length` keeping the end token (default True). With False, over-long
                texts reach the model, which raises a clear error.
            max_length: Token limit; defaults to the tokenizer's `model_max_length` (248).
            **kwargs: Passed to the image processor.
        """
        if text is None and images is None:
            raise ValueError("LongCLIPProcessor needs `text`, `images` or both")
        encoding: dict = {}
        if text is not None:
            encoding.update(self._tokenize(text, padding, truncation, max_length, return_tensors))
        if images is not None:
            encoding.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        return BatchFeature(encoding, tensor_type=return_tensors)

    def _tokenize(self, text, padding, truncation, max_length, return_tensors) -> dict:
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
            texts = list(text)
        else:
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        max_length = max_length or self.tokenizer.model_max_length
        token_ids = self.tokenizer(texts, truncation=False, padding=False, verbose=False)["input_ids"]
        if truncation:
            token_ids, cut = truncate_keeping_end_token(token_ids, max_length, set(self.tokenizer.all_special_ids))
            warn_truncated(cut, len(texts), max_length, self._warned)
        padded = self.tokenizer.pad(
            {"input_ids": token_ids},
            padding=padding,
            max_length=max_length if padding == "max_length" else None,
            return_attention_mask=True,
            return_tensors=return_tensors,
        )
        return dict(padded)


LongCLIPProcessor.register_for_auto_class("AutoProcessor")
