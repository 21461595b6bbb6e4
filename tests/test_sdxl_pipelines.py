"""LongCLIP SDXL adapter end to end: 2-step pipeline runs, custom_pipeline loading (local and Hub cache), mmhub."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sdxl_fixtures import long_components, words

from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

LONG_PROMPT = words(158)  # 160 tokens with BOS/EOS -> 231 positions
LONG_LENGTH = 231
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record_context_lengths(pipe) -> list[int]:
    lengths = []

    def hook(module, args, kwargs):
        states = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        lengths.append(states.shape[1])

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    return lengths


def _image(seed: int = 0, size: int = 64):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _run(pipe, **kwargs):
    generator = torch.Generator("cpu").manual_seed(0)
    defaults = dict(num_inference_steps=2, output_type="np", generator=generator, negative_prompt="blurry")
    return pipe(prompt=LONG_PROMPT, **{**defaults, **kwargs}).images


def _pipelines():
    from diffusers import (
        ControlNetModel,
        StableDiffusionXLControlNetPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPAGPipeline,
        StableDiffusionXLPipeline,
    )

    components = long_components()
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(components["unet"], conditioning_embedding_out_channels=(4, 8))
    size = dict(height=64, width=64)
    return {
        "txt2img": (StableDiffusionXLPipeline(**components), size),
        "img2img": (StableDiffusionXLImg2ImgPipeline(**components), dict(image=_image(), strength=0.9)),
        "inpaint": (
            StableDiffusionXLInpaintPipeline(**components),
            dict(image=_image(), mask_image=_image(1).convert("L"), strength=0.9, **size),
        ),
        "controlnet": (
            StableDiffusionXLControlNetPipeline(**components, controlnet=controlnet),
            dict(image=_image(2), **size),
        ),
        "pag": (StableDiffusionXLPAGPipeline(**components, pag_applied_layers=["mid"]), dict(pag_scale=2.0, **size)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "controlnet", "pag"])
def test_two_step_runs_with_long_prompt(name):
    pipe, kwargs = _pipelines()[name]
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(RuntimeError, match="248|231|77"):
        _run(pipe, **kwargs)  # stock encode_prompt cannot concatenate 248 and 77 positions
    enable_long_prompts(pipe)
    lengths = _record_context_lengths(pipe)
    images = _run(pipe, **kwargs)
    assert images.shape[-3:] == (64, 64, 3) and np.isfinite(images).all()
    assert lengths and set(lengths) == {LONG_LENGTH}
    # The UNet received exactly encode_prompt's output: negative and positive stacked for guidance.
    embeds, negative, *_ = pipe.encode_prompt(LONG_PROMPT, device=torch.device("cpu"), negative_prompt="blurry")
    assert embeds.shape == negative.shape == (1, LONG_LENGTH, 64)


@pytest.fixture(scope="module")
def tiny_repos(tmp_path_factory):
    """`mmhub tiny longclip-sdxl` output: the adapter repo and the tiny SDXL base beside it."""
    from hub_configs.cli import main

    root = tmp_path_factory.mktemp("sdxl")
    adapter = root / "longclip-l-sdxl-tiny"
    assert main(["tiny", "longclip-sdxl", "--out", str(adapter)]) == 0
    return str(adapter), str(root / "longclip-l-sdxl-tiny-sdxl-base")


def test_tiny_adapter_repo_layout(tiny_repos):
    from transformers import CLIPTextModel, CLIPTokenizer

    adapter, base = tiny_repos
    source = os.path.join(PROJECT_ROOT, "diffusers_adapters", "pipeline_longclip_sdxl.py")
    with open(os.path.join(adapter, "pipeline.py"), "rb") as published, open(source, "rb") as original:
        assert published.read() == original.read()
    encoder = CLIPTextModel.from_pretrained(adapter, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(adapter, subfolder="tokenizer")
    assert encoder.config.max_position_embeddings == tokenizer.model_max_length == 248
    assert tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    with open(os.path.join(adapter, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert "custom_pipeline=REPO" in card and "{{" not in card and "random" in card
    with open(os.path.join(base, "model_index.json"), encoding="utf-8") as handle:
        index = json.load(handle)
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert os.path.isdir(os.path.join(base, part)), part


_LOAD_AND_RUN = textwrap.dedent(
    """
    import hashlib, sys, torch
    from diffusers import DiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer
    base, adapter, custom = sys.argv[1:4]
    text_encoder = CLIPTextModel.from_pretrained(adapter, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(adapter, subfolder="tokenizer")
    pipe = DiffusionPipeline.from_pretrained(
        base, custom_pipeline=custom, text_encoder=text_encoder, tokenizer=tokenizer, trust_remote_code=True
    )
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        prompt=sys.argv[4], negative_prompt="blurry", num_inference_steps=2, height=64, width=64, output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
    ).images
    print("RESULT", type(pipe).__name__, hashlib.sha256(image.astype("float32").tobytes()).hexdigest())
    """
)


def _digest(images) -> str:
    return hashlib.sha256(np.asarray(images, dtype=np.float32).tobytes()).hexdigest()


def _reference_digest(base: str, adapter: str) -> str:
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionXLPipeline.from_pretrained(
        base,
        text_encoder=CLIPTextModel.from_pretrained(adapter, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(adapter, subfolder="tokenizer"),
    )
    pipe.set_progress_bar_config(disable=True)
    return _digest(_run(enable_long_prompts(pipe), height=64, width=64))


@pytest.mark.slow
def test_custom_pipeline_from_local_folder(tiny_repos):
    from diffusers import DiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    adapter, base = tiny_repos
    pipe = DiffusionPipeline.from_pretrained(
        base,
        custom_pipeline=adapter,
        text_encoder=CLIPTextModel.from_pretrained(adapter, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(adapter, subfolder="tokenizer"),
        trust_remote_code=True,
    )
    assert type(pipe).__name__ == "LongCLIPStableDiffusionXLPipeline"
    pipe.set_progress_bar_config(disable=True)
    lengths = _record_context_lengths(pipe)
    assert _digest(_run(pipe, height=64, width=64)) == _reference_digest(base, adapter)
    assert set(lengths) == {LONG_LENGTH}
    pipe.set_long_prompt_mode("paper")
    assert np.isfinite(_run(pipe, height=64, width=64)).all()
    assert set(lengths) == {LONG_LENGTH, 248}


def _cache_repo(cache: str, repo_id: str, folder: str) -> str:
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo_dir, "snapshots", revision)
    shutil.copytree(folder, snapshot)
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as handle:
        handle.write(revision)
    return snapshot


@pytest.mark.slow
def test_custom_pipeline_from_hub_cache_snapshot_offline(tiny_repos, tmp_path):
    adapter, base = tiny_repos
    cache = str(tmp_path / "hub")
    snapshot = _cache_repo(cache, "mmhub-test/longclip-l-sdxl", adapter)
    _cache_repo(cache, "mmhub-test/tiny-sdxl", base)
    env = {**os.environ, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1", "PYTHONPATH": PROJECT_ROOT}
    env.pop("HF_HOME", None)
    script = tmp_path / "load.py"
    script.write_text(_LOAD_AND_RUN)
    # Repo ids for the base and the adapter weights, the snapshot path for the pipeline code (a Hub id needs
    # a `model_info` call that offline mode refuses).
    args = ["mmhub-test/tiny-sdxl", "mmhub-test/longclip-l-sdxl", snapshot, LONG_PROMPT]
    result = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    _, class_name, digest = line.split()
    assert class_name == "LongCLIPStableDiffusionXLPipeline"
    assert digest == _reference_digest(base, adapter)


@pytest.mark.slow
def test_fp16_pipeline_run():
    from diffusers import StableDiffusionXLPipeline

    pipe = enable_long_prompts(StableDiffusionXLPipeline(**long_components()).to(torch.float16))
    pipe.set_progress_bar_config(disable=True)
    lengths = _record_context_lengths(pipe)
    latents = _run(pipe, height=64, width=64, output_type="latent")
    assert latents.dtype == torch.float16 and torch.isfinite(latents).all()
    assert set(lengths) == {LONG_LENGTH}
    pipe.to(torch.float32)  # the cached components are shared with other tests


# ---------------------------------------------------------------- mmhub convert longclip-sdxl


def _original_text_forward(state: dict, ids: torch.Tensor, heads: int) -> torch.Tensor:
    """The original Long-CLIP text tower: two position tables split at row 20, pre-LN blocks, QuickGELU, ln_final."""
    import torch.nn.functional as F

    length = ids.shape[1]
    mask1 = (torch.arange(length) < 20).float()[:, None]
    x = state["token_embedding.weight"][ids]
    x = x + state["positional_embedding"][:length] * mask1 + state["positional_embedding_res"][:length] * (1 - mask1)
    causal = torch.full((length, length), float("-inf")).triu(1)
    index = 0
    while f"transformer.resblocks.{index}.ln_1.weight" in state:
        prefix = f"transformer.resblocks.{index}."
        p = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        width = x.shape[-1]
        h = F.layer_norm(x, (width,), p["ln_1.weight"], p["ln_1.bias"])
        q, k, v = (h @ p["attn.in_proj_weight"].T + p["attn.in_proj_bias"]).chunk(3, dim=-1)
        split = lambda t: t.reshape(t.shape[0], length, heads, -1).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / (width // heads) ** 0.5 + causal
        attended = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(x.shape)
        x = x + attended @ p["attn.out_proj.weight"].T + p["attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), p["ln_2.weight"], p["ln_2.bias"])
        h = h @ p["mlp.c_fc.weight"].T + p["mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ p["mlp.c_proj.weight"].T + p["mlp.c_proj.bias"]
        index += 1
    return F.layer_norm(x, (x.shape[-1],), state["ln_final.weight"], state["ln_final.bias"])


@pytest.mark.slow
def test_convert_original_checkpoint(tmp_path):
    from transformers import CLIPTextModel

    from hub_configs.cli import main
    from hub_configs.longclip import random_original_checkpoint

    state = random_original_checkpoint(
        text_width=768, text_layers=1, vision_width=64, vision_layers=1, vocab_size=1000, seed=1
    )
    checkpoint = tmp_path / "longclip-L.pt"
    torch.save(state, checkpoint)
    out = tmp_path / "adapter"
    assert (
        main(["convert", "longclip-sdxl", "--checkpoint", str(checkpoint), "--out", str(out), "--dtype", "fp32"]) == 0
    )
    encoder = CLIPTextModel.from_pretrained(out, subfolder="text_encoder")
    ids = torch.randint(0, 999, (2, 248), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = encoder(ids)
    expected = _original_text_forward(state, ids, heads=12)
    torch.testing.assert_close(output.last_hidden_state, expected, rtol=1e-4, atol=1e-4)
    assert os.path.isfile(out / "pipeline.py") and os.path.isfile(out / "tokenizer" / "tokenizer_config.json")

    small = tmp_path / "longclip-B.pt"
    torch.save(random_original_checkpoint(text_width=64, text_layers=1, vision_width=64, vision_layers=1), small)
    assert main(["convert", "longclip-sdxl", "--checkpoint", str(small), "--out", str(tmp_path / "bad")]) == 2
