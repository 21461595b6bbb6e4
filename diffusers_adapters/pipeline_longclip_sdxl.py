"""Long, weighted prompts (248 tokens, A1111/ComfyUI weight syntax) for every Stable Diffusion XL pipeline.

This file is published as `pipeline.py` in the LongCLIP-L SDXL adapter repo, next to its siblings
`sdxl_prompt_weights.py`, `sdxl_long_prompt_encoder.py`, `sdxl_modular_blocks.py` and `longclip_sdxl_repo.py`
(the repo id the adapter was built for).

Ways in:

- `DiffusionPipeline.from_pretrained(base, custom_pipeline=<adapter>, trust_remote_code=True)` loads
  `LongCLIPStableDiffusionXLPipeline` (text-to-image). Without `text_encoder`/`tokenizer` it loads the LongCLIP-L
  pair from the adapter repo it was built for, or fails at load saying what to pass; a partial pair fails at load.
- `enable_long_prompts(pipe, mode="chunked", weighting="offset")` on any other SDXL pipeline instance: txt2img,
  img2img, inpaint, InstructPix2Pix, ControlNet (3), ControlNet-Union (3), ControlNet-XS, T2I-Adapter, PAG (3),
  PAG-ControlNet (2), AnimateDiff-SDXL, Text2Video-Zero-SDXL, and the refiner (`text_encoder`/`tokenizer` None: bigG
  reads the long prompt in windows, or stretched in paper mode). It replaces `encode_prompt` on that instance with
  one of the same signature.
- Modular SDXL: `long_prompt_blocks(StableDiffusionXLAutoBlocks())` swaps the text-encoder step for
  `LongCLIPSDXLTextEncoderStep` before `init_pipeline`.

Encoding modes, the weighting rule and deduplication are described in `sdxl_long_prompt_encoder`, the weight syntax
in `sdxl_prompt_weights`.
"""

from __future__ import annotations

import inspect
import types

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils import logging

from .sdxl_long_prompt_encoder import (
    MODES,
    WEIGHTINGS,
    WINDOW_LENGTH,
    check_components,
    check_weighting,
    encode_long_prompt,
    stretch_position_embedding,
)
from .sdxl_prompt_weights import parse_prompt_weights

try:
    from diffusers.modular_pipelines import ModularPipeline
except ImportError:  # diffusers releases before modular pipelines
    ModularPipeline = None
if ModularPipeline is not None:
    from .sdxl_modular_blocks import LongCLIPSDXLTextEncoderStep, long_prompt_blocks
else:
    LongCLIPSDXLTextEncoderStep = long_prompt_blocks = None

try:  # written into the adapter repo by its builder; absent when this file is imported from the package
    from .longclip_sdxl_repo import ADAPTER_REPO
except ImportError:
    ADAPTER_REPO = None

logger = logging.get_logger(__name__)

__all__ = [
    "ADAPTER_REPO",
    "MODES",
    "WEIGHTINGS",
    "LongCLIPSDXLTextEncoderStep",
    "LongCLIPStableDiffusionXLPipeline",
    "disable_long_prompts",
    "enable_long_prompts",
    "encode_long_prompt",
    "load_longclip_pair",
    "long_prompt_blocks",
    "parse_prompt_weights",
    "stretch_position_embedding",
]

# Parameters every SDXL-style `encode_prompt` takes; `clip_skip` is optional (InstructPix2Pix has none).
_SDXL_ENCODE_PARAMETERS = (
    "prompt",
    "prompt_2",
    "device",
    "do_classifier_free_guidance",
    "negative_prompt",
    "negative_prompt_2",
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "lora_scale",
)
# AnimateDiff-SDXL calls its copy of the argument `num_videos_per_prompt`.
_PER_PROMPT_PARAMETERS = ("num_images_per_prompt", "num_videos_per_prompt")


