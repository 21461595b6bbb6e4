"""The sentence-transformers module follows sentence-transformers' public protocol only.

No reads of its frames or private locals; features named so its trainer finds them; nothing preprocessed twice
after a bad item (sentence-transformers retries `preprocess` on `TypeError`).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def st_model(longclip_repo):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(longclip_repo, trust_remote_code=True)


@pytest.fixture
def counting_server(tmp_path):
    """A loopback HTTP server over `tmp_path` that counts GET requests per path."""
    counts: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            counts[self.path] = counts.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}", counts
    server.shutdown()


def test_remote_code_reads_no_frames_or_private_locals():
    for name in os.listdir(os.path.join(REPO_ROOT, "st_modules")):
        if name.endswith(".py"):
            with open(os.path.join(REPO_ROOT, "st_modules", name), encoding="utf-8") as handle:
                source = handle.read()
            for forbidden in ("_getframe", "f_locals", "f_back", "inspect.stack", "currentframe"):
                assert forbidden not in source, f"{name} uses {forbidden}"


def test_a_caller_with_a_local_truncate_dim_is_not_affected(st_model):
    truncate_dim = -3  # noqa: F841 - a local of this name made the old module raise
    embeddings = st_model.encode(["a cat", "a dog"], convert_to_tensor=True)
    assert embeddings.shape == (2, st_model.get_embedding_dimension())
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2), atol=1e-6, rtol=0)


def test_truncate_dim_keeps_unit_norm_through_supported_means(st_model):
    full = st_model.encode(["a cat"], convert_to_tensor=True)
    for cut in (st_model.encode(["a cat"], truncate_dim=8, convert_to_tensor=True),):
        torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:, :8], dim=-1), atol=1e-6, rtol=0)
    with st_model.truncate_sentence_embeddings(8):
        cut = st_model.encode(["a cat"], convert_to_tensor=True)
    torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:, :8], dim=-1), atol=1e-6, rtol=0)


def test_a_bad_type_fails_before_anything_is_fetched(st_model, counting_server):
    root, base, counts = counting_server
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "a.png")
    with pytest.raises(TypeError, match="unsupported type"):
        st_model.encode([f"{base}/a.png", "a caption", object()])
    assert counts == {}


def test_a_failing_item_fetches_every_url_once(st_model, counting_server):
    root, base, counts = counting_server
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "a.png")
    (root / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        st_model.encode([f"{base}/a.png", "a caption", f"{base}/broken.png"])
    assert counts == {"/a.png": 1, "/broken.png": 1}


def test_features_survive_the_trainers_collation(st_model):
    """The trainer prefixes a column's features with `<column>_` and finds them by suffix (`_input_ids`, ...)."""
    from sentence_transformers.base.trainer import BaseTrainer

    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (30, 30, 3)).astype(np.uint8))
    anchor = st_model.preprocess(["a cat", image])
    positive = st_model.preprocess(["a dog"])
    batch = {f"anchor_{key}": value for key, value in anchor.items()}
    batch.update({f"positive_{key}": value for key, value in positive.items()})
    features, _ = BaseTrainer.collect_features(None, batch)
    assert [sorted(feature) for feature in features] == [sorted(anchor), sorted(positive)]
    with torch.inference_mode():
        embedded = st_model(features[0])["sentence_embedding"]
    torch.testing.assert_close(embedded, st_model.encode(["a cat", image], convert_to_tensor=True), atol=1e-6, rtol=0)
