"""transformers.js 4.3.1 in node on exported repos: the jina-clip-v2 card's JS example and the CLIP classes on LongCLIP.

The test installs `@huggingface/transformers` itself (`npm install --ignore-scripts`) into a cache folder outside
the checkout and is skipped only when `node` is absent. Images come from a loopback HTTP server, as the card reads
URLs. Parity: token ids equal the Python tokenizer's; embeddings equal PyTorch on the inputs transformers.js built
(its resizer is not PIL's) and, for images already at the model's size (no resizing), equal the Python path end to
end, within 1e-4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from tests.onnx_fixtures import StaticServer, exported_repos, unit

TRANSFORMERS_JS = "@huggingface/transformers@4.3.1"
JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
QUERY = "Represent the query for retrieving evidence documents: beautiful sunset over the beach"
SENTENCES = ["Un beau coucher de soleil sur la plage", "海滩上美丽的日落", "a red bicycle"]
LONG_CAPTION = " ".join(["a tall lighthouse on a rocky coast under heavy grey clouds with gulls circling"] * 6)


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "multimodal-hub-adapters", "transformers-js-" + TRANSFORMERS_JS.rsplit("@", 1)[1])


@pytest.fixture(scope="session")
def transformers_js() -> str:
    """A folder with `node_modules/@huggingface/transformers` (installed once, then reused)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    folder = _cache_dir()
    package = os.path.join(folder, "node_modules", "@huggingface", "transformers", "package.json")
    if not os.path.isfile(package):
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not; it installs transformers.js for this test"
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        staging = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix="installing-")
        subprocess.run(
            [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", staging, TRANSFORMERS_JS],
            check=True,
            capture_output=True,
            timeout=900,
        )
        try:
            os.replace(staging, folder)  # atomic: a concurrent session either sees no folder or a complete one
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another session won the race
    with open(package, encoding="utf-8") as handle:
        assert json.load(handle)["version"] == TRANSFORMERS_JS.rsplit("@", 1)[1]
    return folder


def run_node(folder: str, script: str, args: dict) -> dict:
    # Node resolves `@huggingface/transformers` from the script's folder, so the script runs from the install.
    target = os.path.join(folder, script)
    shutil.copyfile(os.path.join(JS_DIR, script), target)
    result = subprocess.run(
        ["node", target, json.dumps(args)], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"node {script} failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return exported_repos(tmp_path_factory)


def _write_images(folder, size: int) -> list[str]:
    rng = np.random.default_rng(11)
    names = []
    for index, (width, height) in enumerate([(size, size), (size + 30, size - 5)]):
        name = f"photo{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


@pytest.mark.slow
def test_jina_card_example_runs_in_transformers_js(transformers_js, exported, tmp_path):
    from transformers import AutoModel, AutoProcessor

    repo = exported("jina-clip-v2")
    model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    names = _write_images(tmp_path, model.config.vision_config.image_size)
    with StaticServer(str(tmp_path)) as server:
        args = {
            "root": os.path.dirname(repo),
            "model": os.path.basename(repo),
            "dtype": "fp32",
            "urls": [server.url(name) for name in names],
            "sentences": SENTENCES,
            "query": QUERY,
        }
        out = run_node(transformers_js, "jina_card.mjs", args)
        # The card itself loads dtype "q8" (`model_quantized.onnx`), in node's ONNX Runtime with default options.
        quantized = run_node(transformers_js, "jina_card.mjs", {**args, "dtype": "q8"})
    # transformers.js built its joint processor from preprocessor_config.json's processor_class.
    assert out["processor"] == "JinaCLIPProcessor"
    assert out["input_ids"] == processor.tokenizer(SENTENCES, padding=True)["input_ids"]
    assert out["query_input_ids"] == processor.tokenizer([QUERY])["input_ids"]
    with torch.inference_mode():
        texts = unit(model.get_text_features(input_ids=torch.tensor(out["input_ids"])).pooler_output.numpy())
        query = unit(model.get_text_features(input_ids=torch.tensor(out["query_input_ids"])).pooler_output.numpy())
        pixels = torch.tensor(out["pixel_values"], dtype=torch.float32)
        images = unit(model.get_image_features(pixel_values=pixels).pooler_output.numpy())
    np.testing.assert_allclose(out["l2norm_text_embeddings"], texts, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["query_embeddings"], query, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["l2norm_image_embeddings"], images, atol=1e-4, rtol=0)
    for key, expected in (
        ("l2norm_text_embeddings", texts),
        ("query_embeddings", query),
        ("l2norm_image_embeddings", images),
    ):
        cosine = (unit(np.asarray(quantized[key])) * expected).sum(-1)
        assert cosine.min() >= 0.998 and np.abs(cosine - 1).max() > 0, (key, cosine)
    # End to end against the upstream API: texts, and the image that needs no resizing.
    np.testing.assert_allclose(out["l2norm_text_embeddings"], model.encode_text(SENTENCES), atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        out["l2norm_image_embeddings"][0], model.encode_image(str(tmp_path / names[0])), atol=1e-4, rtol=0
    )


@pytest.mark.slow
def test_clip_classes_of_transformers_js_run_longclip(transformers_js, exported, tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    repo = exported("longclip")
    model = CLIPModel.from_pretrained(repo).eval()  # stock class, no remote code
    tokenizer = CLIPTokenizer.from_pretrained(repo)
    names = _write_images(tmp_path, model.config.vision_config.image_size)
    texts = [LONG_CAPTION, "a cat"]
    with StaticServer(str(tmp_path)) as server:
        args = {
            "root": os.path.dirname(repo),
            "model": os.path.basename(repo),
            "dtype": "fp32",
            "texts": texts,
            "urls": [server.url(name) for name in names],
        }
        out = run_node(transformers_js, "clip_towers.mjs", args)
    ids = tokenizer(texts, padding=True, truncation=True)["input_ids"]
    assert len(ids[0]) > 77 and out["input_ids"] == ids
    with torch.inference_mode():
        text_embeds = model.get_text_features(
            input_ids=torch.tensor(out["input_ids"]), attention_mask=torch.tensor(out["attention_mask"])
        ).pooler_output
        image_embeds = model.get_image_features(pixel_values=torch.tensor(out["pixel_values"])).pooler_output
        from_file = model.get_image_features(
            pixel_values=torch.tensor(np.asarray(_clip_pixels(repo, tmp_path / names[0]), dtype=np.float32))
        ).pooler_output
    np.testing.assert_allclose(out["text_embeds"], text_embeds.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["image_embeds"], image_embeds.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["image_embeds"][:1], from_file.numpy(), atol=1e-4, rtol=0)


def _clip_pixels(repo: str, path) -> np.ndarray:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor.from_pretrained(repo)(Image.open(path), return_tensors="np")["pixel_values"]
