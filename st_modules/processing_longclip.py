"""LongCLIP processor: CLIP tokenizer at 248 tokens (truncating with the end token kept) plus CLIP image processor."""

from __future__ import annotations

from transformers import BatchFeature, CLIPProcessor
from transformers.processing_utils import ProcessingKwargs

from .token_truncation import truncate_keeping_end_token, warn_truncated

# Arguments of `tokenizer.pad`; the other text arguments go to the tokenizing call.
_PAD_KWARGS = ("padding", "max_length", "pad_to_multiple_of", "return_attention_mask", "padding_side")


class LongCLIPProcessorKwargs(ProcessingKwargs, total=False):
    """The transformers-5 processor kwargs (`text_kwargs`, `images_kwargs`, `common_kwargs`, flat kwargs)."""


class LongCLIPProcessor(CLIPProcessor):
    """Wraps a `CLIPTokenizer` and a `CLIPImageProcessor` like `CLIPProcessor`.

    It takes arguments the transformers-5 way (flat, or per modality as `text_kwargs=` / `images_kwargs=` /
    `common_kwargs=`). Differences from `CLIPProcessor`: text is truncated to `max_length` (default: the
    tokenizer's `model_max_length`, 248) unless `truncation=False`, with the end-of-text token kept last exactly as
    the original Long-CLIP tokenizer does, and one warning when that happens.
    """

    valid_processor_kwargs = LongCLIPProcessorKwargs
    text_kwargs = {"truncation": True}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)
        self._warned: set[str] = set()

    def to_dict(self) -> dict:
        # Saved configs name the stock class so that AutoProcessor without remote code loads a CLIPProcessor;
        # `auto_map` still selects this class under trust_remote_code.
        output = super().to_dict()
        output["processor_class"] = "CLIPProcessor"
        return output

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`.

        Args:
            images: An image or a list of images (PIL, numpy or torch), as `CLIPImageProcessor` accepts.
            text: A string or a list of strings.
            **kwargs: As for any transformers-5 processor: `return_tensors`, `padding` (False, True/"longest",
                "max_length"), `truncation` (default True: cut to `max_length` keeping the end token; with False,
                over-long texts reach the model, which cuts them the same way), `max_length` (default 248), other
                tokenizer or image-processor arguments, or the same grouped as `text_kwargs`, `images_kwargs`,
                `common_kwargs`.
        """
        if text is None and images is None:
            raise ValueError("LongCLIPProcessor needs `text`, `images` or both")
        if videos is not None or audio is not None:
            raise ValueError("LongCLIPProcessor embeds text and images only; got videos or audio")
        merged = self._merge_kwargs(
            LongCLIPProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, images_kwargs = merged["text_kwargs"], merged["images_kwargs"]
        return_tensors = text_kwargs.get("return_tensors", images_kwargs.get("return_tensors"))
        encoding: dict = {}
        if text is not None:
            encoding.update(self._tokenize(text, dict(text_kwargs)))
        if images is not None:
            encoding.update(self.image_processor(images, **images_kwargs))
        return BatchFeature(encoding, tensor_type=return_tensors)

    def _tokenize(self, text, text_kwargs: dict) -> dict:
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
            texts = list(text)
        else:
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        truncation = text_kwargs.pop("truncation", True)
        return_tensors = text_kwargs.pop("return_tensors", None)
        pad_kwargs = {key: text_kwargs.pop(key) for key in _PAD_KWARGS if key in text_kwargs}
        max_length = pad_kwargs.get("max_length") or self.tokenizer.model_max_length
        token_ids = self.tokenizer(texts, truncation=False, padding=False, verbose=False, **text_kwargs)["input_ids"]
        if truncation not in (False, "do_not_truncate"):
            token_ids, cut = truncate_keeping_end_token(token_ids, max_length, set(self.tokenizer.all_special_ids))
            warn_truncated(cut, len(texts), max_length, self._warned)
        padding = pad_kwargs.pop("padding", False)
        pad_kwargs.pop("max_length", None)
        padded = self.tokenizer.pad(
            {"input_ids": token_ids},
            padding=padding,
            max_length=max_length if padding == "max_length" else None,
            return_tensors=return_tensors,
            **{"return_attention_mask": True, **pad_kwargs},
        )
        return dict(padded)


LongCLIPProcessor.register_for_auto_class("AutoProcessor")
