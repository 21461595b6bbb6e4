"""LongCLIP configuration: a CLIP configuration whose text tower reads 248 positions."""

from __future__ import annotations

from transformers import CLIPConfig

try:
    from huggingface_hub.dataclasses import strict
except ImportError:  # pragma: no cover - older huggingface_hub without strict dataclasses

    def strict(cls):
        return cls


# The original 77-token CLIP context, and the rows LongCLIP keeps from it unchanged (the paper's "keep" of 20).
CLIP_CONTEXT_LENGTH = 77
DEFAULT_KEEP_POSITIONS = 20
LONGCLIP_CONTEXT_LENGTH = 248


@strict
class LongCLIPConfig(CLIPConfig):
    """Configuration of a LongCLIP model.

    It is a `CLIPConfig` (``model_type`` stays ``"clip"``) so the same repo loads as a stock `CLIPModel` without
    remote code. The only addition is `keep_positions`: the leading text positions copied from CLIP and kept
    frozen during fine-tuning.

    Args:
        keep_positions: Number of leading text position rows that are taken unchanged from the 77-token CLIP table
            and are not trained (20 in the paper).
        **kwargs: Everything `transformers.CLIPConfig` accepts (`text_config`, `vision_config`, `projection_dim`, ...).
    """

    keep_positions: int = DEFAULT_KEEP_POSITIONS

    def validate_architecture(self):
        """Reject configurations the LongCLIP forward cannot run."""
        super_validate = getattr(super(), "validate_architecture", None)
        if super_validate is not None:
            super_validate()
        positions = self.text_config.max_position_embeddings
        if positions < CLIP_CONTEXT_LENGTH:
            raise ValueError(
                f"text_config.max_position_embeddings must be at least {CLIP_CONTEXT_LENGTH} for LongCLIP, got {positions}"
            )
        if not 0 <= self.keep_positions < positions:
            raise ValueError(f"keep_positions must be in [0, {positions}), got {self.keep_positions}")
        if self.text_config.projection_dim != self.vision_config.projection_dim:
            raise ValueError(
                "text_config.projection_dim and vision_config.projection_dim must match, got "
                f"{self.text_config.projection_dim} and {self.vision_config.projection_dim}"
            )


LongCLIPConfig.register_for_auto_class()
