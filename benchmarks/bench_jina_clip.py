"""Throughput of jina-clip-v2 through SentenceTransformer against the raw model forward, as ratios.

Text: batches of 512-token texts; images: 512 px (or the repo's image size). Usage:

    python benchmarks/bench_jina_clip.py --model DIR_OR_REPO [--device cuda] [--batch-size 32] [--batches 5]

Without `--model` a tiny random repo is built (numbers then only show the wrapper overhead).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def resize_to_real_dimensions(repo: str, layers: int = 24) -> None:
    """Give a tiny repo jina-clip-v2's real tower sizes (random weights): XLM-R large text, EVA02-L/14 at 512 px.

    The tiny tokenizer stays (its small vocabulary changes nothing but the embedding table's size).
    """
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from hub_configs.builder import write_json

    config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
    text = config.text_config.to_dict()
    text.update(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16, intermediate_size=4096)
    vision = config.vision_config.to_dict()
    vision.update(
        width=1024,
        layers=24,
        head_width=64,
        mlp_ratio=2.6667,
        image_size=512,
        patch_size=14,
        pt_hw_seq_len=16,
        embed_dim=1024,
    )
    dims = [32, 64, 128, 256, 512, 768, 1024]
    real = type(config)(
        text_config=text,
        vision_config=vision,
        projection_dim=1024,
        matryoshka_dimensions=dims,
        task_instructions=config.task_instructions,
    )
    model_class = type(AutoModel.from_pretrained(repo, trust_remote_code=True))
    model_class(real).save_pretrained(repo)
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    processor.image_processor.size = {"shortest_edge": 512}
    processor.image_processor.crop_size = {"height": 512, "width": 512}
    processor.save_pretrained(repo)
    with open(f"{repo}/multimodal_config.json", encoding="utf-8") as handle:
        module_config = json.load(handle)
    write_json(
        f"{repo}/multimodal_config.json", {**module_config, "embedding_dimension": 1024, "matryoshka_dims": dims}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--real-size", action="store_true", help="without --model: random weights, real sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    model_path = args.model
    if model_path is None:
        from hub_configs.factory import make_repo

        model_path = make_repo("jina-clip-v2", tempfile.mkdtemp(), tiny=True)
        if args.real_size:
            resize_to_real_dimensions(model_path)
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    st = SentenceTransformer(model_path, trust_remote_code=True, device=args.device)
    n = args.batch_size
    texts = [" ".join(["multilingual"] * 600) + f" {i}" for i in range(n)]
    size = processor.image_processor.crop_size["height"]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt").to(
        args.device
    )
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"].to(args.device, model.dtype)

    with torch.inference_mode():
        raw_text = _timed(lambda: model.get_text_features(**tokens), args.batches)
        raw_image = _timed(lambda: model.get_image_features(pixel_values=pixels), args.batches)
    st_text = _timed(lambda: st.encode(texts, batch_size=n), args.batches)
    st_image = _timed(lambda: st.encode(images, batch_size=n), args.batches)
    print(f"device={args.device} dtype={model.dtype} batch={n} text_len={tokens['input_ids'].shape[1]} image={size}px")
    print(f"text : raw {n / raw_text:8.1f}/s  ST {n / st_text:8.1f}/s  ratio ST/raw {raw_text / st_text:.2f}")
    print(f"image: raw {n / raw_image:8.1f}/s  ST {n / st_image:8.1f}/s  ratio ST/raw {raw_image / st_image:.2f}")


if __name__ == "__main__":
    main()
