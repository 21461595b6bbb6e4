"""The family contract: every registered family, every door it claims, against its independent reference.

Parametrized over `hub_configs.families.FAMILIES` on tiny repos built through the registry (`make_repo(...,
tiny=True)`), so a new family is tested by adding its registry entry (and its stock reference in
`tests/family_references.py`); a new door is one more test here, applied to every family that claims it.
"""

from __future__ import annotations

import ast
import filecmp
import json
import os
import shutil
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hub_configs.builder import config_auto_map
from hub_configs.families import DOORS, FAMILIES, ST_MODULE_CODE_FILES, family_of
from tests.family_references import REFERENCES
from tests.sample_inputs import AUDIO_RATE, TEXTS
from tests.sample_inputs import images as _images
from tests.sample_inputs import read_json as _read_json
from tests.sample_inputs import waveforms as _waveforms

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FAMILIES = [name for name, family in FAMILIES.items() if family.claims("automodel")]


# Short, past CLIP's 77 tokens, and past LongCLIP's 248 tokens.
def _claiming(door: str) -> list[str]:
    return [name for name, family in FAMILIES.items() if family.claims(door)]


@pytest.fixture(scope="session")
def family_repos(tmp_path_factory):
    """Tiny repos of every family, built through the registry's factory (the `mmhub tiny` path)."""
    from hub_configs.factory import make_repo

    root = tmp_path_factory.mktemp("family_repos")
    built = {}

    def get(name: str) -> str:
        if name not in built:
            built[name] = make_repo(name, str(root / name), tiny=True)
        return built[name]

    return get


@pytest.fixture(scope="session")
def loaded(family_repos):
    cache = {}

    def get(name: str):
        if name not in cache:
            from transformers import AutoModel, AutoProcessor

            repo = family_repos(name)
            model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32).eval()
            cache[name] = model, AutoProcessor.from_pretrained(repo, trust_remote_code=True)
        return cache[name]

    return get


def _features(model, processor, name: str) -> dict[str, torch.Tensor]:
    """Unit embeddings per modality through AutoModel's `get_*_features` on the processor's own outputs."""
    out = {}
    with torch.inference_mode():
        text = processor(text=TEXTS, return_tensors="pt", padding=True, truncation=True)
        out["text"] = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
        pixels = processor(images=_images(), return_tensors="pt")["pixel_values"]
        out["image"] = model.get_image_features(pixel_values=pixels)
        if "audio" in FAMILIES[name].modalities:
            audio = processor(audio=_waveforms(), sampling_rate=AUDIO_RATE, return_tensors="pt")
            out["audio"] = model.get_audio_features(input_features=audio["input_features"])
    return {key: F.normalize(getattr(value, "pooler_output", value).float(), dim=-1) for key, value in out.items()}


def _references(name: str, repo: str) -> dict[str, torch.Tensor]:
    reference = REFERENCES[name]
    out = {"text": reference.text(repo, TEXTS), "image": reference.image(repo, _images())}
    if "audio" in FAMILIES[name].modalities:
        out["audio"] = reference.audio(repo, _waveforms())
    return out


# ---------------------------------------------------------------------------------------------- the registry


