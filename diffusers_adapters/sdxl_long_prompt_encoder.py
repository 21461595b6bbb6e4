"""Long, weighted SDXL prompts: LongCLIP-L in one pass, OpenCLIP bigG in 77-token windows or stretched to 248.

`encode_long_prompt(pipe, ...)` has the arguments and return values of SDXL's `encode_prompt`; `pipe` is any object
with the SDXL text components (`tokenizer`, `text_encoder`, `tokenizer_2`, `text_encoder_2`, `config`): a classic
SDXL pipeline, a modular SDXL pipeline, or the refiner (`tokenizer` / `text_encoder` None: bigG only).

Modes:

- `chunked` (default): LongCLIP-L reads up to 248 tokens in one pass; bigG reads the same prompt in
  `[BOS] + 75 tokens + [EOS]` windows, all windows in one batched forward, and its states are gathered back so that
  output position `p` holds the same token for both encoders. The pooled embedding is bigG's from the first window,
  as stock. The sequence length is `min(248, 77 * ceil(n / 77))` for `n` tokens, so prompts of at most 77 tokens run
  exactly stock's forwards and give stock's outputs bit for bit.
- `paper`: the Long-CLIP authors' SDXL recipe. Both encoders read 248 tokens; bigG's 77 position embeddings are
  stretched to 248 by knowledge-preserved stretching (no fine-tuning); both encoders' final-layer outputs after the
  final layer norm are used and the pooled embedding comes from the stretched bigG. `clip_skip` is ignored.

Without `text_encoder` (the refiner) the embeddings are bigG's alone, up to 248 tokens in either mode.

Weights (syntax in `sdxl_prompt_weights`) act per token on both encoders' hidden states, at every position:

- `offset` (default, as ComfyUI's default and compel): `e' = n + w * (e - n)`, where `e` is the token's state and
  `n` the state of the empty prompt `""` from the same layer: at the same slot of its single 77-token window for
  bigG in chunked mode, at the same position otherwise. Only positions with `w != 1` change; the pooled embedding
  is not weighted.
- `mean-restore` (A1111): `e' = w * e`, then each row of each encoder is rescaled so that the mean over all its
  positions and channels is the unweighted one. This touches every position of a weighted row.
- `off`: brackets and `BREAK` are plain text.

A `BREAK` pads the token stream up to the next multiple of 75 (with each tokenizer's pad token in chunked mode, with
`!` in paper mode, whose padding that is), so the text after it starts a bigG window, at the same output positions
in both encoders.

A prompt without weight syntax is tokenized and encoded exactly as without weighting.

Work that is identical across rows is done once: within the prompts and within the negatives, identical rows
(repeated negatives) and identical bigG windows (all-padding windows of shorter rows) are forwarded once, in order of
first appearance, and shared by index, so a batch without repeats runs exactly the forward it ran before. bigG's
pooled projection is applied to the rows of the whole batch, so deduplicated outputs are the undeduplicated ones bit
for bit (see `_projected_forward`). Prompts of at most 77 tokens without weights keep stock's forwards, repeats
included (stock's outputs bit for bit). The empty-prompt reference of weighted prompts has a forward of its own, so
unweighted positions of a weighted prompt are exactly those of the same prompt without weights. That forward is the
offset rule's only extra cost: one row per encoder and layer in each call (in chunked mode a single 77-token window for
bigG), shared by the weighted guidance branches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.utils import USE_PEFT_BACKEND, logging, scale_lora_layers, unscale_lora_layers
from torch import nn

from .sdxl_prompt_weights import has_weight_syntax, parse_prompt_weights

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

__all__ = [
    "MODES",
    "WEIGHTINGS",
    "check_components",
    "encode_long_prompt",
    "stretch_position_embedding",
    "tokenize_weighted",
]

MODES = ("chunked", "paper")
WEIGHTINGS = ("offset", "mean-restore", "off")
# bigG (and every stock CLIP) was trained on 77 positions: [BOS] + 75 tokens + [EOS].
WINDOW_LENGTH = 77
WINDOW_CONTENT = WINDOW_LENGTH - 2
# Knowledge-preserved stretching keeps the first 20 (well-trained) positions and interpolates the rest 4x.
KPS_KEEP = 20
KPS_FACTOR = 4
# Stands for the padding a BREAK inserts until the padded ids are built (each encoder pads with its own token).
BREAK_FILLER = -1


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


def _stretched_positions(positions: int) -> int:
    return KPS_FACTOR * positions - (KPS_FACTOR - 1) * KPS_KEEP


# ---------------------------------------------------------------- validation


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


def check_components(pipe, mode: str) -> int:
    """Validate the text components for `mode` before any forward; return the longest sequence it can encode.

    `tokenizer`/`text_encoder` may both be None (the SDXL refiner: bigG only, up to 248 tokens through windows or
    stretching); one without the other is an error.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    for name in ("tokenizer_2", "text_encoder_2"):
        if getattr(pipe, name, None) is None:
            raise ValueError(f"Long prompts need the pipeline's `{name}` (OpenCLIP bigG), which is None")
    tokenizer, text_encoder = getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)
    if (tokenizer is None) != (text_encoder is None):
        present, missing = ("tokenizer", "text_encoder") if text_encoder is None else ("text_encoder", "tokenizer")
        raise ValueError(
            f"The pipeline has a `{present}` but its `{missing}` is None: pass both of the LongCLIP-L pair (the "
            f"adapter repo's `text_encoder/` and `tokenizer/`), or neither for a bigG-only refiner."
        )
    second = _check_pair(pipe.tokenizer_2, pipe.text_encoder_2, "tokenizer_2", "text_encoder_2")
    if second < WINDOW_LENGTH:
        raise ValueError(f"`text_encoder_2` needs at least {WINDOW_LENGTH} positions, has {second}")
    stretched = _stretched_positions(second)
    if text_encoder is None:
        return stretched
    first = _check_pair(tokenizer, text_encoder, "tokenizer", "text_encoder")
    if mode == "paper" and first != stretched:
        raise ValueError(
            f"mode='paper' stretches `text_encoder_2` from {second} to {stretched} positions and needs a "
            f"`text_encoder` with as many, got {first}. Use the 248-position LongCLIP-L text encoder."
        )
    return first


