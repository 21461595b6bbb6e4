"""Throughput of jina-clip-v2 through SentenceTransformer and `encode_text` against the raw model forward, as ratios.

Every ratio compares two functions on the same inputs (both sides tokenize or preprocess), timed alternately, best of
`--repeats` rounds, with the spread of the per-round ratios:

1. texts: `SentenceTransformer.encode` on English captions of about 600 tokens against the plain truncating
   tokenizer call at the module's limit + `get_text_features`;
2. `model.encode_text` (upstream API, 512 tokens) against the plain call at 512 + `get_text_features`;
3. images: `encode` on PIL images against the image processor + `get_image_features`;
4. with `--processes N` (accelerators): `encode` through a pool of N processes on the device.

Usage:

    python benchmarks/bench_jina_clip.py [--model DIR_OR_REPO | --real-size] [--device cuda] [--batch-size 8]
        [--batches 2] [--repeats 3]

Without `--model` a tiny random repo is built (numbers then only show the wrapper overhead); `--real-size` gives it
jina-clip-v2's real tower sizes with random weights (meant for accelerators: on a CPU one batch takes minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch
from PIL import Image
from timing import compare, machine_line, pool_lines, progress, require, synchronize


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--real-size", action="store_true", help="without --model: random weights, real sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1, help="also measure a pool of N processes per device")
    args = parser.parse_args()
    require("sentence_transformers", "timm")
    from bench_preprocess import long_captions
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    model_path = args.model
    if model_path is None:
        from hub_configs.factory import make_repo

        progress("building a tiny random jina-clip-v2 repo" + (" with the real tower sizes" if args.real_size else ""))
        model_path = make_repo("jina-clip-v2", tempfile.mkdtemp(), tiny=True)
        if args.real_size:
            resize_to_real_dimensions(model_path)
    device = torch.device(args.device)
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    st = SentenceTransformer(model_path, trust_remote_code=True, device=args.device)
    n = args.batch_size
    count = n * args.batches
    texts = long_captions(count)
    image_processor = processor.image_processor
    crop = getattr(image_processor, "crop_size", None)
    size = crop["height"] if isinstance(crop, dict) else image_processor.size
    size = size if isinstance(size, int) else size.get("shortest_edge", 512)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]
    limit = st[0].max_seq_length
    tokenizer = processor.tokenizer

    def raw_text(max_length):
        def run():
            with torch.inference_mode():
                for start in range(0, count, n):
                    tokens = tokenizer(
                        texts[start : start + n],
                        padding=True,
                        truncation=True,
                        max_length=max_length,
                        return_tensors="pt",
                    ).to(device)
                    model.get_text_features(**tokens)
            synchronize(device)

        return run

    def raw_images():
        with torch.inference_mode():
            for start in range(0, count, n):
                pixels = processor.image_processor(images[start : start + n], return_tensors="pt")["pixel_values"]
                model.get_image_features(pixel_values=pixels.to(device, model.dtype))
        synchronize(device)

    lines = [
        compare(raw_text(limit), lambda: st.encode(texts, batch_size=n), args.repeats, "texts").line(
            f"texts (~600 tokens, limit {limit})", "raw", "encode", count
        ),
        compare(raw_text(512), lambda: model.encode_text(texts, batch_size=n), args.repeats, "encode_text").line(
            "texts through encode_text (limit 512)", "raw", "encode_text", count
        ),
        compare(raw_images, lambda: st.encode(images, batch_size=n), args.repeats, "images").line(
            f"images ({size} px)", "raw", "encode", count
        ),
    ]
    if args.processes > 1:
        cases = [("texts", raw_text(limit), texts, count, n), ("images", raw_images, images, count, n)]
        lines += pool_lines(st, device, args.processes, args.repeats, cases)
    print(machine_line())
    print(
        f"device={device} dtype={model.dtype} batch={n} x {args.batches}, best of {args.repeats} alternated rounds "
        "(spread: lowest-highest per-round ratio)"
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