def test_every_family_with_a_model_has_a_reference():
    assert sorted(REFERENCES) == sorted(MODEL_FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_registry_entry_is_complete(name):
    family = FAMILIES[name]
    assert os.path.basename(family.template_dir) == name
    assert os.path.isfile(os.path.join(family.template_dir, "model_card.md"))
    shipped = {family.rename.get(path, os.path.basename(path)) for path in family.code_files}
    shipped |= set(family.generated_code)
    for path in family.code_files:
        source = os.path.join(REPO_ROOT, path)
        assert os.path.isfile(source), path
        with open(source, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert f"{node.module}.py" in shipped, f"{path} imports .{node.module}, which {name} does not ship"
    for auto_class, reference in family.auto_map.items():
        assert reference.split(".")[0] + ".py" in shipped, f"{auto_class} -> {reference} is not shipped"
    if family.st_module is not None:
        assert set(ST_MODULE_CODE_FILES) <= set(family.code_files)
    assert set(family.doors) <= set(DOORS)


def test_module_saves_the_files_the_registry_ships():
    from st_modules.multimodal_transformer import _CODE_FILES

    assert sorted(_CODE_FILES) == sorted(os.path.basename(path) for path in ST_MODULE_CODE_FILES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_repo_layout_follows_the_registry(name, family_repos):
    family, repo = FAMILIES[name], family_repos(name)
    assert family_of(repo) is family
    for path in family.code_files:
        shipped = os.path.join(repo, family.rename.get(path, os.path.basename(path)))
        assert filecmp.cmp(os.path.join(REPO_ROOT, path), shipped, shallow=False), path
    for name in family.generated_code:
        assert os.path.isfile(os.path.join(repo, name)), name
    if family.auto_map:
        assert _read_json(repo, "config.json")["auto_map"] == config_auto_map(family)
        processor = _read_json(repo, "processor_config.json")
        assert processor["auto_map"] == {"AutoProcessor": family.auto_map["AutoProcessor"]}
        if "AutoImageProcessor" in family.auto_map:
            image = processor["image_processor"]["auto_map"]
            assert image["AutoImageProcessor"] == family.auto_map["AutoImageProcessor"]
    st_files = {"modules.json", "config_sentence_transformers.json", "multimodal_config.json"}
    assert st_files <= set(os.listdir(repo)) if family.st_module else not st_files & set(os.listdir(repo))
    with open(os.path.join(repo, "README.md"), encoding="utf-8") as handle:
        assert "{{" not in handle.read()


# ---------------------------------------------------------------------------------------------- transformers


@pytest.mark.parametrize("name", _claiming("automodel"))
def test_get_features_match_the_reference(name, family_repos, loaded):
    model, processor = loaded(name)
    ours, expected = _features(model, processor, name), _references(name, family_repos(name))
    for modality in expected:
        torch.testing.assert_close(ours[modality], expected[modality], atol=2e-5, rtol=0, msg=modality)


@pytest.mark.parametrize("name", _claiming("automodel"))
def test_forward_matches_the_reference(name, family_repos, loaded):
    model, processor = loaded(name)
    expected = _references(name, family_repos(name))
    inputs = processor(text=TEXTS, images=_images(), return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = model(**inputs)
    if REFERENCES[name].logits:
        scale = model.logit_scale.exp().item()
        torch.testing.assert_close(
            output.logits_per_image, scale * expected["image"] @ expected["text"].T, atol=1e-4, rtol=0
        )
        torch.testing.assert_close(output.logits_per_text, output.logits_per_image.T)
    torch.testing.assert_close(F.normalize(output.text_embeds, dim=-1), expected["text"], atol=2e-5, rtol=0)
    torch.testing.assert_close(F.normalize(output.image_embeds, dim=-1), expected["image"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", _claiming("automodel"))
def test_save_pretrained_reloads_identically(name, family_repos, loaded, tmp_path):
    from transformers import AutoModel, AutoProcessor

    # A fresh processor: calls with truncation settings leave them in a fast tokenizer's saved state.
    model, processor = loaded(name)[0], AutoProcessor.from_pretrained(family_repos(name), trust_remote_code=True)
    model.save_pretrained(tmp_path / "copy")
    processor.save_pretrained(tmp_path / "copy")
    again = AutoModel.from_pretrained(tmp_path / "copy", trust_remote_code=True, dtype=torch.float32).eval()
    again_processor = AutoProcessor.from_pretrained(tmp_path / "copy", trust_remote_code=True)
    assert type(again) is type(model) or type(again).__name__ == type(model).__name__
    first, second = _features(model, processor, name), _features(again, again_processor, name)
    for modality in first:
        assert torch.equal(first[modality], second[modality]), modality


@pytest.mark.parametrize("name", _claiming("automodel"))
def test_bf16_load(name, family_repos, loaded):
    from transformers import AutoModel

    model, processor = loaded(name)
    half = AutoModel.from_pretrained(family_repos(name), trust_remote_code=True, dtype=torch.bfloat16).eval()
    assert {parameter.dtype for parameter in half.parameters()} == {torch.bfloat16}
    full, low = _features(model, processor, name), _features(half, processor, name)
    for modality in full:
        cosine = (full[modality] * low[modality]).sum(-1)
        assert cosine.min() > 0.99, (modality, cosine)


# ------------------------------------------------------------------------------------------------ processors


def _own_path(processor, name: str, max_length: int) -> dict[str, torch.Tensor]:
    """What the processor must return: its tokenizer, image processor and feature extractor called directly."""
    tokens = processor.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=max_length)
    out = {key: torch.tensor(value) for key, value in tokens.items() if key in ("input_ids", "attention_mask")}
    out["pixel_values"] = processor.image_processor(_images(), return_tensors="pt")["pixel_values"]
    if "audio" in FAMILIES[name].modalities:
        audio = processor.feature_extractor(_waveforms(), sampling_rate=AUDIO_RATE, return_tensors="pt")
        out["input_features"] = audio["input_features"]
    return out


@pytest.mark.parametrize("name", _claiming("processor"))
def test_processor_follows_the_transformers5_protocol(name, loaded):
    _, processor = loaded(name)
    max_length = 64
    expected = _own_path(processor, name, max_length)
    has_audio = "audio" in FAMILIES[name].modalities
    inputs = {"text": TEXTS, "images": _images(), **({"audio": _waveforms()} if has_audio else {})}
    audio_kwargs = {"sampling_rate": AUDIO_RATE} if has_audio else {}
    calls = {
        "flat": processor(
            **inputs, return_tensors="pt", padding="max_length", truncation=True, max_length=max_length, **audio_kwargs
        ),
        "per modality": processor(
            **inputs,
            text_kwargs={
                "padding": "max_length",
                "truncation": True,
                "max_length": max_length,
                "return_tensors": "pt",
            },
            images_kwargs={"return_tensors": "pt"},
            **({"audio_kwargs": {**audio_kwargs, "return_tensors": "pt"}} if has_audio else {}),
        ),
        "common": processor(
            **inputs,
            text_kwargs={"padding": "max_length", "truncation": True, "max_length": max_length},
            **({"audio_kwargs": audio_kwargs} if has_audio else {}),
            common_kwargs={"return_tensors": "pt"},
        ),
    }
    for label, output in calls.items():
        for key, value in expected.items():
            assert isinstance(output[key], torch.Tensor), (label, key, type(output[key]))
            assert torch.equal(output[key], value), (label, key)


# --------------------------------------------------------------------------------------- sentence-transformers


@pytest.mark.parametrize("name", _claiming("sentence_transformers"))
def test_sentence_transformer_module_on_the_published_layout(name, family_repos):
    from sentence_transformers import SentenceTransformer

    repo = family_repos(name)
    model = SentenceTransformer(repo, trust_remote_code=True)
    images = _images()
    mixed = [TEXTS[0], images[0], TEXTS[1], images[1], images[2], TEXTS[2]]
    if "audio" in FAMILIES[name].modalities:
        mixed += [{"array": wave, "sampling_rate": AUDIO_RATE} for wave in _waveforms()]
    embeddings = model.encode(mixed, convert_to_tensor=True)
    expected = _references(name, repo)
    order = [("text", 0), ("image", 0), ("text", 1), ("image", 1), ("image", 2), ("text", 2)]
    order += [("audio", 0), ("audio", 1)] if "audio" in expected else []
    for row, (modality, index) in enumerate(order):
        torch.testing.assert_close(embeddings[row], expected[modality][index], atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", _claiming("stock_sentence_transformers"))
def test_stock_sentence_transformers_on_a_save_pretrained_copy(name, loaded, family_repos, tmp_path):
    """`save_pretrained` drops the sentence-transformers files; stock ST must still encode the copy."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers import AutoProcessor

    model, processor = loaded(name)[0], AutoProcessor.from_pretrained(family_repos(name), trust_remote_code=True)
    model.save_pretrained(tmp_path / "copy")
    processor.save_pretrained(tmp_path / "copy")
    expected = _references(name, family_repos(name))
    variants = [True] + ([False] if FAMILIES[name].claims("stock_clip") else [])
    for trust in variants:
        st = SentenceTransformer(str(tmp_path / "copy"), trust_remote_code=trust)
        assert isinstance(st[0], Transformer), type(st[0])
        texts = st.encode(TEXTS[:2], convert_to_tensor=True, normalize_embeddings=True)
        images = st.encode(_images(), convert_to_tensor=True, normalize_embeddings=True)
        # Stock ST cuts texts at the tokenizer's limit without keeping the end token: compare within the limit.
        torch.testing.assert_close(texts, expected["text"][:2], atol=2e-5, rtol=0, msg=f"text, trust={trust}")
        torch.testing.assert_close(images, expected["image"], atol=2e-5, rtol=0, msg=f"image, trust={trust}")


# ------------------------------------------------------------------------------------------------ fine-tuning


def _media_rows(name: str, folder, kind: str, count: int = 8) -> tuple[list[str], list]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    captions = [
        f"sample {index}: " + " ".join(rng.choice(["red", "blue", "tall", "round"], 5)) for index in range(count)
    ]
    media = []
    for index in range(count):
        if kind == "audio":
            import soundfile

            t = np.arange(AUDIO_RATE) / AUDIO_RATE
            path = str(folder / f"clip{index}.wav")
            soundfile.write(path, (0.3 * np.sin(2 * np.pi * (200 + 90 * index) * t)).astype(np.float32), AUDIO_RATE)
        else:
            path = str(folder / f"image{index}.png")
            Image.fromarray(rng.integers(0, 256, (36 + index, 44, 3), dtype=np.uint8)).save(path)
        media.append(path)
    return captions, media


def _finetune_cases(name: str) -> list[str]:
    kinds = ["image paths", "datasets.Image"]
    return kinds + (["audio paths"] if "audio" in FAMILIES[name].modalities else [])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,case", [(name, case) for name in _claiming("finetune") for case in _finetune_cases(name)]
)
def test_trainer_fine_tunes_and_the_saved_model_reloads(name, case, family_repos, tmp_path):
    from conftest import run_fresh_python
    from datasets import Dataset
    from datasets import Image as ImageFeature
    from sentence_transformers import SentenceTransformer

    from hub_configs.finetune import finetune

    captions, media = _media_rows(name, tmp_path / "data", "audio" if case == "audio paths" else "image")
    column = "audio" if case == "audio paths" else "image"
    dataset = Dataset.from_dict({"caption": captions, column: media})
    if case == "datasets.Image":
        dataset = dataset.cast_column("image", ImageFeature())
    model = SentenceTransformer(family_repos(name), trust_remote_code=True)
    # One batch repeated: the loss of the same pairs must fall.
    losses = finetune(
        model, dataset, max_steps=10, batch_size=len(captions), learning_rate=2e-3, show_progress_bar=False
    )
    assert len(losses) == 10 and losses[-1] < losses[0] - 1e-3, losses
    model.save(str(tmp_path / "tuned"))
    probe = [captions[0], media[0]]
    expected = model.encode(probe, convert_to_numpy=True)
    code = f"""
        import json
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(tmp_path / "tuned")!r}, trust_remote_code=True)
        print(json.dumps(model.encode({probe!r}, convert_to_numpy=True).tolist()))
    """
    reloaded = np.array(json.loads(run_fresh_python(code, tmp_path).strip().splitlines()[-1]))
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", _claiming("finetune"))
def test_legacy_fit_trains(name, family_repos, tmp_path):
    """sentence-transformers' legacy `fit` (DataLoader of InputExample pairs) runs through the same module."""
    from sentence_transformers import InputExample, SentenceTransformer, losses
    from torch.utils.data import DataLoader

    captions, media = _media_rows(name, tmp_path / "data", "image")
    model = SentenceTransformer(family_repos(name), trust_remote_code=True)
    before = model.encode(captions[:2], convert_to_tensor=True)
    examples = [InputExample(texts=[caption, path]) for caption, path in zip(captions, media)]
    model.fit(
        train_objectives=[(DataLoader(examples, batch_size=4), losses.MultipleNegativesRankingLoss(model))],
        epochs=2,
        warmup_steps=0,
        optimizer_params={"lr": 2e-3},
        show_progress_bar=False,
    )
    after = model.encode(captions[:2], convert_to_tensor=True)
    assert (before - after).abs().max() > 1e-3


# -------------------------------------------------------------------------------------------- the Hub cache


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_claimed_door_loads_from_an_offline_hub_cache(name, family_repos, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 loads `org/<name>` from a Hub-cache layout through each claimed door."""
    from conftest import make_hub_cache, run_fresh_python

    from hub_configs.publish import prepare_for_repo_id

    family, repo = FAMILIES[name], family_repos(name)
    cache = tmp_path / "hub"
    snapshot = make_hub_cache(str(cache), f"org/{name}", repo)
    prepare_for_repo_id(snapshot, f"org/{name}")  # what `mmhub push --repo-id org/<name>` does before uploading
    image_path = tmp_path / "photo.png"
    _images()[1].save(image_path)
    checks = {
        "automodel": """
            from transformers import AutoModel, AutoProcessor
            model = AutoModel.from_pretrained(REPO, trust_remote_code=True)
            processor = AutoProcessor.from_pretrained(REPO, trust_remote_code=True)
            features = model.get_text_features(**processor(text=["a cat"], return_tensors="pt", padding=True))
            features = torch.nn.functional.normalize(getattr(features, "pooler_output", features), dim=-1)
            out["automodel"] = [type(model).__name__, type(processor).__name__, features[0].tolist()]
        """,
        "sentence_transformers": """
            from sentence_transformers import SentenceTransformer
            st = SentenceTransformer(REPO, trust_remote_code=True)
            out["sentence_transformers"] = st.encode(["a cat", IMAGE]).tolist()
        """,
        "stock_clip": """
            from transformers import CLIPModel, CLIPProcessor
            model, processor = CLIPModel.from_pretrained(REPO), CLIPProcessor.from_pretrained(REPO)
            features = model.get_text_features(**processor(text=["a cat"], return_tensors="pt")).pooler_output
            out["stock_clip"] = [type(model).__name__, type(processor).__name__,
                                 torch.nn.functional.normalize(features, dim=-1)[0].tolist()]
        """,
        "zero_shot_pipeline": """
            from transformers import pipeline
            classify = pipeline("zero-shot-image-classification", model=REPO, trust_remote_code=True)
            scores = classify(IMAGE, candidate_labels=["a cat", "a dog"])
            out["zero_shot_pipeline"] = {row["label"]: row["score"] for row in scores}
        """,
        "text_encoder": """
            from transformers import CLIPTextModel, CLIPTokenizer
            encoder = CLIPTextModel.from_pretrained(REPO, subfolder="text_encoder")
            tokenizer = CLIPTokenizer.from_pretrained(REPO, subfolder="tokenizer")
            pooled = encoder(**tokenizer(["a cat"], return_tensors="pt")).pooler_output
            out["text_encoder"] = [encoder.config.max_position_embeddings, tokenizer.model_max_length, pooled[0].tolist()]
        """,
        "custom_pipeline": """
            from diffusers import DiffusionPipeline
            pipe = DiffusionPipeline.from_pretrained(BASE, custom_pipeline=SNAPSHOT, trust_remote_code=True)
            out["custom_pipeline"] = type(pipe).__name__
        """,
    }
    base = repo + "-sdxl-base"
    code = f"import json, torch\nREPO, IMAGE, SNAPSHOT, BASE = 'org/{name}', {str(image_path)!r}, {snapshot!r}, {base!r}\n"
    code += "out = {}\n" + "".join(textwrap.dedent(checks[door]) for door in family.doors if door in checks)
    code += "print(json.dumps(out))\n"
    output = run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    result = json.loads(output.strip().splitlines()[-1])
    assert set(result) == {door for door in family.doors if door in checks}
    if "automodel" in result:
        model_class = family.auto_map["AutoModel"].split(".")[1]
        assert result["automodel"][:2] == [model_class, family.auto_map["AutoProcessor"].split(".")[1]]
        text = REFERENCES[name].text(repo, ["a cat"])[0]
        torch.testing.assert_close(torch.tensor(result["automodel"][2]), text, atol=2e-5, rtol=0)
    if "sentence_transformers" in result:
        embeddings = torch.tensor(result["sentence_transformers"])
        expected = _references(name, repo)
        reference = REFERENCES[name]
        torch.testing.assert_close(embeddings[0], reference.text(repo, ["a cat"])[0], atol=2e-5, rtol=0)
        torch.testing.assert_close(embeddings[1], expected["image"][1], atol=2e-5, rtol=0)
    if "stock_clip" in result:
        assert result["stock_clip"][:2] == ["CLIPModel", "CLIPProcessor"]
        text = REFERENCES[name].text(repo, ["a cat"])[0]
        torch.testing.assert_close(torch.tensor(result["stock_clip"][2]), text, atol=2e-5, rtol=0)
    if "zero_shot_pipeline" in result:
        # The pipeline's scores: softmax over the image's logits against its default hypothesis template.
        from transformers import CLIPModel, CLIPProcessor

        model, processor = CLIPModel.from_pretrained(repo).eval(), CLIPProcessor.from_pretrained(repo)
        labels = ["a cat", "a dog"]
        inputs = processor(
            text=[f"This is a photo of {label}." for label in labels],
            images=_images()[1],
            return_tensors="pt",
            padding=True,
        )
        with torch.inference_mode():
            expected = model(**inputs).logits_per_image.softmax(-1)[0]
        got = torch.tensor([result["zero_shot_pipeline"][label] for label in labels])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    if "text_encoder" in result:
        assert result["text_encoder"][:2] == [248, 248]
        from transformers import CLIPTextModel, CLIPTokenizer

        encoder = CLIPTextModel.from_pretrained(repo, subfolder="text_encoder").eval()
        tokens = CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer")(["a cat"], return_tensors="pt")
        with torch.inference_mode():
            expected = encoder(**tokens).pooler_output[0].float()
        torch.testing.assert_close(torch.tensor(result["text_encoder"][2]), expected, atol=1e-5, rtol=0)
    if "custom_pipeline" in result:
        assert result["custom_pipeline"] == "LongCLIPStableDiffusionXLPipeline"
    shutil.rmtree(cache)