def check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}")


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


def _check_embeds(value, name: str, ndim: int, batch_size: int | None = None) -> None:
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        shape = "[batch, positions, channels]" if ndim == 3 else "[batch, channels]"
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"`{name}` must be a {shape} tensor, got {got}")
    if batch_size is not None and value.shape[0] != batch_size:
        raise ValueError(f"`{name}` has batch size {value.shape[0]} but the prompts have {batch_size}")


# ---------------------------------------------------------------- tokenization


def _is_plain(parts: list[list[tuple[str, float]]], prompt: str) -> bool:
    """A parse that found only literal text (e.g. an unmatched bracket) stands for the prompt as it is."""
    return len(parts) == 1 and (not parts[0] or (len(parts[0]) == 1 and parts[0][0] == (prompt, 1.0)))


def tokenize_weighted(
    tokenizer, prompts: list[str], *, weighting: str = "offset", convert=None
) -> tuple[list[list[int]], list[list[float] | None]]:
    """Token ids (no BOS/EOS, untruncated) and per-token weights of each prompt.

    Plain prompts are tokenized whole, as without weighting, and get weights None. Weighted prompts are tokenized
    run by run (in one tokenizer call for the whole batch); a BREAK followed by tokens pads the ids with
    `BREAK_FILLER` up to the next multiple of 75 (nothing when a window has just started).

    Args:
        tokenizer: A CLIP tokenizer.
        prompts: The prompts.
        weighting: `"off"` reads every prompt as plain text.
        convert: Optional `texts -> texts` applied before tokenizing (textual-inversion token expansion).

    Returns:
        `(ids, weights)`, one entry per prompt; `weights[i]` is None when prompt `i` has no weight other than 1.
    """
    parsed: list[list[list[tuple[str, float]]] | None] = []
    for prompt in prompts:
        parts = parse_prompt_weights(prompt) if weighting != "off" and has_weight_syntax(prompt) else None
        parsed.append(None if parts is not None and _is_plain(parts, prompt) else parts)
    texts = [prompt for prompt, parts in zip(prompts, parsed) if parts is None]
    runs = [(text, weight) for parts in parsed if parts is not None for part in parts for text, weight in part]
    texts += [text for text, _ in runs]
    if convert is not None and texts:
        texts = convert(texts)
    # verbose=False: windows handle the length, so transformers' "will result in indexing errors" would mislead.
    tokenized = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).input_ids if texts else []
    plain_ids = iter(tokenized[: len(texts) - len(runs)])
    run_ids = iter(tokenized[len(texts) - len(runs) :])

    all_ids: list[list[int]] = []
    all_weights: list[list[float] | None] = []
    for prompt, parts in zip(prompts, parsed):
        if parts is None:
            all_ids.append(list(next(plain_ids)))
            all_weights.append(None)
            continue
        ids: list[int] = []
        weights: list[float] = []
        for index, part in enumerate(parts):
            after_break = index > 0
            for _, weight in part:
                if not math.isfinite(weight):
                    raise ValueError(f"Prompt {prompt!r} has a weight of {weight}; weights must be finite numbers")
                piece = next(run_ids)
                # The padding goes in when tokens follow the BREAK, so a trailing BREAK adds nothing.
                filler = -len(ids) % WINDOW_CONTENT if after_break and piece else 0
                ids += [BREAK_FILLER] * filler + piece
                weights += [1.0] * filler + [weight] * len(piece)
                after_break = after_break and not piece
        all_ids.append(ids)
        all_weights.append(weights if any(weight != 1.0 for weight in weights) else None)
    return all_ids, all_weights


