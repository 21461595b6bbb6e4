"""Configuration of CLIPCLAP: CLIP text and image towers plus a CLAP audio tower mapped into CLIP's space."""

from __future__ import annotations

from transformers import CLIPConfig, PreTrainedConfig
from transformers.models.clap.configuration_clap import ClapAudioConfig


class ClipClapConfig(PreTrainedConfig):
    r"""Configuration of [`ClipClapModel`].

    The model keeps a stock CLIP model (`clip_config`) for text and images and the audio half of a CLAP model
    (`audio_config`, a `ClapAudioConfig`): audio goes through the CLAP audio encoder and CLAP's audio projection, is
    L2-normalised, mapped by a trained `Linear(projection_dim, projection_dim, bias=False)` into CLIP's space and
    L2-normalised again.

    Args:
        clip_config (`dict` or `CLIPConfig`, *optional*):
            Configuration of the CLIP model (text and vision towers and their projections).
        audio_config (`dict` or `ClapAudioConfig`, *optional*):
            Configuration of the CLAP audio tower. Its `projection_dim` must equal CLIP's.
        projection_dim (`int`, *optional*, defaults to 512):
            Width of the shared embedding space; must match both sub-configurations.
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Scale of the random initialisation of CLAP's audio projection.
    """

    model_type = "clipclap"
    sub_configs_defaults = {"clip_config": CLIPConfig, "audio_config": ClapAudioConfig}

    clip_config: dict | CLIPConfig | None = None
    audio_config: dict | ClapAudioConfig | None = None
    projection_dim: int = 512
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        if (
            not isinstance(self.projection_dim, int)
            or isinstance(self.projection_dim, bool)
            or self.projection_dim < 1
        ):
            raise ValueError(f"projection_dim must be a positive int, got {self.projection_dim!r}")
        if self.clip_config.projection_dim != self.projection_dim:
            raise ValueError(
                f"clip_config.projection_dim ({self.clip_config.projection_dim}) must equal projection_dim "
                f"({self.projection_dim}): the audio embeddings are mapped into CLIP's space"
            )
        if self.audio_config.projection_dim != self.projection_dim:
            raise ValueError(
                f"audio_config.projection_dim ({self.audio_config.projection_dim}) must equal projection_dim "
                f"({self.projection_dim}): the trained map is square"
            )
        spec_size, mel_bins = self.audio_config.spec_size, self.audio_config.num_mel_bins
        # HTSAT folds the 1001-frame spectrogram into a square image of side spec_size; that needs an integer ratio.
        if not isinstance(spec_size, int) or spec_size % mel_bins != 0:
            raise ValueError(
                f"audio_config.spec_size ({spec_size}) must be an int multiple of audio_config.num_mel_bins "
                f"({mel_bins}); CLAP checkpoints use 256 with 64 mel bins"
            )
        if self.audio_config.enable_fusion and not self.audio_config.fusion_type:
            raise ValueError("audio_config.enable_fusion is set but audio_config.fusion_type is empty")


__all__ = ["ClipClapConfig"]
