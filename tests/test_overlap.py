"""Overlapping preprocessing with the forward: sentence-transformers' pool with several processes on one device.

The module cannot see the next batch (sentence-transformers calls `preprocess` for batch i+1 only after it has copied
batch i's embeddings back), so the overlap comes from a pool of processes on the same device, each preparing its own
chunks while another's forward runs. These tests check that such a pool returns exactly the single-process
embeddings, in input order, for every modality, and that one pool serves several calls.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.mark.slow
def test_pool_on_one_device_matches_single_process(tmp_path):
    from sentence_transformers import SentenceTransformer

    from hub_configs.factory import make_repo

    repo = make_repo("clipclap", str(tmp_path / "clipclap"), tiny=True)
    model = SentenceTransformer(repo, trust_remote_code=True, device="cpu")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"image{index}.png"))
        Image.fromarray(rng.integers(0, 256, (40 + index, 52, 3), dtype=np.uint8)).save(paths[-1])
    clips = [
        {"array": (0.1 * rng.standard_normal(24_000 * (1 + i))).astype(np.float32), "sampling_rate": 48_000}
        for i in range(3)
    ]
    inputs = [
        "a dog barking",
        paths[0],
        clips[0],
        "a very long caption about a harbour at dawn " * 30,
        paths[1],
        clips[1],
        "x",
        clips[2],
        paths[2],
    ]
    expected = model.encode(inputs, batch_size=2)
    reversed_expected = model.encode(inputs[::-1], batch_size=2)
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        # One item per chunk: the two processes interleave, and results must still come back in input order.
        pooled = model.encode(inputs, batch_size=2, pool=pool, chunk_size=1)
        pooled_again = model.encode(inputs[::-1], batch_size=2, pool=pool, chunk_size=2)
    finally:
        model.stop_multi_process_pool(pool)
    np.testing.assert_allclose(pooled, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(pooled_again, reversed_expected, atol=1e-6, rtol=0)
    # Distinct inputs give distinct rows, so a swapped order could not pass the comparison above.
    assert np.min(np.linalg.norm(expected[:, None] - expected[None], axis=-1)[~np.eye(len(inputs), dtype=bool)]) > 1e-3
