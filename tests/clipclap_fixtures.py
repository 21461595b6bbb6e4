"""Fixtures of the CLIPCLAP tests: tiny random stock CLIP/CLAP sources and the repo converted from them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

SR = 48_000


@dataclass
class TinySources:
    clip_dir: str
    clap_dir: str
    projection: str


@pytest.fixture(scope="session")
def clipclap_sources(tmp_path_factory) -> TinySources:
    from hub_configs.clipclap import build_tiny_sources

    root = tmp_path_factory.mktemp("clipclap_sources")
    return TinySources(*build_tiny_sources(str(root), seed=0))


@pytest.fixture(scope="session")
def clipclap_repo(clipclap_sources, tmp_path_factory) -> str:
    from hub_configs.factory import make_repo

    out = str(tmp_path_factory.mktemp("clipclap_repo"))
    return make_repo(
        "clipclap",
        out,
        clip=clipclap_sources.clip_dir,
        clap=clipclap_sources.clap_dir,
        projection=clipclap_sources.projection,
    )


@pytest.fixture(scope="session")
def clipclap_loaded(clipclap_repo):
    """`(model, processor)` loaded through the Auto classes with remote code."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(clipclap_repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(clipclap_repo, trust_remote_code=True)
    return model, processor


def tone(seconds: float, sampling_rate: int, frequencies=(220.0, 1000.0, 3100.0), seed: int = 0) -> np.ndarray:
    """A band-limited test signal (all partials far below 8 kHz) sampled analytically at `sampling_rate`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    phases = rng.uniform(0, 2 * np.pi, len(frequencies))
    signal = sum(np.sin(2 * np.pi * f * t + p) / (i + 1) for i, (f, p) in enumerate(zip(frequencies, phases)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    return (0.3 * signal * envelope).astype(np.float32)


def write_wav(path: str, waveform: np.ndarray, sampling_rate: int) -> str:
    import soundfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, waveform, sampling_rate, subtype="FLOAT")
    return path
