"""Adversarial inputs: every input embeds correctly or fails clearly, in bounded time and memory (issue 13).

The table (`adversarial_cases.CASES`, well over 100 cases across LongCLIP, CLIPCLAP, a stock CLAP and jina-clip-v2)
runs in one subprocess that loads the tiny models once and measures each case's peak RSS on its own; each case is
one test here. The other tests run in this process: threads against serial results, numpy's global RNG, the
number of fetches after a bad item, determinism, imports and checkpoint loading.
"""

from __future__ import annotations

import ast
import base64
import functools
import http.server
import io
import json
import os
import pickle
import re
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tests.adversarial_cases import (
    CASES,
    RATE,
    build_repos,
    build_stock_clap,
    random_image,
    tone,
    with_suite_limits,
)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ST_DOORS = ("image", "audio", "clap")  # sentence-transformers: no positions, so messages name content only


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return build_repos(str(tmp_path_factory.mktemp("adversarial_repos")))


@pytest.fixture(scope="module")
def results(repos, tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial_run")
    (root / "repos.json").write_text(json.dumps(with_suite_limits(repos, str(root / "repos"))))
    out = root / "results.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(root / "modules"), OMP_WAIT_POLICY="PASSIVE")
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(PROJECT_ROOT, "tests", "adversarial_cases.py"),
            str(root / "repos.json"),
            str(out),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return {record["name"]: record for record in json.loads(out.read_text())}


def test_the_table_is_large_and_covers_every_family():
    doors = Counter(item.door for item in CASES)
    assert len(CASES) >= 100 and len({item.name for item in CASES}) == len(CASES)
    assert {"image", "audio", "clap", "jina_image", "jina_text", "processor"} <= set(doors)
    assert sum(item.error is None for item in CASES) >= 40 and sum(item.error is not None for item in CASES) >= 60


@pytest.mark.slow
@pytest.mark.parametrize("name", [item.name for item in CASES])
def test_case(name, results):
    item = next(entry for entry in CASES if entry.name == name)
    record = results[name]
    assert record["outcome"] != "setup-error", record["message"]
    if item.error is None:
        assert record["outcome"] == "ok", f"{record['outcome']}: {record['message']}"
        if item.reference is not None:
            assert "reference_error" not in record, record.get("reference_error")
            assert record["max_diff"] <= item.atol, f"embedding differs from the reference by {record['max_diff']}"
    else:
        assert item.error in record["mro"], f"expected {item.error}, got {record['outcome']}: {record['message']}"
        for fragment in item.fragments:
            assert fragment in record["message"], f"{fragment!r} not in: {record['message']}"
        if item.door in ST_DOORS:
            assert not re.search(r"Input \d", record["message"]), f"a batch position is not the user's: {record}"
        if item.position is not None:
            assert re.search(rf"(Input |\[){item.position}\b", record["message"]), record["message"]
    assert record["peak_mb"] <= item.rss_mb, f"peak RSS {record['peak_mb']:.0f} MB over its baseline"
    assert record["seconds"] <= item.seconds, f"took {record['seconds']:.1f} s"


# ------------------------------------------------------------------------------------------ in-process checks


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    counts: Counter

    def do_GET(self):
        self.counts[self.path.split("?")[0]] += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def counting_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("counted")
    random_image(31).save(root / "counted.png")
    for index in range(6):
        random_image(40 + index).save(root / f"img{index}.png")
    handler = functools.partial(type("Handler", (_CountingHandler,), {"counts": Counter()}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler.func.counts, f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


@pytest.fixture(scope="module")
def clipclap(repos):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(repos["clipclap"], trust_remote_code=True)


def test_a_bad_type_fetches_nothing_and_a_corrupt_item_fetches_once(clipclap, counting_server, tmp_path):
    counts, base_url, _ = counting_server
    url = f"{base_url}/counted.png"
    counts.clear()
    # sentence-transformers retries preprocess after a TypeError: classification comes before any fetch.
    for bad in (
        None,
        {"image": None},
        {"image": 5},
        np.ones((8, 8, 3), bool),
        {"array": tone(1.0, RATE), "sampling_rate": True},
    ):
        with pytest.raises(TypeError):
            clipclap.encode(["a caption", url, bad])
    assert counts[url.removeprefix(base_url)] == 0
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    # encode sorts by length and loading stops at the first failure in that order (pending loads are cancelled):
    # a URL longer than the path is loaded before the corrupt file fails, so it is fetched exactly once.
    long_url = url + "?pad=" + "x" * len(str(corrupt))
    with pytest.raises(ValueError, match="corrupt.png"):
        clipclap.encode(["a caption", long_url, str(corrupt)])
    assert counts[url.removeprefix(base_url)] == 1
    # The other way round it may be fetched or cancelled, never fetched twice.
    with pytest.raises(ValueError, match="corrupt.png"):
        clipclap.encode(["a caption", url, str(corrupt)])
    fetched = counts[url.removeprefix(base_url)]
    assert fetched in (1, 2)
    # A bad value found at classification fetches nothing either.
    with pytest.raises(ValueError, match="outside"):
        clipclap.encode([url, {"array": np.zeros(4800, np.float32), "sampling_rate": 10**9}])
    assert counts[url.removeprefix(base_url)] == fetched


def _mixed_items(base_url: str, root) -> list:
    """200 items of every kind, in a fixed pseudo-random order."""
    rng = np.random.RandomState(5)
    buffer = io.BytesIO()
    random_image(50).save(buffer, format="PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    kinds = [
        lambda i: f"caption number {i} about a {['cat', 'dog', 'harbour'][i % 3]}",
        lambda i: random_image(i % 7),
        lambda i: f"{base_url}/img{i % 6}.png",
        lambda i: str(root / f"img{i % 6}.png"),
        lambda i: data_uri,
        lambda i: np.asarray(random_image(i % 5)),
        lambda i: tone(0.5 + (i % 4) * 0.25, RATE, freq=200.0 + 50 * (i % 5)),
        lambda i: {"array": tone(1.0, 16_000, freq=300.0 + i % 3), "sampling_rate": 16_000},
    ]
    weights = np.array([5, 3, 2, 2, 1, 2, 1, 1], dtype=float)
    choices = rng.choice(len(kinds), size=200, p=weights / weights.sum())
    return [kinds[kind](index) for index, kind in enumerate(choices)]


@pytest.mark.slow
def test_eight_threads_of_200_mixed_items_equal_serial(clipclap, counting_server):
    _, base_url, root = counting_server
    items = _mixed_items(base_url, root)
    serial = clipclap.encode(items, batch_size=32, convert_to_tensor=True)
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda _: clipclap.encode(items, batch_size=32, convert_to_tensor=True), range(8)))
    for result in parallel:
        torch.testing.assert_close(result, serial, atol=1e-5, rtol=0)
    # And each item equals its own single encode (order, batching and threads do not leak between items).
    for index in (0, 7, 63, 128, 199):
        torch.testing.assert_close(
            clipclap.encode([items[index]], convert_to_tensor=True)[0], serial[index], atol=1e-5, rtol=0
        )


def test_results_do_not_depend_on_order_batch_size_threads_or_a_failed_call(clipclap, counting_server):
    _, base_url, root = counting_server
    items = _mixed_items(base_url, root)[:24]
    reference = clipclap.encode(items, batch_size=32, convert_to_tensor=True)
    order = np.random.RandomState(1).permutation(len(items))
    shuffled = clipclap.encode([items[i] for i in order], batch_size=7, convert_to_tensor=True)
    torch.testing.assert_close(shuffled[np.argsort(order)], reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        clipclap.encode(items, batch_size=1, convert_to_tensor=True), reference, atol=1e-5, rtol=0
    )
    module = clipclap[0]
    threads = module.loader_threads
    try:
        module.loader_threads = 1
        torch.testing.assert_close(clipclap.encode(items, convert_to_tensor=True), reference, atol=1e-5, rtol=0)
    finally:
        module.loader_threads = threads
    with pytest.raises(ValueError):
        clipclap.encode([*items[:5], f"{base_url}/missing.png"])
    torch.testing.assert_close(clipclap.encode(items, convert_to_tensor=True), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_concurrent_long_clips_leave_numpy_global_rng_alone(clipclap, tmp_path, truncation):
    """Three trials, four threads each, long clips through a stock CLAP extractor and CLIPCLAP's."""
    from sentence_transformers import SentenceTransformer

    stock = SentenceTransformer(
        build_stock_clap(str(tmp_path / "clap"), truncation=truncation), trust_remote_code=True
    )
    clips = [tone(12.0 + i, RATE, freq=300.0 + 40 * i) for i in range(3)] + [
        {"array": tone(14.0, 16_000), "sampling_rate": 16_000}
    ]
    expected = {id(model): model.encode(clips, convert_to_tensor=True) for model in (stock, clipclap)}
    for trial in range(3):
        np.random.seed(1234 + trial)
        state = np.random.get_state()
        with ThreadPoolExecutor(4) as pool:
            outputs = list(
                pool.map(lambda model: (model, model.encode(clips, convert_to_tensor=True)), [stock, clipclap] * 2)
            )
        after = np.random.get_state()
        assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
        for model, output in outputs:
            torch.testing.assert_close(output, expected[id(model)], atol=1e-6, rtol=0)


@pytest.mark.parametrize("source_rate", [8_000, 16_000, 22_050, 44_100, 96_000])
def test_cutting_before_resampling_equals_cutting_after(source_rate):
    import soxr

    from st_modules.media_inputs import load_audio

    wave = np.random.RandomState(source_rate % 97).standard_normal(25 * source_rate).astype(np.float32)
    window = 10 * RATE
    got, cropped = load_audio({"array": wave, "sampling_rate": source_rate}, 0, RATE, window=window)
    full = soxr.resample(wave, source_rate, RATE, quality="HQ")
    start = (len(full) - window) // 2
    assert cropped and got.shape == (window,)
    np.testing.assert_allclose(got, full[start : start + window], atol=1e-5, rtol=0)
    short, cropped = load_audio(
        {"array": wave[: 5 * source_rate], "sampling_rate": source_rate}, 0, RATE, window=window
    )
    assert not cropped and len(short) == len(soxr.resample(wave[: 5 * source_rate], source_rate, RATE))


def test_pixel_budget_bounds_pixels_in_flight():
    from st_modules.media_inputs import PixelBudget

    budget = PixelBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def work(pixels):
        with budget.hold(pixels):
            with lock:
                held[0] += min(pixels, 100)
                peak[0] = max(peak[0], held[0])
            threading.Event().wait(0.01)
            with lock:
                held[0] -= min(pixels, 100)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, [40, 60, 30, 250, 10, 90, 50, 20] * 3))
    assert 60 <= peak[0] <= 100
    # Picklable (multi-process pools send the module to workers): a copy is a fresh budget of the same size.
    copy = pickle.loads(pickle.dumps(budget))
    assert copy.capacity == 100 and copy is not budget


