"""jina-clip-v2 against the upstream implementation itself: every door of the converted repo reproduces the outputs
upstream's remote code gave on the same checkpoints.

The fixtures in tests/fixtures/jina_upstream were written by the upstream code (jina-clip-implementation and
xlm-roberta-flash-implementation on transformers 4.46, CPU): two tiny random checkpoints saved by upstream's own
`save_pretrained` (the published config layout with one LoRA task, and a several-task layout as upstream's
save_pretrained spells it out), the image inputs as PNG files, and upstream's outputs as `.npz`. Regenerate them with
tests/upstream/regenerate.sh (see tests/upstream/README.md). Here each checkpoint goes through this package's
converter and the stock transformers / sentence-transformers loaders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hub_configs import jina_clip_v2 as jina
from hub_configs.factory import make_repo

FIXTURES = Path(__file__).parent / "fixtures" / "jina_upstream"
BACKBONE = FIXTURES / "backbone" / "jina-embeddings-v3"
LAYOUTS = ("published", "multitask")
ATOL = 1e-5  # fp32


def _manifest() -> dict:
    with open(FIXTURES / "manifest.json", encoding="utf-8") as handle:
        return json.load(handle)


MANIFEST = _manifest()
TEXTS = MANIFEST["texts"]
IMAGE_PATHS = [str(FIXTURES / "images" / record["file"]) for record in MANIFEST["images"]]
# Images that this package decodes exactly as upstream does (`Image.open(...).convert("RGB")`): media_inputs also
# applies EXIF orientation and composites alpha on white, so for the others encode_image / sentence-transformers
# see other pixels by design (the processor door still matches them bit for bit).
SAME_DECODING = [i for i, record in enumerate(MANIFEST["images"]) if record["rgb_decoding_matches"]]
OTHER_DECODING = [i for i, record in enumerate(MANIFEST["images"]) if not record["rgb_decoding_matches"]]


def _dim(name: str) -> int | None:
    return None if name == "full" else int(name)


def _task(name: str) -> str | None:
    return None if name == "none" else name


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURES / "pixels.npz")["pixels"])


@pytest.fixture(scope="module", params=LAYOUTS)
def converted(request, tmp_path_factory):
    """(layout, repo folder, model, processor, upstream outputs) for one upstream-written checkpoint."""
    from transformers import AutoModel, AutoProcessor

    layout = request.param
    repo = make_repo(
        "jina-clip-v2",
        str(tmp_path_factory.mktemp(f"jina_{layout}")),
        checkpoint=str(FIXTURES / layout),
        text_backbone=str(BACKBONE),
        dtype="fp32",
    )
    model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    with np.load(FIXTURES / f"{layout}.npz") as npz:
        reference = {key: npz[key] for key in npz.files}
    return layout, repo, model, processor, reference


def _close(got, expected, atol: float = ATOL) -> None:
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------------- fixtures
def test_fixture_checkpoints_are_upstream_written():
    """The checkpoints carry upstream's safetensors metadata and one random, non-zero adapter per task."""
    from safetensors import safe_open

    from tests.test_jina_clip import PUBLISHED_CONFIG_KEYS

    for layout in LAYOUTS:
        with open(FIXTURES / layout / "config.json", encoding="utf-8") as handle:
            config = json.load(handle)
        tasks = config["text_config"]["hf_model_config_kwargs"]["lora_adaptations"]
        assert MANIFEST["layouts"][layout]["tasks"] == sorted(tasks)
        with safe_open(str(FIXTURES / layout / "model.safetensors"), "pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            prefix = jina.UPSTREAM_TEXT_PREFIX + "encoder.layers.0.mixer.Wqkv.parametrizations.weight.0."
            for factor in ("lora_A", "lora_B"):
                tensor = handle.get_tensor(prefix + factor)
                assert tensor.shape[0] == len(tasks) and tensor.abs().min() > 0
    with open(FIXTURES / "published" / "config.json", encoding="utf-8") as handle:
        published = json.load(handle)
    assert set(published) == PUBLISHED_CONFIG_KEYS[""]
    assert set(published["text_config"]) == PUBLISHED_CONFIG_KEYS["text_config"]
    assert set(published["vision_config"]) == PUBLISHED_CONFIG_KEYS["vision_config"]


# ------------------------------------------------------------------------------------------------------- text
def test_tokenizer_ids_match_upstream(converted):
    _, _, _, processor, reference = converted
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(tokens["input_ids"], reference["text/input_ids"])
    long_ids = processor.tokenizer([MANIFEST["long_text"]], return_tensors="np")["input_ids"]
    assert long_ids.shape[1] >= 3000
    np.testing.assert_array_equal(long_ids, reference["long/input_ids"])


def test_text_features_match_upstream(converted):
    _, _, model, processor, reference = converted
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (tokens["attention_mask"] == 0).any(), "the batch must exercise padding"
    long_ids = torch.from_numpy(reference["long/input_ids"])
    with torch.inference_mode():
        _close(model.get_text_features(**tokens).pooler_output, reference["text/features"])
        # A ~3000-token text, whole (no 512 cap at this door, as upstream).
        _close(model.get_text_features(input_ids=long_ids).pooler_output, reference["long/features"])


def test_encode_text_matches_upstream(converted):
    """With and without task, every truncation width, upstream's 512-token cap on the long text."""
    _, _, model, _, reference = converted
    keys = [key for key in reference if key.startswith("encode_text/")]
    tasks = {key.split("/")[1] for key in keys}
    assert tasks == {"none", *MANIFEST["layouts"][converted[0]]["tasks"]}
    for key in keys:
        _, task, dim = key.split("/")
        _close(model.encode_text(TEXTS, task=_task(task), truncate_dim=_dim(dim)), reference[key])
    _close(model.encode_text([MANIFEST["long_text"]]), reference["encode_text_long/none/full"])


def test_unknown_tasks_raise_like_upstream(converted):
    layout, _, model, _, _ = converted
    for task in MANIFEST["layouts"][layout]["errors"]:
        with pytest.raises(ValueError, match=f"Unsupported task '{task}'") as error:
            model.encode_text(TEXTS, task=task)
        for valid in MANIFEST["layouts"][layout]["tasks"]:
            assert valid in str(error.value)


# ----------------------------------------------------------------------------------------------------- images
def test_processor_pixels_match_upstream_exactly(converted, pixels):
    """The processor, AutoImageProcessor and AutoProcessor give upstream's pixels bit for bit, every size and mode."""
    from transformers import AutoImageProcessor

    _, repo, _, processor, _ = converted
    opened = [Image.open(path) for path in IMAGE_PATHS]
    assert {image.mode for image in opened} >= {"RGB", "L", "P", "1", "RGBA", "LA"}
    auto = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
    for door in (processor.image_processor, auto):
        assert torch.equal(door(opened, return_tensors="pt")["pixel_values"], pixels)
    assert torch.equal(processor(images=opened, return_tensors="pt")["pixel_values"], pixels)


def test_image_features_match_upstream_on_identical_pixels(converted, pixels):
    _, _, model, _, reference = converted
    with torch.inference_mode():
        _close(model.get_image_features(pixel_values=pixels).pooler_output, reference["image/features"])


def test_encode_image_matches_upstream(converted):
    """From the PNG files; the images this package decodes otherwise (alpha, EXIF) match once decoded as upstream."""
    _, _, model, processor, reference = converted
    for dim in MANIFEST["image_truncate_dims"]:
        expected = reference[f"encode_image/{dim or 'full'}"]
        got = model.encode_image(IMAGE_PATHS, truncate_dim=dim)
        _close(got[SAME_DECODING], expected[SAME_DECODING])
        # Fed upstream's decoding (pixels only, so no EXIF tag is left to apply), the rest of the pipeline
        # reproduces upstream for those images too.
        as_upstream = [Image.fromarray(np.asarray(Image.open(IMAGE_PATHS[i]).convert("RGB"))) for i in OTHER_DECODING]
        _close(model.encode_image(as_upstream, truncate_dim=dim), expected[OTHER_DECODING])


def test_forward_logits_match_upstream(converted, pixels):
    _, _, model, processor, reference = converted
    tokens = processor.tokenizer(TEXTS[: MANIFEST["forward_texts"]], padding=True, return_tensors="pt")
    index = torch.from_numpy(reference["forward/image_index"])
    with torch.inference_mode():
        output = model(**tokens, pixel_values=pixels[index])
    _close(model.logit_scale, reference["logit_scale"], atol=0)
    _close(output.logits_per_text, reference["forward/logits_per_text"])
    _close(output.logits_per_image, reference["forward/logits_per_image"])


# -------------------------------------------------------------------------------------- sentence-transformers
def test_sentence_transformers_matches_upstream_custom_st(converted):
    """Upstream's custom_st door: texts up to the tokenizer limit, prompts, images from files, mixed lists."""
    from sentence_transformers import SentenceTransformer

    _, repo, _, _, reference = converted
    st = SentenceTransformer(repo, trust_remote_code=True, device="cpu")
    _close(st.encode(TEXTS), reference["st/text"])
    _close(st.encode([MANIFEST["long_text"]]), reference["st/long"])
    prompts = {key.split("/", 2)[2] for key in reference if key.startswith("st/prompt/")}
    assert {name for name, text in st.prompts.items() if text} == prompts
    for name in prompts:
        _close(st.encode(TEXTS, prompt_name=name), reference[f"st/prompt/{name}"])
        # Upstream (sentence-transformers 3 + custom_st) glues the prompt onto image paths and then embeds
        # "<prompt><path>" as text; here a prompt never reaches images, which embed as without one.
        prompted = st.encode(IMAGE_PATHS[:3], prompt_name=name)
        _close(prompted, reference["st/image"][:3])
        assert np.abs(reference[f"st/prompt_image/{name}"] - reference["st/image"][:3]).max() > 1e-2
    _close(st.encode([IMAGE_PATHS[i] for i in SAME_DECODING]), reference["st/image"][SAME_DECODING])
    mixed = [TEXTS[0], IMAGE_PATHS[2], TEXTS[1], IMAGE_PATHS[5]]
    _close(st.encode(mixed), reference["st/mixed"])
