"""LongCLIP model: OpenAI CLIP with a 248-position text tower (Zhang et al., "Long-CLIP", ECCV 2024).

The weights use stock `transformers.CLIPModel` names with a single folded text position table, so the same repo
also loads without remote code. This class adds what stock CLIP lacks: a clear error instead of an index error
for over-long inputs, knowledge-preserved stretching of any CLIP text tower (`LongCLIPModel.from_clip`), and the
frozen leading position rows used when fine-tuning.
"""

from __future__ import annotations

import torch
from transformers import CLIPModel

from .configuration_longclip import DEFAULT_KEEP_POSITIONS, LongCLIPConfig


def stretch_position_embedding(table: torch.Tensor, keep: int = DEFAULT_KEEP_POSITIONS, ratio: int = 4) -> torch.Tensor:
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
    source = table.float()
    weights = torch.arange(ratio, dtype=torch.float32, device=table.device) / ratio  # k / ratio, k = 0..ratio-1
    left = source[keep:-1]
    right = source[keep + 1 :]
    interpolated = (1 - weights)[None, :, None] * left[:, None, :] + weights[None, :, None] * right[:, None, :]
    last_step = source[-1] - source[-2]
    extrapolated = source[-1][None, :] + weights[:, None] * last_step[None, :]
    stretched = torch.cat([source[:keep], interpolated.reshape(-1, table.shape[1]), extrapolated], dim=0)
    return stretched.to(table.dtype)


class LongCLIPModel(CLIPModel):
    """CLIP with a long text context. Same forward, outputs and state dict as `transformers.CLIPModel`."""

    config_class = LongCLIPConfig

    def __init__(self, config: LongCLIPConfig):
        super().__init__(config)
        self._frozen_rows_hook = None
        self.freeze_kept_positions()

    @property
    def max_text_length(self) -> int:
        return self.config.text_config.max_position_embeddings

    def _check_text_length(self, input_ids: torch.Tensor | None) -> None:
        if input_ids is not None and input_ids.shape[-1] > self.max_text_length:
            raise ValueError(
                f"input_ids has {input_ids.shape[-1]} tokens but this LongCLIP text tower reads at most "
                f"{self.max_text_length}. Tokenize with LongCLIPProcessor (it truncates with the end token kept "
                f"last) or pass truncation=True, max_length={self.max_text_length}."
            )

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        self._check_text_length(input_ids)
        return super().get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, **kwargs):
        self._check_text_length(input_ids)
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **kwargs,
        )

    def freeze_kept_positions(self) -> None:
        """Zero the gradient of the first `config.keep_positions` text position rows.

        The original keeps these rows in a separate frozen table; with one folded table a gradient hook gives the
        same updates. Exclude the table from weight decay when fine-tuning, since decay ignores gradients.
        """
        if self._frozen_rows_hook is not None:
            self._frozen_rows_hook.remove()
        keep = self.config.keep_positions
        table = self.text_model.embeddings.position_embedding.weight

        def zero_kept_rows(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[:keep] = 0
            return grad

        self._frozen_rows_hook = table.register_hook(zero_kept_rows) if keep > 0 else None

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
        return model


LongCLIPModel.register_for_auto_class("AutoModel")
