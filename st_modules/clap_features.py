"""CLAP's log-mel spectrogram in torch, on any device, equal to transformers' numpy `spectrogram` within 1e-5 dB.

`ClapFeatureExtractor` computes its features with `transformers.audio_utils.spectrogram`: a centred, reflect-padded
STFT with a periodic Hann window, power 2, a mel filter bank, a floor of 1e-10 and `10 * log10` (dB, reference 1).
That loop runs frame by frame in numpy (about 50 ten-second clips a second per core); here the same steps are one
batched `torch.stft` and one matrix product, in float64 like the numpy code (float32 where the device has no float64),
so the features can be computed next to the model.
"""

from __future__ import annotations

import numpy as np
import torch

# transformers' `spectrogram` defaults, as `ClapFeatureExtractor._np_extract_fbank_features` uses them.
MEL_FLOOR = 1e-10
DB_MIN_VALUE = 1e-10


def _compute_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else the numpy reference's precision is kept.
    return torch.float32 if device.type == "mps" else torch.float64


def log_mel_spectrogram(
    waveforms: np.ndarray | torch.Tensor,
    mel_filters: np.ndarray | torch.Tensor,
    *,
    fft_window_size: int,
    hop_length: int,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Log-mel features of one or several equal-length waveforms, as CLAP's feature extractor computes them.

    Args:
        waveforms: `(samples,)` or `(batch, samples)` float waveforms, longer than `fft_window_size // 2` samples
            (the reflect padding of a centred STFT needs that; CLAP pads every clip to 10 s first).
        mel_filters: `(fft_window_size // 2 + 1, mel_bins)` filter bank (`ClapFeatureExtractor.mel_filters` or
            `.mel_filters_slaney`).
        fft_window_size: FFT and window length in samples.
        hop_length: Samples between frames.
        device: Where to compute (default: the waveforms' device, CPU for numpy input).

    Returns:
        float32 `(frames, mel_bins)` or `(batch, frames, mel_bins)` in dB on `device`, with
        `frames = 1 + samples // hop_length`.

    Raises:
        ValueError: a waveform too short for the reflect padding, or filters that do not fit the FFT size.
    """
    tensor = waveforms if isinstance(waveforms, torch.Tensor) else torch.from_numpy(np.asarray(waveforms))
    device = torch.device(device) if device is not None else tensor.device
    dtype = _compute_dtype(device)
    single = tensor.ndim == 1
    batch = tensor.reshape(1, -1) if single else tensor
    if batch.ndim != 2:
        raise ValueError(f"waveforms must be 1-D or 2-D (batch, samples), got shape {tuple(tensor.shape)}")
    if batch.shape[-1] <= fft_window_size // 2:
        raise ValueError(
            f"waveforms must be longer than {fft_window_size // 2} samples for a centred STFT, got {batch.shape[-1]}"
        )
    filters = mel_filters if isinstance(mel_filters, torch.Tensor) else torch.from_numpy(np.asarray(mel_filters))
    if filters.shape[0] != fft_window_size // 2 + 1:
        raise ValueError(
            f"mel_filters must have {fft_window_size // 2 + 1} frequency rows for fft_window_size {fft_window_size}, "
            f"got shape {tuple(filters.shape)}"
        )
    batch = batch.to(device=device, dtype=dtype)
    window = torch.hann_window(fft_window_size, periodic=True, dtype=dtype, device=device)
    spectrum = torch.stft(
        batch,
        n_fft=fft_window_size,
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        onesided=True,
        return_complex=True,
    )
    # The numpy reference stores the FFT as complex64 before taking the power; rounding the same way keeps the two
    # within float32 rounding of each other instead of float64 vs float32.
    if dtype == torch.float64:
        spectrum = spectrum.to(torch.complex64).to(torch.complex128)
    power = spectrum.real.square() + spectrum.imag.square()  # (batch, bins, frames)
    mel = torch.matmul(filters.to(device=device, dtype=dtype).T, power).clamp_min(MEL_FLOOR)
    log_mel = 10.0 * torch.log10(mel.clamp_min(DB_MIN_VALUE))
    features = log_mel.transpose(-1, -2).to(torch.float32)
    return features[0] if single else features
