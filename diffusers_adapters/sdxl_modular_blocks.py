"""Modular SDXL (`diffusers.modular_pipelines`) with long, weighted prompts: a text-encoder step to swap in.

The stock `StableDiffusionXLTextEncoderStep` calls its own static `encode_prompt`, so a pipeline object cannot be
patched; the modular way is to put a different block in the blocks' `sub_blocks` before `init_pipeline`:

    blocks = long_prompt_blocks(StableDiffusionXLAutoBlocks())
    pipe = blocks.init_pipeline(base_repo)
    pipe.load_components(...)  # or update_components(text_encoder=..., tokenizer=..., ...)
"""

from __future__ import annotations

from diffusers.modular_pipelines.stable_diffusion_xl.encoders import StableDiffusionXLTextEncoderStep

from .sdxl_long_prompt_encoder import check_weighting, encode_long_prompt

__all__ = ["LongCLIPSDXLTextEncoderStep", "long_prompt_blocks"]


class LongCLIPSDXLTextEncoderStep(StableDiffusionXLTextEncoderStep):
    """Modular SDXL text-encoder step that reads long, weighted prompts (LongCLIP-L + bigG windows).

    Same components, inputs and outputs as `StableDiffusionXLTextEncoderStep`; only the prompt encoding differs.

    Args:
        mode: `"chunked"` (default) or `"paper"`.
        weighting: `"offset"` (default), `"mean-restore"` or `"off"`.
    """

    def __init__(self, mode: str = "chunked", weighting: str = "offset"):
        super().__init__()
        if mode not in ("chunked", "paper"):
            raise ValueError(f"`mode` must be 'chunked' or 'paper', got {mode!r}")
        check_weighting(weighting)
        self.long_prompt_mode = mode
        self.long_prompt_weighting = weighting

    @property
    def description(self) -> str:
        return (
            "Text encoder step that reads prompts of up to 248 tokens with A1111-style weights through LongCLIP-L "
            f"and OpenCLIP bigG ({self.long_prompt_mode} mode)"
        )

    # An instance method where the stock step has a static one: the stock `__call__` calls `self.encode_prompt`.
    def encode_prompt(
        self,
        components,
        prompt,
        prompt_2=None,
        device=None,
        num_images_per_prompt: int = 1,
        prepare_unconditional_embeds: bool = True,
        negative_prompt=None,
        negative_prompt_2=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        pooled_prompt_embeds=None,
        negative_pooled_prompt_embeds=None,
        lora_scale=None,
        clip_skip=None,
    ):
        """The stock step's `encode_prompt` arguments and outputs, long and weighted prompts included."""
        return encode_long_prompt(
            components,
            prompt,
            prompt_2,
            device,
            num_images_per_prompt,
            prepare_unconditional_embeds,
            negative_prompt,
            negative_prompt_2,
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            lora_scale,
            clip_skip,
            mode=self.long_prompt_mode,
            weighting=self.long_prompt_weighting,
        )


def long_prompt_blocks(blocks, mode: str = "chunked", weighting: str = "offset"):
    """Replace every stock SDXL text-encoder step in `blocks` (searched through nested `sub_blocks`) in place.

    Args:
        blocks: Modular SDXL blocks, e.g. `StableDiffusionXLAutoBlocks()`, before `init_pipeline`.
        mode: `"chunked"` (default) or `"paper"`.
        weighting: `"offset"` (default), `"mean-restore"` or `"off"`.

    Returns:
        `blocks`, for chaining.

    Raises:
        ValueError: when `blocks` holds no `StableDiffusionXLTextEncoderStep`.
    """
    LongCLIPSDXLTextEncoderStep(mode=mode, weighting=weighting)  # validates both before anything changes
    replaced = 0
    pending = [blocks]
    while pending:
        parent = pending.pop()
        for name, block in list(getattr(parent, "sub_blocks", {}).items()):
            if isinstance(block, StableDiffusionXLTextEncoderStep) and not isinstance(
                block, LongCLIPSDXLTextEncoderStep
            ):
                parent.sub_blocks[name] = LongCLIPSDXLTextEncoderStep(mode=mode, weighting=weighting)
                replaced += 1
            elif isinstance(block, LongCLIPSDXLTextEncoderStep):
                block.long_prompt_mode, block.long_prompt_weighting = mode, weighting
                replaced += 1
            else:
                pending.append(block)
    if not replaced:
        raise ValueError(f"{type(blocks).__name__} has no SDXL text-encoder step (StableDiffusionXLTextEncoderStep)")
    return blocks
