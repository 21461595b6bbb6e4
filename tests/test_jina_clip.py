"""jina-clip-v2: conversion from the upstream layout, parity with an independent forward, upstream API, Hub loading."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

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
    """State dict, config.json and the referenced text backbone config.json of an upstream-layout snapshot."""
    from safetensors.torch import load_file

    with open(os.path.join(upstream_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    backbone_path = os.path.join(
        upstream_dir, *config["text_config"]["hf_model_name_or_path"].split("/"), "config.json"
    )
    with open(backbone_path, encoding="utf-8") as handle:
        backbone = json.load(handle)
    return load_file(os.path.join(upstream_dir, "model.safetensors")), config, backbone


def _image(seed: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


# ----------------------------------------------------------------------------------------------- conversion
# Keys of the published jinaai/jina-clip-v2 config.json (top level, text_config, hf_model_config_kwargs,
# vision_config): the tiny upstream snapshot must have exactly these.
PUBLISHED_CONFIG_KEYS = {
    "": {
        "add_projections", "architectures", "auto_map", "initializer_factor", "logit_scale_init_value",
        "matryoshka_dimensions", "model_type", "projection_dim", "text_config", "torch_dtype",
        "transformers.js_config", "truncate_dim", "use_text_flash_attn", "use_vision_xformers", "vision_config",
    },
    "text_config": {
        "default_instruction_task", "default_lora_task", "embed_dim", "hf_model_config_kwargs",
        "hf_model_name_or_path", "model_type", "pooler_type", "proj_bias", "proj_type",
    },
    "hf_model_config_kwargs": {
        "load_trained_adapters", "lora_adaptations", "lora_alpha", "lora_dropout_p", "lora_main_params_trainable",
        "lora_rank", "task_instructions", "use_flash_attn",
    },
    "vision_config": {
        "embed_dim", "fused_layer_norm", "head_width", "image_size", "intp_freq", "layers", "ls_init_value",
        "mlp_ratio", "model_type", "naive_swiglu", "patch_dropout", "patch_size", "post_norm", "proj_type",
        "pt_hw_seq_len", "qkv_bias", "rope_embeddings", "subln", "width", "x_attention",
    },
}  # fmt: skip


def test_tiny_upstream_snapshot_is_the_published_layout(upstream_dir):
    from safetensors import safe_open

    _, config, backbone = _upstream(upstream_dir)
    assert set(config) == PUBLISHED_CONFIG_KEYS[""]
    assert set(config["text_config"]) == PUBLISHED_CONFIG_KEYS["text_config"]
    kwargs = config["text_config"]["hf_model_config_kwargs"]
    assert set(kwargs) == PUBLISHED_CONFIG_KEYS["hf_model_config_kwargs"]
    assert set(config["vision_config"]) == PUBLISHED_CONFIG_KEYS["vision_config"]
    assert config["text_config"]["hf_model_name_or_path"] == "jinaai/jina-embeddings-v3"
    assert kwargs["lora_adaptations"] == ["retrieval.query"] == list(kwargs["task_instructions"])
    with safe_open(os.path.join(upstream_dir, "model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}  # transformers 4 refuses files without it
        lora_a = handle.get_tensor(
            jina.UPSTREAM_TEXT_PREFIX + "embeddings.word_embeddings.parametrizations.weight.0.lora_A"
        )
    assert lora_a.shape[0] == len(kwargs["lora_adaptations"]) == 1
    # Sizes come from the referenced backbone config, as upstream reads them.
    assert backbone["num_attention_heads"] == jina.TINY_SIZES["text_heads"]
    assert backbone["rotary_emb_base"] == 20000.0


def test_tiny_repo_layout(repo_dir):
    files = set(os.listdir(repo_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "modules.json"} <= files
    from hub_configs.families import get_family

    code_files = {os.path.basename(path) for path in get_family("jina-clip-v2").code_files}
    assert "image_processing_jina_clip.py" in code_files
    assert code_files == {name for name in files if name.endswith(".py")}
    with open(os.path.join(repo_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["auto_map"]["AutoModel"] == "modeling_jina_clip.JinaCLIPModel"
    with open(os.path.join(repo_dir, "config_sentence_transformers.json"), encoding="utf-8") as handle:
        prompts = json.load(handle)["prompts"]
    # Exactly the converted checkpoint's tasks: the published model carries one LoRA adapter.
    assert prompts == {"retrieval.query": "Represent the query for retrieving evidence documents: "}
    with open(os.path.join(repo_dir, "multimodal_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["max_seq_length"] == 8194  # upstream custom_st: the tokenizer's limit


def _multi_task_snapshot(path, seed: int, default_task: str) -> str:
    return jina.write_tiny_upstream_checkpoint(
        str(path),
        seed=seed,
        task_instructions=jina.MULTI_TASK_INSTRUCTIONS,
        default_lora_task=default_task,
        lora_rank=2,
        lora_alpha=3,
    )


@pytest.mark.parametrize("layout", ["published", "multi-task"])
def test_text_features_match_upstream_forward(tmp_path, layout):
    """Convert a random upstream-layout snapshot; texts in four scripts match the independent forward."""
    if layout == "published":
        upstream_dir = jina.write_tiny_upstream_checkpoint(str(tmp_path / "up"), seed=1)
    else:
        upstream_dir = _multi_task_snapshot(tmp_path / "up", seed=1, default_task="text-matching")
    repo = make_repo("jina-clip-v2", str(tmp_path / "repo"), checkpoint=upstream_dir, dtype="fp32")
    model, processor = _load(repo)
    state_dict, config, backbone = _upstream(upstream_dir)
    assert model.config.task_instructions == config["text_config"]["hf_model_config_kwargs"]["task_instructions"]
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (tokens["attention_mask"] == 0).any(), "the batch must exercise padding"
    with torch.inference_mode():
        ours = model.get_text_features(**tokens).pooler_output
    reference = reference_text_embeddings(state_dict, config, backbone, tokens["input_ids"])
    torch.testing.assert_close(ours.double(), reference, atol=ATOL, rtol=0)
    with open(os.path.join(repo, "config_sentence_transformers.json"), encoding="utf-8") as handle:
        assert json.load(handle)["prompts"] == config["text_config"]["hf_model_config_kwargs"]["task_instructions"]
    if layout == "multi-task":
        # The merged adapter (and its alpha / rank scale) matters: another task's adapter gives something else.
        other = dict(config, text_config=dict(config["text_config"], default_lora_task="retrieval.query"))
        assert (
            reference_text_embeddings(state_dict, other, backbone, tokens["input_ids"]) - reference
        ).abs().max() > 1e-3


def test_image_features_match_upstream_forward(upstream_dir, loaded):
    model, _ = loaded
    state_dict, config, backbone = _upstream(upstream_dir)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(
        ours.double(), reference_image_embeddings(state_dict, config, pixels), atol=ATOL, rtol=0
    )


def _upstream_pixels(images, size: int = 64) -> torch.Tensor:
    """Upstream's image transform, step for step with torchvision on PIL: bicubic short-side resize, centre crop
    (offsets rounded), RGB conversion after the geometry, ToTensor, CLIP normalisation."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            lambda image: image.convert("RGB"),
            transforms.ToTensor(),
            transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ]
    )
    return torch.stack([transform(image) for image in images])