def _encode_prompt_signature(pipe) -> tuple[inspect.Signature, str]:
    """The pipeline's own `encode_prompt` signature (without `self`) and its per-prompt count parameter."""
    if ModularPipeline is not None and isinstance(pipe, ModularPipeline):
        raise TypeError(
            f"{type(pipe).__name__} is a modular pipeline: its text step cannot be patched. Build it from "
            f"`long_prompt_blocks(StableDiffusionXLAutoBlocks())` (this module) before `init_pipeline`."
        )
    method = getattr(type(pipe), "encode_prompt", None)
    if not callable(method) or not hasattr(pipe, "text_encoder_2"):
        raise TypeError(f"`pipe` must be a diffusers SDXL pipeline, got {type(pipe).__name__}")
    signature = inspect.signature(method)
    names = list(signature.parameters)[1:]
    per_prompt = next((name for name in _PER_PROMPT_PARAMETERS if name in names), None)
    missing = [name for name in _SDXL_ENCODE_PARAMETERS if name not in names]
    missing += [] if per_prompt else [_PER_PROMPT_PARAMETERS[0]]
    unknown = [name for name in names if name not in (*_SDXL_ENCODE_PARAMETERS, *_PER_PROMPT_PARAMETERS, "clip_skip")]
    if missing or unknown:
        raise TypeError(
            f"{type(pipe).__name__}.encode_prompt is not SDXL's prompt encoder (missing {missing}, unexpected "
            f"{unknown}); long prompts support the SDXL pipelines listed in this module's docstring"
        )
    return signature.replace(parameters=list(signature.parameters.values())[1:]), per_prompt


def _long_encode_prompt(self, *args, **kwargs):
    """`encode_prompt` with this pipeline's own signature, encoding long and weighted prompts."""
    arguments = self._long_prompt_signature.bind(*args, **kwargs)
    arguments.apply_defaults()
    values = dict(arguments.arguments)
    values["num_images_per_prompt"] = values.pop(self._long_prompt_per_prompt)
    return encode_long_prompt(self, **values)


def enable_long_prompts(pipe, mode: str = "chunked", weighting: str = "offset"):
    """Make an SDXL pipeline read long, weighted prompts (248 tokens with LongCLIP-L; see the module docstring).

    Replaces `pipe.encode_prompt` on this instance only, with the pipeline's own signature and return values.

    Args:
        pipe: A diffusers SDXL pipeline: `text_encoder_2`/`tokenizer_2` (bigG) and either the LongCLIP-L
            `text_encoder`/`tokenizer` pair or neither (the refiner).
        mode: `"chunked"` (default) or `"paper"`.
        weighting: `"offset"` (default), `"mean-restore"` or `"off"` (brackets and BREAK as plain text).

    Returns:
        `pipe`, for chaining.

    Raises:
        TypeError: for a modular pipeline (use `long_prompt_blocks`) or a pipeline without SDXL's `encode_prompt`.
        ValueError: on an unknown mode or weighting, a partial LongCLIP pair, or a tokenizer whose length does not
            match its encoder's positions.
    """
    signature, per_prompt = _encode_prompt_signature(pipe)
    check_weighting(weighting)
    check_components(pipe, mode)
    pipe.long_prompt_mode = mode
    pipe.long_prompt_weighting = weighting
    if not isinstance(pipe, LongCLIPStableDiffusionXLPipeline):
        pipe._long_prompt_signature = signature
        pipe._long_prompt_per_prompt = per_prompt
        pipe.encode_prompt = types.MethodType(_long_encode_prompt, pipe)
    return pipe


def disable_long_prompts(pipe):
    """Undo `enable_long_prompts`: the pipeline's own `encode_prompt` is used again."""
    for name in ("encode_prompt", "_long_prompt_signature", "_long_prompt_per_prompt"):
        vars(pipe).pop(name, None)
    return pipe


def _long_pair(text_encoder, tokenizer) -> bool | None:
    """True for a LongCLIP pair (both longer than 77), False for a stock or missing pair, None for a mix."""
    long_encoder = text_encoder is not None and text_encoder.config.max_position_embeddings > WINDOW_LENGTH
    long_tokenizer = tokenizer is not None and tokenizer.model_max_length > WINDOW_LENGTH
    return long_encoder if long_encoder == long_tokenizer else None


