"""CLIPCLAP: text and images through CLIP, audio through CLAP mapped into CLIP's space, all L2-normalised."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clap.modeling_clap import ClapAudioModel, ClapProjectionLayer
from transformers.utils import ModelOutput

from .configuration_clipclap import ClipClapConfig


@dataclass
class ClipClapOutput(ModelOutput):
    """Embeddings of whichever modalities were given to [`ClipClapModel.forward`], all L2-normalised.

    Args:
        text_embeds: `(batch, projection_dim)` text embeddings, or None.
        image_embeds: `(batch, projection_dim)` image embeddings, or None.
        audio_embeds: `(batch, projection_dim)` audio embeddings, or None.
    """

    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None


class ClipClapAudioTower(nn.Module):
    """The audio half of a `ClapModel`, with CLAP's attribute names so CLAP state dicts load unchanged."""

    def __init__(self, audio_config):
        super().__init__()
        self.audio_model = ClapAudioModel(audio_config)
        self.audio_projection = ClapProjectionLayer(audio_config)


class ClipClapPreTrainedModel(PreTrainedModel):
    config: ClipClapConfig
    config_class = ClipClapConfig
    base_model_prefix = "clipclap"
    main_input_name = "input_ids"
    input_modalities = ("text", "image", "audio")
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "ClapAudioLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # CLIPModel and ClapAudioModel initialise their own children; only the glue is ours.
        if isinstance(module, ClipClapModel):
            # The seed trains the map from the identity, so an untrained model passes CLAP's space through.
            nn.init.eye_(module.audio_to_clip.weight)
        elif isinstance(module, ClapProjectionLayer):
            std = self.config.initializer_factor * self.config.audio_config.hidden_size**-0.5
            for linear in (module.linear1, module.linear2):
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)


