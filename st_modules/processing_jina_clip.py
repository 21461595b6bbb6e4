"""Processor of jina-clip-v2: XLM-RoBERTa SentencePiece tokenizer + the upstream-exact `JinaCLIPImageProcessor`."""

from __future__ import annotations

import json
import os
from typing import Any

from transformers import ProcessorMixin, XLMRobertaTokenizer

# How the repo's tokenizer_config.json names the tokenizer class below for `AutoTokenizer(trust_remote_code=True)`;
# `tokenizer_class` stays XLMRobertaTokenizer so runtimes without this code (transformers.js, no remote code) load
# the same tokenizer.
_TOKENIZER_REFERENCE = f"{os.path.splitext(os.path.basename(__file__))[0]}.JinaCLIPTokenizer"
_BASE_TOKENIZER_CLASS = "XLMRobertaTokenizer"


class JinaCLIPTokenizer(XLMRobertaTokenizer):
    """XLM-RoBERTa tokenizer that pads a batch to its longest text whenever tensors are requested.

    The published card's ONNX Runtime snippet calls `tokenizer(sentences, return_tensors="np")` on texts of
    different lengths and feeds the ids to the graph, whose attention mask is the pad id; without padding that call
    cannot build one array. An explicit `padding=` (including `False`) is honoured.
    """

    def __call__(self, *args: Any, **kwargs: Any):
        if kwargs.get("return_tensors") is not None and "padding" not in kwargs:
            kwargs["padding"] = True
        return super().__call__(*args, **kwargs)

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any):
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        mark_tokenizer_config(save_directory)
        return saved


def mark_tokenizer_config(save_directory: str) -> None:
    """Point `AutoTokenizer` at `JinaCLIPTokenizer` in a saved `tokenizer_config.json`, keeping its stock class."""
    path = os.path.join(save_directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["auto_map"] = {**(config.get("auto_map") or {}), "AutoTokenizer": [None, _TOKENIZER_REFERENCE]}
    config["tokenizer_class"] = _BASE_TOKENIZER_CLASS
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


class JinaCLIPProcessor(ProcessorMixin):
    """Pairs the XLM-RoBERTa tokenizer with `JinaCLIPImageProcessor` (upstream's PIL resize and centre crop).

    Calls follow transformers' generic processor protocol (`ProcessorMixin.__call__`): flat kwargs or
    `text_kwargs=` / `images_kwargs=` / `common_kwargs=`, each routed to the tokenizer or the image processor.

    Saving also writes `preprocessor_config.json` (the image settings and `processor_class`, what transformers.js
    and the card's snippets read) in step with `processor_config.json`, and registers `JinaCLIPTokenizer` for
    `AutoTokenizer`.

    Args:
        image_processor: a `JinaCLIPImageProcessor`.
        tokenizer: an `XLMRobertaTokenizer` (or `JinaCLIPTokenizer`).
    """

    # Called through the processor, images come back as torch tensors unless the call says otherwise (the image
    # processor alone returns one numpy batch, as the card's ONNX Runtime snippet uses it).
    images_kwargs = {"return_tensors": "pt"}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer)

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any):
        from .onnx_backend import write_preprocessor_config

        saved = super().save_pretrained(save_directory, *args, **kwargs)
        mark_tokenizer_config(save_directory)
        write_preprocessor_config(save_directory)
        return saved


__all__ = ["JinaCLIPProcessor", "JinaCLIPTokenizer", "mark_tokenizer_config"]