# ---------------------------------------------------------------- token layouts


def _sequence_length(content: list[list[int]], max_positions: int) -> int:
    needed = max(len(ids) for ids in content) + 2
    return min(max_positions, WINDOW_LENGTH * math.ceil(needed / WINDOW_LENGTH))


def _padded_ids(content: list[list[int]], length: int, bos: int, eos: int, pad: int) -> tuple[torch.Tensor, list[int]]:
    """`[BOS] + content + [EOS] + pad` rows of `length`, content cut to `length - 2`; also the kept content lengths."""
    limit = length - 2
    kept = [min(len(ids), limit) for ids in content]
    rows = [[bos, *ids[:limit], eos] + [pad] * (limit - n) for ids, n in zip(content, kept)]
    ids = torch.tensor(rows, dtype=torch.long)
    return torch.where(ids == BREAK_FILLER, pad, ids), kept


def _position_weights(weights: list[list[float] | None], length: int) -> torch.Tensor:
    """`[rows, length]` weight of the token at each output position (1 at BOS, EOS, padding and BREAK filler)."""
    limit = length - 2
    rows = []
    for row in weights:
        row = [] if row is None else row[:limit]
        rows.append([1.0, *row] + [1.0] * (length - 1 - len(row)))
    return torch.tensor(rows, dtype=torch.float32)


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


