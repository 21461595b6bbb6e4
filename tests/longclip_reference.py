"""An independent re-implementation of the original Long-CLIP forward (OpenAI CLIP architecture) for parity tests.

Written from the published algorithm: pre-LN residual blocks with QuickGELU MLPs, a causal text mask, text
positions `positional_embedding * mask1 + positional_embedding_res * mask2` (mask1 = first 20 rows), EOT pooling by
`argmax` of the token ids, projections applied as `x @ proj`, zero padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEEP = 20


def _block(x: torch.Tensor, sd: dict, prefix: str, heads: int, causal: bool) -> torch.Tensor:
    def layer_norm(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f"{prefix}{name}.weight"], sd[f"{prefix}{name}.bias"], 1e-5)

    batch, length, width = x.shape
    h = layer_norm(x, "ln_1")
    qkv = h @ sd[f"{prefix}attn.in_proj_weight"].T + sd[f"{prefix}attn.in_proj_bias"]
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / (width // heads) ** 0.5
    if causal:
        scores = scores + torch.full((length, length), float("-inf")).triu(1)
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
    x = x + attended @ sd[f"{prefix}attn.out_proj.weight"].T + sd[f"{prefix}attn.out_proj.bias"]
    h = layer_norm(x, "ln_2")
    h = h @ sd[f"{prefix}mlp.c_fc.weight"].T + sd[f"{prefix}mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + h @ sd[f"{prefix}mlp.c_proj.weight"].T + sd[f"{prefix}mlp.c_proj.bias"]


def _layers(sd: dict, prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in sd if key.startswith(prefix)})


def encode_text(sd: dict, tokens: torch.Tensor) -> torch.Tensor:
    """`tokens`: (batch, 248) zero-padded ids from the original tokenizer."""
    sd = {key: value.double() if value.is_floating_point() else value for key, value in sd.items()}
    positions = sd["positional_embedding"].shape[0]
    mask1 = torch.zeros(positions, 1, dtype=torch.float64)
    mask1[:KEEP] = 1
    mask2 = 1 - mask1
    x = sd["token_embedding.weight"][tokens]
    x = x + sd["positional_embedding"] * mask1 + sd["positional_embedding_res"] * mask2
    heads = sd["ln_final.weight"].shape[0] // 64 or 1
    for index in range(_layers(sd, "transformer.resblocks.")):
        x = _block(x, sd, f"transformer.resblocks.{index}.", heads, causal=True)
    x = F.layer_norm(x, x.shape[-1:], sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)
    pooled = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return (pooled @ sd["text_projection"]).float()


def encode_image(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    """`pixels`: (batch, 3, H, W) normalised images."""
    sd = {key: value.double() if value.is_floating_point() else value for key, value in sd.items()}
    conv = sd["visual.conv1.weight"]
    x = F.conv2d(pixels.double(), conv, stride=conv.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], 1e-5)
    heads = conv.shape[0] // 64 or 1
    for index in range(_layers(sd, "visual.transformer.resblocks.")):
        x = _block(x, sd, f"visual.transformer.resblocks.{index}.", heads, causal=False)
    x = F.layer_norm(x[:, 0], x.shape[-1:], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5)
    return (x @ sd["visual.proj"]).float()


def original_tokenize(texts: list[str], context_length: int = 248) -> torch.Tensor:
    """Long-CLIP's `tokenize(texts, context_length, truncate=True)`: BOS + BPE + EOS, cut with EOS last, zero pad."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    bos, eos = bpe.encoder["<start_of_text>"], bpe.encoder["<end_of_text>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [bos] + bpe.encode(text) + [eos]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eos
        result[row, : len(tokens)] = torch.tensor(tokens)
    return result
