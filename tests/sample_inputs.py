"""Inputs shared by the contract suites: texts around CLIP's and LongCLIP's limits, small images, tones, JSON reads."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

AUDIO_RATE = 48_000
# Short, past CLIP's 77 tokens, and past LongCLIP's 248 tokens.
TEXTS = [
    "A red bicycle leaning against a wall.",
    " ".join(["a tall lighthouse on a rocky coast under heavy grey clouds with gulls circling"] * 6),
    " ".join(["an old wooden boat drifting slowly across a calm lake at dawn"] * 30),
]


def images(count: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    sizes = [(48, 48), (70, 40), (33, 90), (64, 64)][:count]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def waveforms() -> list[np.ndarray]:
    t = np.arange(int(1.5 * AUDIO_RATE)) / AUDIO_RATE
    return [
        (0.4 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)
        for f in (330.0, 880.0)
    ]


def read_json(folder: str, name: str) -> dict:
    with open(os.path.join(folder, name), encoding="utf-8") as handle:
        return json.load(handle)