def _unique_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of `ids` in order of first appearance, and for each row the index of its distinct row.

    First-appearance order keeps a batch without repeats exactly as it is, so it runs the same forward.
    """
    unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
    rows = torch.arange(ids.shape[0])
    first = torch.full((unique.shape[0],), ids.shape[0], dtype=torch.long).scatter_reduce(
        0, inverse, rows, reduce="amin"
    )
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0])
    return unique[order], rank[inverse]


def _forward(run, ids: torch.Tensor, deduplicate: bool):
    """`run` on the distinct rows of `ids`; returns its output and, per row of `ids`, the output row to read."""
    if not deduplicate:
        return run(ids), torch.arange(ids.shape[0])
    unique, index = _unique_rows(ids)
    return run(unique), index


def _projected_forward(text_encoder: nn.Module, call):
    """Run `call()`, a forward of the bigG `text_encoder`; return its output and a function of row indices giving
    the pooled projections of those rows.

    The encoder's states of a row do not depend on how many rows share its forward (its matrix products have 77 or
    more rows per sequence), but a small-batch matrix product does: the projection of a few pooled rows rounds
    differently from the same rows in a larger batch. So the projection is applied again, through the encoder's own
    `text_projection` module, to the pooled rows of the whole undeduplicated batch, which makes deduplicated and
    undeduplicated outputs identical. The projection's input is read with a forward pre-hook, PyTorch's public
    protocol for it. Without a `text_projection` module the forward's own projections are used.
    """
    projection = getattr(text_encoder, "text_projection", None)
    captured = []
    handle = (
        projection.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        if isinstance(projection, nn.Module)
        else None
    )
    try:
        output = call()
    finally:
        if handle is not None:
            handle.remove()
    _check_projection(output)
    pooled = output[0]
    if len(captured) != 1 or captured[0].shape[0] != pooled.shape[0]:
        return output, lambda index: pooled[index.to(pooled.device)]
    pooled_input = captured[0]

    def project(index: torch.Tensor) -> torch.Tensor:
        if torch.equal(index, torch.arange(pooled.shape[0])):
            return pooled  # the forward already projected exactly these rows together
        return projection(pooled_input[index.to(pooled_input.device)])

    return output, project


# ---------------------------------------------------------------- weighting


def _apply_weights(states: torch.Tensor, weights: torch.Tensor, weighting: str, empty) -> torch.Tensor:
    """Weight `[rows, length, dim]` states per position (see the module docstring for the rules).

    `empty()` returns the empty prompt's states at the same positions; only the offset rule needs (and runs) it.
    """
    weights = weights.to(states.device)
    w = weights[..., None]
    if weighting == "offset":
        reference = empty().float()
        weighted = reference + w * (states.float() - reference)
        # Unweighted positions keep their states untouched (not recomputed through the formula).
        return torch.where(w != 1, weighted.to(states.dtype), states)
    scaled = states.float() * w
    restored = scaled * (states.float().mean(dim=(1, 2), keepdim=True) / scaled.mean(dim=(1, 2), keepdim=True))
    touched = (weights != 1).any(dim=1)[:, None, None]
    return torch.where(touched, restored.to(states.dtype), states)


class _EmptyPromptStates:
    """The empty prompt's states per encoder and layer, forwarded at most once per `encode_prompt` call.

    Both guidance branches of a call weigh against the same reference; forwarding the same ids through the same
    encoder once and sharing the result gives exactly what two forwards give.
    """

    def __init__(self):
        self._states: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, forward) -> torch.Tensor:
        if key not in self._states:
            self._states[key] = forward()
        return self._states[key]


# ---------------------------------------------------------------- encoders


def _check_projection(output) -> None:
    if output[0].ndim != 2:
        raise ValueError("`text_encoder_2` must return pooled projections first (a CLIPTextModelWithProjection)")


def _first_chunked(pipe, content, weights, length, hidden_index, weighting, deduplicate, empties) -> torch.Tensor:
    """LongCLIP-L (or stock CLIP-L) states `[rows, length, dim]` from one pass over the whole prompt."""
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ids, _ = _padded_ids(content, length, *special)
    device = get_module_execution_device(text_encoder)

    def run(x):
        return text_encoder(x.to(device), output_hidden_states=True).hidden_states[hidden_index]

    states, index = _forward(run, ids, deduplicate)
    if deduplicate:
        states = states[index.to(states.device)]
    if any(row is not None for row in weights):
        # The empty prompt gets a forward of its own, so the prompts' forward (and every unweighted position) is
        # exactly the one an unweighted call runs.
        def empty():
            return empties.get(("first", hidden_index), lambda: run(_padded_ids([[]], length, *special)[0]))

        states = _apply_weights(states, _position_weights(weights, length), weighting, empty)
    return states


def _second_chunked(pipe, content, weights, length, hidden_index, weighting, deduplicate, empties):
    """bigG states `[rows, length, dim]` realigned from 77-token windows, and pooled `[rows, dim]` of window 0."""
    tokenizer, text_encoder = pipe.tokenizer_2, pipe.text_encoder_2
    ids, gather, windows = _window_ids(content, length, tokenizer)
    device = get_module_execution_device(text_encoder)

    def run(x):
        output, project = _projected_forward(
            text_encoder, lambda: text_encoder(x.to(device), output_hidden_states=True)
        )
        return project, output.hidden_states[hidden_index]

    (project, states), index = _forward(run, ids, deduplicate)
    rows = len(content)
    window_rows = index.to(states.device).reshape(rows, windows)
    # Projected at the undeduplicated batch size (see `_projected_forward`), then window 0 of each row, as stock.
    pooled = project(index)[torch.arange(rows) * windows]
    if windows == 1 and length == WINDOW_LENGTH:
        # Positions already coincide; skipping the gather keeps stock outputs bit-identical.
        aligned = states[window_rows[:, 0]] if deduplicate else states
    else:
        gather = gather.to(states.device)
        flat_index = window_rows.gather(1, gather // WINDOW_LENGTH) * WINDOW_LENGTH + gather % WINDOW_LENGTH
        aligned = states.reshape(-1, states.shape[-1])[flat_index]
    if any(row is not None for row in weights):
        # "" as stock tokenizes it (one window), in a forward of its own (see `_first_chunked`).
        def empty():
            window = empties.get(
                ("second", hidden_index), lambda: run(_window_ids([[]], WINDOW_LENGTH, tokenizer)[0])[1][0]
            )
            return window[gather.to(window.device) % WINDOW_LENGTH]

        aligned = _apply_weights(aligned, _position_weights(weights, length), weighting, empty)
    return aligned, pooled


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


def _paper(pipe, content_1, weights_1, content_2, weights_2, length, weighting, deduplicate, empties):
    """Both encoders over `length` positions (bigG stretched), final-layer states; pooled from stretched bigG."""
    # The original recipe tokenizes both prompts with open_clip's tokenizer: zero ("!") padding for both encoders.
    pad = pipe.tokenizer_2.pad_token_id

    def encode(name, tokenizer, content, weights, forward):
        special = (tokenizer.bos_token_id, tokenizer.eos_token_id, pad)
        (project, states), index = _forward(forward, _padded_ids(content, length, *special)[0], deduplicate)
        pooled = None if project is None else project(index)
        if deduplicate:
            states = states[index.to(states.device)]
        if any(row is not None for row in weights):

            def empty():
                return empties.get((name,), lambda: forward(_padded_ids([[]], length, *special)[0])[1])

            states = _apply_weights(states, _position_weights(weights, length), weighting, empty)
        return states, pooled

    text_encoder_2 = pipe.text_encoder_2
    device_2 = get_module_execution_device(text_encoder_2)

    def stretched(x):
        output, project = _projected_forward(
            text_encoder_2, lambda: _stretched_forward(text_encoder_2, x.to(device_2))
        )
        return project, output.last_hidden_state

    states_2, pooled = encode("paper second", pipe.tokenizer_2, content_2, weights_2, stretched)
    if getattr(pipe, "text_encoder", None) is None:
        return states_2, pooled
    text_encoder = pipe.text_encoder
    device_1 = get_module_execution_device(text_encoder)

    def first(x):
        return None, text_encoder(x.to(device_1)).last_hidden_state

    states_1, _ = encode("paper first", pipe.tokenizer, content_1, weights_1, first)
    return torch.concat([states_1, states_2.to(states_1.device)], dim=-1), pooled


# ---------------------------------------------------------------- encode_prompt


def _warn_truncation(contents: list[tuple[list[list[int]], object]], limit: int) -> None:
    removed = []
    for content, tokenizer in contents:
        for ids in content:
            if len(ids) > limit:
                removed.append(tokenizer.decode([token for token in ids[limit:] if token != BREAK_FILLER]))
    # Both tokenizers read the same prompt and a negative repeats per row: name each removed text once.
    removed = list(dict.fromkeys(removed))
    if removed:
        logger.warning(
            f"LongCLIP-SDXL reads at most {limit + 2} tokens per prompt; this part of your input was truncated: "
            f"{removed}"
        )


def _set_lora_scale(pipe, lora_scale: float | None) -> None:
    if lora_scale is None or not isinstance(pipe, StableDiffusionXLLoraLoaderMixin):
        return
    pipe._lora_scale = lora_scale
    for encoder in (getattr(pipe, "text_encoder", None), pipe.text_encoder_2):
        if encoder is None:
            continue
        if USE_PEFT_BACKEND:
            scale_lora_layers(encoder, lora_scale)
        elif adjust_lora_scale_text_encoder is not None:
            adjust_lora_scale_text_encoder(encoder, lora_scale)


def _unset_lora_scale(pipe, lora_scale: float | None) -> None:
    if not (isinstance(pipe, StableDiffusionXLLoraLoaderMixin) and USE_PEFT_BACKEND):
        return
    for encoder in (getattr(pipe, "text_encoder", None), pipe.text_encoder_2):
        if encoder is not None:
            unscale_lora_layers(encoder, lora_scale)


def _repeat(embeds: torch.Tensor, times: int) -> torch.Tensor:
    return embeds.repeat_interleave(times, dim=0) if times != 1 else embeds


def _textual_inversion(pipe, tokenizer):
    """diffusers' multi-vector token expansion for `tokenizer`, or None when it cannot change any text."""
    if not isinstance(pipe, TextualInversionLoaderMixin):
        return None
    special = set(tokenizer.all_special_tokens)
    added = [token for token in tokenizer.added_tokens_encoder if token not in special]
    if not added:
        return None

    def convert(texts: list[str]) -> list[str]:
        # Only texts holding an added token go through diffusers' conversion: it tokenizes the whole text, and
        # transformers warns about "indexing errors" for every text longer than the tokenizer's 77 tokens.
        return [
            pipe.maybe_convert_prompt(text, tokenizer) if any(token in text for token in added) else text
            for text in texts
        ]

    return convert


