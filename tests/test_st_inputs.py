"""sentence-transformers door: one encode call over every input form, with a value check per rule."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import os
import re
import shutil
import threading

import numpy as np
import pytest
import soundfile
import soxr
import torch
from PIL import Image

RATE = 48000


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def image_model(longclip_repo):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(longclip_repo, trust_remote_code=True)


@pytest.fixture(scope="module")
def clap_repo(tmp_path_factory):
    """A tiny stock CLAP (text + audio) wrapped by the module, to exercise the audio rules."""
    from tests.adversarial_cases import build_stock_clap

    return build_stock_clap(
        str(tmp_path_factory.mktemp("clap") / "tiny-clap"),
        module_config={
            "matryoshka_dims": [4, 8, 16],
            # Clips over 10 s keep their middle window; shorter ones are repeat-padded: both deterministic.
            "audio_kwargs": {"truncation": "rand_trunc", "padding": "repeatpad"},
        },
        prompts={"query": "query: ", "document": "doc: "},
    )


@pytest.fixture(scope="module")
def audio_model(clap_repo):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(clap_repo, trust_remote_code=True)


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """A loopback HTTP server over a folder; yields (folder, base_url)."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _random_image(seed=0, size=(52, 40), mode="RGB"):
    array = (np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype(np.uint8)
    image = Image.fromarray(array)
    return image if mode == "RGB" else image.convert(mode)


def _waveform(seconds=1.5, rate=RATE, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 3 * freq * t)).astype(np.float32)


def _image_reference(model, image: Image.Image) -> torch.Tensor:
    module = model[0]
    pixels = module.processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        features = module.model.get_image_features(pixel_values=pixels).pooler_output[0]
    return features / features.norm()


def _text_reference(model, text: str) -> torch.Tensor:
    module = model[0]
    inputs = module.tokenizer([text], return_tensors="pt", truncation=True, max_length=module.max_seq_length)
    with torch.inference_mode():
        features = module.model.get_text_features(**inputs).pooler_output[0]
    return features / features.norm()


def _audio_reference(model, waveform_48k: np.ndarray) -> torch.Tensor:
    module = model[0]
    window = 10 * RATE  # the module keeps the middle 10 s window of longer clips (the stock extractor would draw one)
    if len(waveform_48k) > window:
        start = (len(waveform_48k) - window) // 2
        waveform_48k = waveform_48k[start : start + window]
    features = module.processor.feature_extractor(
        [waveform_48k], sampling_rate=RATE, return_tensors="pt", truncation="rand_trunc", padding="repeatpad"
    )
    with torch.inference_mode():
        return module.model.get_audio_features(**features).pooler_output[0]


# ----------------------------------------------------------------------------------------------- image and text

EXIF_ORIENTATION = 0x0112


