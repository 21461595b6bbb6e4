"""Independent plain-torch re-implementation of upstream jina-clip-v2's forward, for parity tests.

Written from the public description of the upstream model, reading the *upstream* checkpoint layout directly:
jina XLM-RoBERTa (token + type embeddings, LayerNorm, post-LN blocks with fused Wqkv, half-split rotary embeddings
with the backbone's base, exact GELU MLP), LoRA adapters applied on the fly (`W + alpha/rank * B[t] @ A[t]`, embeddings
`W + alpha/rank * A[t] @ B[t]`), masked mean pooling; EVA02 ViT (CLS + absolute positions, pre-LN, q/v biases,
interleaved 2-D rotary on patch tokens, sub-LN, SwiGLU), final LayerNorm, CLS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PREFIX = "text_model.transformer.roberta."


def _lora_weight(sd: dict, name: str, task: int, scale: float, embedding: bool) -> torch.Tensor:
    base = sd[name + ".parametrizations.weight.original"].double()
    a = sd[name + ".parametrizations.weight.0.lora_A"][task].double()
    b = sd[name + ".parametrizations.weight.0.lora_B"][task].double()
    return base + scale * (torch.einsum("nr,rd->nd", a, b) if embedding else torch.einsum("or,ri->oi", b, a))


def _layer_norm(x: torch.Tensor, sd: dict, name: str, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[name + ".weight"].double() + sd[name + ".bias"].double()


def reference_text_embeddings(
    sd: dict, config: dict, backbone: dict, input_ids: torch.Tensor, pad_id: int = 1
) -> torch.Tensor:
    """Upstream text embedding (float64) for right- or left-padded `input_ids`.

    `backbone` is the referenced text config (`hf_model_name_or_path`) as upstream sees it; its
    `hf_model_config_kwargs` are applied on top here, as upstream does.
    """
    text_cfg = config["text_config"]
    kw = {**backbone, **text_cfg["hf_model_config_kwargs"]}
    task = kw["lora_adaptations"].index(text_cfg["default_lora_task"])
    scale = kw["lora_alpha"] / kw["lora_rank"]
    heads = kw["num_attention_heads"]
    eps, base = kw["layer_norm_eps"], kw["rotary_emb_base"]
    mask = input_ids != pad_id
    words = _lora_weight(sd, PREFIX + "embeddings.word_embeddings", task, scale, True)
    types = _lora_weight(sd, PREFIX + "embeddings.token_type_embeddings", task, scale, True)
    x = _layer_norm(words[input_ids] + types[0], sd, PREFIX + "emb_ln", eps)
    batch, length, hidden = x.shape
    head_dim = hidden // heads
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (L, hd/2)
    cos, sin = angle.cos(), angle.sin()

    def rotary(t: torch.Tensor) -> torch.Tensor:  # t: (B, L, H, hd), half-split convention
        first, second = t[..., : head_dim // 2], t[..., head_dim // 2 :]
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        return torch.cat((first * c - second * s, second * c + first * s), dim=-1)

    layer = 0
    while f"{PREFIX}encoder.layers.{layer}.norm1.weight" in sd:
        name = f"{PREFIX}encoder.layers.{layer}."
        wqkv = _lora_weight(sd, name + "mixer.Wqkv", task, scale, False)
        qkv = x @ wqkv.T + sd[name + "mixer.Wqkv.bias"].double()
        qkv = qkv.view(batch, length, 3, heads, head_dim)
        q, k, v = rotary(qkv[:, :, 0]), rotary(qkv[:, :, 1]), qkv[:, :, 2]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        attn = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, length, hidden)
        out = attn @ _lora_weight(sd, name + "mixer.out_proj", task, scale, False).T
        x = _layer_norm(x + out + sd[name + "mixer.out_proj.bias"].double(), sd, name + "norm1", eps)
        up = x @ _lora_weight(sd, name + "mlp.fc1", task, scale, False).T + sd[name + "mlp.fc1.bias"].double()
        up = 0.5 * up * (1.0 + torch.erf(up / math.sqrt(2.0)))
        down = up @ _lora_weight(sd, name + "mlp.fc2", task, scale, False).T + sd[name + "mlp.fc2.bias"].double()
        x = _layer_norm(x + down, sd, name + "norm2", eps)
        layer += 1
    weights = mask.double()[..., None]
    return (x * weights).sum(1) / weights.sum(1)


def reference_image_embeddings(sd: dict, config: dict, pixel_values: torch.Tensor) -> torch.Tensor:
    """Upstream EVA02 image embedding (float64) of already-normalised `pixel_values`."""
    vc = config["vision_config"]
    width, head_width, patch = vc["width"], vc["head_width"], vc["patch_size"]
    heads = width // head_width
    grid = vc["image_size"] // patch
    pt = vc["pt_hw_seq_len"]
    eps = 1e-6
    v = "vision_model."
    x = F.conv2d(
        pixel_values.double(),
        sd[v + "patch_embed.proj.weight"].double(),
        sd[v + "patch_embed.proj.bias"].double(),
        stride=patch,
    )
    x = x.flatten(2).transpose(1, 2)
    batch = x.shape[0]
    x = torch.cat((sd[v + "cls_token"].double().expand(batch, 1, width), x), 1) + sd[v + "pos_embed"].double()

    # 2-D rotary angles per (patch, channel): channels [0, hd/2) follow the row, [hd/2, hd) the column; pairs of
    # channels share one frequency; positions rescaled from the actual grid to the pre-training grid.
    half = head_width // 2
    angles = torch.zeros(grid * grid, head_width, dtype=torch.float64)
    for i in range(grid):
        for j in range(grid):
            for c in range(head_width):
                axis_pos = (i if c < half else j) * pt / grid
                pair = (c % half) // 2
                angles[i * grid + j, c] = axis_pos * 10000.0 ** (-2 * pair / half)
    cos, sin = angles.cos(), angles.sin()

    def rotary(t: torch.Tensor) -> torch.Tensor:  # (B, H, N, hd), interleaved pairs
        even, odd = t[..., 0::2], t[..., 1::2]
        out = torch.empty_like(t)
        out[..., 0::2] = even * cos[:, 0::2] - odd * sin[:, 0::2]
        out[..., 1::2] = odd * cos[:, 1::2] + even * sin[:, 1::2]
        return out

    def lin(t: torch.Tensor, name: str, bias: str | None = "default") -> torch.Tensor:
        out = t @ sd[name + ".weight"].double().T
        if bias == "default":
            bias = name + ".bias"
        return out if bias is None else out + sd[bias].double()

    block = 0
    while f"{v}blocks.{block}.norm1.weight" in sd:
        name = f"{v}blocks.{block}."
        h = _layer_norm(x, sd, name + "norm1", eps)
        q = lin(h, name + "attn.q_proj", name + "attn.q_bias")
        k = lin(h, name + "attn.k_proj", None)
        val = lin(h, name + "attn.v_proj", name + "attn.v_bias")
        q, k, val = (t.view(batch, -1, heads, head_width).transpose(1, 2) for t in (q, k, val))
        q = torch.cat((q[:, :, :1], rotary(q[:, :, 1:])), 2)
        k = torch.cat((k[:, :, :1], rotary(k[:, :, 1:])), 2)
        attn = ((q @ k.transpose(-1, -2)) * head_width**-0.5).softmax(-1) @ val
        attn = attn.transpose(1, 2).reshape(batch, -1, width)
        x = x + lin(_layer_norm(attn, sd, name + "attn.inner_attn_ln", eps), name + "attn.proj")
        h = _layer_norm(x, sd, name + "norm2", eps)
        gated = F.silu(lin(h, name + "mlp.w1")) * lin(h, name + "mlp.w2")
        x = x + lin(_layer_norm(gated, sd, name + "mlp.ffn_ln", eps), name + "mlp.w3")
        block += 1
    return _layer_norm(x, sd, v + "norm", eps)[:, 0]