# Sizes whose crop margins hit every remainder modulo 4 (3 is where flooring and rounding part), square ones, one
# smaller than the model input and one much larger.
IMAGE_SIZES = [(64, 64), (90, 70), (50, 120), (70, 64), (64, 71), (33, 97), (200, 131), (517, 512), (5, 3)]


def _image_in_mode(seed: int, size, mode: str) -> Image.Image:
    rgba = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    return image if mode == "RGBA" else image.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "CMYK", "I", "1"])
def test_image_processor_reproduces_upstream_pixels_exactly(repo_dir, loaded, mode):
    """The processor, `AutoImageProcessor` and `AutoProcessor` give upstream's pixels bit for bit, any size and mode."""
    from transformers import AutoImageProcessor

    _, processor = loaded
    images = [_image_in_mode(i, size, mode) for i, size in enumerate(IMAGE_SIZES)]
    expected = _upstream_pixels(images)
    auto = AutoImageProcessor.from_pretrained(repo_dir, trust_remote_code=True)
    for door in (processor.image_processor, auto):
        assert torch.equal(door(images, return_tensors="pt")["pixel_values"], expected)
    assert torch.equal(processor(images=images, return_tensors="pt")["pixel_values"], expected)


def test_crop_offset_rounds_like_upstream(loaded):
    """A margin of 3 mod 4 is where transformers' CLIPImageProcessor (floor) and upstream (round) part."""
    from st_modules.image_processing_jina_clip import centre_crop_box

    _, processor = loaded
    assert centre_crop_box(70, 64, 64)[0] == 3  # round(6 / 2) = 3
    assert centre_crop_box(67, 64, 64)[0] == 2  # round(1.5) = 2 (half to even); flooring gives 1 as well
    assert centre_crop_box(71, 64, 64)[0] == 4  # round(3.5) = 4; flooring gives 3
    image = _image_in_mode(0, (71, 64), "RGB")
    window = np.asarray(image.convert("RGB"))[:, 4:68]
    pixels = processor.image_processor([image], return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(
        np.rint((pixels.transpose(1, 2, 0) * OPENAI_CLIP_STD + OPENAI_CLIP_MEAN) * 255), window
    )


def test_image_doors_match_upstream_preprocessing(upstream_dir, loaded, tmp_path):
    """encode_image, forward's logits and the raw features all see upstream's pixels (RGB inputs, any size)."""
    model, processor = loaded
    state_dict, config, backbone = _upstream(upstream_dir)
    images = [_image_in_mode(i, size, "RGB") for i, size in enumerate(IMAGE_SIZES)]
    pixels = _upstream_pixels(images)
    expected = torch.nn.functional.normalize(reference_image_embeddings(state_dict, config, pixels), dim=-1)
    encoded = model.encode_image(images, convert_to_tensor=True)
    torch.testing.assert_close(encoded.double(), expected, atol=ATOL, rtol=0)
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        output = model(input_ids=tokens["input_ids"], pixel_values=processor(images=images)["pixel_values"])
        text = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output.double(), dim=-1)
    reference_logits = text @ expected.t() * model.logit_scale.exp().double()
    torch.testing.assert_close(output.logits_per_text.double(), reference_logits, atol=1e-4, rtol=1e-5)


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
    with pytest.raises(ValueError, match=r"Unsupported task 'summarize'.*'retrieval.query'"):
        model.encode_text(TEXTS, task="summarize")
    # Upstream raises for jina-embeddings-v3 tasks the checkpoint has no adapter for.
    with pytest.raises(ValueError, match="Unsupported task 'retrieval.passage'"):
        model.encode_text(TEXTS, task="retrieval.passage")


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
    state_dict, config, backbone = _upstream(upstream_dir)
    resolved = jina.resolve_text_backbone_config(upstream_dir, config)
    with pytest.raises(ValueError, match="add_projections"):
        jina.upstream_to_config_kwargs(dict(config, add_projections=True), state_dict, resolved)
    with pytest.raises(ValueError, match="cannot represent"):
        jina.upstream_to_config_kwargs(dict(config, mystery_switch=1), state_dict, resolved)
    bad = dict(config, text_config=dict(config["text_config"], default_lora_task="nope"))
    with pytest.raises(ValueError, match="default_lora_task"):
        jina.convert_state_dict(bad, state_dict, resolved)
    for key, value, message in [
        ("position_embedding_type", "absolute", "position_embedding_type"),
        ("hidden_act", "relu", "hidden_act"),
        ("rotary_emb_scale_base", 512, "xPos"),
        ("num_hidden_layers", 3, "text layers"),
        ("num_attention_heads", 3, "multiple"),
        ("task_instructions", {"retrieval.passage": ""}, "one instruction per LoRA task"),
    ]:
        with pytest.raises(ValueError, match=message):
            jina.upstream_to_config_kwargs(config, state_dict, {**resolved, key: value})
    with pytest.raises(ValueError, match="adapters"):
        jina.default_lora_index(
            config, state_dict, {**resolved, "lora_adaptations": ["a", "b"], "task_instructions": {"a": "", "b": ""}}
        )
    # Without the referenced backbone config the converter stops instead of guessing sizes.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    for name in os.listdir(upstream_dir):
        if os.path.isfile(os.path.join(upstream_dir, name)):
            shutil.copyfile(os.path.join(upstream_dir, name), lonely / name)
    with pytest.raises(FileNotFoundError, match="jina-embeddings-v3"):
        make_repo("jina-clip-v2", str(tmp_path / "out"), checkpoint=str(lonely))
    # ... and an explicit text_backbone= makes it convert.
    backbone_dir = os.path.join(upstream_dir, "jinaai", "jina-embeddings-v3")
    make_repo("jina-clip-v2", str(tmp_path / "out"), checkpoint=str(lonely), text_backbone=backbone_dir, dtype="fp32")
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
    assert st.max_seq_length == 8194  # upstream custom_st: unset, so the tokenizer's limit
    # A 3000-token text is embedded whole, as upstream's sentence-transformers door does (encode_text cuts at 512).
    long_text = " ".join(TEXTS * 37)
    ids = model.get_tokenizer()(long_text, return_tensors="pt")
    assert 3000 <= ids["input_ids"].shape[1] <= 8194
    with torch.inference_mode():
        whole = torch.nn.functional.normalize(model.get_text_features(**ids).pooler_output[:, :16], dim=-1)
    np.testing.assert_allclose(st.encode([long_text], normalize_embeddings=True), whole.numpy(), atol=1e-5)
    assert np.abs(model.encode_text([long_text], truncate_dim=16) - whole.numpy()).max() > 1e-3
    # sentence-transformers adds empty "query" / "document" prompts of its own; the repo brings only its task.
    assert {name: text for name, text in st.prompts.items() if text} == model.config.task_instructions
    texts = st.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(texts, model.encode_text(TEXTS, truncate_dim=16), atol=1e-5)
    queries = st.encode(TEXTS, prompt_name="retrieval.query", normalize_embeddings=True)
    np.testing.assert_allclose(queries, model.encode_text(TEXTS, task="retrieval.query", truncate_dim=16), atol=1e-5)
    path = tmp_path / "img.png"
    _image(7, size=(71, 64)).save(path)  # a margin where the crop offset rounds up
    # The query prompt must not reach images.
    images = st.encode([str(path)], prompt_name="retrieval.query", normalize_embeddings=True)
    np.testing.assert_allclose(images, model.encode_image([str(path)], truncate_dim=16), atol=1e-5)
    # Mixed text and image lists in one call, as the seed's snippets do.
    mixed = st.encode([TEXTS[0], str(path), TEXTS[1]], normalize_embeddings=True)
    np.testing.assert_allclose(mixed[[0, 2]], texts[:2], atol=1e-5)
    np.testing.assert_allclose(mixed[1], images[0], atol=1e-5)
