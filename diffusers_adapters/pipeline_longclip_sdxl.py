"""248-token LongCLIP-L prompts for every Stable Diffusion XL pipeline.

This file is published as `pipeline.py` in the `longclip-l-sdxl` adapter repo and must stay self-contained.

Two ways in:

- `enable_long_prompts(pipe, mode="chunked")` patches `encode_prompt` of any SDXL pipeline instance (txt2img,
  img2img, inpaint, ControlNet, ControlNet-Union, T2I-Adapter, PAG, AnimateDiff-SDXL) whose `text_encoder` /
  `tokenizer` are the LongCLIP-L pair of the adapter repo.
- `DiffusionPipeline.from_pretrained(base, custom_pipeline=<adapter>, text_encoder=..., tokenizer=...,
  trust_remote_code=True)` loads `LongCLIPStableDiffusionXLPipeline`, a text-to-image pipeline with the same patch.

Modes:

- `chunked` (default): LongCLIP-L reads up to 248 tokens in one pass; OpenCLIP bigG (`text_encoder_2`, 77
  positions) reads the same prompt in `[BOS] + 75 tokens + [EOS]` windows, all windows in one batched forward, and
  its states are gathered back so that output position `p` holds the same token for both encoders. The pooled
  embedding is bigG's from the first window, exactly as stock. The sequence length is
  `min(248, 77 * ceil(n / 77))` for `n` tokens, so prompts of at most 77 tokens give stock-shaped, stock-valued
  outputs.
- `paper`: the Long-CLIP authors' SDXL recipe. Both encoders read 248 tokens; bigG's 77 position embeddings are
  stretched to 248 by knowledge-preserved stretching (no fine-tuning); both encoders' final-layer outputs after the
  final layer norm are used and the pooled embedding comes from the stretched bigG. `clip_skip` is ignored.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.utils import USE_PEFT_BACKEND, logging, scale_lora_layers, unscale_lora_layers
from torch import nn

try:
    from diffusers.models.lora import adjust_lora_scale_text_encoder
except ImportError:  # removed in some diffusers releases; only the legacy (non-PEFT) LoRA path needs it
    adjust_lora_scale_text_encoder = None

try:
    from diffusers.utils.torch_utils import get_module_execution_device
except ImportError:  # older diffusers: no offload-aware helper, so use where the weights are

    def get_module_execution_device(module: nn.Module) -> torch.device:
        return next(module.parameters()).device


logger = logging.get_logger(__name__)

MODES = ("chunked", "paper")
# bigG (and every stock CLIP) was trained on 77 positions: [BOS] + 75 tokens + [EOS].
WINDOW_LENGTH = 77
WINDOW_CONTENT = WINDOW_LENGTH - 2
# Knowledge-preserved stretching keeps the first 20 (well-trained) positions and interpolates the rest 4x.
KPS_KEEP = 20
KPS_FACTOR = 4
_NO_LIMIT = 1 << 30

__all__ = [
    "LongCLIPStableDiffusionXLPipeline",
    "disable_long_prompts",
    "enable_long_prompts",
    "encode_long_prompt",
    "stretch_position_embedding",
]


def stretch_position_embedding(weight: torch.Tensor, keep: int = KPS_KEEP) -> torch.Tensor:
    """Knowledge-preserved stretching of a position-embedding table (Long-CLIP, section 3.1).

    Rows `0..keep-1` are copied; each later gap between old rows `i` and `i+1` is filled with 4 linear
    interpolations; the last old row is extrapolated 4 times along the last difference. 77 rows become 248.

    Args:
        weight: `[positions, dim]` table.
        keep: Number of leading rows kept as they are.

    Returns:
        `[4 * positions - 3 * keep, dim]` table in `weight`'s dtype and device.
    """
    if weight.ndim != 2:
        raise ValueError(f"`weight` must be a [positions, dim] table, got shape {tuple(weight.shape)}")
    positions, dim = weight.shape
    if not 0 <= keep < positions - 1:
        raise ValueError(f"`keep` must be in [0, {positions - 2}] for a {positions}-row table, got {keep}")
    old = weight.detach().float()
    fractions = torch.arange(KPS_FACTOR, dtype=torch.float32, device=old.device) / KPS_FACTOR
    left, right = old[keep : positions - 1], old[keep + 1 : positions]
    # [gaps, 4, dim]: row k of a gap sits k/4 of the way from `left` to `right`.
    middle = left[:, None] * (1 - fractions)[None, :, None] + right[:, None] * fractions[None, :, None]
    tail = old[-1] + fractions[:, None] * (old[-1] - old[-2])
    stretched = torch.cat([old[:keep], middle.reshape(-1, dim), tail])
    return stretched.to(dtype=weight.dtype)


def _positions(text_encoder: nn.Module) -> int:
    return int(text_encoder.config.max_position_embeddings)


def _check_pair(tokenizer, text_encoder, tokenizer_name: str, encoder_name: str) -> int:
    positions = _positions(text_encoder)
    if tokenizer.model_max_length != positions:
        raise ValueError(
            f"`{tokenizer_name}` truncates at {tokenizer.model_max_length} tokens but `{encoder_name}` has "
            f"{positions} positions. Load both from the same repo (for LongCLIP-L: the adapter repo's `tokenizer/` "
            f"and `text_encoder/` folders)."
        )
    return positions


def _check_components(pipe, mode: str) -> tuple[int, int]:
    """Validate the text components for `mode` before any forward; return both encoders' position counts."""
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"):
        if getattr(pipe, name, None) is None:
            raise ValueError(
                f"Long prompts need the pipeline's `{name}`, which is None. The SDXL refiner (bigG only) is not "
                f"supported: pass the LongCLIP-L `text_encoder` and `tokenizer`."
            )
    first = _check_pair(pipe.tokenizer, pipe.text_encoder, "tokenizer", "text_encoder")
    second = _check_pair(pipe.tokenizer_2, pipe.text_encoder_2, "tokenizer_2", "text_encoder_2")
    if second < WINDOW_LENGTH:
        raise ValueError(f"`text_encoder_2` needs at least {WINDOW_LENGTH} positions, has {second}")
    if mode == "paper":
        stretched = KPS_FACTOR * second - (KPS_FACTOR - 1) * KPS_KEEP
        if first != stretched:
            raise ValueError(
                f"mode='paper' stretches `text_encoder_2` from {second} to {stretched} positions and needs a "
                f"`text_encoder` with as many, got {first}. Use the 248-position LongCLIP-L text encoder."
            )
    return first, second


