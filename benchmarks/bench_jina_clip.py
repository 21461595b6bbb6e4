"""Throughput of jina-clip-v2 through SentenceTransformer against the raw model forward, as ratios.

Text: batches of 512-token texts; images: 512 px (or the repo's image size). Usage:

    python benchmarks/bench_jina_clip.py --model DIR_OR_REPO [--device cuda] [--batch-size 32] [--batches 5]

Without `--model` a tiny random repo is built (numbers then only show the wrapper overhead).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    model_path = args.model
    if model_path is None:
        from hub_configs.jina_clip_v2 import build_tiny

        model_path = build_tiny(tempfile.mkdtemp())
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
