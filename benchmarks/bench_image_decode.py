"""Reduced-size JPEG decoding (`reduced_decoding`) against full decoding: speed, pixels and embeddings.

Images: 640x480 JPEGs (quality 75-95) cut, flipped and recoloured from the two photographs scikit-learn ships
(`sklearn.datasets.load_sample_image`, a dependency of sentence-transformers), for a 224 px model. Measured:

- preprocessing throughput (read + decode + the processor's resize/crop/normalise) through the module's own loader
  (`media_inputs.process_images`), full and reduced alternated, best of N rounds, with the spread;
- pixel tolerance: the largest and mean absolute difference of `pixel_values` (normalised units) and their cosine;
- embedding cosine, full vs reduced, on the tiny 224 px LongCLIP and on a LongCLIP-B-sized random model (ViT-B/16 at
  224 px, 12 layers of width 768); the rule: on by default only if every cosine is at least 0.9999.

Usage:

    python benchmarks/bench_image_decode.py [--images 64] [--rounds 5] [--workers 1] [--no-base]

Measured (`OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_image_decode.py --images 64 --rounds 5`; 2-core AMD EPYC
shared with other work, 1 loader thread, Pillow 13.0, torch 2.14.1, transformers 5.23): reduced decoding reads
these JPEGs at 320x240 (DCT scale 1/2) and preprocesses 413.5 images/s against 179.4 (best of 5; medians 378.4 and
158.5): 2.30x. Pixel tolerance: `pixel_values` differ by at most 0.68 and on average 0.027 (normalised units, about
1.8/255 of the input range on average), per-image cosine at least 0.9977 (mean 0.9990). Embedding cosine, full vs
reduced: tiny model min 0.998919 (mean 0.999825), LongCLIP-B-sized min 0.999503 (mean 0.999861). Below 0.9999,
so `reduced_decoding` is opt-in (default false). JPEGs over `max_image_pixels` are decoded reduced regardless, as
the only way to embed them within the limit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

# This checkout's modules, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_SIZE = 224
RULE = 0.9999


def realistic_jpegs(folder: str, count: int, seed: int = 0) -> list[str]:
    """640x480 JPEGs from real photographs: random crops and scales, flips, colour changes, JPEG quality 75-95."""
    from sklearn.datasets import load_sample_image

    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        photo = photos[index % 2]
        scale = rng.uniform(1.13, 1.6)  # both photos are 640x427: scale up so a 640x480 crop fits
        resized = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
        left = int(rng.integers(0, resized.width - 640 + 1))
        top = int(rng.integers(0, resized.height - 480 + 1))
        image = resized.crop((left, top, left + 640, top + 480))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        gains = rng.uniform(0.8, 1.2, size=3)
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) * gains, 0, 255).astype(np.uint8))
        path = os.path.join(folder, f"photo_{index:03d}.jpg")
        image.save(path, quality=int(rng.integers(75, 96)))
        paths.append(path)
    return paths


def longclip_model(size: str):
    """A random LongCLIP at 224 px through the real converter: "tiny" (width 64, 2 layers) or "base" (ViT-B/16)."""
    from hub_configs.longclip import build_image_processor, original_to_hf, random_original_checkpoint
    from st_modules.modeling_longclip import LongCLIPModel

    dims = {
        "tiny": dict(patch_size=32),
        "base": dict(text_width=512, text_layers=2, vision_width=768, vision_layers=12, embed_dim=512, patch_size=16),
    }[size]
    config, state_dict = original_to_hf(random_original_checkpoint(image_size=IMAGE_SIZE, seed=5, **dims))
    model = LongCLIPModel(config)
    model.load_state_dict(state_dict, strict=False)
    return model.eval(), build_image_processor(IMAGE_SIZE)


def preprocess(paths: list[str], image_processor, reduced: bool, workers: int) -> torch.Tensor:
    from st_modules.media_inputs import LoadSettings, PixelBudget, process_images

    settings = LoadSettings(reduced_decoding=reduced)
    budget = PixelBudget(settings.max_decode_pixels)
    pairs = list(enumerate(paths))
    return process_images(pairs, image_processor, settings=settings, budget=budget, workers=workers)["pixel_values"]


def throughput(paths, image_processor, workers: int, rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"full": [], "reduced": []}
    for name in ("full", "reduced"):  # warm-up
        preprocess(paths[:8], image_processor, name == "reduced", workers)
    for _ in range(rounds):
        for name in ("full", "reduced"):  # alternated, so drifting machine speed hits both alike
            start = time.perf_counter()
            preprocess(paths, image_processor, name == "reduced", workers)
            timings[name].append(len(paths) / (time.perf_counter() - start))
    return timings


def embedding_cosines(model, full: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        a = model.get_image_features(pixel_values=full).pooler_output
        b = model.get_image_features(pixel_values=reduced).pooler_output
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="loader threads (1: per-core figure)")
    parser.add_argument("--no-base", action="store_true", help="skip the LongCLIP-B-sized model")
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.workers))

    with tempfile.TemporaryDirectory() as folder:
        paths = realistic_jpegs(folder, args.images)
        tiny, image_processor = longclip_model("tiny")
        timings = throughput(paths, image_processor, args.workers, args.rounds)
        full = preprocess(paths, image_processor, False, args.workers)
        reduced = preprocess(paths, image_processor, True, args.workers)
        with Image.open(paths[0]) as probe:
            probe.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
            decoded = probe.size
    best = {name: max(values) for name, values in timings.items()}
    spread = {name: (min(values), statistics.median(values), max(values)) for name, values in timings.items()}
    difference = (full - reduced).abs()
    flat_full, flat_reduced = full.flatten(1), reduced.flatten(1)
    pixel_cosine = torch.nn.functional.cosine_similarity(flat_full, flat_reduced, dim=-1)
    print(
        f"{args.images} JPEGs 640x480 -> {IMAGE_SIZE} px, reduced decode at {decoded[0]}x{decoded[1]}, "
        f"{args.workers} loader thread(s), {args.rounds} alternated rounds"
    )
    for name in ("full", "reduced"):
        low, median, high = spread[name]
        print(f"  {name:8s} best {best[name]:7.1f} img/s   (min {low:.1f}, median {median:.1f}, max {high:.1f})")
    print(f"  throughput ratio reduced/full (best of {args.rounds}): {best['reduced'] / best['full']:.2f}")
    print(
        f"  pixel_values: max |diff| {difference.max():.4f}, mean |diff| {difference.mean():.5f} "
        f"(normalised units; 1/255 of range = {1 / 255 / 0.27:.4f}), cosine min {pixel_cosine.min():.6f} "
        f"mean {pixel_cosine.mean():.6f}"
    )
    verdicts = []
    models = [("tiny (width 64, 2 layers, patch 32)", tiny)]
    if not args.no_base:
        models.append(("LongCLIP-B-sized (ViT-B/16, 12 layers x 768)", longclip_model("base")[0]))
    for label, model in models:
        cosines = embedding_cosines(model, full, reduced)
        verdicts.append(bool(cosines.min() >= RULE))
        print(f"  embedding cosine, {label}: min {cosines.min():.6f}, mean {cosines.mean():.6f}")
    print(f"  rule (every cosine >= {RULE}): {'met: on by default' if all(verdicts) else 'not met: opt-in'}")


if __name__ == "__main__":
    main()