def _as_list(value, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        if not value:
            raise ValueError(f"`{name}` is an empty list; pass at least one prompt")
        return list(value)
    raise TypeError(f"`{name}` must be a string, a list of strings or None, got {type(value).__name__}")


def _content_ids(pipe, texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids without BOS/EOS, untruncated (truncation is decided once the joint length is known)."""
    if isinstance(pipe, TextualInversionLoaderMixin):
        texts = pipe.maybe_convert_prompt(texts, tokenizer)
    # An explicit max_length silences the tokenizer's "longer than model_max_length" notice: windows handle length.
    return tokenizer(texts, add_special_tokens=False, truncation=False, max_length=_NO_LIMIT).input_ids


def _sequence_length(content: list[list[int]], max_positions: int) -> int:
    needed = max(len(ids) for ids in content) + 2
    return min(max_positions, WINDOW_LENGTH * math.ceil(needed / WINDOW_LENGTH))


def _padded_ids(content: list[list[int]], length: int, bos: int, eos: int, pad: int) -> tuple[torch.Tensor, list[int]]:
    """`[BOS] + content + [EOS] + pad` rows of `length`, content cut to `length - 2`; also the kept content lengths."""
    limit = length - 2
    kept = [min(len(ids), limit) for ids in content]
    rows = [[bos, *ids[:limit], eos] + [pad] * (limit - n) for ids, n in zip(content, kept)]
    return torch.tensor(rows, dtype=torch.long), kept


def _window_ids(content: list[list[int]], length: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Cut each row into `[BOS] + 75 + [EOS]` windows covering output positions `1..length-1`.

    Returns:
        `ids` `[rows * windows, 77]`, `gather` `[rows, length]` indices into the flattened `[rows, windows * 77]`
        window outputs, and the number of windows per row.
    """
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    stream, kept = _padded_ids(content, length, bos, eos, pad)
    stream = stream[:, 1:]  # drop BOS: stream[j] is output position j + 1
    rows = stream.shape[0]
    windows = max(1, math.ceil((length - 2) / WINDOW_CONTENT))
    total = windows * WINDOW_CONTENT + 1
    stream = torch.cat([stream, stream.new_full((rows, max(0, total - stream.shape[1])), pad)], dim=1)[:, :total]
    kept_t = torch.tensor(kept, dtype=torch.long)[:, None]
    body = stream[:, : windows * WINDOW_CONTENT].reshape(rows, windows, WINDOW_CONTENT)
    # The last slot of a window holds the token that follows it when that token is EOS or padding (so a short
    # prompt's single window is exactly the stock 77-token input) and EOS when the prompt goes on.
    after_index = torch.arange(1, windows + 1) * WINDOW_CONTENT
    after = stream[:, after_index]
    last = torch.where(after_index[None] < kept_t, torch.full_like(after, eos), after)
    ids = torch.cat([body.new_full((rows, windows, 1), bos), body, last[..., None]], dim=2)

    # Output position p >= 1 reads stream token j = p - 1 from window j // 75, slot 1 + j % 75; a non-content
    # token that opens a window is read from the previous window's last slot, where it also sits.
    j = torch.arange(length - 1)[None].expand(rows, -1)
    window = j // WINDOW_CONTENT
    slot = 1 + j % WINDOW_CONTENT
    from_previous = (j % WINDOW_CONTENT == 0) & (j > 0) & (j >= kept_t)
    window = window - from_previous.long()
    slot = torch.where(from_previous, torch.full_like(slot, WINDOW_LENGTH - 1), slot)
    gather = torch.cat([torch.zeros(rows, 1, dtype=torch.long), window * WINDOW_LENGTH + slot], dim=1)
    return ids.reshape(rows * windows, WINDOW_LENGTH), gather, windows


# no_grad rather than inference_mode: pipelines and step callbacks may update these outputs in place later, which
# inference tensors forbid outside inference mode.
@torch.no_grad()
def _encode_chunked(pipe, content_1, content_2, length: int, hidden_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    ids_1, _ = _padded_ids(content_1, length, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    out_1 = text_encoder(ids_1.to(get_module_execution_device(text_encoder)), output_hidden_states=True)
    states_1 = out_1.hidden_states[hidden_index]

    ids_2, gather, windows = _window_ids(content_2, length, pipe.tokenizer_2)
    text_encoder_2 = pipe.text_encoder_2
    out_2 = text_encoder_2(ids_2.to(get_module_execution_device(text_encoder_2)), output_hidden_states=True)
    if out_2[0].ndim != 2:
        raise ValueError("`text_encoder_2` must return pooled projections first (a CLIPTextModelWithProjection)")
    rows = len(content_2)
    pooled = out_2[0].reshape(rows, windows, -1)[:, 0]
    states_2 = out_2.hidden_states[hidden_index]
    if windows == 1 and length == WINDOW_LENGTH:
        aligned_2 = states_2  # positions already coincide; skipping the gather keeps stock outputs bit-identical
    else:
        flat = states_2.reshape(rows, windows * WINDOW_LENGTH, -1)
        index = gather.to(flat.device)[..., None].expand(-1, -1, flat.shape[-1])
        aligned_2 = torch.gather(flat, 1, index)
    return torch.concat([states_1, aligned_2.to(states_1.device)], dim=-1), pooled


def _stretched_forward(text_encoder_2: nn.Module, ids: torch.Tensor):
    """Run bigG with its position table temporarily stretched to `ids.shape[1]` rows by KPS."""
    embeddings = next(
        (m for m in text_encoder_2.modules() if isinstance(getattr(m, "position_embedding", None), nn.Embedding)),
        None,
    )
    if embeddings is None:
        raise ValueError("`text_encoder_2` has no `position_embedding` table to stretch (expected a CLIP text model)")
    original = embeddings.position_embedding
    stretched = nn.Embedding.from_pretrained(stretch_position_embedding(original.weight), freeze=True)
    embeddings.position_embedding = stretched.to(original.weight.device)
    try:
        position_ids = torch.arange(ids.shape[1], device=ids.device)[None]
        return text_encoder_2(ids, position_ids=position_ids, output_hidden_states=False)
    finally:
        embeddings.position_embedding = original


@torch.no_grad()
def _encode_paper(pipe, content_1, content_2, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    # The original recipe tokenizes both prompts with open_clip's tokenizer: zero ("!") padding for both encoders.
    pad = pipe.tokenizer_2.pad_token_id
    tokenizer = pipe.tokenizer
    ids_1, _ = _padded_ids(content_1, length, tokenizer.bos_token_id, tokenizer.eos_token_id, pad)
    ids_2, _ = _padded_ids(content_2, length, pipe.tokenizer_2.bos_token_id, pipe.tokenizer_2.eos_token_id, pad)
    states_1 = pipe.text_encoder(ids_1.to(get_module_execution_device(pipe.text_encoder))).last_hidden_state
    out_2 = _stretched_forward(pipe.text_encoder_2, ids_2.to(get_module_execution_device(pipe.text_encoder_2)))
    if out_2[0].ndim != 2:
        raise ValueError("`text_encoder_2` must return pooled projections first (a CLIPTextModelWithProjection)")
    return torch.concat([states_1, out_2.last_hidden_state.to(states_1.device)], dim=-1), out_2[0]


def _warn_truncation(pipe, contents: list[tuple[list[list[int]], object]], limit: int) -> None:
    removed = [tokenizer.decode(ids[limit:]) for content, tokenizer in contents for ids in content if len(ids) > limit]
    if removed:
        logger.warning(
            f"LongCLIP-SDXL reads at most {limit + 2} tokens per prompt; this part of your input was truncated: "
            f"{removed}"
        )


def _set_lora_scale(pipe, lora_scale: float | None) -> None:
    if lora_scale is None or not isinstance(pipe, StableDiffusionXLLoraLoaderMixin):
        return
    pipe._lora_scale = lora_scale
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        if encoder is None:
            continue
        if USE_PEFT_BACKEND:
            scale_lora_layers(encoder, lora_scale)
        elif adjust_lora_scale_text_encoder is not None:
            adjust_lora_scale_text_encoder(encoder, lora_scale)


def _unset_lora_scale(pipe, lora_scale: float | None) -> None:
    if not (isinstance(pipe, StableDiffusionXLLoraLoaderMixin) and USE_PEFT_BACKEND):
        return
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        if encoder is not None:
            unscale_lora_layers(encoder, lora_scale)


def _repeat(embeds: torch.Tensor, times: int) -> torch.Tensor:
    return embeds.repeat_interleave(times, dim=0) if times != 1 else embeds


def encode_long_prompt(
    pipe,
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
    *,
    mode: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Drop-in replacement for SDXL's `encode_prompt` that reads LongCLIP-L's 248 tokens.

    Arguments and return values are those of `StableDiffusionXLPipeline.encode_prompt`: `(prompt_embeds,
    negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)`. Positive and negative
    embeddings share one sequence length (the longer of the two).

    Args:
        pipe: An SDXL pipeline whose `text_encoder`/`tokenizer` are LongCLIP-L (or any CLIP-L pair).
        mode: `"chunked"` or `"paper"`; defaults to the mode `enable_long_prompts` stored on `pipe`.
    """
    mode = mode or getattr(pipe, "long_prompt_mode", "chunked")
    max_positions, _ = _check_components(pipe, mode)
    device = device or pipe._execution_device
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}")
    prompt = _as_list(prompt, "prompt")
    prompt_2 = _as_list(prompt_2, "prompt_2")
    if prompt is None and prompt_embeds is None:
        raise ValueError("Provide either `prompt` or `prompt_embeds`")
    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
    if prompt_2 is not None and len(prompt_2) != batch_size:
        raise ValueError(f"`prompt_2` has {len(prompt_2)} entries but `prompt` has {batch_size}")
    if mode == "paper" and clip_skip is not None:
        logger.warning("mode='paper' uses the final layer of both encoders; `clip_skip` is ignored")

    zero_negative = negative_prompt is None and pipe.config.force_zeros_for_empty_prompt
    encode_negative = do_classifier_free_guidance and negative_prompt_embeds is None and not zero_negative
    negative_1 = negative_2 = None
    if encode_negative:
        negative_prompt = negative_prompt or ""
        negative_prompt_2 = negative_prompt_2 or negative_prompt
        negative_1 = batch_size * [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
        negative_2 = batch_size * [negative_prompt_2] if isinstance(negative_prompt_2, str) else negative_prompt_2
        negative_1 = _as_list(negative_1, "negative_prompt")
        negative_2 = _as_list(negative_2, "negative_prompt_2")
        for name, values in (("negative_prompt", negative_1), ("negative_prompt_2", negative_2)):
            if len(values) != batch_size:
                raise ValueError(
                    f"`{name}` has batch size {len(values)} but `prompt` has batch size {batch_size}; they must match"
                )

    _set_lora_scale(pipe, lora_scale)
    try:
        pieces = []  # (content, tokenizer) pairs, for the joint length and the truncation warning
        if prompt_embeds is None:
            positive = (
                _content_ids(pipe, prompt, pipe.tokenizer),
                _content_ids(pipe, prompt_2 or prompt, pipe.tokenizer_2),
            )
            pieces += [(positive[0], pipe.tokenizer), (positive[1], pipe.tokenizer_2)]
        if encode_negative:
            negative = (
                _content_ids(pipe, negative_1, pipe.tokenizer),
                _content_ids(pipe, negative_2, pipe.tokenizer_2),
            )
            pieces += [(negative[0], pipe.tokenizer), (negative[1], pipe.tokenizer_2)]

        if mode == "paper":
            length = max_positions
        elif prompt_embeds is not None:
            # As stock: a negative next to precomputed positive embeddings takes their length.
            length = prompt_embeds.shape[1]
            if length > max_positions:
                raise ValueError(f"`prompt_embeds` has {length} positions; `text_encoder` has only {max_positions}")
        else:
            length = _sequence_length([ids for content, _ in pieces for ids in content], max_positions)
            if negative_prompt_embeds is not None and do_classifier_free_guidance:
                if negative_prompt_embeds.shape[1] < length:
                    raise ValueError(
                        f"`negative_prompt_embeds` has {negative_prompt_embeds.shape[1]} positions but the prompt "
                        f"needs {length}; encode the negative with this pipeline too"
                    )
                length = negative_prompt_embeds.shape[1]
        if prompt_embeds is None:
            _warn_truncation(pipe, pieces, max_positions - 2)

        def encode(content_1, content_2, hidden_index):
            if mode == "paper":
                return _encode_paper(pipe, content_1, content_2, length)
            return _encode_chunked(pipe, content_1, content_2, length, hidden_index)

        if prompt_embeds is None:
            hidden_index = -2 if clip_skip is None else -(clip_skip + 2)
            prompt_embeds, pooled = encode(*positive, hidden_index)
            if pooled_prompt_embeds is None:
                pooled_prompt_embeds = pooled
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if zero_negative:
                negative_prompt_embeds = torch.zeros_like(prompt_embeds)
                negative_pooled_prompt_embeds = torch.zeros_like(pooled_prompt_embeds)
            else:
                # Stock SDXL reads the penultimate layer for negatives whatever `clip_skip` says; so do we.
                negative_prompt_embeds, pooled = encode(*negative, -2)
                if negative_pooled_prompt_embeds is None:
                    negative_pooled_prompt_embeds = pooled
    finally:
        _unset_lora_scale(pipe, lora_scale)

    dtype = pipe.text_encoder_2.dtype
    prompt_embeds = _repeat(prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt)
    pooled_prompt_embeds = _repeat(pooled_prompt_embeds, num_images_per_prompt)
    if do_classifier_free_guidance:
        negative_prompt_embeds = _repeat(negative_prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt)
        negative_pooled_prompt_embeds = _repeat(negative_pooled_prompt_embeds, num_images_per_prompt)
    return prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds


def enable_long_prompts(pipe, mode: str = "chunked"):
    """Make an SDXL pipeline read up to 248-token prompts through its LongCLIP-L `text_encoder`.

    Replaces `pipe.encode_prompt` on this instance only; the signature and return values stay stock.

    Args:
        pipe: Any diffusers SDXL pipeline with `text_encoder`, `tokenizer`, `text_encoder_2`, `tokenizer_2`.
        mode: `"chunked"` (default) or `"paper"` (see the module docstring).

    Returns:
        `pipe`, for chaining.

    Raises:
        ValueError: on an unknown mode or a tokenizer whose length does not match its encoder's positions.
    """
    if not callable(getattr(pipe, "encode_prompt", None)) or not hasattr(pipe, "text_encoder_2"):
        raise TypeError(f"`pipe` must be a diffusers SDXL pipeline, got {type(pipe).__name__}")
    _check_components(pipe, mode)
    pipe.long_prompt_mode = mode
    if not isinstance(pipe, LongCLIPStableDiffusionXLPipeline):
        pipe.encode_prompt = types.MethodType(encode_long_prompt, pipe)
    return pipe


def disable_long_prompts(pipe):
    """Undo `enable_long_prompts`: the pipeline's own `encode_prompt` is used again."""
    if "encode_prompt" in vars(pipe):
        del pipe.encode_prompt
    return pipe


class LongCLIPStableDiffusionXLPipeline(StableDiffusionXLPipeline):
    """`StableDiffusionXLPipeline` whose `encode_prompt` reads 248-token prompts through LongCLIP-L.

    Load it with `custom_pipeline=<adapter repo or folder>` and pass the adapter's `text_encoder` and `tokenizer`;
    switch modes with `set_long_prompt_mode("paper")`.
    """

    long_prompt_mode = "chunked"

    def set_long_prompt_mode(self, mode: str) -> None:
        """Choose `"chunked"` (default) or `"paper"` encoding."""
        _check_components(self, mode)
        self.long_prompt_mode = mode

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
        """Stock `encode_prompt` signature and outputs, long prompts included (see `encode_long_prompt`)."""
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