class _Branch:
    """One side of guidance (the prompts or the negatives), tokenized for each encoder."""

    def __init__(self, pipe, first: list[str] | None, second: list[str], weighting: str, hidden_index: int):
        self.content_1 = self.weights_1 = None
        if getattr(pipe, "text_encoder", None) is not None:
            self.content_1, self.weights_1 = tokenize_weighted(
                pipe.tokenizer, first, weighting=weighting, convert=_textual_inversion(pipe, pipe.tokenizer)
            )
        self.content_2, self.weights_2 = tokenize_weighted(
            pipe.tokenizer_2, second, weighting=weighting, convert=_textual_inversion(pipe, pipe.tokenizer_2)
        )
        self.hidden_index = hidden_index

    @property
    def contents(self) -> list[list[list[int]]]:
        return [content for content in (self.content_1, self.content_2) if content is not None]

    @property
    def weighted(self) -> bool:
        return any(row is not None for weights in (self.weights_1 or [], self.weights_2) for row in weights)

    def encode(self, pipe, mode: str, length: int, weighting: str, deduplicate: bool, empties: _EmptyPromptStates):
        if mode == "paper":
            return _paper(
                pipe,
                self.content_1,
                self.weights_1,
                self.content_2,
                self.weights_2,
                length,
                weighting,
                deduplicate,
                empties,
            )
        states_2, pooled = _second_chunked(
            pipe, self.content_2, self.weights_2, length, self.hidden_index, weighting, deduplicate, empties
        )
        if self.content_1 is None:
            return states_2, pooled
        states_1 = _first_chunked(
            pipe, self.content_1, self.weights_1, length, self.hidden_index, weighting, deduplicate, empties
        )
        return torch.concat([states_1, states_2.to(states_1.device)], dim=-1), pooled


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
    weighting: str | None = None,
    deduplicate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Drop-in replacement for SDXL's `encode_prompt` that reads long, weighted prompts.

    Arguments and return values are those of `StableDiffusionXLPipeline.encode_prompt`: `(prompt_embeds,
    negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)`. Encoded positive and negative
    embeddings share one sequence length (the longer of the two); precomputed embeddings of any length (compel's,
    for instance) pass through as stock passes them, and a prompt encoded next to them takes their length.

    Args:
        pipe: An SDXL pipeline (or modular SDXL pipeline) whose `text_encoder`/`tokenizer` are LongCLIP-L (or any
            CLIP-L pair), or None for the bigG-only refiner.
        mode: `"chunked"` or `"paper"`; defaults to `pipe.long_prompt_mode`, else `"chunked"`.
        weighting: `"offset"`, `"mean-restore"` or `"off"`; defaults to `pipe.long_prompt_weighting`, else
            `"offset"`.
        deduplicate: Forward identical rows and windows once (the default). `False` only serves measurements:
            the same values from more forwards (identical on CPU, where the encoders' per-sequence products do not
            depend on the batch size; a GPU library may pick other kernels for other batch sizes).

    Raises:
        ValueError, TypeError: on bad inputs or components, before any forward.
    """
    mode = mode or getattr(pipe, "long_prompt_mode", "chunked")
    weighting = weighting or getattr(pipe, "long_prompt_weighting", "offset")
    check_weighting(weighting)
    max_positions = check_components(pipe, mode)
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}")
    prompt = _as_list(prompt, "prompt")
    prompt_2 = _as_list(prompt_2, "prompt_2")
    if prompt is None and prompt_embeds is None:
        raise ValueError("Provide either `prompt` or `prompt_embeds`")
    _check_embeds(prompt_embeds, "prompt_embeds", 3)
    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
    if prompt_2 is not None and len(prompt_2) != batch_size:
        raise ValueError(f"`prompt_2` has {len(prompt_2)} entries but `prompt` has {batch_size}")
    if prompt_embeds is not None and pooled_prompt_embeds is None:
        raise ValueError("`prompt_embeds` needs `pooled_prompt_embeds` from the same encoder (as stock requires)")
    _check_embeds(pooled_prompt_embeds, "pooled_prompt_embeds", 2, batch_size)
    if do_classifier_free_guidance:
        _check_embeds(negative_prompt_embeds, "negative_prompt_embeds", 3, batch_size)
        if negative_prompt_embeds is not None and negative_pooled_prompt_embeds is None:
            raise ValueError("`negative_prompt_embeds` needs `negative_pooled_prompt_embeds` (as stock requires)")
    if mode == "paper" and clip_skip is not None:
        logger.warning("mode='paper' uses the final layer of both encoders; `clip_skip` is ignored")
    device = device or pipe._execution_device

    zero_negative = negative_prompt is None and pipe.config.force_zeros_for_empty_prompt
    encode_negative = do_classifier_free_guidance and negative_prompt_embeds is None and not zero_negative
    branches = {}
    if prompt_embeds is None:
        hidden_index = -2 if clip_skip is None else -(clip_skip + 2)
        branches["positive"] = _Branch(pipe, prompt, prompt_2 or prompt, weighting, hidden_index)
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
        # Stock SDXL reads the penultimate layer for negatives whatever `clip_skip` says; so do we.
        branches["negative"] = _Branch(pipe, negative_1, negative_2, weighting, -2)

    if branches:
        given_negative = negative_prompt_embeds if do_classifier_free_guidance else None
        length = _joint_length(branches, mode, max_positions, prompt_embeds, given_negative)
        tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if getattr(pipe, "text_encoder", None) is not None else []
        tokenizers = tokenizers or [pipe.tokenizer_2]
        _warn_truncation(
            [
                (content, tokenizer)
                for branch in branches.values()
                for content, tokenizer in zip(branch.contents, tokenizers)
            ],
            length - 2,
        )
        # Prompts of at most 77 tokens without weights run stock's very forwards, so they stay bitwise stock.
        stock_shaped = mode == "chunked" and length == WINDOW_LENGTH and not any(b.weighted for b in branches.values())
        _set_lora_scale(pipe, lora_scale)
        try:
            empties = _EmptyPromptStates()
            with torch.no_grad():  # not inference_mode: callbacks may later update these embeddings in place
                encoded = {
                    name: branch.encode(pipe, mode, length, weighting, deduplicate and not stock_shaped, empties)
                    for name, branch in branches.items()
                }
        finally:
            _unset_lora_scale(pipe, lora_scale)
        if "positive" in encoded:
            prompt_embeds, pooled = encoded["positive"]
            pooled_prompt_embeds = pooled if pooled_prompt_embeds is None else pooled_prompt_embeds
        if "negative" in encoded:
            negative_prompt_embeds, pooled = encoded["negative"]
            if negative_pooled_prompt_embeds is None:
                negative_pooled_prompt_embeds = pooled
    if do_classifier_free_guidance and negative_prompt_embeds is None:
        negative_prompt_embeds = torch.zeros_like(prompt_embeds)
        negative_pooled_prompt_embeds = torch.zeros_like(pooled_prompt_embeds)

    dtype = pipe.text_encoder_2.dtype
    prompt_embeds = _repeat(prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt)
    pooled_prompt_embeds = _repeat(pooled_prompt_embeds, num_images_per_prompt)
    if do_classifier_free_guidance:
        negative_prompt_embeds = _repeat(negative_prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt)
        negative_pooled_prompt_embeds = _repeat(negative_pooled_prompt_embeds, num_images_per_prompt)
    return prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds


def _joint_length(branches: dict, mode: str, max_positions: int, prompt_embeds, negative_prompt_embeds) -> int:
    """Sequence length of everything encoded in one call; precomputed embeddings next to it set or bound it."""
    if prompt_embeds is not None:
        # As stock: a negative encoded next to precomputed positive embeddings takes their length.
        length = prompt_embeds.shape[1]
        if length > max_positions:
            raise ValueError(
                f"`prompt_embeds` has {length} positions, and a text `negative_prompt` next to them would have to be "
                f"encoded at that length, but at most {max_positions} can be. Pass `negative_prompt_embeds` and "
                f"`negative_pooled_prompt_embeds` as well (compel returns both), or shorter `prompt_embeds`."
            )
        return length
    if mode == "paper":
        length = max_positions
    else:
        length = _sequence_length(
            [ids for branch in branches.values() for c in branch.contents for ids in c], max_positions
        )
    if negative_prompt_embeds is not None and "negative" not in branches:
        given = negative_prompt_embeds.shape[1]
        if given < length or given > max_positions or (mode == "paper" and given != length):
            raise ValueError(
                f"`negative_prompt_embeds` has {given} positions but the prompt is encoded at {length} "
                f"(mode={mode!r}, at most {max_positions}); pass matching `prompt_embeds` too, or encode the negative "
                f"with this pipeline"
            )
        length = given
    return length
