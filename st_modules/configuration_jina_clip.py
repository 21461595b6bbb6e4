"""Configuration of jina-clip-v2: a Jina-XLM-RoBERTa text tower and an EVA02 vision tower in one embedding space."""

from __future__ import annotations

from typing import Any

from transformers import JinaEmbeddingsV3Config, PreTrainedConfig

# The published jina-clip-v2's tasks (one per LoRA adapter it carries) and their instruction prefixes; converted
# checkpoints store their own.
DEFAULT_TASK_INSTRUCTIONS = {"retrieval.query": "Represent the query for retrieving evidence documents: "}
DEFAULT_MATRYOSHKA_DIMENSIONS = [64, 128, 256, 512, 768, 1024]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class JinaCLIPVisionConfig(PreTrainedConfig):
    r"""EVA02 vision tower of jina-clip-v2 (field names as in the upstream `vision_config`).

    Args:
        width (`int`): hidden size of the ViT.
        layers (`int`): number of transformer blocks.
        head_width (`int`): size of one attention head (`width // head_width` heads).
        mlp_ratio (`float`): MLP hidden size is `int(width * mlp_ratio)`.
        image_size (`int`): square input resolution.
        patch_size (`int`): patch side in pixels.
        embed_dim (`int`): output size of the tower (after `head`).
        qkv_bias (`bool`): learnable q and v biases (k has none), also the head bias.
        subln (`bool`): extra LayerNorms inside attention (before `proj`) and MLP (before the output linear).
        naive_swiglu (`bool`): SwiGLU MLP (`w1`, `w2`, `w3`) instead of GELU (`fc1`, `fc2`).
        rope_embeddings (`bool`): 2-D rotary embeddings on the patch tokens.
        pt_hw_seq_len (`int`): patch grid side the rotary table was pre-trained with.
        intp_freq (`bool`): rescale the rotary positions from the actual grid to `pt_hw_seq_len`.
        post_norm (`bool`): apply `norm1`/`norm2` after the sub-layers instead of before.
        ls_init_value (`float`, *optional*): LayerScale init; `None` means no LayerScale parameters.
        proj_type (`str`, *optional*): `None` (identity head, needs `width == embed_dim`) or `"linear"`.
        layer_norm_eps (`float`): epsilon of the tower's LayerNorms.
    """

    model_type = "jina_clip_vision"
    base_config_key = "vision_config"

    width: int = 1024
    layers: int = 24
    head_width: int = 64
    mlp_ratio: float = 2.6667
    image_size: int = 512
    patch_size: int = 14
    embed_dim: int = 1024
    qkv_bias: bool = True
    subln: bool = True
    naive_swiglu: bool = True
    rope_embeddings: bool = True
    pt_hw_seq_len: int = 16
    intp_freq: bool = True
    post_norm: bool = False
    ls_init_value: float | None = None
    proj_type: str | None = None
    layer_norm_eps: float = 1e-6

    def __post_init__(self, **kwargs: Any) -> None:
        # Upstream training-only switches that have no effect at inference; accept and drop them.
        for key in ("patch_dropout", "drop_path_rate", "x_attention", "fused_layer_norm"):
            kwargs.pop(key, None)
        super().__post_init__(**kwargs)
        for name in ("width", "layers", "head_width", "image_size", "patch_size", "embed_dim", "pt_hw_seq_len"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"vision_config.{name} must be a positive int, got {value!r}",
            )
        _require(
            self.width % self.head_width == 0,
            f"vision_config.width ({self.width}) must be a multiple of head_width ({self.head_width})",
        )
        _require(self.head_width % 4 == 0, f"vision_config.head_width must be a multiple of 4, got {self.head_width}")
        # 512 px with 14 px patches leaves 8 border pixels that the strided patch convolution never reads (as upstream).
        _require(
            self.image_size >= self.patch_size,
            f"vision_config.image_size ({self.image_size}) must be at least patch_size ({self.patch_size})",
        )
        _require(self.mlp_ratio > 0, f"vision_config.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        _require(
            self.proj_type in (None, "linear"),
            f"vision_config.proj_type must be None or 'linear', got {self.proj_type!r}",
        )
        _require(
            self.proj_type is not None or self.width == self.embed_dim,
            f"vision_config.proj_type=None needs width == embed_dim, got {self.width} and {self.embed_dim}",
        )
        grid = self.image_size // self.patch_size
        _require(
            not self.rope_embeddings or self.intp_freq or grid <= self.pt_hw_seq_len,
            f"vision_config: a {grid}x{grid} patch grid needs intp_freq=True or pt_hw_seq_len >= {grid}",
        )


