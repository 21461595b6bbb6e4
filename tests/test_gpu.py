"""CUDA checks: `device=` and half precision are honoured through every door (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LONG = " ".join(["a quiet harbour at dawn with fishing boats and gulls over the water"] * 7)


def _image(seed=0):
    return Image.fromarray((np.random.RandomState(seed).rand(40, 48, 3) * 255).astype(np.uint8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_longclip_sentence_transformer_on_cuda(longclip_repo, dtype):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(longclip_repo, trust_remote_code=True, device="cpu")
    model = SentenceTransformer(longclip_repo, trust_remote_code=True, device="cuda", model_kwargs={"dtype": dtype})
    assert model[0].model.dtype == dtype and model.device.type == "cuda"
    inputs = ["A cat", _image(1), LONG, _image(2)]
    out = model.encode(inputs, convert_to_tensor=True)
    assert out.device.type == "cuda" and out.dtype == dtype
    expected = reference.encode(inputs, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(out.float().cpu(), expected)
    assert cosine.min() > 0.99
    cut = model.encode(inputs, convert_to_tensor=True, truncate_dim=16).float()
    torch.testing.assert_close(cut.norm(dim=-1), torch.ones(4, device="cuda"), atol=1e-2, rtol=0)


def test_longclip_auto_model_fp16_cuda(longclip_repo):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(longclip_repo, trust_remote_code=True, dtype=torch.float16).cuda().eval()
    cpu = AutoModel.from_pretrained(longclip_repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(longclip_repo, trust_remote_code=True)
    inputs = processor(text=["A cat", LONG], images=_image(), return_tensors="pt", padding="max_length")
    with torch.inference_mode():
        fast = model(**{k: v.cuda() if not v.is_floating_point() else v.cuda().half() for k, v in inputs.items()})
        slow = cpu(**inputs)
    torch.testing.assert_close(fast.logits_per_image.float().cpu(), slow.logits_per_image, atol=0.05, rtol=0.01)


def test_jina_bf16_default_on_cuda(tmp_path):
    from transformers import AutoModel

    from hub_configs.factory import make_repo

    repo = make_repo("jina-clip-v2", str(tmp_path / "jina"), tiny=True)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).cuda()
    assert model.dtype == torch.bfloat16
    reference = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32)
    texts = ["A blue cat", "Кошка на крыше", "屋根の上の猫"]
    fast = model.encode_text(texts, task="retrieval.query", truncate_dim=16)
    slow = reference.encode_text(texts, task="retrieval.query", truncate_dim=16, device="cpu")
    assert np.min(np.sum(fast * slow, axis=1)) > 0.98
    images = model.encode_image([_image(3)], truncate_dim=16)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-2)


def test_clipclap_audio_fp16_cuda(tmp_path):
    from sentence_transformers import SentenceTransformer

    from hub_configs.factory import make_repo

    repo = make_repo("clipclap", str(tmp_path / "clipclap"), tiny=True)
    t = np.arange(48000 * 3) / 48000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    inputs = ["a dog barking", _image(4), {"array": wave, "sampling_rate": 48000}]
    gpu = SentenceTransformer(repo, trust_remote_code=True, device="cuda", model_kwargs={"dtype": torch.float16})
    cpu = SentenceTransformer(repo, trust_remote_code=True, device="cpu")
    fast = gpu.encode(inputs, convert_to_tensor=True).float().cpu()
    slow = cpu.encode(inputs, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(fast, slow).min() > 0.99


def test_sdxl_long_prompt_fp16_cuda():
    from diffusers import StableDiffusionXLPipeline
    from sdxl_fixtures import long_components

    from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

    pipe = enable_long_prompts(StableDiffusionXLPipeline(**long_components()).to("cuda", torch.float16))
    pipe.set_progress_bar_config(disable=True)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(LONG, device=torch.device("cuda"))
    assert embeds.device.type == "cuda" and embeds.dtype == torch.float16 and embeds.shape[1] > 77
    image = pipe(
        LONG,
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="latent",
        generator=torch.Generator("cuda").manual_seed(0),
    ).images
    assert torch.isfinite(image).all()
