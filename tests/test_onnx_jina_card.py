"""The jina-clip-v2 card's ONNX Runtime snippet, run verbatim on a converted and exported repo.

Only the repo id becomes the local folder and the image URLs point at a loopback server; every call is the card's:
`tokenizer(sentences, return_tensors='np')`, `image_processor(image_urls)['pixel_values']`, a session over
`onnx/model.onnx`, the four outputs unpacked. The embeddings equal `encode_text` / `encode_image` within 1e-5.
"""

from __future__ import annotations

import ast
import os
import re

import numpy as np
import pytest
import torch
from conftest import make_hub_cache, run_fresh_python
from PIL import Image

from tests.onnx_fixtures import StaticServer, exported_repos, unit

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


def _card_code_blocks(repo: str, section: str, language: str) -> list[str]:
    with open(os.path.join(repo, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    start = card.index(f"\n## {section}\n")
    end = card.find("\n## ", start + 1)
    body = card[start : end if end != -1 else len(card)]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


def test_published_card_onnx_snippets_run_from_an_offline_hub_cache(exported, tmp_path):
    """The ONNX Runtime and backend="onnx" snippets of the repo's own card, on the repo id, from the Hub cache."""
    repo = exported("jina-clip-v2")
    ort_snippet, backend_snippet = _card_code_blocks(repo, "ONNX", "python")
    repo_id = re.search(r'snapshot_download\("([^"]+)"\)', ort_snippet).group(1)
    texts = ast.literal_eval(re.search(r"tokenizer\((\[.*?\]), return_tensors", ort_snippet).group(1))
    card_url = re.search(r'image_processor\(\["([^"]+)"\]\)', ort_snippet).group(1)
    cache = str(tmp_path / "hub")
    make_hub_cache(cache, repo_id, repo)
    name = _beaches(tmp_path)[0]
    with StaticServer(str(tmp_path)) as server:
        code = ort_snippet.replace(card_url, server.url(name)) + backend_snippet
        code += (
            "import numpy as np\n"
            f"np.save('ort_text.npy', text_embeddings); np.save('ort_image.npy', image_embeddings)\n"
            f"np.save('backend_text.npy', model.encode({texts!r}, normalize_embeddings=False))\n"
        )
        run_fresh_python(code, tmp_path, env_extra={"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"})
    from transformers import AutoModel

    model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32)
    expected_text = model.encode_text(texts)
    np.testing.assert_allclose(np.load(tmp_path / "ort_text.npy"), expected_text, atol=1e-5, rtol=0)
    expected_image = model.encode_image([str(tmp_path / name)])
    np.testing.assert_allclose(np.load(tmp_path / "ort_image.npy"), expected_image, atol=1e-5, rtol=0)
    # The backend snippet loads the int8 variant: close to fp32, not equal to it.
    from sentence_transformers import SentenceTransformer

    torch_fp32 = SentenceTransformer(repo, trust_remote_code=True).encode(texts)
    cosine = (unit(np.load(tmp_path / "backend_text.npy")) * unit(torch_fp32)).sum(-1)
    assert cosine.min() >= 0.998 and np.abs(cosine - 1).max() > 0