def load_longclip_pair(repo: str | None = None, *, dtype: torch.dtype | None = None, device=None):
    """Load the adapter's LongCLIP-L `text_encoder` and `tokenizer` (stock `CLIPTextModel` / `CLIPTokenizer`).

    Args:
        repo: Adapter repo id or folder; defaults to `ADAPTER_REPO`, the repo this copy was built for.
        dtype: Weight dtype of the text encoder.
        device: Where to put the text encoder.

    Returns:
        `(text_encoder, tokenizer)`.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    repo = repo or ADAPTER_REPO
    if repo is None:
        raise ValueError(
            "This copy of the adapter does not record its repo id; pass `repo` (the adapter repo id or folder)"
        )
    text_encoder = CLIPTextModel.from_pretrained(repo, subfolder="text_encoder", dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer")
    return text_encoder.to(device) if device is not None else text_encoder, tokenizer


def _resolve_text_pair(text_encoder, tokenizer, text_encoder_2):
    """The LongCLIP pair the pipeline runs with; loads it from `ADAPTER_REPO` when given the base's stock pair."""
    kind = _long_pair(text_encoder, tokenizer)
    if kind is None:
        raise ValueError(
            f"LongCLIPStableDiffusionXLPipeline got a `text_encoder` with "
            f"{text_encoder.config.max_position_embeddings if text_encoder is not None else 'no'} positions and a "
            f"`tokenizer` that truncates at {tokenizer.model_max_length if tokenizer is not None else 'no'} tokens. "
            f"Pass both from the adapter repo (`text_encoder=CLIPTextModel.from_pretrained(ADAPTER, "
            f'subfolder="text_encoder"), tokenizer=CLIPTokenizer.from_pretrained(ADAPTER, subfolder="tokenizer")`), '
            f"or neither."
        )
    if kind:
        return text_encoder, tokenizer
    if ADAPTER_REPO is None:
        raise ValueError(
            "LongCLIPStableDiffusionXLPipeline reads prompts through the adapter's 248-token LongCLIP-L text encoder, "
            "but it got the base model's 77-token `text_encoder`/`tokenizer`, and this copy of the adapter does not "
            "record which repo it belongs to. Pass them: `text_encoder=CLIPTextModel.from_pretrained(ADAPTER, "
            'subfolder="text_encoder"), tokenizer=CLIPTokenizer.from_pretrained(ADAPTER, subfolder="tokenizer")`, '
            "where ADAPTER is the repo id or folder you passed as `custom_pipeline`."
        )
    reference = text_encoder if text_encoder is not None else text_encoder_2
    logger.info(f"Loading the LongCLIP-L text encoder and tokenizer from {ADAPTER_REPO}")
    return load_longclip_pair(ADAPTER_REPO, dtype=reference.dtype, device=reference.device)


class LongCLIPStableDiffusionXLPipeline(StableDiffusionXLPipeline):
    """`StableDiffusionXLPipeline` whose `encode_prompt` reads long, weighted prompts through LongCLIP-L.

    Load it with `custom_pipeline=<adapter repo or folder>`; without `text_encoder`/`tokenizer` it loads them from
    the adapter repo it was built for (`ADAPTER_REPO`). Switch modes with `set_long_prompt_mode("paper")` and the
    weighting rule with `set_prompt_weighting(...)`. The module's `enable_long_prompts`, `load_longclip_pair` and
    `long_prompt_blocks` are attributes of the class too, for other pipelines (the refiner, ControlNet, ...).
    """

    long_prompt_mode = "chunked"
    long_prompt_weighting = "offset"
    # Reachable from a pipeline loaded with `custom_pipeline=` (whose module is not importable by name), e.g.
    # `pipe.enable_long_prompts(refiner)` or `pipe.load_longclip_pair()` for another SDXL pipeline.
    enable_long_prompts = staticmethod(enable_long_prompts)
    load_longclip_pair = staticmethod(load_longclip_pair)
    long_prompt_blocks = staticmethod(long_prompt_blocks) if long_prompt_blocks is not None else None

    # Parameters as `StableDiffusionXLPipeline.__init__`; unannotated because diffusers compares loaded components
    # with evaluated annotations, which postponed (string) annotations are not.
    def __init__(
        self,
        vae,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        unet,
        scheduler,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
    ):
        text_encoder, tokenizer = _resolve_text_pair(text_encoder, tokenizer, text_encoder_2)
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            add_watermarker=add_watermarker,
        )
        check_components(self, self.long_prompt_mode)

    def set_long_prompt_mode(self, mode: str) -> None:
        """Choose `"chunked"` (default) or `"paper"` encoding."""
        check_components(self, mode)
        self.long_prompt_mode = mode

    def set_prompt_weighting(self, weighting: str) -> None:
        """Choose `"offset"` (default), `"mean-restore"` or `"off"`."""
        check_weighting(weighting)
        self.long_prompt_weighting = weighting

    def encode_prompt(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ):
        """Stock `encode_prompt` signature and outputs, long and weighted prompts included."""
        return encode_long_prompt(
            self,
            prompt,
            prompt_2,
            device,
            num_images_per_prompt,
            do_classifier_free_guidance,
            negative_prompt,
            negative_prompt_2,
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            lora_scale,
            clip_skip,
        )
