"""CLAP log-mel features in torch equal the stock numpy extractor within 1e-5 dB, on every path CLIPCLAP takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor
from transformers.audio_utils import spectrogram, window_function

from st_modules.clap_features import log_mel_spectrogram
from st_modules.processing_clipclap import ClipClapFeatureExtractor

RATE = 48_000
TOLERANCE = 1e-5
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _clips() -> dict[str, np.ndarray]:
    """float32 clips (CLIPCLAP's extractor reads every input as float32, the stock one keeps float64)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * RATE)) / RATE
    clips = {
        "noise": 0.1 * rng.standard_normal(10 * RATE),
        "sine": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "loud chirp": np.clip(3.0 * np.sin(2 * np.pi * (200 + 3000 * t) * t), -1, 1),
        "silence": np.zeros(RATE),
        "impulse": np.eye(1, 3 * RATE, RATE).ravel(),
        "tiny noise": 1e-6 * rng.standard_normal(RATE // 3),
        "one window": 0.2 * rng.standard_normal(1500),
        "long noise": 0.05 * rng.standard_normal(23 * RATE + 17),
    }
    return {name: clip.astype(np.float32) for name, clip in clips.items()}


@pytest.fixture(scope="module")
def stock():
    return ClapFeatureExtractor()


def _numpy_log_mel(extractor, waveform: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """The stock features `(frames, mel_bins)`: transformers' public numpy `spectrogram` with CLAP's settings."""
    return spectrogram(
        waveform,
        window_function(extractor.fft_window_size, "hann"),
        frame_length=extractor.fft_window_size,
        hop_length=extractor.hop_length,
        power=2.0,
        mel_filters=bank,
        log_mel="dB",
    ).T


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("filters", ["mel_filters", "mel_filters_slaney"])
@pytest.mark.parametrize("name", list(_clips()))
def test_log_mel_equals_transformers_spectrogram(stock, name, filters, device):
    waveform = _clips()[name]
    bank = getattr(stock, filters)
    expected = _numpy_log_mel(stock, waveform, bank)
    ours = log_mel_spectrogram(
        waveform, bank, fft_window_size=stock.fft_window_size, hop_length=stock.hop_length, device=device
    )
    assert ours.device.type == device and ours.dtype == torch.float32
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours.cpu().numpy(), expected, atol=TOLERANCE, rtol=0)


def test_batched_rows_equal_single_clips(stock):
    rng = np.random.default_rng(1)
    batch = 0.1 * rng.standard_normal((3, 2 * RATE))
    kwargs = {"fft_window_size": stock.fft_window_size, "hop_length": stock.hop_length}
    together = log_mel_spectrogram(torch.from_numpy(batch), stock.mel_filters, **kwargs)
    for row, waveform in zip(together, batch):
        torch.testing.assert_close(row, log_mel_spectrogram(waveform, stock.mel_filters, **kwargs), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("waveform", "message"),
    [(np.zeros(100), "longer than 512"), (np.zeros((2, 2, 3000)), "1-D or 2-D")],
)
def test_bad_waveforms_are_named(stock, waveform, message):
    with pytest.raises(ValueError, match=message):
        log_mel_spectrogram(waveform, stock.mel_filters, fft_window_size=1024, hop_length=480)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
def test_extractor_equals_stock_for_clips_up_to_the_window(stock, truncation, device):
    """Clips of at most 10 s: CLIPCLAP's extractor (torch features) against the stock extractor (numpy)."""
    clips = [clip for clip in _clips().values() if len(clip) <= stock.nb_max_samples]
    ours = ClipClapFeatureExtractor(truncation=truncation)(
        clips, sampling_rate=RATE, return_tensors="np", device=device
    )["input_features"]
    expected = stock(clips, sampling_rate=RATE, truncation=truncation, return_tensors="np")["input_features"]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
def test_extractor_equals_its_numpy_features_for_long_clips(truncation):
    """Longer clips (centre windows, fusion's shrunk view): torch features against the stock numpy features."""

    class NumpyFeatures(ClipClapFeatureExtractor):
        def log_mel(self, waveform, mel_filters):
            return _numpy_log_mel(self, waveform, mel_filters)

    clips = [_clips()["long noise"], np.tile(_clips()["sine"], 6)]
    ours = ClipClapFeatureExtractor(truncation=truncation)(clips, sampling_rate=RATE, return_tensors="np")
    expected = NumpyFeatures(truncation=truncation)(clips, sampling_rate=RATE, return_tensors="np")
    np.testing.assert_allclose(ours["input_features"], expected["input_features"], atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(ours["is_longer"], expected["is_longer"])


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
def test_random_chunk_selection_draws_as_the_stock_extractor(stock, truncation):
    """`chunk_selection="random"` (training) takes the stock extractor's windows for the same numpy seed."""
    clips = [_clips()["long noise"], np.tile(_clips()["sine"], 6), _clips()["sine"]]
    ours = ClipClapFeatureExtractor(truncation=truncation, chunk_selection="random")
    for seed in (0, 1):
        np.random.seed(seed)
        drawn = ours(clips, sampling_rate=RATE, return_tensors="np")
        np.random.seed(seed)
        expected = stock(clips, sampling_rate=RATE, truncation=truncation, return_tensors="np")
        np.testing.assert_allclose(drawn["input_features"], expected["input_features"], atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(drawn["is_longer"], expected["is_longer"])


def test_sentence_transformers_audio_uses_the_torch_features(tmp_path):
    """Through `SentenceTransformer.encode`: the embedding equals the model fed the stock extractor's features."""
    from sentence_transformers import SentenceTransformer

    from hub_configs.factory import make_repo

    repo = make_repo("clipclap", str(tmp_path / "clipclap"), tiny=True)
    model = SentenceTransformer(repo, trust_remote_code=True)
    module = model[0]
    clip = _clips()["sine"].astype(np.float32)
    embedding = model.encode([{"array": clip, "sampling_rate": RATE}], convert_to_tensor=True)[0]
    stock = ClapFeatureExtractor(**{**module.processor.feature_extractor.to_dict(), "feature_extractor_type": None})
    features = stock([clip], sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        reference = module.model.get_audio_features(
            input_features=features["input_features"], is_longer=torch.tensor([[False]])
        )
    reference = torch.nn.functional.normalize(getattr(reference, "pooler_output", reference), dim=-1)[0]
    torch.testing.assert_close(embedding, reference, atol=1e-5, rtol=0)