def test_large_images_processed_at_once_equal_the_batched_processor(repos):
    """Images above PROCESS_AT_ONCE_PIXELS go through the processor alone; rows equal a batched call."""
    from transformers import AutoProcessor

    from st_modules.media_inputs import PROCESS_AT_ONCE_PIXELS, process_images

    image_processor = AutoProcessor.from_pretrained(repos["longclip"], trust_remote_code=True).image_processor
    side = int(PROCESS_AT_ONCE_PIXELS**0.5) + 10
    big = random_image(60, size=(side, side // 2 * 2 + 2))
    small = [random_image(61), random_image(62, size=(300, 90))]
    got = process_images([(0, small[0]), (1, big), (2, small[1])], image_processor)["pixel_values"]
    expected = image_processor([small[0], big, small[1]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_imports_have_no_side_effects(tmp_path):
    code = """
import json, logging, os, random, sys, tempfile, warnings
import numpy as np, torch, transformers, sentence_transformers, PIL.Image
np.random.seed(7); random.seed(7); torch.manual_seed(7)
def snapshot():
    return {
        "np": np.random.get_state()[1][:8].tolist() + [int(np.random.get_state()[2])],
        "random": random.getstate()[1][:8], "torch": torch.random.get_rng_state()[:16].tolist(),
        "env": sorted(os.environ.items()), "warnings": [repr(f) for f in warnings.filters],
        "logging": [repr(h) for h in logging.getLogger().handlers] + [logging.getLogger().level],
        "pil": PIL.Image.MAX_IMAGE_PIXELS, "threads": torch.get_num_threads(),
        "tmp": sorted(os.listdir(tempfile.gettempdir())),  # onnxruntime's import writes a file there
    }
before = snapshot()
import importlib, pkgutil, st_modules
for module in pkgutil.iter_modules(st_modules.__path__):
    importlib.import_module("st_modules." + module.name)
from hub_configs.cli import build_parser
build_parser()  # every mmhub command
print(json.dumps(before == snapshot()))
"""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, env=env
    )
    assert output.returncode == 0, output.stderr[-3000:]
    assert output.stdout.strip().splitlines()[-1] == "true"


def test_every_checkpoint_load_is_weights_only():
    calls = []
    for folder in ("st_modules", "hub_configs", "diffusers_adapters"):
        for name in sorted(os.listdir(os.path.join(PROJECT_ROOT, folder))):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(PROJECT_ROOT, folder, name), encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                is_torch_load = (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                )
                if is_torch_load:
                    weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                    calls.append((f"{folder}/{name}:{node.lineno}", weights_only))
    assert calls, "expected the converters' torch.load calls"
    for where, keyword in calls:
        assert keyword and isinstance(keyword[0].value, ast.Constant) and keyword[0].value.value is True, where


def test_settings_are_module_config_keys(repos, tmp_path):
    """The limits are `multimodal_config.json` keys with defaults: old configs load, saved ones keep them."""
    from sentence_transformers import SentenceTransformer

    from st_modules.multimodal_transformer import MultimodalTransformer

    for key in ("max_image_pixels", "max_decode_pixels", "reduced_decoding", "max_audio_seconds", "url_timeout"):
        assert key in MultimodalTransformer.config_keys
    config_path = os.path.join(repos["longclip"], "multimodal_config.json")
    with open(config_path) as handle:
        config = json.load(handle)
    assert "max_image_pixels" not in config  # a repo written before these keys existed
    model = SentenceTransformer(repos["longclip"], trust_remote_code=True)
    model.save(str(tmp_path / "saved"))
    with open(tmp_path / "saved" / "multimodal_config.json") as handle:
        saved = json.load(handle)
    assert saved["max_image_pixels"] == 40_000_000 and saved["reduced_decoding"] is False
    saved["max_image_pixels"] = 1000
    with open(tmp_path / "saved" / "multimodal_config.json", "w") as handle:
        json.dump(saved, handle)
    strict = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    with pytest.raises(ValueError, match="1000-pixel limit"):
        strict.encode([random_image(1, size=(50, 50))])
    strict.encode([random_image(1, size=(30, 30))])
    with pytest.raises(ValueError, match="max_image_pixels must be a positive int"):
        MultimodalTransformer(repos["longclip"], max_image_pixels=0, trust_remote_code=True)
