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


def refiner_components() -> dict:
    """Tiny SDXL refiner: bigG only (`text_encoder`/`tokenizer` None), a UNet cross-attending to bigG's 32 channels.

    Sized like diffusers' refiner tests: pooled 32 + 5 micro-conditioning values (with the aesthetic score) * 8.
    """
    from diffusers import UNet2DConditionModel

    components = tiny_components()
    config = dict(components["unet"].config)
    config.update(cross_attention_dim=32, projection_class_embeddings_input_dim=72)
    torch.manual_seed(0)
    return {**components, "unet": UNet2DConditionModel.from_config(config), "text_encoder": None, "tokenizer": None}


def token_ids(tokenizer, text: str) -> list[int]:
    """Content token ids of plain `text` (no BOS/EOS)."""
    return tokenizer(text, add_special_tokens=False).input_ids


def chunked_reference(
    components: dict,
    contents: list[list[int | None]],
    length: int,
    *,
    hidden_index: int = -2,
    weights: list[list[float]] | None = None,
    weighting: str = "offset",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked-mode embeddings of one guidance branch, built position by position from the encoders.

    LongCLIP (`text_encoder`) reads `[BOS] + content + [EOS] + pad` at `length`; bigG reads `[BOS] + 75 + [EOS]`
    windows whose last slot holds the following token when that is EOS or padding and EOS while the prompt goes on.
    Output position `p` takes stream token `p - 1` from its window; EOS or padding that opens a window is taken from
    the previous window's last slot. `None` in `contents` is BREAK padding (each encoder's own pad token).
    Every row and every window is forwarded, all in one batch: the undeduplicated computation, which the adapter's
    deduplicated result must equal exactly. Weights (`weights[row][token]`, 1 elsewhere)
    follow the documented rules against the empty prompt `""` in a forward of its own.

    Returns:
        `[rows, length, width_1 + width_2]` states (bigG only when `text_encoder` is None) and `[rows, width]`
        pooled embeddings from each row's first bigG window.
    """
    te1, tok1 = components.get("text_encoder"), components.get("tokenizer")
    te2, tok2 = components["text_encoder_2"], components["tokenizer_2"]
    limit = length - 2
    contents = [content[:limit] for content in contents]
    weights = [[1.0] * len(content) for content in contents] if weights is None else [row[:limit] for row in weights]
    position_weights = torch.tensor([[1.0, *row] + [1.0] * (length - 1 - len(row)) for row in weights])

    def weigh(states, empty, rows_weights):
        w = rows_weights[..., None]
        if weighting == "offset":
            return torch.where(w != 1, empty + w * (states - empty), states)
        scaled = states * w
        restored = scaled * (states.mean(dim=(1, 2), keepdim=True) / scaled.mean(dim=(1, 2), keepdim=True))
        return torch.where((rows_weights != 1).any(1)[:, None, None], restored, states)

    def every_forward(encoder, rows):
        return encoder(torch.tensor(rows), output_hidden_states=True)

    parts = []
    with torch.no_grad():
        if te1 is not None:
            pad1 = tok1.pad_token_id
            rows1 = [
                [tok1.bos_token_id, *(pad1 if t is None else t for t in c), tok1.eos_token_id]
                + [pad1] * (limit - len(c))
                for c in contents
            ]
            states1 = every_forward(te1, rows1).hidden_states[hidden_index]
            empty_row = [[tok1.bos_token_id, tok1.eos_token_id] + [pad1] * limit]
            empty1 = te1(torch.tensor(empty_row), output_hidden_states=True).hidden_states[hidden_index]
            parts.append(weigh(states1, empty1, position_weights))

        bos, eos, pad2 = tok2.bos_token_id, tok2.eos_token_id, tok2.pad_token_id
        windows = max(1, -(-limit // 75))
        window_rows, streams = [], []
        for content in contents:
            stream = [pad2 if t is None else t for t in content] + [eos] + [pad2] * (windows * 75 + 1)
            streams.append(stream)
            for k in range(windows):
                last = eos if 75 * k + 75 < len(content) else stream[75 * k + 75]
                window_rows.append([bos, *stream[75 * k : 75 * k + 75], last])
        output = every_forward(te2, window_rows)
        window_states, window_pooled = output.hidden_states[hidden_index], output[0]
        empty_window = [[bos, eos] + [pad2] * 75]
        empty2 = te2(torch.tensor(empty_window), output_hidden_states=True).hidden_states[hidden_index][0]
        rows2, empties, pooled = [], [], []
        for row, content in enumerate(contents):
            columns, slots = [window_states[row * windows][0]], [0]
            for j in range(length - 1):
                k, slot = divmod(j, 75)
                if slot == 0 and j > 0 and j >= len(content):
                    k, position = k - 1, 76  # EOS/padding opening a window also ends the previous one
                else:
                    position = 1 + slot
                columns.append(window_states[row * windows + k][position])
                slots.append(position)
            rows2.append(torch.stack(columns))
            empties.append(empty2[slots])
            pooled.append(window_pooled[row * windows])
        parts.append(weigh(torch.stack(rows2), torch.stack(empties), position_weights))
    return torch.cat(parts, dim=-1), torch.stack(pooled)


def joint_length(*contents: list[int | None], max_positions: int = 248) -> int:
    """Chunked-mode sequence length for content token lists (the longest plus BOS/EOS, rounded up to 77s)."""
    needed = max(len(content) for content in contents) + 2
    return min(max_positions, 77 * -(-needed // 77))


def kps_loop(old: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """Knowledge-preserved stretching written row by row, as the Long-CLIP SDXL script does it."""
    length, dim = old.shape
    new = torch.zeros(4 * length - 3 * keep, dim)
    new[:keep] = old[:keep]
    for i in range(length - 1 - keep):
        for k in range(4):
            new[4 * i + k + keep] = (4 - k) * old[i + keep] / 4 + k * old[i + 1 + keep] / 4
    for k in range(4):
        new[4 * length - 3 * keep - 4 + k] = old[length - 1] + k * (old[length - 1] - old[length - 2]) / 4
    return new


def stretched_big_g(text_encoder_2):
    """A separate 248-position copy of bigG with its position table stretched by `kps_loop`."""
    from transformers import CLIPTextModelWithProjection

    config = type(text_encoder_2.config)(**(text_encoder_2.config.to_dict() | {"max_position_embeddings": 248}))
    stretched = CLIPTextModelWithProjection(config).eval()
    state = dict(text_encoder_2.state_dict())
    table = text_encoder_2.text_model.embeddings.position_embedding.weight.detach()
    state["text_model.embeddings.position_embedding.weight"] = kps_loop(table)
    stretched.load_state_dict(state, strict=False)
    return stretched


def paper_reference(
    components: dict, ids: torch.Tensor, *, weights: torch.Tensor | None = None, weighting: str = "offset"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Long-CLIP authors' SDXL recipe on `[rows, 248]` open_clip-style ids (zero padding), optionally weighted.

    Both encoders' final-layer states (LongCLIP, then stretched bigG; bigG only without `text_encoder`), pooled from
    the stretched bigG. `weights` `[rows, 248]` follow the documented rules against the empty prompt's states.
    """
    te1 = components.get("text_encoder")
    stretched = stretched_big_g(components["text_encoder_2"])
    empty = torch.zeros(1, ids.shape[1], dtype=torch.long)
    empty[0, :2] = torch.tensor([49406, 49407])
    encoders = ([te1] if te1 is not None else []) + [stretched]
    parts = []
    with torch.no_grad():
        pooled = stretched(ids).text_embeds
        for encoder in encoders:
            states = encoder(ids).last_hidden_state
            if weights is not None:
                w = weights[..., None]
                if weighting == "offset":
                    reference = encoder(empty).last_hidden_state
                    states = torch.where(w != 1, reference + w * (states - reference), states)
                else:
                    scaled = states * w
                    ratio = states.mean(dim=(1, 2), keepdim=True) / scaled.mean(dim=(1, 2), keepdim=True)
                    states = torch.where((weights != 1).any(1)[:, None, None], scaled * ratio, states)
            parts.append(states)
    return torch.cat(parts, dim=-1), pooled
