"""The jina-clip-v2 card's ONNX Runtime snippet, run verbatim on a converted and exported repo.

Only the repo id becomes the local folder and the image URLs point at a loopback server; every call is the card's:
`tokenizer(sentences, return_tensors='np')`, `image_processor(image_urls)['pixel_values']`, a session over
`onnx/model.onnx`, the four outputs unpacked. The embeddings equal `encode_text` / `encode_image` within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.onnx_fixtures import StaticServer, exported_repos

SENTENCES = [
    "غروب جميل على الشاطئ",  # Arabic
    "海滩上美丽的日落",  # Chinese
    "Un beau coucher de soleil sur la plage",  # French
    "Ein wunderschöner Sonnenuntergang am Strand",  # German
    "Ένα όμορφο ηλιοβασίλεμα πάνω από την παραλία",  # Greek
]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return exported_repos(tmp_path_factory)


def _beaches(folder) -> list[str]:
    rng = np.random.default_rng(5)
    names = []
    for index, (width, height) in enumerate([(120, 90), (77, 133)]):
        names.append(f"beach{index + 1}.jpg")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / names[-1])
    return names


def test_card_onnx_runtime_snippet_runs_verbatim(exported, tmp_path):
    repo = exported("jina-clip-v2")
    names = _beaches(tmp_path)
    with StaticServer(str(tmp_path)) as server:
        image_urls = [server.url(name) for name in names]
        # --- the card's snippet (repo id -> local folder) ---
        import onnxruntime as ort
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
        image_processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
        sentences = SENTENCES
        input_ids = tokenizer(sentences, return_tensors="np")["input_ids"]
        pixel_values = image_processor(image_urls)["pixel_values"]
        session = ort.InferenceSession(f"{repo}/onnx/model.onnx")
        output = session.run(None, {"input_ids": input_ids, "pixel_values": pixel_values})
        _, _, text_embeddings, image_embeddings = output
        # --- end of the snippet ---
        from transformers import AutoModel

        model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32)
        np.testing.assert_allclose(text_embeddings, model.encode_text(sentences), atol=1e-5, rtol=0)
        np.testing.assert_allclose(image_embeddings, model.encode_image(image_urls), atol=1e-5, rtol=0)


def test_image_processor_returns_one_numpy_batch_from_urls_paths_and_pil(exported, tmp_path):
    from transformers import AutoImageProcessor

    repo = exported("jina-clip-v2")
    names = _beaches(tmp_path)
    processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
    from_pil = processor([Image.open(tmp_path / name) for name in names])["pixel_values"]
    assert isinstance(from_pil, np.ndarray) and from_pil.dtype == np.float32 and from_pil.shape[0] == 2
    np.testing.assert_array_equal(processor([str(tmp_path / name) for name in names])["pixel_values"], from_pil)
    with StaticServer(str(tmp_path)) as server:
        np.testing.assert_array_equal(processor([server.url(name) for name in names])["pixel_values"], from_pil)
    as_tensor = processor([Image.open(tmp_path / names[0])], return_tensors="pt")["pixel_values"]
    assert isinstance(as_tensor, torch.Tensor)
    with pytest.raises(TypeError, match="images\\[0\\]"):
        processor([3.5])


def test_tokenizer_pads_when_tensors_are_requested(exported):
    from transformers import AutoTokenizer, XLMRobertaTokenizer

    repo = exported("jina-clip-v2")
    tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
    padded = tokenizer(SENTENCES, padding=True)["input_ids"]
    np.testing.assert_array_equal(tokenizer(SENTENCES, return_tensors="np")["input_ids"], np.array(padded))
    assert tokenizer(SENTENCES)["input_ids"] != padded  # lists stay unpadded, as before
    # Runtimes without the repo's code read the stock class from tokenizer_config.json.
    stock = AutoTokenizer.from_pretrained(repo)
    assert type(stock) is XLMRobertaTokenizer
    assert stock(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]