class ClipClapModel(ClipClapPreTrainedModel):
    """CLIP text and image towers plus CLAP's audio tower mapped into CLIP's embedding space.

    Weight names: `clip.*` is a stock `CLIPModel`, `clap.audio_model.*` / `clap.audio_projection.*` are named as in
    `ClapModel`, and `audio_to_clip.weight` is the trained `(projection_dim, projection_dim)` map.
    """

    def __init__(self, config: ClipClapConfig):
        super().__init__(config)
        self.clip = CLIPModel(config.clip_config)
        self.clap = ClipClapAudioTower(config.audio_config)
        self.audio_to_clip = nn.Linear(config.projection_dim, config.projection_dim, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        # transformers applies `dtype` one config level deep; the CLIP towers sit two levels down and would stay
        # float32 next to half-precision projections. The top-level map always gets the requested dtype.
        target = model.audio_to_clip.weight.dtype
        if any(parameter.dtype != target for parameter in model.parameters()):
            model = model.to(target)
        return model

    @classmethod
    def from_clip_and_clap(
        cls, clip_model: CLIPModel, clap_model: nn.Module, audio_to_clip_weight: torch.Tensor
    ) -> ClipClapModel:
        """Assemble a model from a loaded `CLIPModel`, a loaded `ClapModel` and the trained map's weight.

        Args:
            clip_model: A `transformers.CLIPModel`.
            clap_model: A `transformers.ClapModel` (its text tower is dropped).
            audio_to_clip_weight: `(projection_dim, projection_dim)` weight of the trained `Linear`, laid out as
                `nn.Linear.weight` (output rows).
        """
        if not isinstance(clip_model, CLIPModel):
            raise TypeError(f"clip_model must be a transformers CLIPModel, got {type(clip_model).__name__}")
        if not hasattr(clap_model, "audio_model") or not hasattr(clap_model, "audio_projection"):
            raise TypeError(f"clap_model must be a transformers ClapModel, got {type(clap_model).__name__}")
        weight = torch.as_tensor(audio_to_clip_weight)
        dim = clip_model.config.projection_dim
        if weight.shape != (dim, dim):
            raise ValueError(f"audio_to_clip_weight must have shape ({dim}, {dim}), got {tuple(weight.shape)}")
        # Sub-configs must not carry where the sources were loaded from (local paths).
        clip_config = {k: v for k, v in clip_model.config.to_dict().items() if k != "_name_or_path"}
        audio_config = {k: v for k, v in clap_model.config.audio_config.to_dict().items() if k != "_name_or_path"}
        config = ClipClapConfig(clip_config=clip_config, audio_config=audio_config, projection_dim=dim)
        model = cls(config)
        state = {f"clip.{key}": value for key, value in clip_model.state_dict().items()}
        for prefix in ("audio_model", "audio_projection"):
            part = getattr(clap_model, prefix).state_dict()
            state.update({f"clap.{prefix}.{key}": value for key, value in part.items()})
        state["audio_to_clip.weight"] = weight
        model.load_state_dict(state, strict=True)
        return model.eval()

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """L2-normalised CLIP text embeddings in `pooler_output`, shape `(batch, projection_dim)`."""
        outputs = self.clip.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **kwargs
        )
        outputs.pooler_output = F.normalize(outputs.pooler_output, dim=-1)
        return outputs

    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        """L2-normalised CLIP image embeddings in `pooler_output`, shape `(batch, projection_dim)`."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        outputs = self.clip.get_image_features(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        outputs.pooler_output = F.normalize(outputs.pooler_output, dim=-1)
        return outputs

    def get_clap_audio_features(
        self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """CLAP's own L2-normalised audio embeddings (before the map into CLIP's space) in `pooler_output`."""
        if not isinstance(input_features, torch.Tensor) or input_features.dim() != 4:
            shape = tuple(input_features.shape) if hasattr(input_features, "shape") else type(input_features).__name__
            raise ValueError(
                f"input_features must be a 4-D tensor (batch, channels, frames, mel_bins) from the processor's "
                f"feature extractor, got {shape}"
            )
        input_features = input_features.to(device=self.device, dtype=self.dtype)
        if self.config.audio_config.enable_fusion and is_longer is None:
            # Inference default: no clip takes the fusion branch unless the feature extractor says it is long.
            is_longer = torch.zeros(input_features.shape[0], 1, dtype=torch.bool)
        if is_longer is not None:
            is_longer = is_longer.to(self.device)
        outputs = self.clap.audio_model(input_features=input_features, is_longer=is_longer, return_dict=True, **kwargs)
        outputs.pooler_output = F.normalize(self.clap.audio_projection(outputs.pooler_output), dim=-1)
        return outputs

    def get_audio_features(
        self, input_features: torch.Tensor, is_longer: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """L2-normalised audio embeddings in CLIP's space in `pooler_output`, shape `(batch, projection_dim)`.

        Args:
            input_features: `(batch, 1 or 4, frames, mel_bins)` log-mel features from `ClipClapProcessor`.
            is_longer: `(batch, 1)` bools from the feature extractor; only fused CLAP towers read it.
        """
        outputs = self.get_clap_audio_features(input_features=input_features, is_longer=is_longer, **kwargs)
        outputs.pooler_output = F.normalize(self.audio_to_clip(outputs.pooler_output), dim=-1)
        return outputs

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        is_longer: torch.Tensor | None = None,
        **kwargs,
    ) -> ClipClapOutput:
        """Embed whichever of text, images and audio are given; see the `get_*_features` methods."""
        if input_ids is None and pixel_values is None and input_features is None:
            raise ValueError("ClipClapModel.forward needs at least one of input_ids, pixel_values, input_features")
        output = ClipClapOutput()
        if input_ids is not None:
            output.text_embeds = self.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).pooler_output
        if pixel_values is not None:
            output.image_embeds = self.get_image_features(pixel_values=pixel_values).pooler_output
        if input_features is not None:
            output.audio_embeds = self.get_audio_features(
                input_features=input_features, is_longer=is_longer
            ).pooler_output
        return output


__all__ = ["ClipClapModel", "ClipClapOutput", "ClipClapPreTrainedModel"]
