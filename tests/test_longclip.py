"""LongCLIP: conversion parity with the original forward, tokenization, stretching, loading doors."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from longclip_reference import encode_image, encode_text, original_tokenize
from PIL import Image

SHORT = "A cat"
MEDIUM = " ".join(["a red bicycle leaning on a wall near the old harbour"] * 9)  # about 90 tokens: past CLIP's 77
LONG = " ".join(f"item{i} is blue" for i in range(120))  # far past 248 tokens
TEXTS = [SHORT, MEDIUM, LONG, "Déjà vu: a 3-legged café table, isn't it?"]


def _pixels(batch=3, size=32, seed=0):
    return torch.from_numpy(np.random.RandomState(seed).randn(batch, 3, size, size).astype(np.float32))


@pytest.fixture(scope="module")
def remote_model(longclip_repo):
    from transformers import AutoModel

    return AutoModel.from_pretrained(longclip_repo, trust_remote_code=True).eval()


@pytest.fixture(scope="module")
def remote_processor(longclip_repo):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(longclip_repo, trust_remote_code=True)


def test_token_counts_are_realistic(remote_processor):
    tokenizer = remote_processor.tokenizer
    assert 77 < len(tokenizer(MEDIUM)["input_ids"]) < 248
    assert len(tokenizer(LONG)["input_ids"]) > 248


def test_tokenization_matches_original_algorithm(remote_processor):
    reference = original_tokenize(TEXTS)
    ours = remote_processor(text=TEXTS, return_tensors="pt", padding="max_length", max_length=248)["input_ids"]
    assert ours.shape == reference.shape == (len(TEXTS), 248)
    content = reference != 0  # the original pads with 0, HF with the end token; every real token must agree
    assert torch.equal(ours[content], reference[content])
    assert torch.all(ours[~content] == 49407)
    assert ours[2, -1].item() == 49407 and reference[2, -1].item() == 49407


def test_truncation_warns_once(remote_processor, caplog):
    from st_modules.processing_longclip import LongCLIPProcessor

    processor = LongCLIPProcessor(
        image_processor=remote_processor.image_processor, tokenizer=remote_processor.tokenizer
    )
    with caplog.at_level(logging.WARNING):
        processor(text=[LONG, LONG], return_tensors="pt", padding=True)
        processor(text=[LONG], return_tensors="pt", padding=True)
    warnings = [record for record in caplog.records if "truncated" in record.getMessage()]
    assert len(warnings) == 1 and "2 of 2 texts" in warnings[0].getMessage()


def test_text_and_image_features_match_original_forward(remote_model, remote_processor, longclip_original_state_dict):
    tokens = original_tokenize(TEXTS)
    expected_text = encode_text(longclip_original_state_dict, tokens)
    inputs = remote_processor(text=TEXTS, return_tensors="pt", padding="max_length", max_length=248)
    with torch.inference_mode():
        text = remote_model.get_text_features(**inputs).pooler_output
        image = remote_model.get_image_features(pixel_values=_pixels()).pooler_output
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(image, encode_image(longclip_original_state_dict, _pixels()), atol=1e-5, rtol=0)
    # Position rows past 77 matter: the two long texts differ only late and must not collapse onto each other.
    assert (text[1] - text[2]).abs().max() > 1e-3


def test_both_position_tables_are_used(longclip_original_state_dict):
    from hub_configs.longclip import original_to_hf

    _, converted = original_to_hf(longclip_original_state_dict)
    table = converted["text_model.embeddings.position_embedding.weight"]
    torch.testing.assert_close(table[:20], longclip_original_state_dict["positional_embedding"][:20])
    torch.testing.assert_close(table[20:], longclip_original_state_dict["positional_embedding_res"][20:])


def test_stock_clip_without_remote_code_matches(longclip_repo, remote_model):
    from transformers import AutoModel, AutoProcessor, CLIPModel, CLIPProcessor, CLIPTextModel, CLIPTokenizer

    stock = CLIPModel.from_pretrained(longclip_repo).eval()
    assert type(AutoModel.from_pretrained(longclip_repo)) is CLIPModel
    assert type(AutoProcessor.from_pretrained(longclip_repo)) is CLIPProcessor
    tokenizer = CLIPTokenizer.from_pretrained(longclip_repo)
    assert tokenizer.model_max_length == 248
    inputs = CLIPProcessor.from_pretrained(longclip_repo)(
        text=TEXTS,
        images=[Image.new("RGB", (40, 30), (200, 10, 10))],
        return_tensors="pt",
        padding="max_length",
        max_length=248,
        truncation=True,
    )
    text_model = CLIPTextModel.from_pretrained(longclip_repo).eval()
    with torch.inference_mode():
        stock_out = stock(**inputs)
        remote_out = remote_model(**inputs)
        text_only = text_model(input_ids=inputs["input_ids"]).pooler_output
        full_text = remote_model.text_model(input_ids=inputs["input_ids"]).pooler_output
    assert torch.equal(stock_out.logits_per_image, remote_out.logits_per_image)
    assert torch.equal(stock_out.text_embeds, remote_out.text_embeds)
    torch.testing.assert_close(text_only, full_text, atol=1e-6, rtol=0)


def test_overlong_input_ids_are_cut_like_the_processor(remote_model, remote_processor, caplog):
    """Ids tokenized without truncation (as the zero-shot pipeline does) are cut with the end token kept, once warned."""
    texts = [SHORT, " ".join([MEDIUM] * 12)]
    untruncated = remote_processor.tokenizer(texts, padding=True, return_tensors="pt")
    assert untruncated["input_ids"].shape[1] > 248
    truncated = remote_processor(text=texts, padding=True, return_tensors="pt")
    with caplog.at_level("WARNING"), torch.inference_mode():
        cut = remote_model.get_text_features(**untruncated)
        again = remote_model.get_text_features(**untruncated)
        expected = remote_model.get_text_features(**truncated)
    assert torch.equal(cut, expected) and torch.equal(again, expected)
    warnings = [record for record in caplog.records if "truncated" in record.getMessage()]
    assert len(warnings) == 1 and "longer than 248 tokens" in warnings[0].getMessage()


def test_logits_per_image_quick_start(remote_model, remote_processor):
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    inputs = remote_processor(
        text=[SHORT, MEDIUM], images=image, return_tensors="pt", max_length=248, padding="max_length"
    )
    with torch.inference_mode():
        outputs = remote_model(**inputs)
        text = remote_model.get_text_features(input_ids=inputs["input_ids"]).pooler_output
        img = remote_model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    text = text / text.norm(dim=-1, keepdim=True)
    img = img / img.norm(dim=-1, keepdim=True)
    expected = remote_model.logit_scale.exp() * img @ text.T
    torch.testing.assert_close(outputs.logits_per_image, expected, atol=1e-5, rtol=1e-5)


def test_image_preprocessing_matches_original_transform(remote_processor):
    from open_clip.transform import image_transform

    transform = image_transform(
        32,
        is_train=False,
        mean=remote_processor.image_processor.image_mean,
        std=remote_processor.image_processor.image_std,
    )
    rng = np.random.RandomState(3)
    image = Image.fromarray((rng.rand(48, 64, 3) * 255).astype(np.uint8))
    ours = remote_processor(images=image, return_tensors="pt")["pixel_values"][0]
    reference = transform(image)
    # PIL and torchvision bicubic kernels differ slightly; a wrong crop, order or normalisation is off by far more.
    assert (ours - reference).abs().mean() < 0.03


def test_zero_shot_pipeline(longclip_repo, remote_model, remote_processor):
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=longclip_repo, trust_remote_code=True)
    image = Image.new("RGB", (40, 40), (120, 30, 200))
    labels = ["a cat", MEDIUM]
    result = classifier(image, candidate_labels=labels)
    scores = {item["label"]: item["score"] for item in result}
    inputs = remote_processor(
        text=[f"This is a photo of {label}." for label in labels], images=image, return_tensors="pt", padding=True
    )
    with torch.inference_mode():
        expected = remote_model(**inputs).logits_per_image.softmax(-1)[0]
    assert scores["a cat"] == pytest.approx(expected[0].item(), abs=1e-5)


def test_stretching_follows_the_paper():
    from st_modules.modeling_longclip import stretch_position_embedding

    old = torch.randn(77, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    new = stretch_position_embedding(old, keep=20, ratio=4)
    assert new.shape == (248, 8)
    expected = torch.empty(248, 8, dtype=torch.float64)
    expected[:20] = old[:20]
    for i in range(56):
        for k in range(4):
            expected[20 + 4 * i + k] = (1 - k / 4) * old[20 + i] + (k / 4) * old[21 + i]
    for k in range(4):
        expected[244 + k] = old[76] + k * (old[76] - old[75]) / 4
    torch.testing.assert_close(new, expected)


def _tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "projection_dim": 16,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 16,
        },
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def test_from_clip_keeps_short_prompts_and_freezes_first_rows():
    from st_modules.modeling_longclip import LongCLIPModel

    clip = _tiny_clip()
    long = LongCLIPModel.from_clip(clip).eval()
    assert long.config.text_config.max_position_embeddings == 248
    # Up to `keep` tokens the stretched model reads exactly the rows CLIP had.
    ids = torch.tensor([[49406, 320, 2368, 49407]])
    with torch.inference_mode():
        torch.testing.assert_close(
            long.get_text_features(input_ids=ids).pooler_output, clip.get_text_features(input_ids=ids).pooler_output
        )
    long.train()
    optimizer = torch.optim.SGD(long.parameters(), lr=1.0)
    before = long.text_model.embeddings.position_embedding.weight.detach().clone()
    ids = torch.randint(0, 49406, (2, 60))
    ids[:, -1] = 49407  # pooled at the end token, so every position up to 60 receives gradient
    long.get_text_features(input_ids=ids).pooler_output.sum().backward()
    optimizer.step()
    after = long.text_model.embeddings.position_embedding.weight.detach()
    assert torch.equal(after[:20], before[:20])
    assert not torch.equal(after[20:60], before[20:60])


def test_converter_infers_dimensions(longclip_original_state_dict):
    from hub_configs.longclip import infer_dimensions, random_original_checkpoint

    dims = infer_dimensions(random_original_checkpoint(text_width=128, vision_width=64, vision_layers=1, seed=2))
    assert (dims["text_width"], dims["text_heads"], dims["text_layers"]) == (128, 2, 2)
    assert (dims["vision_width"], dims["vision_layers"], dims["patch_size"], dims["image_size"]) == (64, 1, 8, 32)
    assert dims["context_length"] == 248 and dims["embed_dim"] == 32
    broken = dict(longclip_original_state_dict)
    del broken["positional_embedding_res"]
    with pytest.raises(ValueError, match="positional_embedding_res"):
        infer_dimensions(broken)


def test_converter_dtype_and_repo_files(tmp_path, longclip_checkpoint_path):
    from safetensors import safe_open

    from hub_configs.factory import make_repo

    out = make_repo("longclip", str(tmp_path / "fp16"), checkpoint=longclip_checkpoint_path, dtype="bf16")
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as handle:
        assert handle.get_tensor("logit_scale").dtype == torch.bfloat16
    files = set(os.listdir(out))
    for required in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        "modules.json",
        "config_sentence_transformers.json",
        "multimodal_config.json",
        "README.md",
        "modeling_longclip.py",
        "multimodal_transformer.py",
    ):
        assert required in files
    config = json.loads(Path(out, "config.json").read_text())
    assert config["model_type"] == "clip" and config["text_config"]["max_position_embeddings"] == 248
    assert config["auto_map"]["AutoModel"] == "modeling_longclip.LongCLIPModel"
    card = Path(out, "README.md").read_text()
    assert "LongCLIP-L" in card and "95.8 / 95.6" in card
    with pytest.raises(FileNotFoundError):
        make_repo("longclip", str(tmp_path / "x"), checkpoint=str(tmp_path / "missing.pt"))


def test_resaved_processor_still_loads_without_remote_code(remote_processor, longclip_repo, tmp_path):
    import shutil

    from transformers import AutoProcessor, CLIPProcessor

    remote_processor.save_pretrained(tmp_path)
    for name in ("processing_longclip.py", "token_truncation.py"):
        shutil.copy(os.path.join(longclip_repo, name), tmp_path / name)
    assert type(AutoProcessor.from_pretrained(tmp_path)) is CLIPProcessor
    assert type(AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)).__name__ == "LongCLIPProcessor"


# ------------------------------------------------------------------------------- fine-tuning keeps rows 0-19 fixed


@pytest.mark.parametrize("origin", ["from_pretrained", "from_clip", "device_map"])
def test_plain_torch_loop_with_weight_decay_keeps_kept_rows(origin, longclip_repo):
    from transformers import AutoModel

    from st_modules.modeling_longclip import LongCLIPModel

    if origin == "from_clip":
        model = LongCLIPModel.from_clip(_tiny_clip())
    else:
        extra = {"device_map": "cpu"} if origin == "device_map" else {}
        model = AutoModel.from_pretrained(longclip_repo, trust_remote_code=True, **extra)
    model.train()
    before = model.text_model.embeddings.position_embedding.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    ids = torch.randint(0, 49406, (2, 120), generator=torch.Generator().manual_seed(0))
    ids[:, -1] = 49407
    for _ in range(3):
        model.get_text_features(input_ids=ids).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.text_model.embeddings.position_embedding.weight.detach()
    assert torch.equal(after[:20], before[:20])
    assert (after[20:120] - before[20:120]).abs().min(dim=-1).values.gt(0).all()


def test_trainer_with_adamw_weight_decay_keeps_kept_rows_and_saves_one_table(longclip_repo, tmp_path):
    from datasets import Dataset
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPModel

    from hub_configs.finetune import finetune

    model = SentenceTransformer(longclip_repo, trust_remote_code=True)
    table = model[0].model.text_model.embeddings.position_embedding
    before = table.weight.detach().clone()
    paths = []
    for index in range(4):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.random.RandomState(index).randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(path)
        paths.append(str(path))
    captions = [" ".join([f"picture {index} shows"] + ["a long caption"] * 40) for index in range(4)]
    finetune(
        model,
        Dataset.from_dict({"caption": captions, "image": paths}),
        max_steps=4,
        batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.01,
        show_progress_bar=False,
    )
    after = table.weight.detach()
    assert torch.equal(after[:20], before[:20])
    assert not torch.equal(after[20:], before[20:])
    model.save(str(tmp_path / "tuned"))
    saved = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert [key for key in saved if "text_model.embeddings.position_embedding" in key] == [
        "text_model.embeddings.position_embedding.weight"
    ]
    assert torch.equal(saved["text_model.embeddings.position_embedding.weight"], after)
    stock = CLIPModel.from_pretrained(str(tmp_path / "tuned"))
    assert torch.equal(stock.text_model.embeddings.position_embedding.weight, after)


# ------------------------------------------------------------------------------------- the seed card, verbatim

# The published LongCLIP card's usage (the seed this package replaces), kept word for word except for the repo id
# and the image path: its Quick Start and its "Advanced Usage: Feature Extraction" section.
SEED_CARD_QUICK_START = """
from transformers import AutoModel, AutoProcessor
from PIL import Image
import torch

