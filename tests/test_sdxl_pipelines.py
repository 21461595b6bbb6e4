"""LongCLIP SDXL adapter end to end: 2-step pipeline runs, custom_pipeline loading (local and Hub cache), mmhub."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from sdxl_fixtures import long_components, long_pipeline, refiner_components, words

from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

# A weighted ~160-token prompt: 159 tokens with BOS/EOS -> 231 positions; weights before and past token 77.
LONG_PROMPT = f"{words(60)} (river:1.3) {words(60, 3)} [stone] ((cloud)) {words(34, 7)}"
NEGATIVE = "(blurry:1.2), low quality"
LONG_LENGTH = 231
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def _record_contexts(pipe) -> list[torch.Tensor]:
    """Every `encoder_hidden_states` the denoiser receives."""
    contexts = []

    def hook(module, args, kwargs):
        contexts.append(kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[2])

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    return contexts


def _image(seed: int = 0, size: int = 64):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _run(pipe, **kwargs):
    generator = torch.Generator("cpu").manual_seed(0)
    defaults = dict(num_inference_steps=2, output_type="np", generator=generator, negative_prompt=NEGATIVE)
    output = pipe(prompt=LONG_PROMPT, **{**defaults, **kwargs})
    return output.frames if hasattr(output, "frames") else output.images


def _unet(components, **changes):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel.from_config({**components["unet"].config, **changes})


def _pipeline(name: str):
    """`(pipeline, call kwargs)` for one SDXL pipeline of diffusers on the tiny LongCLIP components."""
    import diffusers

    components = long_components()
    plain = {key: value for key, value in components.items() if key not in ("image_encoder", "feature_extractor")}
    size = dict(height=64, width=64)
    image, mask, control = _image(), _image(1).convert("L"), _image(2)
    torch.manual_seed(0)
    if "controlnet_union" in name:
        unet_config = components["unet"].config
        keys = [
            "in_channels",
            "block_out_channels",
            "layers_per_block",
            "cross_attention_dim",
            "transformer_layers_per_block",
            "attention_head_dim",
            "use_linear_projection",
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
            "norm_num_groups",
        ]
        controlnet = diffusers.ControlNetUnionModel(
            **{key: unet_config[key] for key in keys},
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            conditioning_embedding_out_channels=(4, 8),
            num_trans_channel=2,
            num_trans_head=1,
            num_proj_channel=2,
        )
        union = dict(control_image=[control], control_mode=[0])
    elif "controlnet_xs" in name:
        controlnet = diffusers.ControlNetXSAdapter.from_unet(
            components["unet"], size_ratio=1, learn_time_embedding=True, conditioning_embedding_out_channels=(2, 2)
        )
    elif "controlnet" in name:
        controlnet = diffusers.ControlNetModel.from_unet(
            components["unet"], conditioning_embedding_out_channels=(4, 8)
        )
    pag = dict(pag_applied_layers=["mid"])
    cases = {
        "txt2img": lambda: (diffusers.StableDiffusionXLPipeline(**components), size),
        "img2img": lambda: (diffusers.StableDiffusionXLImg2ImgPipeline(**components), dict(image=image, strength=0.9)),
        "inpaint": lambda: (
            diffusers.StableDiffusionXLInpaintPipeline(**components),
            dict(image=image, mask_image=mask, strength=0.9, **size),
        ),
        "instruct_pix2pix": lambda: (
            diffusers.StableDiffusionXLInstructPix2PixPipeline(**{**plain, "unet": _unet(components, in_channels=8)}),
            dict(image=image, **size),
        ),
        "controlnet": lambda: (
            diffusers.StableDiffusionXLControlNetPipeline(**components, controlnet=controlnet),
            dict(image=control, **size),
        ),
        "controlnet_img2img": lambda: (
            diffusers.StableDiffusionXLControlNetImg2ImgPipeline(**components, controlnet=controlnet),
            dict(image=image, control_image=control, strength=0.9, **size),
        ),
        "controlnet_inpaint": lambda: (
            diffusers.StableDiffusionXLControlNetInpaintPipeline(**components, controlnet=controlnet),
            dict(image=image, mask_image=mask, control_image=control, strength=0.9, **size),
        ),
        "controlnet_union": lambda: (
            diffusers.StableDiffusionXLControlNetUnionPipeline(**components, controlnet=controlnet),
            dict(**union, **size),
        ),
        "controlnet_union_img2img": lambda: (
            diffusers.StableDiffusionXLControlNetUnionImg2ImgPipeline(**components, controlnet=controlnet),
            dict(image=image, strength=0.9, **union, **size),
        ),
        "controlnet_union_inpaint": lambda: (
            diffusers.StableDiffusionXLControlNetUnionInpaintPipeline(**components, controlnet=controlnet),
            dict(image=image, mask_image=mask, strength=0.9, **union, **size),
        ),
        "controlnet_xs": lambda: (
            diffusers.StableDiffusionXLControlNetXSPipeline(**plain, controlnet=controlnet),
            dict(image=control, **size),
        ),
        "t2i_adapter": lambda: (
            diffusers.StableDiffusionXLAdapterPipeline(
                **{key: value for key, value in components.items() if key != "image_encoder"},
                adapter=diffusers.T2IAdapter(
                    channels=[2, 4], num_res_blocks=1, downscale_factor=4, adapter_type="full_adapter_xl"
                ),
            ),
            dict(image=control, **size),
        ),
        "pag": lambda: (diffusers.StableDiffusionXLPAGPipeline(**components, **pag), dict(pag_scale=2.0, **size)),
        "pag_img2img": lambda: (
            diffusers.StableDiffusionXLPAGImg2ImgPipeline(**components, **pag),
            dict(image=image, strength=0.9, pag_scale=2.0),
        ),
        "pag_inpaint": lambda: (
            diffusers.StableDiffusionXLPAGInpaintPipeline(**components, **pag),
            dict(image=image, mask_image=mask, strength=0.9, pag_scale=2.0, **size),
        ),
        "controlnet_pag": lambda: (
            diffusers.StableDiffusionXLControlNetPAGPipeline(**components, controlnet=controlnet, **pag),
            dict(image=control, pag_scale=2.0, **size),
        ),
        "controlnet_pag_img2img": lambda: (
            diffusers.StableDiffusionXLControlNetPAGImg2ImgPipeline(**components, controlnet=controlnet, **pag),
            dict(image=image, control_image=control, strength=0.9, pag_scale=2.0, **size),
        ),
        "animatediff": lambda: (
            diffusers.AnimateDiffSDXLPipeline(
                **{**components, "scheduler": diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False)},
                motion_adapter=diffusers.MotionAdapter(
                    block_out_channels=(2, 4),
                    motion_layers_per_block=2,
                    motion_norm_num_groups=1,
                    motion_num_attention_heads=1,
                    use_motion_mid_block=False,
                ),
            ),
            dict(num_frames=2, **size),
        ),
        "text_to_video_zero": lambda: (
            diffusers.TextToVideoZeroSDXLPipeline(**components),
            dict(video_length=2, t0=0, t1=1, **size),
        ),
    }
    return cases[name]()


PIPELINES = [
    "txt2img",
    "img2img",
    "inpaint",
    "instruct_pix2pix",
    "controlnet",
    "controlnet_img2img",
    "controlnet_inpaint",
    "controlnet_union",
    "controlnet_union_img2img",
    "controlnet_union_inpaint",
    "controlnet_xs",
    "t2i_adapter",
    "pag",
    "pag_img2img",
    "pag_inpaint",
    "controlnet_pag",
    "controlnet_pag_img2img",
    "animatediff",
    "text_to_video_zero",
]


def _assert_denoiser_saw(contexts: list[torch.Tensor], positive: torch.Tensor, negative: torch.Tensor) -> None:
    """Every context row the denoiser received is exactly the long positive or negative embedding."""
    assert contexts, "the denoiser never ran"
    rows = [row for context in contexts for row in context]
    assert all(row.shape == (LONG_LENGTH, positive.shape[-1]) for row in rows), {tuple(row.shape) for row in rows}
    assert all(torch.equal(row, positive[0]) or torch.equal(row, negative[0]) for row in rows)
    assert any(torch.equal(row, positive[0]) for row in rows) and any(torch.equal(row, negative[0]) for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", PIPELINES)
def test_two_step_run_with_weighted_long_prompt(name):
    pipe, kwargs = _pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(RuntimeError, match="248|231|77"):
        _run(pipe, **kwargs)  # stock encode_prompt cannot concatenate 248 and 77 positions
    enable_long_prompts(pipe)
    contexts = _record_contexts(pipe)
    images = np.asarray(_run(pipe, **kwargs))
    assert images.shape[-3:] == (64, 64, 3) and np.isfinite(images).all()
    positive, negative, *_ = pipe.encode_prompt(prompt=LONG_PROMPT, device=CPU, negative_prompt=NEGATIVE)
    _assert_denoiser_saw(contexts, positive, negative)
    # The pipeline's own signature, e.g. AnimateDiff-SDXL's `num_videos_per_prompt`.
    per_prompt = "num_videos_per_prompt" if name == "animatediff" else "num_images_per_prompt"
    assert pipe.encode_prompt(LONG_PROMPT, device=CPU, **{per_prompt: 2})[0].shape == (2, LONG_LENGTH, 64)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chunked", "paper"])
def test_refiner_reads_long_prompts_through_big_g(mode):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline(**refiner_components(), requires_aesthetics_score=True)
    pipe.set_progress_bar_config(disable=True)
    contexts = _record_contexts(pipe)
    _run(pipe, image=_image(), strength=0.9)
    assert {tuple(context.shape) for context in contexts} == {(2, 77, 32)}  # stock reads 77 tokens
    contexts.clear()
    enable_long_prompts(pipe, mode=mode)
    assert np.isfinite(_run(pipe, image=_image(), strength=0.9)).all()
    positive, negative, *_ = pipe.encode_prompt(prompt=LONG_PROMPT, device=CPU, negative_prompt=NEGATIVE)
    length = LONG_LENGTH if mode == "chunked" else 248
    assert positive.shape == (1, length, 32)
    rows = [row for context in contexts for row in context]
    assert rows and all(torch.equal(row, positive[0]) or torch.equal(row, negative[0]) for row in rows)


@pytest.mark.slow
def test_modular_sdxl_text_encoder_step():
    from diffusers.modular_pipelines import StableDiffusionXLAutoBlocks

    from diffusers_adapters.pipeline_longclip_sdxl import LongCLIPSDXLTextEncoderStep, long_prompt_blocks

    blocks = long_prompt_blocks(StableDiffusionXLAutoBlocks())
    assert isinstance(blocks.sub_blocks["text_encoder"], LongCLIPSDXLTextEncoderStep)
    pipe = blocks.init_pipeline()
    components = long_components()
    pipe.update_components(**{key: value for key, value in components.items() if value is not None})
    contexts = _record_contexts(pipe)
    run = dict(prompt=LONG_PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2, height=64, width=64)
    images = pipe(**run, output="images", generator=torch.Generator().manual_seed(0))
    assert np.isfinite(np.asarray(images[0])).all()
    reference = long_pipeline(components).encode_prompt(LONG_PROMPT, device=CPU, negative_prompt=NEGATIVE)
    _assert_denoiser_saw(contexts, reference[0], reference[1])
    outputs = pipe(**run, output=["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds"])
    assert torch.equal(outputs["prompt_embeds"], reference[0]) and torch.equal(
        outputs["pooled_prompt_embeds"], reference[2]
    )
    with pytest.raises(TypeError, match="long_prompt_blocks"):
        enable_long_prompts(pipe)
    long_prompt_blocks(blocks, mode="paper")
    assert blocks.sub_blocks["text_encoder"].long_prompt_mode == "paper"
    with pytest.raises(ValueError, match="no SDXL text-encoder step"):
        long_prompt_blocks(blocks.sub_blocks["decode"])


def test_unsupported_pipelines_refused_with_reason():
    from diffusers import LEditsPPPipelineStableDiffusionXL

    pipe = LEditsPPPipelineStableDiffusionXL.__new__(LEditsPPPipelineStableDiffusionXL)
    pipe.text_encoder_2 = None
    with pytest.raises(TypeError, match="not SDXL's prompt encoder"):
        enable_long_prompts(pipe)
    with pytest.raises(TypeError, match="SDXL pipeline"):
        enable_long_prompts(object())
    pix2pix, _ = _pipeline("instruct_pix2pix")
    enable_long_prompts(pix2pix)
    with pytest.raises(TypeError, match="clip_skip"):  # stock InstructPix2Pix has no clip_skip either
        pix2pix.encode_prompt(LONG_PROMPT, clip_skip=1)


ADAPTER_ID, BASE_ID = "mmhub-test/longclip-l-sdxl", "mmhub-test/tiny-sdxl"
CODE_FILES = {
    "pipeline.py": "pipeline_longclip_sdxl.py",
    "sdxl_prompt_weights.py": "sdxl_prompt_weights.py",
    "sdxl_long_prompt_encoder.py": "sdxl_long_prompt_encoder.py",
    "sdxl_modular_blocks.py": "sdxl_modular_blocks.py",
}


@pytest.fixture(scope="module")
def tiny_repos(tmp_path_factory):
    """`mmhub tiny longclip-sdxl --repo-id ...` output: the adapter repo and the tiny SDXL base beside it."""
    from hub_configs.cli import main

    root = tmp_path_factory.mktemp("sdxl")
    adapter = root / "longclip-l-sdxl-tiny"
    assert main(["tiny", "longclip-sdxl", "--out", str(adapter), "--repo-id", ADAPTER_ID]) == 0
    return str(adapter), str(root / "longclip-l-sdxl-tiny-sdxl-base")


def test_tiny_adapter_repo_layout(tiny_repos):
    from transformers import CLIPTextModel, CLIPTokenizer

    adapter, base = tiny_repos
    for published, source in CODE_FILES.items():
        original = os.path.join(PROJECT_ROOT, "diffusers_adapters", source)
        with open(os.path.join(adapter, published), "rb") as copy, open(original, "rb") as handle:
            assert copy.read() == handle.read(), published
    with open(os.path.join(adapter, "longclip_sdxl_repo.py"), encoding="utf-8") as handle:
        assert f"ADAPTER_REPO = {ADAPTER_ID!r}" in handle.read()
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
def test_custom_pipeline_from_local_folder_with_explicit_pair(tiny_repos):
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
    contexts = _record_contexts(pipe)
    assert _digest(_run(pipe, height=64, width=64)) == _reference_digest(base, adapter)
    assert {context.shape[1] for context in contexts} == {LONG_LENGTH}
    pipe.set_long_prompt_mode("paper")
    pipe.set_prompt_weighting("mean-restore")
    assert np.isfinite(_run(pipe, height=64, width=64)).all()
    assert {context.shape[1] for context in contexts} == {LONG_LENGTH, 248}


_ONE_LINE = """
import hashlib, sys, torch
from diffusers import DiffusionPipeline
from transformers import CLIPTextModel

