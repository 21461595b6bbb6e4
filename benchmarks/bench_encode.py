"""Encode throughput of the sentence-transformers door against the raw model forward, as ratios from one run.

LongCLIP-B-sized model (real dimensions: text 512 x 12 layers at 248 positions, ViT-B/16 at 224 px, 512-d
embeddings) with random weights, built through the real conversion path. Every ratio compares two functions on the
same inputs, timed alternately, best of `--repeats` rounds, with the spread of the per-round ratios:

1. texts: `SentenceTransformer.encode(captions)` (about 600-token captions, cut to 248) against tokenizing with the
   plain truncating tokenizer call + `get_text_features` (so both sides tokenize; the module's fast text path is
   part of what is measured);
2. images: `encode(paths)` against PIL decoding + the image processor + `get_image_features` on the same JPEG files;
3. one mixed list of texts and image files against two single-modality `encode` calls (half of each list);
4. image loading + preprocessing alone (`module.preprocess`) against the image forward alone on ready pixels: which
   of the two bounds `encode`;
5. with `--processes N` (N >= 2, meant for accelerators): `encode` through a sentence-transformers pool of N
   processes on the same device (`start_multi_process_pool([device] * N)`, one batch per chunk), so one process
   prepares its next batch while another's forward runs, against the same raw loops. CPU preprocessing then overlaps
   the device; on a CPU the processes only share the same cores.

Run: `python benchmarks/bench_encode.py [--texts 8 --images 8 --batch-size 4 --repeats 3 --device cpu]`;
on an accelerator for example `--texts 1024 --images 1024 --batch-size 64 --device cuda --processes 2`.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from timing import compare, machine_line, pool_lines, progress, require, synchronize


def build_repo(work: str) -> str:
    from hub_configs.builder import write_repo
    from hub_configs.families import get_family
    from hub_configs.longclip import longclip_build, original_to_hf, random_original_checkpoint

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
    return write_repo(get_family("longclip"), build, os.path.join(work, "LongCLIP-B-random"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=8)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=1, help="also measure a pool of N processes per device")
    args = parser.parse_args()
    require("sentence_transformers", "PIL")

    import torch
    from bench_preprocess import jpeg_files, long_captions
    from PIL import Image
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    work = tempfile.mkdtemp(prefix="bench-longclip-b-")
    progress("building a LongCLIP-B-sized random repo")
    repo = build_repo(work)
    model = SentenceTransformer(repo, trust_remote_code=True, device=args.device)
    device = model.device
    raw_model = AutoModel.from_pretrained(repo, trust_remote_code=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    captions = long_captions(args.texts)
    image_paths = jpeg_files(work, args.images, size=(320, 256))
    text_starts = range(0, args.texts, args.batch_size)
    image_starts = range(0, args.images, args.batch_size)

    def raw_text():
        with torch.inference_mode():
            for start in text_starts:
                tokens = processor.tokenizer(
                    captions[start : start + args.batch_size],
                    truncation=True,
                    max_length=248,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                raw_model.get_text_features(**tokens)
        synchronize(device)

    def raw_images():
        with torch.inference_mode():
            for start in image_starts:
                images = [Image.open(path).convert("RGB") for path in image_paths[start : start + args.batch_size]]
                pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
                raw_model.get_image_features(pixel_values=pixels)
        synchronize(device)

    def st_text():
        model.encode(captions, batch_size=args.batch_size)

    def st_images():
        model.encode(image_paths, batch_size=args.batch_size)

    # Half of each list keeps this comparison (which runs both modalities twice a round) as short as the others.
    half_captions, half_paths = captions[: max(1, args.texts // 2)], image_paths[: max(1, args.images // 2)]

    def st_separate():
        model.encode(half_captions, batch_size=args.batch_size)
        model.encode(half_paths, batch_size=args.batch_size)

    mixed = [item for pair in zip(half_captions, half_paths) for item in pair]

    def st_mixed():
        model.encode(mixed, batch_size=args.batch_size)

    module = model[0]
    pixel_batches = [
        processor(
            images=[Image.open(p).convert("RGB") for p in image_paths[s : s + args.batch_size]], return_tensors="pt"
        )["pixel_values"].to(device)
        for s in image_starts
    ]

    def forward_only():
        with torch.inference_mode():
            for pixels in pixel_batches:
                raw_model.get_image_features(pixel_values=pixels)
        synchronize(device)

    def load_and_preprocess():
        for start in image_starts:
            module.preprocess(image_paths[start : start + args.batch_size])
        synchronize(device)

    lines = [
        compare(raw_text, st_text, args.repeats, "texts").line("texts", "raw", "encode", args.texts),
        compare(raw_images, st_images, args.repeats, "images").line("images", "raw", "encode", args.images),
        compare(st_separate, st_mixed, args.repeats, "mixed").line(
            "mixed list vs two calls", "two calls", "mixed", len(half_captions) + len(half_paths)
        ),
        compare(forward_only, load_and_preprocess, args.repeats, "image preprocessing vs forward").line(
            "image loading + preprocessing vs the forward alone", "forward", "preprocess", args.images
        ),
    ]
    if args.processes > 1:
        lines += pool_lines(
            model,
            device,
            args.processes,
            args.repeats,
            [
                ("texts", raw_text, captions, args.texts, args.batch_size),
                ("images", raw_images, image_paths, args.images, args.batch_size),
            ],
        )

    print(machine_line())
    print(
        f"LongCLIP-B-sized, random weights, device={device}; {args.texts} captions of ~600 tokens cut to 248, "
        f"{args.images} JPEG files 320x256 -> 224 px, batch {args.batch_size}, best of {args.repeats} alternated "
        "rounds (spread: lowest-highest per-round ratio)"
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