# Load model and processor
model = AutoModel.from_pretrained(
    REPO,
    trust_remote_code=True
)
processor = AutoProcessor.from_pretrained(
    REPO,
    trust_remote_code=True
)

# Prepare inputs
image = Image.open(IMAGE)
texts = [
    "A man is crossing the street with a red car parked nearby.",
    "A man is driving a car in an urban scene."
]

inputs = processor(
    text=texts,
    images=image,
    return_tensors="pt",
    max_length=248,
    padding="max_length"
)

# Get predictions
with torch.no_grad():
    outputs = model(**inputs)
    logits_per_image = outputs.logits_per_image
    probs = logits_per_image.softmax(dim=-1)

print("Probabilities:", probs)
"""
SEED_CARD_FEATURE_EXTRACTION = """
# Extract features separately (unnormalized)
text_inputs = processor(text=texts, return_tensors="pt", max_length=248, padding="max_length")
image_inputs = processor(images=image, return_tensors="pt")

with torch.no_grad():
    text_features = model.get_text_features(**text_inputs)
    image_features = model.get_image_features(**image_inputs)

    # Compute similarity (like original CLIP)
    logits = image_features @ text_features.T
    probs = logits.softmax(dim=-1)
"""


def test_seed_card_snippets_run_verbatim(longclip_repo, tmp_path, capsys):
    from transformers import CLIPModel, CLIPProcessor

    image_path = tmp_path / "your_image.jpg"
    Image.fromarray(np.random.RandomState(3).randint(0, 256, (48, 64, 3)).astype(np.uint8)).save(image_path)
    scope = {"REPO": longclip_repo, "IMAGE": str(image_path)}
    exec(SEED_CARD_QUICK_START + SEED_CARD_FEATURE_EXTRACTION, scope)
    assert "Probabilities:" in capsys.readouterr().out
    # The features are tensors with the values of the stock model (transformers 5's own behaviour without remote
    # code: an output object, features in pooler_output).
    stock, stock_processor = CLIPModel.from_pretrained(longclip_repo), CLIPProcessor.from_pretrained(longclip_repo)
    texts = scope["texts"]
    with torch.no_grad():
        stock_text = stock.get_text_features(
            **stock_processor(text=texts, return_tensors="pt", padding="max_length", max_length=248, truncation=True)
        )
        stock_image = stock.get_image_features(**stock_processor(images=scope["image"], return_tensors="pt"))
    assert not isinstance(stock_text, torch.Tensor)
    torch.testing.assert_close(scope["text_features"].pooler_output, stock_text.pooler_output, atol=1e-6, rtol=0)
    expected = (stock_image.pooler_output @ stock_text.pooler_output.T).softmax(dim=-1)
    torch.testing.assert_close(scope["probs"].as_subclass(torch.Tensor), expected, atol=1e-6, rtol=0)
    assert scope["probs"].shape == (1, 2) and scope["text_features"].last_hidden_state.shape[1] == 248


def test_zero_shot_pipeline_cuts_labels_past_248_tokens_once(longclip_repo, remote_model, remote_processor, caplog):
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=longclip_repo, trust_remote_code=True)
    image = Image.new("RGB", (40, 40), (20, 130, 200))
    labels = ["a cat", LONG, LONG + " and more"]
    with caplog.at_level(logging.WARNING):
        first = classifier(image, candidate_labels=labels)
        second = classifier(image, candidate_labels=labels)
    assert first == second
    warnings = [record.getMessage() for record in caplog.records if "truncated" in record.getMessage()]
    assert len(warnings) == 1 and "longer than 248 tokens" in warnings[0]
    inputs = remote_processor(
        text=[f"This is a photo of {label}." for label in labels], images=image, return_tensors="pt", padding=True
    )
    with torch.inference_mode():
        expected = remote_model(**inputs).logits_per_image.softmax(-1)[0]
    scores = {item["label"]: item["score"] for item in first}
    for label, score in zip(labels, expected):
        assert scores[label] == pytest.approx(score.item(), abs=1e-5)


def test_converter_refuses_a_tokenizer_that_does_not_cover_the_vocabulary(tmp_path, longclip_checkpoint_path):
    from transformers import CLIPTokenizer

    from hub_configs.factory import make_repo

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="3 tokens.*49408"):
        make_repo(
            "longclip", str(tmp_path / "out"), checkpoint=longclip_checkpoint_path, tokenizer=str(tmp_path / "small")
        )
