"""Shared pieces of the ONNX tests: tiny repos of every family exported with `mmhub export-onnx`, inputs, servers."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import numpy as np

from hub_configs.families import FAMILIES
from tests.sample_inputs import AUDIO_RATE, TEXTS, images, read_json, waveforms  # noqa: F401 (re-exported)

ONNX_FAMILIES = [name for name, family in FAMILIES.items() if family.claims("onnx")]
# What the fixtures export: fp32 plus one name of each scheme (fp16, transformers.js q8, sentence-transformers').
VARIANTS = "fp32,fp16,quantized,qint8_avx512_vnni"
_EXPORTED: dict[str, str] = {}


def exported_repos(tmp_path_factory):
    """`get(name)` -> a tiny repo of family `name`, built by the registry's factory and exported by the CLI.

    Built once per test session for every ONNX test module (the session fixtures of those modules call this).
    """
    from hub_configs.cli import main
    from hub_configs.factory import make_repo

    def get(name: str) -> str:
        if name not in _EXPORTED:
            repo = make_repo(name, str(tmp_path_factory.mktemp("onnx_repos") / name), tiny=True)
            assert main(["export-onnx", repo, "--variants", VARIANTS]) == 0
            _EXPORTED[name] = repo
        return _EXPORTED[name]

    return get


def copy_without_weights(repo: str, target) -> str:
    """A copy of `repo` without its PyTorch weights (what backend="onnx" must not need)."""
    shutil.copytree(repo, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "termite"))
    return str(target)


def cosine_rows(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


class StaticServer:
    """A loopback HTTP server for `folder` (image URLs for the card snippets), stopped on exit."""

    def __init__(self, folder: str):
        handler = functools.partial(_QuietHandler, directory=folder)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