class JinaCLIPConfig(PreTrainedConfig):
    r"""jina-clip-v2: `JinaEmbeddingsV3Config` text tower + `JinaCLIPVisionConfig` vision tower.

    The text tower's LoRA task adapter is merged into its weights at conversion time (upstream applies its default
    adapter to every text), so `text_config` describes a plain jina-embeddings-v3 backbone.

    Args:
        text_config (`dict` or `JinaEmbeddingsV3Config`): text backbone.
        vision_config (`dict` or `JinaCLIPVisionConfig`): vision backbone.
        projection_dim (`int`): size of the shared embedding space.
        text_projection_type (`str`, *optional*): `None` (mean-pooled states are the embedding, needs
            `hidden_size == projection_dim`) or `"linear"`.
        text_projection_bias (`bool`): bias of the linear text projection.
        logit_scale_init_value (`float`): initial log temperature.
        matryoshka_dimensions (`list[int]`): prefix sizes the embeddings were trained to be truncated to.
        truncate_dim (`int`, *optional*): default truncation of `encode_text` / `encode_image`.
        task_instructions (`dict[str, str]`): task name -> instruction prefix for `encode_text(task=...)`, one per
            LoRA task of the upstream checkpoint.
        default_instruction_task (`str`, *optional*): task whose prefix `encode_text(task=None)` uses (upstream's
            `default_instruction_task`; `None`: no prefix).
        max_text_length (`int`): default `max_length` of `encode_text` (upstream: 512).
    """

    model_type = "jina_clip"
    sub_configs_defaults = {"text_config": JinaEmbeddingsV3Config, "vision_config": JinaCLIPVisionConfig}

    text_config: dict | JinaEmbeddingsV3Config | None = None
    vision_config: dict | JinaCLIPVisionConfig | None = None
    projection_dim: int = 1024
    text_projection_type: str | None = None
    text_projection_bias: bool = False
    logit_scale_init_value: float = 2.6592
    matryoshka_dimensions: list[int] | None = None
    truncate_dim: int | None = None
    task_instructions: dict[str, str] | None = None
    default_instruction_task: str | None = None
    max_text_length: int = 512

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.matryoshka_dimensions is None:
            self.matryoshka_dimensions = [d for d in DEFAULT_MATRYOSHKA_DIMENSIONS if d < self.projection_dim] + [
                self.projection_dim
            ]
        if self.task_instructions is None:
            self.task_instructions = dict(DEFAULT_TASK_INSTRUCTIONS)
        _require(
            isinstance(self.projection_dim, int) and self.projection_dim > 0,
            f"projection_dim must be a positive int, got {self.projection_dim!r}",
        )
        _require(
            self.text_projection_type in (None, "linear"),
            f"text_projection_type must be None or 'linear', got {self.text_projection_type!r}",
        )
        _require(
            self.text_projection_type is not None or self.text_config.hidden_size == self.projection_dim,
            "text_projection_type=None needs text_config.hidden_size == projection_dim, got "
            f"{self.text_config.hidden_size} and {self.projection_dim}",
        )
        _require(
            self.vision_config.embed_dim == self.projection_dim,
            f"vision_config.embed_dim ({self.vision_config.embed_dim}) must equal projection_dim "
            f"({self.projection_dim})",
        )
        dims = self.matryoshka_dimensions
        _require(
            isinstance(dims, list) and dims and all(isinstance(d, int) and 0 < d <= self.projection_dim for d in dims),
            f"matryoshka_dimensions must be a non-empty list of ints in [1, {self.projection_dim}], got {dims!r}",
        )
        _require(
            self.truncate_dim is None
            or (isinstance(self.truncate_dim, int) and 0 < self.truncate_dim <= self.projection_dim),
            f"truncate_dim must be None or an int in [1, {self.projection_dim}], got {self.truncate_dim!r}",
        )
        _require(
            isinstance(self.task_instructions, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in self.task_instructions.items()),
            f"task_instructions must map task names to prefix strings, got {self.task_instructions!r}",
        )
        _require(
            self.default_instruction_task is None or self.default_instruction_task in self.task_instructions,
            f"default_instruction_task must be None or one of {sorted(self.task_instructions)}, "
            f"got {self.default_instruction_task!r}",
        )
        _require(
            isinstance(self.max_text_length, int) and self.max_text_length > 0,
            f"max_text_length must be a positive int, got {self.max_text_length!r}",
        )


__all__ = ["JinaCLIPConfig", "JinaCLIPVisionConfig", "DEFAULT_TASK_INSTRUCTIONS"]
