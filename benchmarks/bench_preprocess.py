"""Preprocessing throughput of the sentence-transformers module against the plain processor call, per family.

Tiny random repos are built here (preprocessing does not depend on the weights): LongCLIP and CLIPCLAP carry the
real CLIP BPE tokenizer, jina-clip-v2 a small XLM-R-style Unigram tokenizer (245 pieces, so its texts run about one
token per character, unlike the published 250k-piece tokenizer), and the image processors are set to the real sizes
(224 px for the CLIP families, 512 px for jina-clip-v2). Both sides of every ratio get the same inputs:

- text: `module.preprocess(captions)` against `tokenizer(captions, truncation=True, max_length=L, padding=True,
  return_tensors="pt")`, on English captions of about 600 CLIP tokens, L = the module's limit (248 LongCLIP, 77
  CLIPCLAP, 8194 jina-clip-v2, whose ST module does not truncate these); for jina-clip-v2 also its `encode_text`
  limit of 512 through the fast tokenizer alone;
- images: `module.preprocess(paths)` against PIL decoding + `image_processor(images, return_tensors="pt")`, on the
  same 640x480 JPEG files;
- audio (CLIPCLAP): `module.preprocess(clips)` (log-mel in torch) against the stock `ClapFeatureExtractor` (numpy),
  on the same 10 s arrays at 48 kHz.

Run: `python benchmarks/bench_preprocess.py [--families longclip clipclap jina-clip-v2] [--texts 128] [--images 32]
[--clips 8] [--repeats 5] [--device cpu] [--ablation]`. With `--device cuda` the module resizes images and computes audio
features on the GPU (the plain calls stay on the CPU, as they are).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile

from timing import compare, machine_line, progress, require

FAMILIES = ("longclip", "clipclap", "jina-clip-v2")
IMAGE_SIZE = {"longclip": 224, "clipclap": 224, "jina-clip-v2": 512}
# Words of a long descriptive caption (ShareGPT4V-style); about 4.5 characters per CLIP token.
CAPTION_WORDS = (  # noqa: SIM905 (one readable string)
    "the a an of in on with and at near behind under above its their this that while which "
    "photograph image scene view close-up wide-angle shot picture painting illustration "
    "old small large tall narrow wide bright dark pale warm cold soft sharp weathered wooden stone glass "
    "red orange yellow green blue purple white black grey golden silver pink brown "
    "harbour street market window door roof wall garden field forest mountain river lake sky cloud "
    "boat car bicycle house tower bridge bench lamp table chair cup plate book flower tree leaf "
    "man woman child dog cat bird horse people crowd vendor fisherman "
    "standing sitting walking running holding looking wearing carrying reflecting casting glowing "
    "morning evening dawn dusk light shadow rain snow fog sunlight background foreground left right center"
).split()


def long_captions(count: int, words: int = 520, seed: int = 0) -> list[str]:
    """English captions of about 600 CLIP tokens: sentences of 6-18 words with commas and full stops."""
    rng = random.Random(seed)
    captions = []
    for _ in range(count):
        sentences, total = [], 0
        while total < words:
            length = rng.randint(6, 18)
            sentence = [rng.choice(CAPTION_WORDS) for _ in range(length)]
            if length > 10:
                sentence[rng.randint(3, length - 3)] += ","
            sentences.append(" ".join(sentence).capitalize() + ".")
            total += length
        captions.append(" ".join(sentences))
    return captions


def jpeg_files(folder: str, count: int, size=(640, 480), seed: int = 0) -> list[str]:
    """Photo-like JPEGs (smooth gradients plus noise, quality 90), the size of a typical web image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for index in range(count):
        base = np.stack([(x * (1 + c) + y * (3 - c) + 40 * index) % 256 for c in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"photo{index}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def set_image_size(image_processor, size: int) -> None:
    """Give a tiny repo's image processor the real model's input size."""
    if isinstance(getattr(image_processor, "size", None), dict):
        image_processor.size = {"shortest_edge": size}
        image_processor.crop_size = {"height": size, "width": size}
    else:
        image_processor.size = size


def bench_family(family: str, args, work: str, captions: list[str], paths: list[str]) -> list[str]:
    import numpy as np
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from hub_configs.factory import make_repo

    progress(f"{family}: building a tiny repo")
    repo = make_repo(family, os.path.join(work, family), tiny=True)
    model = SentenceTransformer(repo, trust_remote_code=True, device=args.device)
    module = model[0]
    tokenizer = module.tokenizer
    lines = []

    limit = module.max_seq_length
    tokens = len(tokenizer(captions[0])["input_ids"])

    def plain_text():
        return tokenizer(captions, truncation=True, max_length=limit, padding=True, return_tensors="pt")

    def module_text():
        return module.preprocess(captions)

    result = compare(plain_text, module_text, args.repeats, f"{family} text")
    lines.append(result.line(f"{family} text ({tokens} tokens -> {limit})", "plain", "module", len(captions)))

    if args.ablation and family == "longclip":
        from st_modules.token_truncation import FastTruncatingTokenizer

        full = FastTruncatingTokenizer.build(tokenizer)
        variants = {
            "without the prefix cut": FastTruncatingTokenizer.build(tokenizer, chars_per_token=10**6),
            "without skipping the ByteLevel regex": FastTruncatingTokenizer.build(tokenizer, skip_regex=False),
            "without the Python normalizer": FastTruncatingTokenizer.build(tokenizer, python_normalizer=False),
        }
        for name, variant in variants.items():
            result = compare(
                lambda variant=variant: variant(captions, limit), lambda: full(captions, limit), args.repeats, name
            )
            lines.append(result.line(f"{family} fast tokenizer {name}", "variant", "all shortcuts", len(captions)))

    if family == "jina-clip-v2":
        from st_modules.token_truncation import FastTruncatingTokenizer, pad_to_tensors

        fast = FastTruncatingTokenizer.build(tokenizer)

        def plain_512():
            return tokenizer(captions, truncation=True, max_length=512, padding=True, return_tensors="pt")

        def fast_512():
            return pad_to_tensors(fast(captions, 512)[0], tokenizer.pad_token_id)

        result = compare(plain_512, fast_512, args.repeats, f"{family} text at 512")
        lines.append(result.line(f"{family} text ({tokens} tokens -> 512)", "plain", "fast", len(captions)))

    image_processor = module.processor.image_processor
    set_image_size(image_processor, IMAGE_SIZE[family])

    def plain_images():
        images = [Image.open(path).convert("RGB") for path in paths]
        return image_processor(images, return_tensors="pt")

    def module_images():
        return module.preprocess(paths)

    result = compare(plain_images, module_images, args.repeats, f"{family} images")
    lines.append(
        result.line(f"{family} images (640x480 JPEG -> {IMAGE_SIZE[family]} px)", "plain", "module", len(paths))
    )

    if "audio" in module.modalities:
        from transformers import ClapFeatureExtractor

        extractor = module.processor.feature_extractor
        stock = ClapFeatureExtractor.from_dict(extractor.to_dict())
        rate = extractor.sampling_rate
        rng = np.random.default_rng(0)
        clips = [(0.1 * rng.standard_normal(10 * rate)).astype(np.float32) for _ in range(args.clips)]
        inputs = [{"array": clip, "sampling_rate": rate} for clip in clips]

        def plain_audio():
            return stock(clips, sampling_rate=rate, return_tensors="pt")

        def module_audio():
            return module.preprocess(inputs)

        result = compare(plain_audio, module_audio, args.repeats, f"{family} audio")
        lines.append(result.line(f"{family} audio (10 s at {rate} Hz)", "stock extractor", "module", len(clips)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ablation", action="store_true", help="LongCLIP text: each fast-path shortcut switched off")
    args = parser.parse_args()
    require("sentence_transformers", "PIL")
    if "clipclap" in args.families:
        require("soundfile", "soxr")
    if "jina-clip-v2" in args.families:
        require("timm")

    work = tempfile.mkdtemp(prefix="bench-preprocess-")
    captions = long_captions(args.texts)
    paths = jpeg_files(work, args.images)
    lines = []
    for family in args.families:
        lines.extend(bench_family(family, args, work, captions, paths))
    print(machine_line())
    print(f"device={args.device}, best of {args.repeats} alternated rounds (spread: lowest-highest per-round ratio)")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
