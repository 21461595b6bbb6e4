"""Outgrowing one process: sentence-transformers' multi-process pool and the Ray Data example."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image_folder(path, count=6):
    path.mkdir()
    for index in range(count):
        array = (np.random.RandomState(index).rand(30 + index, 40, 3) * 255).astype(np.uint8)
        Image.fromarray(array).save(path / f"img{index}.png")
    return sorted(str(p) for p in path.iterdir())


@pytest.fixture(scope="module")
def st_model(longclip_repo):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(longclip_repo, trust_remote_code=True)


@pytest.mark.slow
def test_multi_process_pool_matches_single_process(st_model, tmp_path):
    paths = _image_folder(tmp_path / "images", count=4)
    inputs = ["A cat", paths[0], "a long caption " * 40, paths[1], paths[2], "x", paths[3]]
    expected = st_model.encode(inputs)
    pooled = st_model.encode(inputs, device=["cpu", "cpu"], chunk_size=3)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)


@pytest.mark.slow
def test_ray_data_example(longclip_repo, st_model, tmp_path):
    ray = pytest.importorskip("ray")
    spec = importlib.util.spec_from_file_location(
        "ray_embed_images", os.path.join(REPO_ROOT, "examples", "ray_embed_images.py")
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    paths = _image_folder(tmp_path / "folder")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        rows = example.embed_folder(str(tmp_path / "folder"), longclip_repo, batch_size=4).take_all()
    finally:
        ray.shutdown()
    by_path = {row["path"]: np.asarray(row["embedding"]) for row in rows}
    assert sorted(by_path) == paths
    expected = st_model.encode(paths)
    np.testing.assert_allclose(np.stack([by_path[p] for p in paths]), expected, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        example.list_images(str(tmp_path / "nowhere"))