def _image_cases(tmp_path, http_root):
    root, base_url = http_root
    base = _random_image(1)
    png = tmp_path / "photo.png"
    base.save(png)
    jpeg_rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways, shown rotated by 90 degrees clockwise
    base.save(jpeg_rotated, quality=95, exif=exif)
    shown = Image.open(jpeg_rotated)
    shown = shown.transpose(Image.Transpose.ROTATE_270)
    buffer = io.BytesIO()
    base.save(buffer, format="PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    base.save(root / "served.png")
    rgba = _random_image(2).convert("RGBA")
    rgba.putalpha(128)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    array = np.asarray(base)
    return [
        ("pil_rgb", base, base),
        ("pil_rgba_on_white", rgba, Image.alpha_composite(white, rgba).convert("RGB")),
        ("pil_grayscale", base.convert("L"), base.convert("L").convert("RGB")),
        ("pil_palette", base.convert("P"), base.convert("P").convert("RGB")),
        ("png_path", str(png), base),
        ("jpeg_exif_orientation", str(jpeg_rotated), shown),
        ("data_uri", data_uri, base),
        ("http_url", f"{base_url}/served.png", base),
        ("numpy_hwc_uint8", array, base),
        ("numpy_chw_float", np.moveaxis(array, -1, 0).astype(np.float32) / 255, base),
        ("torch_chw_float", torch.from_numpy(np.moveaxis(array, -1, 0).copy()).float() / 255, base),
    ]


def test_image_input_rules(image_model, tmp_path, http_root):
    cases = _image_cases(tmp_path, http_root)
    embeddings = image_model.encode([item for _, item, _ in cases], convert_to_tensor=True)
    for (name, _, expected_image), embedding in zip(cases, embeddings):
        torch.testing.assert_close(
            embedding,
            _image_reference(image_model, expected_image),
            atol=1e-5,
            rtol=0,
            msg=lambda message, name=name: f"{name}: {message}",
        )


@pytest.mark.parametrize(
    "text",
    [
        "A cat",
        "a dog. see/slash",
        "version 1.2/3.4 notes",
        "photo of dog.jpg on a wall",
        "https://example.com/page about cats",
    ],
)
def test_text_stays_text(image_model, text):
    embedding = image_model.encode([text], convert_to_tensor=True)[0]
    torch.testing.assert_close(embedding, _text_reference(image_model, text), atol=1e-5, rtol=0)


def test_mixed_batch_keeps_order(image_model, tmp_path, http_root):
    cases = _image_cases(tmp_path, http_root)
    texts = ["A cat", "a very long caption " * 30, "x"]
    mixed = [texts[0], cases[0][1], texts[1], cases[4][1], cases[6][1], texts[2], cases[8][1]]
    together = image_model.encode(mixed, batch_size=3, convert_to_tensor=True)
    one_by_one = torch.stack([image_model.encode([item], convert_to_tensor=True)[0] for item in mixed])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    assert (together[0] - together[1]).abs().max() > 1e-3


# -------------------------------------------------------------------------------------------------------- audio


def _audio_cases(tmp_path, http_root):
    root, base_url = http_root
    wave = _waveform()
    wave_44k = soxr.resample(wave, RATE, 44100, quality="HQ").astype(np.float32)
    soundfile.write(tmp_path / "clip.wav", wave_44k, 44100, subtype="FLOAT")
    soundfile.write(root / "clip.flac", wave, RATE)
    stereo = np.stack([wave, 0.5 * wave])
    int16 = np.round(wave * 32767).astype(np.int16)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, RATE, format="WAV")
    data_uri = "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()
    resampled_44k = soxr.resample(wave_44k, 44100, RATE, quality="HQ").astype(np.float32)
    return [
        ("numpy_at_model_rate", wave, wave),
        ("dict_44k_resampled", {"array": wave_44k, "sampling_rate": 44100}, resampled_44k),
        ("int16_pcm", int16, int16.astype(np.float32) / 32768),
        ("stereo_channels_first", stereo, stereo.mean(axis=0)),
        ("stereo_channels_last", stereo.T.copy(), stereo.mean(axis=0)),
        ("torch_1d", torch.from_numpy(wave), wave),
        ("wav_path_44k", str(tmp_path / "clip.wav"), resampled_44k),
        ("data_uri", data_uri, soundfile.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0]),
        ("http_url", f"{base_url}/clip.flac", soundfile.read(root / "clip.flac", dtype="float32")[0]),
        ("longer_than_window", _waveform(seconds=12.0), _waveform(seconds=12.0)),
    ]


def test_audio_input_rules(audio_model, tmp_path, http_root):
    cases = _audio_cases(tmp_path, http_root)
    embeddings = audio_model.encode([item for _, item, _ in cases], convert_to_tensor=True)
    for (name, _, expected_wave), embedding in zip(cases, embeddings):
        expected = _audio_reference(audio_model, expected_wave)
        torch.testing.assert_close(
            embedding, expected, atol=1e-5, rtol=0, msg=lambda message, name=name: f"{name}: {message}"
        )


def test_sampling_rates_agree(audio_model):
    wave = _waveform(seconds=2.0, freq=300.0)
    inputs = [{"array": wave, "sampling_rate": RATE}]
    for rate in (16000, 44100):
        inputs.append({"array": soxr.resample(wave, RATE, rate, quality="HQ"), "sampling_rate": rate})
    embeddings = audio_model.encode(inputs, convert_to_tensor=True)
    cosine = embeddings @ embeddings.T
    assert cosine.min() > 0.99


