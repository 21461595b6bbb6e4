"""Encode throughput of the sentence-transformers door against the raw model forward, as ratios from one run.

LongCLIP-B-sized model (real dimensions: text 512 x 12 layers at 248 positions, ViT-B/16 at 224 px, 512-d
embeddings) with random weights, built through the real conversion path.

1. `SentenceTransformer.encode` on 248-token captions and on 224 px images against `get_text_features` /
   `get_image_features` on the same, already-processed batches.
2. One mixed list of texts and image files against two single-modality `encode` calls.
3. Image loading + preprocessing alone (images/s) against the model forward, so the loader is never the bottleneck.

Run: `python benchmarks/bench_encode.py [--texts 64 --images 64 --batch-size 32 --device cpu]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def _compare(first, second, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds of two functions, run alternately so that drifting machine speed hits both alike."""
    first()  # warm-up: allocator, thread pools, lazy imports
    second()
    best_first = best_second = float("inf")
    for _ in range(repeats):
        for function, slot in ((first, 0), (second, 1)):
            start = time.perf_counter()
            function()
            elapsed = time.perf_counter() - start
            if slot == 0:
                best_first = min(best_first, elapsed)
            else:
                best_second = min(best_second, elapsed)
    return best_first, best_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from hub_configs.builder import write_repo
    from hub_configs.families import get_family
    from hub_configs.longclip import longclip_build, original_to_hf, random_original_checkpoint

    work = tempfile.mkdtemp(prefix="bench-longclip-b-")
    checkpoint = random_original_checkpoint(
        text_width=512,
        text_layers=12,
        vision_width=768,
        vision_layers=12,
        embed_dim=512,
        patch_size=16,
        image_size=224,
        seed=0,
    )
    config, state_dict = original_to_hf(checkpoint)
    build = longclip_build(config, state_dict, model_name="LongCLIP-B-random", random_weights=True)
    repo = write_repo(get_family("longclip"), build, os.path.join(work, "LongCLIP-B-random"))
    model = SentenceTransformer(repo, trust_remote_code=True, device=args.device)
    module = model[0]
    rng = np.random.RandomState(0)
    words = [
        "the",
        "a",
        "red",
        "blue",
        "harbour",
        "boat",
        "sky",
        "old",
        "small",
        "tall",
        "bright",
        "window",
        "street",
        "tree",
        "dog",
    ]
    captions = [" ".join(rng.choice(words, 400)) for _ in range(args.texts)]  # every caption is cut to 248 tokens
    image_paths = []
    for index in range(args.images):
        path = os.path.join(work, f"image{index}.jpg")
        Image.fromarray((rng.rand(256, 320, 3) * 255).astype(np.uint8)).save(path, quality=90)
        image_paths.append(path)

    device = model.device
    processor = module.processor
    text_batches = [
        processor(text=captions[i : i + args.batch_size], return_tensors="pt", padding=True).to(device)
        for i in range(0, len(captions), args.batch_size)
    ]
    pil_images = [Image.open(path).convert("RGB") for path in image_paths]
    image_batches = [
        processor(images=pil_images[i : i + args.batch_size], return_tensors="pt")["pixel_values"].to(device)
        for i in range(0, len(pil_images), args.batch_size)
    ]

    def synchronize():
        # encode() copies results to the CPU, which waits for the device; the raw loop must wait too.
        if device.type == "cuda":
            torch.cuda.synchronize()

    def raw_text():
        with torch.inference_mode():
            for batch in text_batches:
                module.model.get_text_features(**batch)
        synchronize()

    def raw_images():
        with torch.inference_mode():
            for pixels in image_batches:
                module.model.get_image_features(pixel_values=pixels)
        synchronize()

    def st_text():
        model.encode(captions, batch_size=args.batch_size)

    def st_images():
        model.encode(pil_images, batch_size=args.batch_size)

    def st_separate():
        model.encode(captions, batch_size=args.batch_size)
        model.encode(image_paths, batch_size=args.batch_size)

    mixed = [item for pair in zip(captions, image_paths) for item in pair]

    def st_mixed():
        model.encode(mixed, batch_size=args.batch_size)

    def load_and_preprocess():
        module.preprocess(image_paths)

    timings = {}
    timings["raw_text"], timings["st_text"] = _compare(raw_text, st_text, args.repeats)
    timings["raw_images"], timings["st_images"] = _compare(raw_images, st_images, args.repeats)
    timings["st_separate"], timings["st_mixed"] = _compare(st_separate, st_mixed, args.repeats)
    timings["load_preprocess"] = _compare(load_and_preprocess, load_and_preprocess, args.repeats)[0]
    torch_threads = torch.get_num_threads()
    print(f"LongCLIP-B-sized, random weights, device={device}, torch threads={torch_threads}")
    print(f"{args.texts} captions of 248 tokens, {args.images} JPEG files 320x256 -> 224 px, batch {args.batch_size}")
    print(
        f"text   raw forward {args.texts / timings['raw_text']:8.1f}/s   encode {args.texts / timings['st_text']:8.1f}/s"
        f"   ratio {timings['raw_text'] / timings['st_text']:.3f}"
    )
    print(
        f"images raw forward {args.images / timings['raw_images']:8.1f}/s   encode {args.images / timings['st_images']:8.1f}/s"
        f"   ratio {timings['raw_images'] / timings['st_images']:.3f}"
    )
    print(f"mixed list vs two single-modality calls: ratio {timings['st_separate'] / timings['st_mixed']:.3f}")
    loader_rate = args.images / timings["load_preprocess"]
    forward_rate = args.images / timings["raw_images"]
    print(
        f"image loading + preprocessing {loader_rate:.1f} images/s vs model forward {forward_rate:.1f} images/s"
        f" (loader {loader_rate / forward_rate:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
