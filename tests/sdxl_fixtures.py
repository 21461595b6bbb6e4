"""Shared tiny SDXL pieces for the diffusers adapter tests (built offline, random weights)."""

from __future__ import annotations

import functools

import torch

# Plain words tokenize to one BPE token each, so token counts are easy to reason about.
WORDS = [
    "red",
    "green",
    "blue",
    "cat",
    "dog",
    "house",
    "tree",
    "river",
    "stone",
    "cloud",
    "small",
    "large",
    "bright",
    "dark",
    "old",
    "new",
]


def words(count: int, offset: int = 0) -> str:
    """A prompt of exactly `count` content tokens (BOS/EOS excluded)."""
    return " ".join(WORDS[(offset + index) % len(WORDS)] for index in range(count))


@functools.lru_cache(maxsize=1)
def _cached_components() -> dict:
    from hub_configs.longclip_sdxl import build_tiny_sdxl_components

    return build_tiny_sdxl_components(seed=0)


def tiny_components(fresh: bool = False) -> dict:
    """Components of the tiny stock SDXL (77-token encoders); `fresh` builds a private copy to mutate."""
    if fresh:
        from hub_configs.longclip_sdxl import build_tiny_sdxl_components

        return build_tiny_sdxl_components(seed=0)
    return dict(_cached_components())


@functools.lru_cache(maxsize=1)
def longclip_pair():
    """A tiny random 248-position LongCLIP text encoder and its 248-token tokenizer."""
    from hub_configs.clip_tokenizer import build_clip_tokenizer
    from hub_configs.longclip_sdxl import build_tiny_text_encoder

    return build_tiny_text_encoder(seed=0), build_clip_tokenizer(248)


def long_components() -> dict:
    """Tiny SDXL with the LongCLIP pair as `text_encoder` / `tokenizer`."""
    components = tiny_components()
    components["text_encoder"], components["tokenizer"] = longclip_pair()
    return components


def stock_pipeline(components: dict | None = None):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**(components or tiny_components())).to("cpu")


def long_pipeline(components: dict | None = None, mode: str = "chunked"):
    from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

    return enable_long_prompts(stock_pipeline(components or long_components()), mode=mode)


def assert_all_equal(expected: tuple, actual: tuple) -> None:
    for index, (left, right) in enumerate(zip(expected, actual)):
        if left is None or right is None:
            assert left is None and right is None, f"output {index}: {left is None=} {right is None=}"
            continue
        assert left.shape == right.shape, f"output {index}: {tuple(left.shape)} != {tuple(right.shape)}"
        assert left.dtype == right.dtype, f"output {index}: {left.dtype} != {right.dtype}"
        assert torch.equal(left, right), f"output {index} differs, max {(left - right).abs().max().item()}"
