"""CLIPCLAP's Termite folder, read the way Termite's Go runtime and Zig runtime (antflydb/antfly) read it.

`test_termite_folder_follows_the_loaders` checks each point of the file contract those loaders (and Termite's own
exporter test) rely on; `test_termite_consumer_gets_the_models_embeddings` feeds the files as Termite does (the
`tokenizers` library on `tokenizer.json`, ids cut at 77 and zero-padded, encoder output 0 for texts and the output
named `pooler_output` for images and audio, 1000 and 1001 log-mel frames, projections bound by the name `input`,
then L2) and compares with the project's PyTorch model on the same features.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime
import pytest
import torch

from tests.onnx_fixtures import AUDIO_RATE, exported_repos, images, read_json, waveforms

# What the loaders look up.
ENCODERS = {"text": "text_model.onnx", "image": "visual_model.onnx", "audio": "audio_model.onnx"}
PROJECTIONS = {"text": "text_projection.onnx", "image": "visual_projection.onnx", "audio": "audio_projection.onnx"}
SIDE_FILES = (
    "clip_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "projection_training_metadata.json",
)
GO_TEXT_LIMIT = 77  # the Go runtime cuts id lists at text_config.max_position_embeddings
CLAP_FRAMES = 1001  # 10 s at 48 kHz, hop 480, + 1: the Zig runtime's default frame count
TEXTS = [
    "a dog barking in the distance",
    " ".join(["heavy rain on a tin roof while thunder rolls over the hills"] * 8),
    " ".join(["heavy rain on a tin roof while thunder rolls over the hills"] * 8) + " and a bell",
    " ".join(["a crowd cheering in a stadium as the final whistle blows"] * 8),
]


@pytest.fixture(scope="session")
def termite(tmp_path_factory) -> tuple[str, str]:
    """(repo, its Termite folder), both from `mmhub export-onnx`."""
    repo = exported_repos(tmp_path_factory)("clipclap")
    return repo, os.path.join(repo, "termite")


def _session(folder: str, name: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(os.path.join(folder, name), providers=["CPUExecutionProvider"])


def zig_clap_frames(session: onnxruntime.InferenceSession, default: int = CLAP_FRAMES) -> int:
    """The frame count the Zig runtime feeds (its `clapInputFeatureFrames`): a fixed input time axis, else a fixed
    output width in (default, 4096] that is a multiple of 32, else the default."""
    for node in session.get_inputs():
        if node.name == "input_features" and len(node.shape) >= 3 and isinstance(node.shape[2], int):
            return max(default, node.shape[2])
    for node in session.get_outputs():
        width = node.shape[1] if len(node.shape) >= 2 else None
        if isinstance(width, int) and default < width <= 4096 and width % 32 == 0:
            return width
    return default


def test_termite_folder_follows_the_loaders(termite):
    from tokenizers import Tokenizer
    from transformers import CLIPProcessor, CLIPTokenizerFast

    repo, folder = termite
    files = set(os.listdir(folder))
    assert set(ENCODERS.values()) | set(PROJECTIONS.values()) | set(SIDE_FILES) <= files
    # The Zig runtime takes model.onnx as the text encoder before text_model.onnx: there must be none.
    assert not any(name.startswith("model") and name.endswith(".onnx") for name in files)

    config = read_json(folder, "clip_config.json")
    repo_config = read_json(repo, "config.json")
    assert config["model_type"] == "clipclap"  # "clip" makes Termite treat the folder as a plain CLIP
    clip_config = repo_config["clip_config"]
    assert config["projection_dim"] == repo_config["projection_dim"]
    assert config["text_config"]["max_position_embeddings"] == clip_config["text_config"]["max_position_embeddings"]
    assert config["vision_config"]["image_size"] == clip_config["vision_config"]["image_size"]
    assert config["audio_config"]["hidden_size"] == repo_config["audio_config"]["hidden_size"]
    assert config["audio_config"]["sample_rate"] == AUDIO_RATE and config["audio_config"]["max_length_s"] == 10
    for section in ("vision_config", "text_config", "audio_config"):
        assert config[section]["projection_dim"] == config["projection_dim"]

    sessions = {name: _session(folder, name) for name in (*ENCODERS.values(), *PROJECTIONS.values())}
    text = sessions["text_model.onnx"]
    assert [node.name for node in text.get_inputs()] == ["input_ids", "attention_mask"]
    for name in ENCODERS.values():
        outputs = sessions[name].get_outputs()
        # Both runtimes embed texts from output 0 (mean-pooling it when 3-D); images and audio by the name
        # pooler_output; Termite's exporter test reads output 1.
        assert [node.name for node in outputs] == ["pooler_output", "last_hidden_state"], name
        assert len(outputs[0].shape) == 2 and isinstance(outputs[0].shape[0], str), name
    assert all(isinstance(size, str) for size in text.get_inputs()[0].shape)
    assert isinstance(sessions["visual_model.onnx"].get_inputs()[0].shape[0], str)
    audio_input = sessions["audio_model.onnx"].get_inputs()[0]
    assert audio_input.name == "input_features" and isinstance(audio_input.shape[2], str)  # any frame count
    assert zig_clap_frames(sessions["audio_model.onnx"]) == CLAP_FRAMES
    for modality, name in PROJECTIONS.items():
        inputs, outputs = sessions[name].get_inputs(), sessions[name].get_outputs()
        # The Zig runtime binds the tensor named "input" and reads its fixed width to pick the encoder output.
        assert [node.name for node in inputs] == ["input"] and [node.name for node in outputs] == ["output"]
        width = inputs[0].shape[1]
        assert isinstance(width, int) and isinstance(inputs[0].shape[0], str)
        assert outputs[0].shape[1] == config["projection_dim"]
        # The Zig runtime projects the first 2-D encoder output whose width is the projection's input width.
        encoder = sessions[ENCODERS[modality]]
        produced = encoder.run(None, _encoder_feeds(encoder))
        chosen = next(i for i, value in enumerate(produced) if value.ndim == 2 and value.shape[1] == width)
        assert encoder.get_outputs()[chosen].name == "pooler_output", modality

    # tokenizer.json truncates by itself, keeping the end token within the 77 positions.
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    assert tokenizer.truncation["max_length"] == GO_TEXT_LIMIT and tokenizer.padding is None
    ids = tokenizer.encode(TEXTS[1]).ids
    end = tokenizer.token_to_id("<|endoftext|>")
    assert len(ids) == GO_TEXT_LIMIT and ids[-1] == end
    # What Termite's exporter test loads.
    assert type(CLIPProcessor.from_pretrained(folder)).__name__ == "CLIPProcessor"
    assert CLIPTokenizerFast.from_pretrained(folder)(TEXTS[0])["input_ids"] == tokenizer.encode(TEXTS[0]).ids
    outputs = sessions["audio_model.onnx"].run(None, {"input_features": np.zeros((1, 1, 1001, 64), np.float32)})
    assert outputs[1].shape[0] == 1
    projected = sessions["audio_projection.onnx"].run(
        None, {"input": np.ones((1, config["audio_config"]["hidden_size"]), np.float32)}
    )[0]
    assert projected.shape[-1] == config["projection_dim"]


def _encoder_feeds(session: onnxruntime.InferenceSession) -> dict[str, np.ndarray]:
    """Zeros of a valid shape for every input (batch 2; 7 tokens; CLAP's 1001 frames)."""
    feeds = {}
    for node in session.get_inputs():
        shape = [2 if axis == 0 else size if isinstance(size, int) else 7 for axis, size in enumerate(node.shape)]
        if node.name == "input_features":
            shape[2] = CLAP_FRAMES
        dtype = np.int64 if node.type == "tensor(int64)" else np.float32
        feeds[node.name] = np.ones(shape, dtype) if node.name == "attention_mask" else np.zeros(shape, dtype)
    return feeds


def _termite_text_inputs(tokenizer, texts):
    """What the Go runtime's TokenizeTexts builds: ids cut at 77, zero padding, mask of the real tokens."""
    rows = [tokenizer.encode(text).ids[:GO_TEXT_LIMIT] for text in texts]
    length = max(len(row) for row in rows)
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return ids, mask


def _l2(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_termite_consumer_gets_the_models_embeddings(termite):
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoProcessor

    repo, folder = termite
    model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)

    def encode(modality, feeds):
        encoder = _session(folder, ENCODERS[modality])
        outputs = dict(zip([node.name for node in encoder.get_outputs()], encoder.run(None, feeds)))
        # Termite embeds texts from the encoder's first output; the others from the pooled one.
        pooled = outputs[encoder.get_outputs()[0].name] if modality == "text" else outputs["pooler_output"]
        projected = _session(folder, PROJECTIONS[modality]).run(None, {"input": pooled})[0]
        return _l2(projected)

    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    ids, mask = _termite_text_inputs(tokenizer, TEXTS)
    expected_ids = processor.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="np")["input_ids"]
    got = encode("text", {"input_ids": ids, "attention_mask": mask})
    with torch.inference_mode():
        expected = model.get_text_features(input_ids=torch.from_numpy(expected_ids.astype(np.int64))).pooler_output
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)
    # Texts that differ only past the 77th token share their truncation; other long texts do not share a vector.
    np.testing.assert_allclose(got[1], got[2], atol=1e-6, rtol=0)
    assert np.abs(got[1] - got[3]).max() > 1e-3

    pixels = processor.image_processor(images(), return_tensors="np")["pixel_values"]
    with torch.inference_mode():
        expected = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
    np.testing.assert_allclose(encode("image", {"pixel_values": pixels}), expected.numpy(), atol=1e-4, rtol=0)

    features = processor.feature_extractor(waveforms(), sampling_rate=AUDIO_RATE, return_tensors="np")
    features = np.asarray(features["input_features"], dtype=np.float32)
    assert features.shape[2] == CLAP_FRAMES
    for frames in (1000, CLAP_FRAMES):  # the Go runtime sends 1000, the Zig runtime and CLAP's extractor 1001
        cut = np.ascontiguousarray(features[:, :, :frames])
        with torch.inference_mode():
            expected = model.get_audio_features(input_features=torch.from_numpy(cut)).pooler_output
        np.testing.assert_allclose(encode("audio", {"input_features": cut}), expected.numpy(), atol=1e-4, rtol=0)
