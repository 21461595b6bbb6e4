"""LongCLIP model: OpenAI CLIP with a 248-position text tower (Zhang et al., "Long-CLIP", ECCV 2024).

The weights use stock `transformers.CLIPModel` names with a single folded text position table, so the same repo
also loads without remote code. This class adds what stock CLIP lacks: over-long inputs are truncated with the end
token kept (one warning) instead of an index error, knowledge-preserved stretching of any CLIP text tower
(`LongCLIPModel.from_clip`), the frozen leading position rows the paper fine-tunes with, and feature methods that
return tensors, as transformers 4 did and as the published LongCLIP snippets use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput

from .configuration_longclip import DEFAULT_KEEP_POSITIONS, LongCLIPConfig
from .token_truncation import warn_truncated


def stretch_position_embedding(
    table: torch.Tensor, keep: int = DEFAULT_KEEP_POSITIONS, ratio: int = 4
) -> torch.Tensor:
    """Knowledge-preserved stretching of a position table (Long-CLIP, section 3.1).

    Rows `0..keep-1` are copied. Between each later pair of neighbouring rows, `ratio` rows are interpolated
    linearly; after the last row, `ratio` rows continue the last difference linearly. A table of `n` rows
    becomes `ratio * n - (ratio - 1) * keep` rows (77 -> 248 for keep 20, ratio 4).

    Args:
        table: `(n, width)` position embeddings.
        keep: Leading rows kept unchanged.
        ratio: Rows produced per original row after `keep`.
    """
    if table.ndim != 2:
        raise ValueError(f"table must be 2-D (positions, width), got shape {tuple(table.shape)}")
    rows = table.shape[0]
    if not 0 <= keep < rows - 1 or ratio < 1:
        raise ValueError(f"Need 0 <= keep < {rows - 1} and ratio >= 1, got keep={keep}, ratio={ratio}")
    # At least float32 (half tables would round the interpolation weights), float64 kept as float64.
    compute = torch.promote_types(table.dtype, torch.float32)
    source = table.to(compute)
    weights = torch.arange(ratio, dtype=compute, device=table.device) / ratio  # k / ratio, k = 0..ratio-1
    left = source[keep:-1]
    right = source[keep + 1 :]
    interpolated = (1 - weights)[None, :, None] * left[:, None, :] + weights[None, :, None] * right[:, None, :]
    last_step = source[-1] - source[-2]
    extrapolated = source[-1][None, :] + weights[:, None] * last_step[None, :]
    stretched = torch.cat([source[:keep], interpolated.reshape(-1, table.shape[1]), extrapolated], dim=0)
    return stretched.to(table.dtype)


class PositionTableWithFrozenRows(nn.Module):
    """A text position table whose first `keep` rows are a separate parameter that never trains.

    The original keeps those rows in their own frozen table. Here they are `kept` (`requires_grad=False`, so no
    optimizer touches them, weight decay included: optimizers skip parameters without gradients) and the rest is
    `trained`. The state dict still holds one `weight` table, so checkpoints stay stock `CLIPModel` checkpoints.

    Args:
        weight: The `(positions, width)` table to split.
        keep: Number of leading rows to freeze.
    """

    def __init__(self, weight: torch.Tensor, keep: int):
        super().__init__()
        if not 0 < keep < weight.shape[0]:
            raise ValueError(f"keep must be in (0, {weight.shape[0]}), got {keep}")
        self.kept = nn.Parameter(weight[:keep].detach().clone(), requires_grad=False)
        self.trained = nn.Parameter(weight[keep:].detach().clone(), requires_grad=weight.requires_grad)
        self.register_state_dict_post_hook(_fold_table_in_state_dict)
        self.register_load_state_dict_pre_hook(_split_table_in_state_dict)

    @property
    def weight(self) -> torch.Tensor:
        """The whole table (read-only view for code that inspects `position_embedding.weight`)."""
        return torch.cat([self.kept, self.trained], dim=0)

    @property
    def keep(self) -> int:
        return self.kept.shape[0]

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(position_ids, self.weight)


def _fold_table_in_state_dict(module: PositionTableWithFrozenRows, state_dict, prefix: str, local_metadata) -> None:
    kept, trained = state_dict.pop(prefix + "kept"), state_dict.pop(prefix + "trained")
    state_dict[prefix + "weight"] = torch.cat([kept, trained], dim=0)


def _split_table_in_state_dict(module: PositionTableWithFrozenRows, state_dict, prefix: str, *args) -> None:
    if prefix + "weight" in state_dict:
        table = state_dict.pop(prefix + "weight")
        state_dict[prefix + "kept"], state_dict[prefix + "trained"] = table[: module.keep], table[module.keep :]


class LongCLIPFeatures(torch.Tensor):
    """Projected embeddings `(batch, projection_dim)` returned by `get_text_features` / `get_image_features`.

    A tensor, as transformers 4 returned and as LongCLIP's published snippets use it
    (`image_features @ text_features.T`), that also answers to the `BaseModelOutputWithPooling` fields
    transformers 5 code reads (`pooler_output`, `last_hidden_state`, `hidden_states`, `attentions`).
    """

    @staticmethod
    def wrap(outputs: BaseModelOutputWithPooling) -> LongCLIPFeatures:
        features = outputs.pooler_output.as_subclass(LongCLIPFeatures)
        features._tower_outputs = outputs
        return features

    def _field(self, name: str):
        outputs = getattr(self, "_tower_outputs", None)
        if outputs is None:
            raise AttributeError(f"{name} is only available on the tensor returned by get_*_features")
        return getattr(outputs, name)

    @property
    def pooler_output(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self._field("last_hidden_state")

    @property
    def hidden_states(self):
        return self._field("hidden_states")

    @property
    def attentions(self):
        return self._field("attentions")

    def to_tuple(self) -> tuple:
        return self._field("to_tuple")()


class LongCLIPModel(CLIPModel):
    """CLIP with a long text context. Same forward, outputs and state dict as `transformers.CLIPModel`."""

    config_class = LongCLIPConfig

    def __init__(self, config: LongCLIPConfig):
        super().__init__(config)
        self._warned: set[str] = set()

    @property
    def max_text_length(self) -> int:
        return self.config.text_config.max_position_embeddings

    def _fit_text_length(self, input_ids, attention_mask, position_ids):
        """Cut rows longer than the tower to its length with the end token kept last, as `LongCLIPProcessor` does.

        A row fits when its end token (the first one, which CLIP pools) lies within the limit; what follows it is
        padding. Zero-shot pipelines and other callers that tokenize without truncation get the same one-time
        warning as the processor instead of an error.
        """
        limit = self.max_text_length
        if input_ids is None or input_ids.shape[-1] <= limit:
            return input_ids, attention_mask, position_ids
        eos = self.config.text_config.eos_token_id
        input_ids = input_ids[..., :limit].clone()
        too_long = ~(input_ids == eos).any(dim=-1)
        input_ids[too_long, limit - 1] = eos
        warn_truncated(int(too_long.sum()), input_ids.shape[0], limit, self._warned)
        if attention_mask is not None:
            attention_mask = attention_mask[..., :limit]
        if position_ids is not None:
            position_ids = position_ids[..., :limit]
        return input_ids, attention_mask, position_ids

    def get_text_features(
        self, input_ids=None, attention_mask=None, position_ids=None, **kwargs
    ) -> LongCLIPFeatures | tuple:
        """Projected text embeddings `(batch, projection_dim)`, not normalised; see `LongCLIPFeatures`."""
        input_ids, attention_mask, position_ids = self._fit_text_length(input_ids, attention_mask, position_ids)
        outputs = super().get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        return LongCLIPFeatures.wrap(outputs) if isinstance(outputs, BaseModelOutputWithPooling) else outputs

    def get_image_features(self, pixel_values=None, **kwargs) -> LongCLIPFeatures | tuple:
        """Projected image embeddings `(batch, projection_dim)`, not normalised; see `LongCLIPFeatures`."""
        outputs = super().get_image_features(pixel_values=pixel_values, **kwargs)
        return LongCLIPFeatures.wrap(outputs) if isinstance(outputs, BaseModelOutputWithPooling) else outputs

    def forward(
        self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, **kwargs
    ) -> CLIPOutput | tuple:
        input_ids, attention_mask, position_ids = self._fit_text_length(input_ids, attention_mask, position_ids)
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **kwargs,
        )

    def freeze_kept_positions(self) -> None:
        """Freeze the first `config.keep_positions` text position rows, as the original fine-tuning does.

        The rows become a parameter of their own with `requires_grad=False` (see `PositionTableWithFrozenRows`),
        so they stay bit-identical under any optimizer, with or without weight decay, while the other rows train.
        `from_pretrained` and `from_clip` call this; a model built directly from a config needs the call.
        Idempotent; saved checkpoints keep the single stock table.
        """
        embeddings = self.text_model.embeddings
        keep = self.config.keep_positions
        if keep == 0 or isinstance(embeddings.position_embedding, PositionTableWithFrozenRows):
            return
        embeddings.position_embedding = PositionTableWithFrozenRows(embeddings.position_embedding.weight, keep)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as `PreTrainedModel.from_pretrained` does, then freeze the kept position rows.

        Freezing happens after loading because transformers builds the parameters anew while loading.
        """
        model = super().from_pretrained(*args, **kwargs)
        model.freeze_kept_positions()
        return model

    @classmethod
    def from_clip(cls, clip_model: CLIPModel, keep: int = DEFAULT_KEEP_POSITIONS, ratio: int = 4) -> LongCLIPModel:
        """Turn a CLIP model into an (untrained) LongCLIP by knowledge-preserved stretching of its text positions.

        Args:
            clip_model: Any `transformers.CLIPModel` (for example `openai/clip-vit-large-patch14`).
            keep: Leading position rows copied unchanged and frozen while fine-tuning (20 in the paper).
            ratio: Stretch factor for the remaining rows (4 in the paper: 77 -> 248 positions).
        """
        if not isinstance(clip_model, CLIPModel):
            raise TypeError(f"clip_model must be a transformers.CLIPModel, got {type(clip_model).__name__}")
        table = clip_model.text_model.embeddings.position_embedding.weight.detach()
        stretched = stretch_position_embedding(table, keep=keep, ratio=ratio)
        config_dict = clip_model.config.to_dict()
        for key in ("architectures", "auto_map", "transformers_version", "model_type"):
            config_dict.pop(key, None)
        config_dict["text_config"]["max_position_embeddings"] = stretched.shape[0]
        config_dict["keep_positions"] = keep
        config = LongCLIPConfig(**config_dict)
        model = cls(config).to(dtype=table.dtype, device=table.device)
        state_dict = {
            key: value
            for key, value in clip_model.state_dict().items()
            if key != "text_model.embeddings.position_embedding.weight"
        }
        state_dict["text_model.embeddings.position_embedding.weight"] = stretched
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        # Position-id buffers are rebuilt for the new length; everything else must carry over.
        missing = [key for key in missing if not key.endswith("position_ids")]
        unexpected = [key for key in unexpected if not key.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"CLIP weights do not fit LongCLIP: missing {missing}, unexpected {unexpected}")
        model.freeze_kept_positions()
        return model


LongCLIPModel.register_for_auto_class("AutoModel")
