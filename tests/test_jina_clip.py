"""jina-clip-v2: conversion from the upstream layout, parity with an independent forward, upstream API, Hub loading."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from hub_configs import jina_clip_v2 as jina
from hub_configs.factory import make_repo
from tests.jina_fixtures import reference_image_embeddings, reference_text_embeddings

TEXTS = [
    "A photo of a cat sleeping on a red sofa.",  # Latin
    "Кошка спит на красном диване.",  # Cyrillic
    "一只猫睡在红色的沙发上。",  # CJK
    "القطة تنام على الأريكة الحمراء.",  # Arabic
]
ATOL = 1e-5


def _load(path: str):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    return model.eval(), processor


@pytest.fixture(scope="module")
def upstream_dir(tmp_path_factory) -> str:
    return jina.write_tiny_upstream_checkpoint(str(tmp_path_factory.mktemp("jina_upstream")), seed=0)


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory) -> str:
    from hub_configs.cli import main

    out = str(tmp_path_factory.mktemp("jina_tiny"))
    assert main(["tiny", "jina-clip-v2", "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(repo_dir):
    return _load(repo_dir)


def _upstream(upstream_dir: str):
    from safetensors.torch import load_file

    with open(os.path.join(upstream_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    return load_file(os.path.join(upstream_dir, "model.safetensors")), config


def _image(seed: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


# ----------------------------------------------------------------------------------------------- conversion
def test_tiny_repo_layout(repo_dir):
    files = set(os.listdir(repo_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "modules.json"} <= files
    assert {
        "configuration_jina_clip.py",
        "modeling_jina_clip.py",
        "jina_eva_vision.py",
        "processing_jina_clip.py",
    } <= files
    with open(os.path.join(repo_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["auto_map"]["AutoModel"] == "modeling_jina_clip.JinaCLIPModel"
    with open(os.path.join(repo_dir, "config_sentence_transformers.json"), encoding="utf-8") as handle:
        prompts = json.load(handle)["prompts"]
    assert prompts["retrieval.query"] == "Represent the query for retrieving evidence documents: "
    assert prompts["retrieval.passage"] == "Represent the document for retrieval: "


@pytest.mark.parametrize("default_task", ["retrieval.query", "text-matching"])
def test_text_features_match_upstream_forward(tmp_path, default_task):
    """Convert a random upstream-layout checkpoint; texts in four scripts match the independent forward."""
    upstream_dir = jina.write_tiny_upstream_checkpoint(str(tmp_path / "up"), seed=1, default_lora_task=default_task)
    repo = make_repo("jina-clip-v2", str(tmp_path / "repo"), checkpoint=upstream_dir, dtype="fp32")
    model, processor = _load(repo)
    state_dict, config = _upstream(upstream_dir)
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (tokens["attention_mask"] == 0).any(), "the batch must exercise padding"
    with torch.inference_mode():
        ours = model.get_text_features(**tokens).pooler_output
    reference = reference_text_embeddings(state_dict, config, tokens["input_ids"])
    torch.testing.assert_close(ours.double(), reference, atol=ATOL, rtol=0)
    # The merged adapter matters: the un-adapted base weights would give something else.
    other = dict(config, text_config=dict(config["text_config"], default_lora_task="separation"))
    assert (reference_text_embeddings(state_dict, other, tokens["input_ids"]) - reference).abs().max() > 1e-3


def test_image_features_match_upstream_forward(upstream_dir, loaded):
    model, _ = loaded
    state_dict, config = _upstream(upstream_dir)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(
        ours.double(), reference_image_embeddings(state_dict, config, pixels), atol=ATOL, rtol=0
    )


def test_encode_image_preprocessing_matches_upstream_transform(upstream_dir, loaded):
    """`encode_image` = upstream transform (bicubic shortest-edge resize, centre crop, CLIP mean/std) + forward."""
    from torchvision import transforms

    model, _ = loaded
    state_dict, config = _upstream(upstream_dir)
    images = [_image(0), _image(1, size=(50, 120))]
    upstream_transform = transforms.Compose(
        [
            transforms.Resize(64, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(64),
            transforms.ToTensor(),
            transforms.Normalize(jina.OPENAI_CLIP_MEAN, jina.OPENAI_CLIP_STD),
        ]
    )
    pixels = torch.stack([upstream_transform(image) for image in images])
    expected = torch.nn.functional.normalize(reference_image_embeddings(state_dict, config, pixels), dim=-1)
    ours = model.encode_image(images, convert_to_tensor=True)
    torch.testing.assert_close(ours.double(), expected, atol=2e-3, rtol=0)


def test_encode_image_accepts_paths_data_uris_urls_and_pil(loaded, tmp_path):
    import functools
    import http.server
    import threading

    model, _ = loaded
    image = _image(3)
    path = tmp_path / "cat.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cat.png"
        embeddings = model.encode_image([image, str(path), data_uri, url])
    finally:
        server.shutdown()
    assert embeddings.shape == (4, 32)
    for row in embeddings[1:]:
        np.testing.assert_allclose(row, embeddings[0], atol=1e-6)
    np.testing.assert_allclose(model.encode_image(image), embeddings[0], atol=1e-6)


# ------------------------------------------------------------------------------------------------ API
def test_encode_text_matches_features_and_keeps_order(loaded):
    model, processor = loaded
    tokens = processor.tokenizer(TEXTS, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        features = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    encoded = model.encode_text(TEXTS, batch_size=3, convert_to_tensor=True)
    torch.testing.assert_close(encoded, features, atol=1e-5, rtol=0)
    single = model.encode_text(TEXTS[2])
    np.testing.assert_allclose(single, features[2].numpy(), atol=1e-5)


def test_matryoshka_every_declared_dim(loaded):
    model, _ = loaded
    dims = model.config.matryoshka_dimensions
    assert dims == [8, 16, 32]
    full_text = model.encode_text(TEXTS, convert_to_tensor=True, normalize_embeddings=False)
    full_image = model.encode_image([_image(5), _image(6)], convert_to_tensor=True, normalize_embeddings=False)
    for dim in dims:
        text = model.encode_text(TEXTS, truncate_dim=dim, convert_to_tensor=True)
        image = model.encode_image([_image(5), _image(6)], truncate_dim=dim, convert_to_tensor=True)
        for got, full in ((text, full_text), (image, full_image)):
            assert got.shape[1] == dim
            torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(got)), atol=1e-6, rtol=0)
            torch.testing.assert_close(got, torch.nn.functional.normalize(full[:, :dim], dim=-1), atol=1e-6, rtol=0)


def test_task_selects_instruction_prefix_only(loaded):
    model, _ = loaded
    prefix = model.config.task_instructions["retrieval.query"]
    with_task = model.encode_text(TEXTS, task="retrieval.query")
    np.testing.assert_allclose(with_task, model.encode_text([prefix + t for t in TEXTS]), atol=1e-6)
    assert np.abs(with_task - model.encode_text(TEXTS)).max() > 1e-3
    with pytest.raises(ValueError, match="Unsupported task"):
        model.encode_text(TEXTS, task="summarize")


def test_bad_inputs_raise_clear_errors(loaded):
    from st_modules.configuration_jina_clip import JinaCLIPConfig, JinaCLIPVisionConfig

    model, _ = loaded
    with pytest.raises(TypeError, match="sentences"):
        model.encode_text(123)
    with pytest.raises(ValueError, match="truncate_dim"):
        model.encode_text(TEXTS, truncate_dim=0)
    with pytest.raises(ValueError, match="truncate_dim"):
        model.encode_image([_image(0)], truncate_dim=64)
    with pytest.raises(TypeError, match=r"images\[1\]"):
        model.encode_image([_image(0), 42])
    with pytest.raises(ValueError, match="pixel_values"):
        model.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="head_width"):
        JinaCLIPVisionConfig(width=30, head_width=16)
    with pytest.raises(ValueError, match="projection_dim"):
        JinaCLIPConfig(vision_config={"embed_dim": 512, "proj_type": "linear"})


def test_converter_rejects_unsupported_upstream(upstream_dir, tmp_path):
    state_dict, config = _upstream(upstream_dir)
    with pytest.raises(ValueError, match="add_projections"):
        jina.upstream_to_config_kwargs(dict(config, add_projections=True), state_dict)
    bad = dict(config, text_config=dict(config["text_config"], default_lora_task="nope"))
    with pytest.raises(ValueError, match="default_lora_task"):
        jina.convert_state_dict(bad, state_dict)
    with pytest.raises(FileNotFoundError):
        make_repo("jina-clip-v2", str(tmp_path / "out"), checkpoint=str(tmp_path / "missing"))


def test_multilingual_tokenizer_is_xlm_roberta(loaded):
    from transformers import XLMRobertaTokenizer

    _, processor = loaded
    tokenizer = processor.tokenizer
    assert isinstance(tokenizer, XLMRobertaTokenizer)
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == 0 and ids[-1] == 2
        assert tokenizer.unk_token_id not in ids, f"unknown pieces in {text!r}"
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_bf16_default_when_cuda_available(repo_dir, monkeypatch):
    from transformers import AutoModel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = AutoModel.from_pretrained(repo_dir, trust_remote_code=True)
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_hub_cache_offline_load(repo_dir, loaded, tmp_path):
    """`org/name` resolves from a Hub-cache folder with HF_HUB_OFFLINE=1 in a fresh interpreter."""
    snapshot = tmp_path / "hub" / "models--org--tiny-jina-clip-v2" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    for name in os.listdir(repo_dir):
        (snapshot / name).write_bytes((tmp_path.parent / repo_dir / name).read_bytes())
    refs = tmp_path / "hub" / "models--org--tiny-jina-clip-v2" / "refs"
    refs.mkdir()
    (refs / "main").write_text("ab" * 20)
    out = tmp_path / "emb.npy"
    script = textwrap.dedent(
        f"""
        import numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained("org/tiny-jina-clip-v2", trust_remote_code=True)
        np.save({str(out)!r}, model.encode_text({TEXTS!r}, task="retrieval.query", truncate_dim=16))
        """
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    model, _ = loaded
    np.testing.assert_allclose(
        np.load(out), model.encode_text(TEXTS, task="retrieval.query", truncate_dim=16), atol=1e-6
    )


# -------------------------------------------------------------------------------------- sentence-transformers
@pytest.mark.slow
def test_sentence_transformers_door(repo_dir, loaded, tmp_path):
    from sentence_transformers import SentenceTransformer

    model, _ = loaded
    st = SentenceTransformer(repo_dir, trust_remote_code=True, truncate_dim=16, device="cpu")
    texts = st.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(texts, model.encode_text(TEXTS, truncate_dim=16), atol=1e-5)
    queries = st.encode(TEXTS, prompt_name="retrieval.query", normalize_embeddings=True)
    np.testing.assert_allclose(queries, model.encode_text(TEXTS, task="retrieval.query", truncate_dim=16), atol=1e-5)
    path = tmp_path / "img.png"
    _image(7).save(path)
    # The query prompt must not reach images.
    images = st.encode([str(path)], prompt_name="retrieval.query", normalize_embeddings=True)
    np.testing.assert_allclose(images, model.encode_image([str(path)], truncate_dim=16), atol=1e-5)
    # Mixed text and image lists in one call, as the seed's snippets do.
    mixed = st.encode([TEXTS[0], str(path), TEXTS[1]], normalize_embeddings=True)
    np.testing.assert_allclose(mixed[[0, 2]], texts[:2], atol=1e-5)
    np.testing.assert_allclose(mixed[1], images[0], atol=1e-5)
