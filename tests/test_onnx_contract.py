"""The `onnx` door of the family contract: every family that claims it, exported with `mmhub export-onnx`.

Parametrized over the registry like `tests/test_family_contract.py`: the files and names each runtime looks for
(transformers.js' towers and joint graph, sentence-transformers' and transformers.js' variant names), ONNX Runtime
against the independent references of `tests/family_references.py`, empty batches and dynamic lengths, and
`SentenceTransformer(..., backend="onnx")` against the torch backend, on a copy of the repo without its weights.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime
import pytest
import torch

from hub_configs.families import FAMILIES
from tests.family_references import REFERENCES
from tests.onnx_fixtures import (
    AUDIO_RATE,
    ONNX_FAMILIES,
    TEXTS,
    copy_without_weights,
    cosine_rows,
    exported_repos,
    images,
    read_json,
    unit,
    waveforms,
)

# The contract, written out: file -> (input names, output names), as transformers.js and this package's backend read.
LAYOUT = {
    "longclip": {
        "text_model.onnx": (["input_ids", "attention_mask"], ["text_embeds"]),
        "vision_model.onnx": (["pixel_values"], ["image_embeds"]),
        "model.onnx": (
            ["input_ids", "pixel_values", "attention_mask"],
            ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
        ),
    },
    "jina-clip-v2": {
        "text_model.onnx": (["input_ids", "attention_mask"], ["text_embeddings"]),
        "vision_model.onnx": (["pixel_values"], ["image_embeddings"]),
        "model.onnx": (
            ["input_ids", "pixel_values"],
            ["text_embeddings", "image_embeddings", "l2norm_text_embeddings", "l2norm_image_embeddings"],
        ),
    },
    "clipclap": {
        "text_model.onnx": (["input_ids", "attention_mask"], ["text_embeds"]),
        "vision_model.onnx": (["pixel_values"], ["image_embeds"]),
        "audio_model.onnx": (["input_features"], ["audio_embeds"]),
    },
}
# Variant suffixes: transformers.js (dtype "fp16", "q8") and one of sentence-transformers' dynamic-int8 names.
VARIANT_SUFFIXES = ("_fp16", "_quantized", "_qint8_avx512_vnni")
TOWERS = {"text": "text_model.onnx", "image": "vision_model.onnx", "audio": "audio_model.onnx"}
# Axes that must be dynamic per input (batch, and the sequence / time axis).
DYNAMIC = {"input_ids": (0, 1), "attention_mask": (0, 1), "pixel_values": (0,), "input_features": (0, 2)}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return exported_repos(tmp_path_factory)


@pytest.fixture(scope="session")
def weightless(exported, tmp_path_factory):
    cache = {}

    def get(name: str) -> str:
        if name not in cache:
            cache[name] = copy_without_weights(exported(name), tmp_path_factory.mktemp("weightless") / name)
        return cache[name]

    return get


def _session(repo: str, name: str) -> onnxruntime.InferenceSession:
    # With the session options backend="onnx" uses: int8 products that do not saturate on x86 CPUs without VNNI.
    from st_modules.onnx_backend import default_session_options

    path = os.path.join(repo, "onnx", name)
    return onnxruntime.InferenceSession(path, default_session_options(), providers=["CPUExecutionProvider"])


def _processor(repo: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(repo, trust_remote_code=True)


def _tower_inputs(processor, modality: str) -> dict[str, np.ndarray]:
    if modality == "text":
        tokens = processor.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="np")
        return {name: tokens[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
    if modality == "image":
        return {"pixel_values": processor.image_processor(images(), return_tensors="np")["pixel_values"]}
    features = processor.feature_extractor(waveforms(), sampling_rate=AUDIO_RATE, return_tensors="np")
    return {"input_features": np.asarray(features["input_features"], dtype=np.float32)}


def _reference(name: str, repo: str, modality: str) -> np.ndarray:
    reference = REFERENCES[name]
    if modality == "text":
        return reference.text(repo, TEXTS).numpy()
    if modality == "image":
        return reference.image(repo, images()).numpy()
    return reference.audio(repo, waveforms()).numpy()


# ------------------------------------------------------------------------------------------------ registry


def test_every_family_with_a_model_claims_the_onnx_door():
    with_model = sorted(name for name, family in FAMILIES.items() if family.claims("automodel"))
    assert sorted(ONNX_FAMILIES) == with_model == sorted(LAYOUT)
    for name in ONNX_FAMILIES:
        family = FAMILIES[name]
        assert family.onnx_exporter is not None
        assert "st_modules/onnx_backend.py" in family.code_files
        assert set(TOWERS[m] for m in family.modalities) <= set(LAYOUT[name])


# ---------------------------------------------------------------------------------------------- the files


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_export_writes_every_runtimes_file_names(name, exported):
    repo = exported(name)
    written = set(os.listdir(os.path.join(repo, "onnx")))
    expected = {
        base[: -len(".onnx")] + suffix + ".onnx" for base in LAYOUT[name] for suffix in ("", *VARIANT_SUFFIXES)
    }
    assert written == expected
    for file_name, (inputs, outputs) in LAYOUT[name].items():
        for suffix in ("", *VARIANT_SUFFIXES):
            session = _session(repo, file_name.replace(".onnx", suffix + ".onnx"))
            assert [node.name for node in session.get_inputs()] == inputs, file_name
            assert [node.name for node in session.get_outputs()] == outputs, file_name
            # Variants keep float32 inputs and outputs: processors produce float32 and transformers.js casts nothing.
            for node in (*session.get_inputs(), *session.get_outputs()):
                assert node.type in ("tensor(float)", "tensor(int64)"), (file_name, suffix, node.name, node.type)
            for node in session.get_inputs():
                for axis, size in enumerate(node.shape):
                    dynamic = axis in DYNAMIC[node.name]
                    assert isinstance(size, str) == dynamic, (file_name, node.name, node.shape)
    if "model.onnx" in LAYOUT[name]:
        batches = {node.name: node.shape[0] for node in _session(repo, "model.onnx").get_inputs()}
        assert batches["input_ids"] != batches["pixel_values"], "text and image batches must be independent"
    # The image settings runtimes read, in step with processor_config.json, and the processor class to build.
    processor_config = read_json(repo, "processor_config.json")
    preprocessor = read_json(repo, "preprocessor_config.json")
    assert preprocessor == {
        **processor_config["image_processor"],
        "processor_class": processor_config["processor_class"],
    }


# ------------------------------------------------------------------------------------------- ONNX Runtime


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_towers_match_the_independent_reference(name, exported):
    repo = exported(name)
    processor = _processor(repo)
    for modality in FAMILIES[name].modalities:
        got = _session(repo, TOWERS[modality]).run(None, _tower_inputs(processor, modality))[0]
        np.testing.assert_allclose(unit(got), _reference(name, repo, modality), atol=1e-4, rtol=0, err_msg=modality)


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_towers_take_empty_batches_and_other_lengths(name, exported):
    from transformers import AutoModel

    repo = exported(name)
    processor = _processor(repo)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32).eval()
    for modality in FAMILIES[name].modalities:
        session = _session(repo, TOWERS[modality])
        feeds = _tower_inputs(processor, modality)
        width = session.run(None, feeds)[0].shape[1]
        empty = session.run(None, {key: value[:0] for key, value in feeds.items()})[0]
        assert empty.shape == (0, width), (modality, empty.shape)
        if modality == "text":
            # One short text alone: another batch size and sequence length than any export example.
            feeds = {key: value[:1, :7] for key, value in processor.tokenizer(["a cat"], return_tensors="np").items()}
            feeds = {key: feeds[key].astype(np.int64) for key in ("input_ids", "attention_mask")}
        if modality == "audio":
            # Termite's Go runtime sends 1000 frames, CLAP's extractor 1001: HTSAT stretches either inside the graph.
            feeds = {"input_features": feeds["input_features"][:, :, :1000]}
        with torch.inference_mode():
            tensors = {key: torch.from_numpy(value) for key, value in feeds.items()}
            expected = getattr(model, f"get_{modality}_features")(**tensors)
            expected = getattr(expected, "pooler_output", expected).float().numpy()
        np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=1e-4, rtol=0, err_msg=modality)


@pytest.mark.parametrize("name", [name for name in ONNX_FAMILIES if "model.onnx" in LAYOUT[name]])
def test_joint_graph_follows_transformers_js_contract(name, exported):
    repo = exported(name)
    processor = _processor(repo)
    session = _session(repo, "model.onnx")
    text, image = _tower_inputs(processor, "text"), _tower_inputs(processor, "image")
    texts, pictures = _reference(name, repo, "text"), _reference(name, repo, "image")
    feeds = {"input_ids": text["input_ids"], "pixel_values": image["pixel_values"]}
    if name == "jina-clip-v2":
        text_raw, image_raw, text_unit, image_unit = session.run(None, feeds)
        np.testing.assert_allclose(text_unit, texts, atol=1e-4, rtol=0)
        np.testing.assert_allclose(image_unit, pictures, atol=1e-4, rtol=0)
        np.testing.assert_allclose(unit(text_raw), text_unit, atol=1e-5, rtol=0)
        np.testing.assert_allclose(unit(image_raw), image_unit, atol=1e-5, rtol=0)
        # transformers.js' text-only call: an empty image batch of the model's image size.
        empty = {"input_ids": text["input_ids"][:1], "pixel_values": image["pixel_values"][:0]}
        only_text = session.run(None, empty)
        assert only_text[1].shape == (0, pictures.shape[1])
        np.testing.assert_allclose(only_text[2], texts[:1], atol=1e-4, rtol=0)
    else:
        feeds["attention_mask"] = text["attention_mask"]
        logits_per_image, logits_per_text, text_embeds, image_embeds = session.run(None, feeds)
        np.testing.assert_allclose(text_embeds, texts, atol=1e-4, rtol=0)
        np.testing.assert_allclose(image_embeds, pictures, atol=1e-4, rtol=0)
        scale = np.exp(read_logit_scale(repo))
        np.testing.assert_allclose(logits_per_image, scale * pictures @ texts.T, atol=1e-3, rtol=0)
        np.testing.assert_allclose(logits_per_text, logits_per_image.T, atol=1e-6, rtol=0)


def read_logit_scale(repo: str) -> float:
    from safetensors.torch import load_file

    return float(load_file(os.path.join(repo, "model.safetensors"))["logit_scale"])


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_variants_stay_close_to_the_reference(name, exported):
    repo = exported(name)
    processor = _processor(repo)
    for modality in FAMILIES[name].modalities:
        expected = _reference(name, repo, modality)
        feeds = _tower_inputs(processor, modality)
        for suffix, floor in (("_fp16", 0.9999), ("_quantized", 0.998), ("_qint8_avx512_vnni", 0.998)):
            got = _session(repo, TOWERS[modality].replace(".onnx", suffix + ".onnx")).run(None, feeds)[0]
            cosine = cosine_rows(got, expected)
            assert cosine.min() >= floor, (modality, suffix, cosine)


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_transformers_js_int8_is_close_without_session_options(name, exported):
    """transformers.js users cannot set ONNX Runtime's precise-int8 option: its q8 files hold 7-bit weights, which
    do not saturate on x86 CPUs without VNNI, so a plain session stays close to fp32 on every CPU."""
    repo = exported(name)
    processor = _processor(repo)
    for modality in FAMILIES[name].modalities:
        path = os.path.join(repo, "onnx", TOWERS[modality].replace(".onnx", "_quantized.onnx"))
        plain = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        cosine = cosine_rows(plain.run(None, _tower_inputs(processor, modality))[0], _reference(name, repo, modality))
        assert cosine.min() >= 0.998, (modality, cosine)


def test_backend_sessions_keep_int8_products_precise(tmp_path):
    """backend="onnx" adds ONNX Runtime's precise-int8 entry to its sessions, and keeps a caller's own setting."""
    from st_modules.onnx_backend import PRECISE_INT8_ENTRY, default_session_options

    key, value = PRECISE_INT8_ENTRY
    assert default_session_options().get_session_config_entry(key) == value
    given = onnxruntime.SessionOptions()
    given.intra_op_num_threads = 1
    assert default_session_options(given) is given and given.get_session_config_entry(key) == value
    opted_out = onnxruntime.SessionOptions()
    opted_out.add_session_config_entry(key, "0")
    assert default_session_options(opted_out).get_session_config_entry(key) == "0"


# ------------------------------------------------------------------------------- sentence-transformers backend


def _mixed_inputs(name: str) -> list:
    pictures = images()
    mixed = [TEXTS[0], pictures[0], TEXTS[1], pictures[1], pictures[2], TEXTS[2]]
    if "audio" in FAMILIES[name].modalities:
        mixed += [{"array": wave, "sampling_rate": AUDIO_RATE} for wave in waveforms()]
    return mixed


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_sentence_transformers_onnx_backend_matches_torch(name, exported, weightless):
    from sentence_transformers import SentenceTransformer

    from st_modules.onnx_backend import PRECISE_INT8_ENTRY, OnnxTowers

    torch_model = SentenceTransformer(exported(name), trust_remote_code=True)
    # No weights in the folder: the ONNX backend must not need them.
    onnx_model = SentenceTransformer(weightless(name), trust_remote_code=True, backend="onnx")
    assert type(onnx_model[0].model).__name__ == OnnxTowers.__name__
    mixed = _mixed_inputs(name)
    expected = torch_model.encode(mixed, convert_to_numpy=True)
    np.testing.assert_allclose(onnx_model.encode(mixed, convert_to_numpy=True), expected, atol=1e-4, rtol=0)
    prompts = dict(torch_model.prompts)
    prompt = {"prompt_name": next(iter(prompts))} if prompts else {"prompt": "a photo of "}
    np.testing.assert_allclose(
        onnx_model.encode(TEXTS, **prompt), torch_model.encode(TEXTS, **prompt), atol=1e-4, rtol=0
    )
    width = torch_model[0].matryoshka_dims[0] if torch_model[0].matryoshka_dims else 8
    truncated = onnx_model.encode(mixed, truncate_dim=width, normalize_embeddings=True)
    np.testing.assert_allclose(
        truncated, torch_model.encode(mixed, truncate_dim=width, normalize_embeddings=True), atol=1e-4, rtol=0
    )
    assert truncated.shape == (len(mixed), width)

    # One variant for every tower, then per modality, with the provider sentence-transformers takes.
    int8 = SentenceTransformer(
        weightless(name),
        trust_remote_code=True,
        backend="onnx",
        model_kwargs={"file_name": "model_qint8_avx512_vnni.onnx", "provider": "CPUExecutionProvider"},
    )
    assert {os.path.basename(path) for path in int8[0].model.files.values()} == {
        TOWERS[m].replace(".onnx", "_qint8_avx512_vnni.onnx") for m in FAMILIES[name].modalities
    }
    assert cosine_rows(int8.encode(mixed), expected).min() >= 0.998
    key, value = PRECISE_INT8_ENTRY
    assert all(s.get_session_options().get_session_config_entry(key) == value for s in int8[0].model.sessions.values())
    per_modality = SentenceTransformer(
        weightless(name),
        trust_remote_code=True,
        backend="onnx",
        model_kwargs={"file_name": {"image": "vision_model_fp16.onnx", "text": "model_quantized.onnx"}},
    )
    files = {modality: os.path.basename(path) for modality, path in per_modality[0].model.files.items()}
    assert files["image"] == "vision_model_fp16.onnx" and files["text"] == "text_model_quantized.onnx"
    assert cosine_rows(per_modality.encode(mixed), expected).min() >= 0.998


def test_onnx_backend_saves_and_reloads(exported, weightless, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(weightless("longclip"), trust_remote_code=True, backend="onnx")
    expected = model.encode(TEXTS[:2])
    model.save(str(tmp_path / "saved"))
    again = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True, backend="onnx")
    np.testing.assert_array_equal(again.encode(TEXTS[:2]), expected)


def test_missing_onnx_files_and_other_backends_are_clear_errors(exported, tmp_path):
    import shutil

    from sentence_transformers import SentenceTransformer

    repo = shutil.copytree(exported("clipclap"), tmp_path / "partial", ignore=shutil.ignore_patterns("termite"))
    os.remove(os.path.join(repo, "onnx", "audio_model.onnx"))
    with pytest.raises(FileNotFoundError) as error:
        SentenceTransformer(str(repo), trust_remote_code=True, backend="onnx")
    message = str(error.value)
    assert "onnx/audio_model.onnx" in message  # expected
    assert "onnx/audio_model_fp16.onnx" in message and "onnx/text_model.onnx" in message  # present
    assert "mmhub export-onnx" in message
    with pytest.raises(FileNotFoundError, match="text_model_O3.onnx"):
        SentenceTransformer(
            str(repo), trust_remote_code=True, backend="onnx", model_kwargs={"file_name": "model_O3.onnx"}
        )
    with pytest.raises(ValueError, match="file_name"):
        SentenceTransformer(
            str(repo), trust_remote_code=True, backend="onnx", model_kwargs={"file_name": "other.onnx"}
        )
    with pytest.raises(ValueError, match="dtype"):
        SentenceTransformer(str(repo), trust_remote_code=True, backend="onnx", model_kwargs={"dtype": "float16"})
    with pytest.raises(ValueError, match="openvino"):
        SentenceTransformer(str(repo), trust_remote_code=True, backend="openvino")


# ----------------------------------------------------------------------------------------- external data


@pytest.mark.slow
def test_large_graphs_keep_their_tensors_in_onnx_data(exported, tmp_path):
    """With the 2 GB threshold lowered to 0, every graph is written the way a real-size one is."""
    import shutil

    from sentence_transformers import SentenceTransformer

    from hub_configs.onnx_export import export_repo

    repo = shutil.copytree(exported("longclip"), tmp_path / "big")
    shutil.rmtree(os.path.join(repo, "onnx"))
    report = export_repo(str(repo), variants=["fp32", "quantized"], threshold=0)
    declared = read_json(str(repo), "config.json")["transformers.js_config"]["use_external_data_format"]
    assert (
        set(declared)
        == set(report.external_data)
        == {
            f"{stem}{suffix}.onnx" for stem in ("text_model", "vision_model", "model") for suffix in ("", "_quantized")
        }
    )
    for name in declared:
        data = os.path.join(repo, "onnx", name + "_data")
        assert os.path.getsize(data) > os.path.getsize(os.path.join(repo, "onnx", name))
    model = SentenceTransformer(str(repo), trust_remote_code=True, backend="onnx")
    reference = SentenceTransformer(exported("longclip"), trust_remote_code=True, backend="onnx")
    np.testing.assert_allclose(model.encode(TEXTS), reference.encode(TEXTS), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_onnx_backend_loads_from_an_offline_hub_cache(weightless, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 (no checkout on its path) loads `org/name` from the Hub cache layout."""
    import json

    from conftest import make_hub_cache, run_fresh_python
    from sentence_transformers import SentenceTransformer

    cache = tmp_path / "hub"
    make_hub_cache(str(cache), "org/longclip-onnx", weightless("longclip"))
    code = f"""
        import json
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer("org/longclip-onnx", trust_remote_code=True, backend="onnx",
                                    model_kwargs={{"file_name": "model_quantized.onnx"}})
        print(json.dumps(model.encode({TEXTS[:2]!r}).tolist()))
    """
    output = run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    expected = SentenceTransformer(
        weightless("longclip"),
        trust_remote_code=True,
        backend="onnx",
        model_kwargs={"file_name": "model_quantized.onnx"},
    ).encode(TEXTS[:2])
    np.testing.assert_allclose(np.array(json.loads(output.strip().splitlines()[-1])), expected, atol=1e-6, rtol=0)
