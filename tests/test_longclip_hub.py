"""LongCLIP through every door, from a Hub-cache layout with HF_HUB_OFFLINE=1 in a fresh process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_hub_cache, run_fresh_python
from longclip_reference import encode_image, encode_text, original_tokenize
from PIL import Image

CAPTION = " ".join(["a tall lighthouse on a rocky coast under heavy grey clouds with gulls"] * 8)


@pytest.mark.slow
def test_offline_hub_cache_all_doors(tmp_path, longclip_repo, longclip_original_state_dict):
    cache = tmp_path / "hub"
    make_hub_cache(str(cache), "org/LongCLIP-L", longclip_repo)
    image_path = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(5).rand(40, 52, 3) * 255).astype(np.uint8)).save(image_path)
    code = f"""
        import json, torch
        from transformers import AutoModel, AutoProcessor
        from sentence_transformers import SentenceTransformer
        from PIL import Image
        model = AutoModel.from_pretrained("org/LongCLIP-L", trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained("org/LongCLIP-L", trust_remote_code=True)
        image = Image.open({str(image_path)!r})
        inputs = processor(text=[{CAPTION!r}], images=image, return_tensors="pt", max_length=248, padding="max_length")
        with torch.inference_mode():
            text = model.get_text_features(input_ids=inputs["input_ids"]).pooler_output
            pixels = inputs["pixel_values"]
            img = model.get_image_features(pixel_values=pixels).pooler_output
        st = SentenceTransformer("org/LongCLIP-L", trust_remote_code=True)
        emb = st.encode([{CAPTION!r}, {str(image_path)!r}], convert_to_numpy=True)
        print(json.dumps({{"model": type(model).__name__, "processor": type(processor).__name__,
                          "text": text[0].tolist(), "image": img[0].tolist(), "pixels": pixels[0].flatten().tolist(),
                          "st": emb.tolist()}}))
    """
    output = run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    result = json.loads(output.strip().splitlines()[-1])
    assert result["model"] == "LongCLIPModel" and result["processor"] == "LongCLIPProcessor"
    expected_text = encode_text(longclip_original_state_dict, original_tokenize([CAPTION]))[0]
    pixels = torch.tensor(result["pixels"]).reshape(1, 3, 32, 32)
    expected_image = encode_image(longclip_original_state_dict, pixels)[0]
    torch.testing.assert_close(torch.tensor(result["text"]), expected_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(result["image"]), expected_image, atol=1e-5, rtol=0)
    st = torch.tensor(result["st"])
    torch.testing.assert_close(st[0], expected_text / expected_text.norm(), atol=1e-5, rtol=0)
    torch.testing.assert_close(st[1], expected_image / expected_image.norm(), atol=1e-5, rtol=0)