def test_text_and_audio_in_one_call(audio_model):
    wave = _waveform()
    together = audio_model.encode(["a bell", wave, "a dog barking"], convert_to_tensor=True)
    torch.testing.assert_close(together[1], _audio_reference(audio_model, wave), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        together[0], audio_model.encode(["a bell"], convert_to_tensor=True)[0], atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------------------------------------------- bad input


def _bad_cases(tmp_path, http_root):
    _, base_url = http_root
    corrupt_image = tmp_path / "broken.png"
    corrupt_image.write_bytes(b"not a png at all")
    corrupt_audio = tmp_path / "broken.wav"
    corrupt_audio.write_bytes(b"RIFF0000WAVEgarbage")
    return [
        ("missing_image_path", "/data/cat.png", FileNotFoundError, "/data/cat.png", "image"),
        ("missing_audio_path", "recordings/missing.wav", FileNotFoundError, "missing.wav", "audio"),
        ("none", None, TypeError, "NoneType", "image"),
        ("object", object(), TypeError, "object", "image"),
        ("four_d_array", np.zeros((1, 2, 3, 4), dtype=np.float32), ValueError, "4-D", "image"),
        ("dict_without_rate", {"array": np.zeros(10, dtype=np.float32)}, ValueError, "sampling_rate", "audio"),
        ("empty_waveform", np.zeros(0, dtype=np.float32), ValueError, "empty", "audio"),
        ("nan_waveform", np.full(4800, np.nan, dtype=np.float32), ValueError, "NaN", "audio"),
        ("corrupt_image", str(corrupt_image), ValueError, "broken.png", "image"),
        ("corrupt_audio", str(corrupt_audio), ValueError, "broken.wav", "audio"),
        ("http_404", f"{base_url}/nothing-here.png", ValueError, "404", "image"),
        ("audio_to_image_model", _waveform(), ValueError, "audio", "image"),
        ("float_image_out_of_range", np.full((8, 8, 3), 7.0, dtype=np.float32), ValueError, "[0, 1]", "image"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_input_names_the_item(case, image_model, audio_model, tmp_path, http_root):
    name, item, error, fragment, target = _bad_cases(tmp_path, http_root)[case]
    model = image_model if target == "image" else audio_model
    inputs = ["fine text", "another fine text", item]
    with pytest.raises(error) as raised:
        model.encode(inputs)
    message = str(raised.value)
    assert fragment in message, f"{name}: {message}"
    # encode sorts inputs before batching without telling modules the positions: an error names the item by its
    # content and never states a position the user did not give it.
    assert not re.search(r"Input \d", message), f"{name}: the message names a batch position: {message}"


def test_url_size_cap(tmp_path, http_root):
    from st_modules.media_inputs import LoadSettings, fetch_url

    root, base_url = http_root
    (root / "big.png").write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="limit"):
        fetch_url(f"{base_url}/big.png", LoadSettings(url_timeout=5, url_max_bytes=1000), 0)
    assert len(fetch_url(f"{base_url}/big.png", LoadSettings(url_timeout=5, url_max_bytes=10000), 0)) == 5000


# -------------------------------------------------------------------------------------------- prompts and dims


def test_prompts_reach_text_only(audio_model):
    wave = _waveform()
    plain = audio_model.encode(["a bell", wave], convert_to_tensor=True)
    query = audio_model.encode(["a bell", wave], prompt_name="query", convert_to_tensor=True)
    encoded_query = audio_model.encode_query(["a bell", wave], convert_to_tensor=True)
    manual = audio_model.encode(["query: a bell"], convert_to_tensor=True)[0]
    torch.testing.assert_close(query[0], manual, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded_query[0], manual, atol=1e-6, rtol=0)
    assert (query[0] - plain[0]).abs().max() > 1e-4
    torch.testing.assert_close(query[1], plain[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded_query[1], plain[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("dim", [4, 8, 16])
def test_matryoshka_dims_are_unit_prefixes(audio_model, dim):
    inputs = ["a bell", _waveform()]
    full = audio_model.encode(inputs, convert_to_tensor=True)
    cut = audio_model.encode(inputs, truncate_dim=dim, convert_to_tensor=True)
    expected = torch.nn.functional.normalize(full[:, :dim], dim=-1)
    torch.testing.assert_close(cut, expected, atol=1e-6, rtol=0)
    assert audio_model.get_embedding_dimension() == 16


@pytest.mark.parametrize("bad", [0, -4, 12])
def test_matryoshka_invalid_dims(audio_model, bad):
    # Per call, sentence-transformers slices the output before the module sees it ([..., :-4] is 12 wide), so the
    # module checks the width it receives against the trained widths.
    with pytest.raises(ValueError, match=r"\[4, 8, 16\]"):
        audio_model.encode(["a bell"], truncate_dim=bad)


def test_per_call_truncate_dim_wider_than_the_model_is_the_full_width(audio_model):
    full = audio_model.encode(["a bell"], convert_to_tensor=True)
    torch.testing.assert_close(audio_model.encode(["a bell"], truncate_dim=32, convert_to_tensor=True), full)


@pytest.mark.parametrize("bad", [0, -4, 12, 32])
def test_matryoshka_invalid_dims_in_constructor(clap_repo, bad):
    from sentence_transformers import SentenceTransformer

    with pytest.raises(ValueError, match=r"\[4, 8, 16\]"):
        SentenceTransformer(clap_repo, trust_remote_code=True, truncate_dim=bad)


def test_truncate_dim_in_constructor(clap_repo):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(clap_repo, trust_remote_code=True, truncate_dim=8)
    embedding = model.encode(["a bell"], convert_to_tensor=True)
    assert embedding.shape == (1, 8)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"\[4, 8, 16\]"):
        SentenceTransformer(clap_repo, trust_remote_code=True, truncate_dim=10)


def test_unconstrained_dims_without_declared_matryoshka(image_model):
    cut = image_model.encode(["A cat"], truncate_dim=10, convert_to_tensor=True)
    full = image_model.encode(["A cat"], convert_to_tensor=True)
    torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:, :10], dim=-1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"\[1, 32\]"):
        image_model.encode(["A cat"], truncate_dim=0)


# ---------------------------------------------------------------------------------------------- usual options


def test_usual_encode_options(image_model):
    inputs = ["A cat", _random_image(3), "a dog"]
    default = image_model.encode(inputs, convert_to_tensor=True)
    assert isinstance(default, torch.Tensor) and default.dtype == torch.float32
    numpy_out = image_model.encode(inputs, batch_size=1, show_progress_bar=True)
    assert isinstance(numpy_out, np.ndarray)
    np.testing.assert_allclose(numpy_out, default.numpy(), atol=1e-5)
    single = image_model.encode("A cat", convert_to_tensor=True)
    torch.testing.assert_close(single, default[0], atol=1e-6, rtol=0)
    similarity = image_model.similarity(default, default)
    torch.testing.assert_close(similarity, default @ default.T, atol=1e-5, rtol=0)
    assert image_model.similarity_fn_name == "cosine"
    assert image_model.get_embedding_dimension() == 32 and image_model.max_seq_length == 248


def test_bf16_model_kwargs(longclip_repo, image_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(longclip_repo, trust_remote_code=True, model_kwargs={"dtype": torch.bfloat16})
    assert model[0].model.dtype == torch.bfloat16
    inputs = ["A cat", _random_image(4)]
    low = model.encode(inputs, convert_to_tensor=True).float()
    full = image_model.encode(inputs, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(low, full).min() > 0.98


@pytest.mark.slow
def test_save_and_reload_in_fresh_process(audio_model, tmp_path):
    from conftest import run_fresh_python

    out = tmp_path / "saved"
    audio_model.save(str(out))
    wave = _waveform()
    np.save(tmp_path / "wave.npy", wave)
    expected = audio_model.encode(["a bell", wave], prompt_name="query")
    code = f"""
        import json, numpy as np
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(out)!r}, trust_remote_code=True)
        wave = np.load({str(tmp_path / "wave.npy")!r})
        print(json.dumps(model.encode(["a bell", wave], prompt_name="query").tolist()))
    """
    result = json.loads(run_fresh_python(code, tmp_path).strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(result), expected, atol=1e-5)
    shutil.rmtree(out)
    assert not os.path.exists(out)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_matches_the_tokenizer(side):
    from hub_configs.clip_tokenizer import build_clip_tokenizer
    from st_modules.token_truncation import pad_to_tensors

    tokenizer = build_clip_tokenizer(248)
    tokenizer.padding_side = side
    ids = tokenizer(["A cat", "a much longer caption about a harbour at dawn", "x y"])["input_ids"]
    expected = tokenizer.pad({"input_ids": ids}, padding=True, return_attention_mask=True, return_tensors="pt")
    ours = pad_to_tensors(ids, tokenizer.pad_token_id, side)
    assert torch.equal(ours["input_ids"], expected["input_ids"])
    assert torch.equal(ours["attention_mask"], expected["attention_mask"])


def test_explicit_modality_dicts(image_model, audio_model):
    image = _random_image(6)
    forced = image_model.encode([{"text": "/data/cat.png"}, {"image": image}], convert_to_tensor=True)
    torch.testing.assert_close(forced[0], _text_reference(image_model, "/data/cat.png"), atol=1e-5, rtol=0)
    torch.testing.assert_close(forced[1], _image_reference(image_model, image), atol=1e-5, rtol=0)
    wave = _waveform()
    audio = audio_model.encode([{"audio": wave}], convert_to_tensor=True)[0]
    torch.testing.assert_close(audio, _audio_reference(audio_model, wave), atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match=r"\{'text': \.\.\.\} needs a string, got int"):
        image_model.encode([{"text": 3}])
