"""Processor of CLIPCLAP: CLIP tokenizer, CLIP image processor and a deterministic CLAP feature extractor.

The audio side accepts file paths, URLs, `{"array", "sampling_rate"}` dicts, NumPy arrays and torch tensors at any
sampling rate, mono or multi-channel, and resamples to the extractor's rate (48 kHz for CLAP) before the log-mel
features. Clips longer than CLAP's 10 s window are cut the way the CLAP feature extractor intends (`rand_trunc`: one
10 s window; `fusion`: a shrunk global view plus a front, middle and back window), but the windows are chosen
deterministically (`chunk_selection="center"`), so the same clip always gets the same embedding.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import BatchFeature, ClapFeatureExtractor, ProcessorMixin
from transformers.audio_utils import spectrogram, window_function
from transformers.processing_utils import ProcessingKwargs

from .clap_features import log_mel_spectrogram
from .media_inputs import MAX_SAMPLING_RATE, MIN_SAMPLING_RATE, check_sampling_rate, load_audio, resample

logger = logging.getLogger(__name__)

CHUNK_SELECTIONS = ("center", "random")
# The device `ClipClapFeatureExtractor.__call__` computes log-mel features on, for the extraction it is running (a
# context variable, so concurrent calls on one extractor do not share it).
_FEATURE_DEVICE: contextvars.ContextVar = contextvars.ContextVar("clipclap_feature_device", default=None)
_TEXT_ONLY_FLAT_KWARGS = ("padding", "truncation", "max_length")


def resample_audio(waveform: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality), or torchaudio when soxr is missing.

    Args:
        waveform: 1-D float array.
        orig_sampling_rate: Rate of `waveform` in Hz.
        target_sampling_rate: Wanted rate in Hz.

    Returns:
        A float32 1-D array at `target_sampling_rate`.
    """
    for name, rate in (("orig_sampling_rate", orig_sampling_rate), ("target_sampling_rate", target_sampling_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"{name} must be a positive int number of Hz, got {rate!r}")
        if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
            raise ValueError(f"{name} {rate} Hz is outside [{MIN_SAMPLING_RATE}, {MAX_SAMPLING_RATE}] Hz")
    return resample(np.asarray(waveform, dtype=np.float32), int(orig_sampling_rate), int(target_sampling_rate))


def load_audio_file(path: str | os.PathLike, target_sampling_rate: int) -> tuple[np.ndarray, int]:
    """Decode an audio file, http(s) URL or data URI to a mono float32 waveform at `target_sampling_rate`."""
    return load_audio(os.fspath(path), None, target_sampling_rate)[0], target_sampling_rate


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def prepare_waveforms(
    audio: Any, sampling_rate: int | Sequence[int] | None, target_sampling_rate: int, window: int | None = None
) -> list[np.ndarray]:
    """Normalise any supported audio input to a list of mono float32 waveforms at `target_sampling_rate`.

    Args:
        audio: One clip or a list of clips. A clip is a path, URL or data URI, a `{"array", "sampling_rate"}` (or
            `{"path"}`) dict, a 1-D array/tensor, or a 2-D multi-channel array/tensor inside a list. A bare 2-D
            array or tensor is read as a batch of mono clips, as `ClapFeatureExtractor` does.
        sampling_rate: Rate of the array/tensor clips: one int for all, or one per clip. Paths and dicts carry
            their own. None means the clips are already at `target_sampling_rate`.
        target_sampling_rate: Rate the feature extractor works at.
        window: Keep only the middle `window` samples (at `target_sampling_rate`) of longer clips, cut before
            resampling; clips longer than `media_inputs.DEFAULT_MAX_AUDIO_SECONDS` are cut to that in any case.
    """
    return [waveform for waveform, _ in _prepare_clips(audio, sampling_rate, target_sampling_rate, window)]


def _prepare_clips(
    audio: Any, sampling_rate: int | Sequence[int] | None, target_sampling_rate: int, window: int | None
) -> list[tuple[np.ndarray, bool]]:
    """`prepare_waveforms`, with whether each clip was cut."""
    if audio is None:
        raise ValueError("audio is None: expected a path, an array, a tensor or a list of them")
    if isinstance(audio, (str, os.PathLike, dict)):
        clips = [audio]
    elif isinstance(audio, (list, tuple)):
        if len(audio) == 0:
            raise ValueError("audio is an empty list: expected at least one clip")
        clips = [audio] if _is_scalar(audio[0]) else list(audio)
    elif hasattr(audio, "ndim") and hasattr(audio, "shape"):
        if audio.ndim == 1:
            clips = [audio]
        elif audio.ndim == 2:
            clips = list(audio)
        else:
            raise ValueError(f"audio array must be 1-D (one clip) or 2-D (batch of clips), got shape {audio.shape}")
    else:
        raise TypeError(
            f"audio must be a path, URL, dict, NumPy array, torch tensor or a list of them, got {type(audio).__name__}"
        )

    if sampling_rate is None or _is_scalar(sampling_rate):
        rates = [sampling_rate] * len(clips)
    elif not isinstance(sampling_rate, (list, tuple)):
        check_sampling_rate(sampling_rate, None, label="audio")  # raises: a bool, a float, a string
        rates = [sampling_rate] * len(clips)
    else:
        rates = list(sampling_rate)
        if len(rates) != len(clips):
            raise ValueError(f"sampling_rate has {len(rates)} entries for {len(clips)} audio clips")

    waveforms = []
    for index, (clip, rate) in enumerate(zip(clips, rates)):
        if isinstance(clip, dict) and "array" not in clip:
            if "path" not in clip:
                raise ValueError(f"audio clip {index} is a dict without 'array' or 'path' keys: {sorted(clip)}")
            clip = clip["path"]
        if isinstance(clip, (str, os.PathLike)):
            waveforms.append(load_audio(os.fspath(clip), index, target_sampling_rate, window=window))
            continue
        if isinstance(clip, dict):
            rate, clip = clip.get("sampling_rate", rate), clip["array"]
        if rate is None:
            logger.warning(
                "No sampling_rate given for audio clip %d; assuming it is already at %d Hz",
                index,
                target_sampling_rate,
            )
            rate = target_sampling_rate
        waveforms.append(
            load_audio({"array": clip, "sampling_rate": rate}, index, target_sampling_rate, window=window)
        )
    return waveforms


class ClipClapFeatureExtractor(ClapFeatureExtractor):
    """`ClapFeatureExtractor` with input checks, resampling and deterministic long-clip windows.

    Identical to the stock extractor for clips up to 10 s (except that `truncation="fusion"` never marks a short
    clip as long at random). For longer clips, `chunk_selection="center"` takes the window(s) the stock extractor
    would draw at random from their centres: the middle 10 s for `rand_trunc`, and the centre of each third for the
    front/middle/back windows of `fusion`. `chunk_selection="random"` restores the stock random draw (training).

    The recipe is written out here (`clip_features`, `log_mel`) on the stock extractor's public settings and filter
    banks; none of the stock extractor's private methods is overridden or called. Saved configs name the stock
    class, so any `transformers` install can read them; `ClipClapProcessor` turns the stock extractor back into this
    one on load.
    """

    def __init__(self, *args, chunk_selection: str = "center", **kwargs):
        super().__init__(*args, **kwargs)
        if chunk_selection not in CHUNK_SELECTIONS:
            raise ValueError(f"chunk_selection must be one of {CHUNK_SELECTIONS}, got {chunk_selection!r}")
        if self.truncation not in ("fusion", "rand_trunc"):
            raise ValueError(f"truncation must be 'fusion' or 'rand_trunc', got {self.truncation!r}")
        self.chunk_selection = chunk_selection

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["feature_extractor_type"] = "ClapFeatureExtractor"
        return output

    def log_mel(self, waveform: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
        """Log-mel features `(frames, mel_bins)` in dB of a mono waveform, as the stock extractor defines them.

        The stock extractor runs `transformers.audio_utils.spectrogram` (centred Hann-window STFT, power 2, dB) in a
        numpy frame loop; this computes the same in torch, on `__call__`'s `device`, within 1e-5 dB. Clips of at most
        half a window, which the reflect padding of the torch path cannot take, use `spectrogram` itself.
        """
        if waveform.shape[0] <= self.fft_window_size // 2:
            features = spectrogram(
                waveform,
                window_function(self.fft_window_size, "hann"),
                frame_length=self.fft_window_size,
                hop_length=self.hop_length,
                power=2.0,
                mel_filters=mel_filters,
                log_mel="dB",
            )
            return features.T
        features = log_mel_spectrogram(
            waveform,
            mel_filters,
            fft_window_size=self.fft_window_size,
            hop_length=self.hop_length,
            device=_FEATURE_DEVICE.get(),
        )
        return features.cpu().numpy()

    def _fusion_view(self, mel: np.ndarray, chunk_frames: int) -> np.ndarray:
        """`fusion`'s four channels for a long clip: the whole clip shrunk to one window, then a front, middle and back
        window, one from each third of the valid start range (its middle start, or a uniform draw for "random")."""
        import torch

        ranges = [
            part if len(part) else np.zeros(1, dtype=int)
            for part in np.array_split(np.arange(mel.shape[0] - chunk_frames + 1), 3)
        ]
        if self.chunk_selection == "random":
            # numpy's global generator, one draw per third in order, as the stock extractor draws them.
            starts = [int(np.random.choice(part)) for part in ranges]
        else:
            starts = [int(part[(len(part) - 1) // 2]) for part in ranges]
        shrunk = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(mel))[None, None],
            size=[chunk_frames, mel.shape[1]],
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        return np.stack([shrunk, *(mel[start : start + chunk_frames] for start in starts)], axis=0)

    def clip_features(self, waveform: np.ndarray, max_length: int, truncation: str, padding: str):
        """Features of one mono clip at the extractor's rate, and whether it counts as longer than the window.

        The CLAP recipe: a clip longer than `max_length` samples gets one window (`rand_trunc`, slaney filters) or the
        shrunk view plus three windows (`fusion`, HTK filters over the whole clip); a shorter clip is repeated
        (`repeat`, `repeatpad`) and zero-padded to `max_length`, once per `fusion` channel.

        Returns:
            `((1 or 4, frames, mel_bins) float64 array, bool)`.
        """
        length = waveform.shape[0]
        if length > max_length and truncation == "rand_trunc":
            overflow = length - max_length
            start = overflow // 2 if self.chunk_selection == "center" else np.random.randint(0, overflow + 1)
            return self.log_mel(waveform[start : start + max_length], self.mel_filters_slaney)[None], True
        if length > max_length:
            mel = self.log_mel(waveform, self.mel_filters)
            chunk_frames = max_length // self.hop_length + 1  # a centred STFT has one frame more than hops
            if chunk_frames == mel.shape[0]:  # longer by less than a hop: the whole clip is one window
                return np.stack([mel] * 4, axis=0), False
            return self._fusion_view(mel, chunk_frames), True
        if length < max_length:
            if padding == "repeat":
                waveform = np.tile(waveform, max_length // length + 1)[:max_length]
            elif padding == "repeatpad":
                waveform = np.tile(waveform, max_length // length)
            waveform = np.pad(waveform, (0, max_length - waveform.shape[0]))
        if truncation == "fusion":
            return np.stack([self.log_mel(waveform, self.mel_filters)] * 4, axis=0), False
        return self.log_mel(waveform, self.mel_filters_slaney)[None], False

    def __call__(
        self,
        raw_speech: Any,
        truncation: str | None = None,
        padding: bool | str | None = None,
        max_length: int | None = None,
        sampling_rate: int | Sequence[int] | None = None,
        return_tensors: str | None = None,
        device: str | Any | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Log-mel features of one clip or a batch; see `prepare_waveforms` for the accepted inputs.

        `device` is where the spectrograms are computed (for example the model's accelerator; default CPU); the
        features are returned on the CPU either way.

        Returns:
            `BatchFeature` with `input_features` `(batch, 1 or 4, frames, mel_bins)` float32 and `is_longer`
            `(batch, 1)`.
        """
        # Flat processor kwargs reach every modality that declares them, so the text side's `truncation=True` and
        # `padding="max_length"` arrive here too: they mean "the extractor's own setting".
        truncation = self.truncation if truncation is None or isinstance(truncation, bool) else truncation
        if truncation not in ("fusion", "rand_trunc"):
            raise ValueError(f"truncation must be 'fusion' or 'rand_trunc', got {truncation!r}")
        if padding is None or isinstance(padding, bool) or padding in ("longest", "max_length", "do_not_pad"):
            padding = self.padding
        if padding not in ("repeatpad", "repeat", "pad"):
            raise ValueError(f"padding must be 'repeatpad', 'repeat' or 'pad', got {padding!r}")
        max_length = max_length or self.nb_max_samples
        # With one centre window there is nothing to gain from the rest of a long clip: it is cut before resampling
        # (memory follows the window). Fusion views the whole clip (up to DEFAULT_MAX_AUDIO_SECONDS).
        window = max_length if truncation == "rand_trunc" and self.chunk_selection == "center" else None
        clips = _prepare_clips(raw_speech, sampling_rate, self.sampling_rate, window)
        # The STFT is per clip (clips differ in length before cropping); the model forward is batched.
        device_token = _FEATURE_DEVICE.set(device)
        try:
            mels, longer = zip(
                *(self.clip_features(w.astype(np.float64), max_length, truncation, padding) for w, _ in clips)
            )
        finally:
            _FEATURE_DEVICE.reset(device_token)
        longer = [flag or cropped for flag, (_, cropped) in zip(longer, clips)]
        features = {
            "input_features": np.stack(mels).astype(np.float32),
            "is_longer": [[bool(flag)] for flag in longer],
        }
        return BatchFeature(features, tensor_type=return_tensors)


class ClipClapProcessorKwargs(ProcessingKwargs, total=False):
    """The transformers-5 processor kwargs (`text_kwargs`, `images_kwargs`, `audio_kwargs`, `common_kwargs`)."""


class ClipClapProcessor(ProcessorMixin):
    """CLIP tokenizer + CLIP image processor + deterministic CLAP feature extractor.

    Args:
        image_processor: A CLIP image processor.
        tokenizer: A CLIP tokenizer.
        feature_extractor: A `ClapFeatureExtractor` (converted to [`ClipClapFeatureExtractor`]).
    """

    valid_processor_kwargs = ClipClapProcessorKwargs
    # Defaults below explicit arguments (the processor-attribute level of transformers' kwargs merge).
    text_kwargs = {"padding": True, "truncation": True, "return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}
    audio_kwargs = {"return_tensors": "pt"}

    def __init__(self, image_processor=None, tokenizer=None, feature_extractor=None, **kwargs):
        if feature_extractor is not None and not isinstance(feature_extractor, ClipClapFeatureExtractor):
            if not isinstance(feature_extractor, ClapFeatureExtractor):
                raise TypeError(
                    f"feature_extractor must be a ClapFeatureExtractor, got {type(feature_extractor).__name__}"
                )
            feature_extractor = ClipClapFeatureExtractor.from_dict(feature_extractor.to_dict())
        super().__init__(image_processor, tokenizer, feature_extractor, **kwargs)

    @property
    def sampling_rate(self) -> int:
        """Rate the audio features are computed at (48 kHz for CLAP)."""
        return self.feature_extractor.sampling_rate

    def prepare_audio(self, audio: Any, sampling_rate: int | Sequence[int] | None = None) -> list[np.ndarray]:
        """Decode, downmix, check and resample audio to mono float32 waveforms at `self.sampling_rate`."""
        return prepare_waveforms(audio, sampling_rate, self.sampling_rate)

    def __call__(
        self, images: Any = None, text: Any = None, videos: Any = None, audio: Any = None, **kwargs
    ) -> BatchFeature:
        """Tokenize texts, preprocess images and/or extract audio features in one call.

        Arguments follow the transformers-5 processor protocol: flat (`return_tensors`, `padding`, `truncation`,
        `max_length`, `sampling_rate`, ...) or grouped per modality (`text_kwargs=`, `images_kwargs=`,
        `audio_kwargs=`, `common_kwargs=`). Defaults: tensors (`"pt"`), texts padded to the longest and cut at the
        tokenizer's limit.

        Returns:
            `BatchFeature` with `input_ids`/`attention_mask`, `pixel_values` and `input_features`/`is_longer` for
            the modalities given.
        """
        if text is None and images is None and audio is None:
            raise ValueError("ClipClapProcessor needs at least one of text, images or audio")
        if videos is not None:
            raise ValueError("ClipClapProcessor embeds text, images and audio; got videos")
        # Flat `padding` / `truncation` / `max_length` mean the text side here, as in CLIP processors: the audio
        # window is the extractor's own setting (10 s of samples), changed through `audio_kwargs=` only.
        text_kwargs = dict(kwargs.pop("text_kwargs", None) or {})
        for key in _TEXT_ONLY_FLAT_KWARGS:
            if key in kwargs:
                text_kwargs.setdefault(key, kwargs.pop(key))
        # No tokenizer init kwargs: transformers would copy every one that some modality declares into all of them
        # (a saved tokenizer's `max_length` becomes the audio length); the tokenizer applies its own anyway.
        merged = self._merge_kwargs(ClipClapProcessorKwargs, text_kwargs=text_kwargs, **kwargs)
        data: dict[str, Any] = {}
        if text is not None:
            if not isinstance(text, str) and not (
                isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text)
            ):
                raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
            data.update(self.tokenizer(text, **merged["text_kwargs"]))
        if images is not None:
            data.update(self.image_processor(images, **merged["images_kwargs"]))
        if audio is not None:
            data.update(self.feature_extractor(audio, **merged["audio_kwargs"]))
        return_tensors = next(
            (
                merged[key]["return_tensors"]
                for key in ("text_kwargs", "images_kwargs", "audio_kwargs")
                if merged[key].get("return_tensors")
            ),
            None,
        )
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "input_features", "is_longer"]


__all__ = ["ClipClapFeatureExtractor", "ClipClapProcessor", "load_audio_file", "prepare_waveforms", "resample_audio"]