base, adapter, prompt, negative = sys.argv[1:5]


def load(custom_pipeline, **kwargs):
    return DiffusionPipeline.from_pretrained(base, custom_pipeline=custom_pipeline, trust_remote_code=True, **kwargs)


pipe = load(adapter)  # the one line: no text_encoder, no tokenizer
pipe.set_progress_bar_config(disable=True)
print("CLASS", type(pipe).__name__, pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
image = pipe(
    prompt=prompt, negative_prompt=negative, num_inference_steps=2, height=64, width=64, output_type="np",
    generator=torch.Generator("cpu").manual_seed(0),
).images
print("DIGEST", hashlib.sha256(image.astype("float32").tobytes()).hexdigest())
# The module's helpers ride on the class: a bigG-only refiner built from the same components.
from diffusers import StableDiffusionXLImg2ImgPipeline

parts = {key: value for key, value in pipe.components.items() if key not in ("text_encoder", "tokenizer")}
refiner = pipe.enable_long_prompts(StableDiffusionXLImg2ImgPipeline(**parts, text_encoder=None, tokenizer=None))
print("REFINER", tuple(refiner.encode_prompt(prompt, device=torch.device("cpu"))[0].shape))
half = load(adapter, torch_dtype=torch.float16)
print("DTYPE", half.text_encoder.dtype, half.text_encoder_2.dtype)
try:
    load(adapter, text_encoder=CLIPTextModel.from_pretrained(adapter, subfolder="text_encoder"))
    print("PARTIAL loaded")
except ValueError as error:
    print("PARTIAL ValueError", " ".join(str(error).split()))
"""


@pytest.mark.slow
def test_one_line_loading_offline_from_hub_cache_snapshot(tiny_repos, tmp_path):
    from conftest import make_hub_cache, run_fresh_python

    adapter, base = tiny_repos
    cache = str(tmp_path / "hub")
    snapshot = make_hub_cache(cache, ADAPTER_ID, adapter, revision="1" * 40)
    make_hub_cache(cache, BASE_ID, base, revision="2" * 40)
    # The base by repo id from the cache; the pipeline code from the snapshot folder (a Hub id needs a
    # `model_info` call that offline mode refuses). The LongCLIP pair comes from the adapter's recorded repo id.
    output = run_fresh_python(
        "import sys\nsys.argv[1:] = " + repr([BASE_ID, snapshot, LONG_PROMPT, NEGATIVE]) + "\n" + _ONE_LINE,
        tmp_path,
        env_extra={"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in output.splitlines() if " " in line}
    assert lines["CLASS"] == "LongCLIPStableDiffusionXLPipeline 248 248"
    assert lines["DIGEST"] == _reference_digest(base, adapter)
    assert lines["DTYPE"] == "torch.float16 torch.float16"
    assert lines["REFINER"] == f"(1, {LONG_LENGTH}, 32)"
    assert lines["PARTIAL"].startswith("ValueError") and "Pass both from the adapter repo" in lines["PARTIAL"]


def test_pipeline_without_long_pair_fails_at_load_saying_what_to_pass():
    from sdxl_fixtures import longclip_pair, tiny_components

    from diffusers_adapters.pipeline_longclip_sdxl import ADAPTER_REPO, LongCLIPStableDiffusionXLPipeline

    assert ADAPTER_REPO is None  # the package copy records no repo; adapter repos do (see the test above)
    stock = tiny_components()
    expected = r'text_encoder=CLIPTextModel\.from_pretrained\(ADAPTER, subfolder="text_encoder"\)'
    with pytest.raises(ValueError, match=expected):
        LongCLIPStableDiffusionXLPipeline(**stock)  # what from_pretrained builds when nothing is passed
    encoder, tokenizer = longclip_pair()
    for partial in (dict(text_encoder=encoder), dict(tokenizer=tokenizer)):
        with pytest.raises(ValueError, match="Pass both from the adapter repo"):
            LongCLIPStableDiffusionXLPipeline(**{**stock, **partial})
    assert LongCLIPStableDiffusionXLPipeline(**long_components()).tokenizer.model_max_length == 248


@pytest.mark.slow
def test_fp16_pipeline_run():
    from diffusers import StableDiffusionXLPipeline

    pipe = enable_long_prompts(StableDiffusionXLPipeline(**long_components()).to(torch.float16))
    pipe.set_progress_bar_config(disable=True)
    contexts = _record_contexts(pipe)
    latents = _run(pipe, height=64, width=64, output_type="latent")
    assert latents.dtype == torch.float16 and torch.isfinite(latents).all()
    assert {(context.shape[1], context.dtype) for context in contexts} == {(LONG_LENGTH, torch.float16)}
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
