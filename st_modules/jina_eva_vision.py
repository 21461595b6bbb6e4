"""EVA02 vision tower of jina-clip-v2 (SwiGLU, sub-LN, 2-D rotary embeddings, CLS pooling), on SDPA.

Parameter names follow the published `jinaai/jina-clip-v2` checkpoint (`vision_model.*`), so its vision weights load
without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    # EVA02 rotates interleaved pairs (x0, x1) -> (-x1, x0), unlike the half-split convention of LLaMA-style RoPE.
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class EvaRotaryEmbedding2D(nn.Module):
    """Axial 2-D rotary table for the patch grid: first half of each head rotates with the row, second with the column.

    The table is computed for the fine-tuning grid (`grid_size`) and rescaled to the pre-training grid
    (`pt_grid_size`) when `interpolate` is set, as EVA02 does for resolutions above the pre-training one.
    """

    def __init__(self, head_dim: int, grid_size: int, pt_grid_size: int, interpolate: bool, theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.grid_size, self.pt_grid_size = head_dim, grid_size, pt_grid_size
        self.interpolate, self.theta = interpolate, theta
        cos, sin = self.compute_table()
        # Non-persistent: derived from the config, never part of the checkpoint (recomputed by `_init_weights`
        # after meta-device loading).
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    def compute_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables of shape (grid_size**2, head_dim), row-major over the patch grid."""
        axis_dim, grid = self.head_dim // 2, self.grid_size
        exponents = torch.arange(0, axis_dim, 2, dtype=torch.float64)[: axis_dim // 2] / axis_dim
        inv_freq = 1.0 / (self.theta**exponents)
        steps = grid if self.interpolate else self.pt_grid_size
        positions = torch.arange(steps, dtype=torch.float64) / steps * self.pt_grid_size
        angles = torch.outer(positions, inv_freq).repeat_interleave(2, dim=-1)  # (steps, axis_dim)
        rows = angles[:, None, :].expand(steps, steps, axis_dim)
        cols = angles[None, :, :].expand(steps, steps, axis_dim)
        table = torch.cat((rows, cols), dim=-1)[:grid, :grid].reshape(grid * grid, self.head_dim)
        return table.cos().float(), table.sin().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate `x` of shape (batch, heads, patches, head_dim)."""
        cos = self.freqs_cos.to(x.dtype)
        sin = self.freqs_sin.to(x.dtype)
        return x * cos + _rotate_pairs(x) * sin


class EvaPatchEmbed(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int):
        super().__init__()
        self.image_size = image_size
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"pixel_values must be {self.image_size}x{self.image_size} images, got {tuple(pixel_values.shape)}"
            )
        return self.proj(pixel_values.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)


class EvaAttention(nn.Module):
    def __init__(self, width: int, num_heads: int, qkv_bias: bool, subln: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        # EVA keeps q/v biases as loose parameters and gives k none.
        self.q_bias = nn.Parameter(torch.zeros(width)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(width)) if qkv_bias else None
        self.inner_attn_ln = nn.LayerNorm(width, eps=eps) if subln else nn.Identity()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: EvaRotaryEmbedding2D | None) -> torch.Tensor:
        batch, length, width = x.shape
        q = F.linear(x, self.q_proj.weight, self.q_bias)
        k = F.linear(x, self.k_proj.weight)
        v = F.linear(x, self.v_proj.weight, self.v_bias)
        q, k, v = (t.view(batch, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            # The CLS token (index 0) carries no position.
            q = torch.cat((q[:, :, :1], rope(q[:, :, 1:])), dim=2)
            k = torch.cat((k[:, :, :1], rope(k[:, :, 1:])), dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.proj(self.inner_attn_ln(out))


class EvaSwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int, subln: bool, eps: float):
        super().__init__()
        self.w1 = nn.Linear(width, hidden)
        self.w2 = nn.Linear(width, hidden)
        self.ffn_ln = nn.LayerNorm(hidden, eps=eps) if subln else nn.Identity()
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class EvaMlp(nn.Module):
    def __init__(self, width: int, hidden: int, subln: bool, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        # Upstream builds this GELU MLP's sub-LN with torch's default epsilon, not the tower's.
        self.ffn_ln = nn.LayerNorm(hidden) if subln else nn.Identity()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.ffn_ln(F.gelu(self.fc1(x))))


class EvaBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        width, eps = config.width, config.layer_norm_eps
        hidden = int(width * config.mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = EvaAttention(width, width // config.head_width, config.qkv_bias, config.subln, eps)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        mlp_cls = EvaSwiGLU if config.naive_swiglu else EvaMlp
        self.mlp = mlp_cls(width, hidden, config.subln, eps)
        self.post_norm = config.post_norm
        if config.ls_init_value:
            self.gamma_1 = nn.Parameter(torch.full((width,), float(config.ls_init_value)))
            self.gamma_2 = nn.Parameter(torch.full((width,), float(config.ls_init_value)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, rope: EvaRotaryEmbedding2D | None) -> torch.Tensor:
        attn_out = self.norm1(self.attn(x, rope)) if self.post_norm else self.attn(self.norm1(x), rope)
        x = x + (attn_out if self.gamma_1 is None else self.gamma_1 * attn_out)
        mlp_out = self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))
        return x + (mlp_out if self.gamma_2 is None else self.gamma_2 * mlp_out)


class EvaVisionTransformer(nn.Module):
    """EVA02 ViT: patch embedding + CLS + absolute positions, pre-LN blocks with 2-D RoPE, final LN, CLS -> head.

    Patch dropout is a training-time regulariser and is never applied here.
    """

    def __init__(self, config):
        super().__init__()
        grid = config.image_size // config.patch_size
        self.patch_embed = EvaPatchEmbed(config.image_size, config.patch_size, config.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, config.width))
        self.rope = (
            EvaRotaryEmbedding2D(config.head_width, grid, config.pt_hw_seq_len, config.intp_freq)
            if config.rope_embeddings
            else None
        )
        self.blocks = nn.ModuleList([EvaBlock(config) for _ in range(config.layers)])
        self.norm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        if config.proj_type is None:
            self.head = nn.Identity()
        else:
            self.head = nn.Linear(config.width, config.embed_dim, bias=config.qkv_bias)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """All token states after the last block (before the final norm), shape (batch, 1 + patches, width)."""
        x = self.patch_embed(pixel_values)
        x = torch.cat((self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x, self.rope)
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.forward_features(pixel_values))[:, 0])
