"""Long, weighted SDXL prompt encoding: the LongCLIP SDXL adapter vs stock `encode_prompt` and compel.

Two tables, each from one run with the compared calls alternated (same inputs on every side), median of N with the
min-max spread:

1. Encode time per call for prompts of 75, 160 and 246 content tokens, weighted (`--weights up` or `mixed`) or not
   (`--weights none`). compel's time is split into its prompt parser (pyparsing, timed on the very strings it parses
   in one call) and the rest ("compel encode": the same call with each string's parse looked up from a cache).
   Stock SDXL truncates at 77 tokens and ignores weights: it is the floor, not a peer. Ratios above 1 mean the
   adapter is slower.
2. Deduplication at batch 4, 246 tokens without weights, a 5-token negative (the negative's 4 rows are the same and
   its windows 1-3 are all padding): bigG window forwards, LongCLIP rows and time with and without it.

    python benchmarks/bench_sdxl_encode.py --real-size [--batch 1 --repeats 3 --weights none --tables 1] [--device cuda]
    python benchmarks/bench_sdxl_encode.py --base DIR --adapter DIR   # real weights

Without `--real-size` or `--base` it runs the tiny random SDXL, whose timings show overheads only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from timing import alternate, require

# Words that are one BPE token each, so a prompt of N words is N tokens plus BOS/EOS.
WORDS = "a quiet harbour at dawn with small fishing boats and old stone houses in warm light".split()  # noqa: SIM905
# Every 12th word carries a weight, alternating up and down.
WEIGHT_EVERY = 12
NEGATIVE = "blurry, low quality"  # 5 tokens


def plain_prompt(tokens: int, offset: int = 0) -> str:
    return " ".join(WORDS[(index + offset) % len(WORDS)] for index in range(tokens))


def prompt_pair(tokens: int, offset: int = 0, weights: str = "up") -> tuple[str, str]:
    """The same prompt in the adapter's weight syntax (`(word:1.3)`) and compel's (`(word)1.3`).

    `weights`: "up" weights every 12th word 1.3, "mixed" alternates 1.3 and 0.8, "none" weights nothing.
    """
    ours, theirs = [], []
    for index in range(tokens):
        word = WORDS[(index + offset) % len(WORDS)]
        if weights != "none" and index % WEIGHT_EVERY == WEIGHT_EVERY - 1:
            weight = 1.3 if weights == "up" or (index // WEIGHT_EVERY) % 2 == 0 else 0.8
            ours.append(f"({word}:{weight})")
            theirs.append(f"({word}){weight}")
        else:
            ours.append(word)
            theirs.append(word)
    return " ".join(ours), " ".join(theirs)


CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "eos_token_id": 49407,
}
BIG_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "projection_dim": 1280,
    "hidden_act": "gelu",
    "eos_token_id": 2,
}


def build(args):
    from diffusers import StableDiffusionXLPipeline

    from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.base:
        from transformers import CLIPTextModel, CLIPTokenizer

        stock = StableDiffusionXLPipeline.from_pretrained(args.base, torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(args.adapter, subfolder="text_encoder", dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(args.adapter, subfolder="tokenizer")
        label = f"{args.base} + {args.adapter}"
    elif args.real_size:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from hub_configs.clip_tokenizer import build_clip_tokenizer
        from hub_configs.longclip_sdxl import build_tiny_sdxl_components

        # Real SDXL text-encoder sizes (CLIP ViT-L/14 text, OpenCLIP bigG text) with random weights; the UNet and
        # VAE stay tiny because encode_prompt never touches them.
        torch.manual_seed(0)
        components = build_tiny_sdxl_components()
        components["text_encoder"] = CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval()
        components["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**BIG_G)).eval()
        stock = StableDiffusionXLPipeline(**components)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L, max_position_embeddings=248)).eval()
        tokenizer = build_clip_tokenizer(248)
        label = "real-size SDXL text encoders, random weights (CLIP-L 77 / LongCLIP-L 248 positions, bigG)"
    else:
        from hub_configs.clip_tokenizer import build_clip_tokenizer
        from hub_configs.longclip_sdxl import build_tiny_sdxl_components, build_tiny_text_encoder

        stock = StableDiffusionXLPipeline(**build_tiny_sdxl_components())
        text_encoder, tokenizer = build_tiny_text_encoder(), build_clip_tokenizer(248)
        label = "tiny random SDXL (timings show overheads only, not real-model costs)"
    stock.to(args.device, dtype)
    components = {**stock.components, "text_encoder": text_encoder.to(args.device, dtype), "tokenizer": tokenizer}
    long = enable_long_prompts(StableDiffusionXLPipeline(**components))
    paper = enable_long_prompts(StableDiffusionXLPipeline(**components), mode="paper")
    return stock, long, paper, label


def milliseconds(functions: dict, repeats: int, label: str, device: str) -> dict[str, list[float]]:
    """Milliseconds per call for each function, run in rotating order so drift hits every side alike."""
    return {name: [t * 1000 for t in times] for name, times in alternate(functions, repeats, label, device).items()}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def ratio(numerator: list[float], denominator: list[float]) -> str:
    """Median ratio, and the spread of ratios between samples taken side by side."""
    pairs = [left / right for left, right in zip(numerator, denominator)]
    return f"{statistics.median(numerator) / statistics.median(denominator):.2f} [{min(pairs):.2f}-{max(pairs):.2f}]"


class CompelParseCache:
    """Times compel's prompt parser apart from the rest of a call: each string is parsed once, then looked up."""

    def __init__(self):
        from compel import Compel

        self.compel_class = Compel
        self.original = Compel.__dict__["parse_prompt_string"]
        self.cache: dict[str, object] = {}
        self.parsed: list[str] = []
        cache, parsed, parse = self.cache, self.parsed, self.original.__func__

        def cached(cls, prompt_string: str):
            parsed.append(prompt_string)
            if prompt_string not in cache:
                cache[prompt_string] = parse(cls, prompt_string)
            return cache[prompt_string]

        Compel.parse_prompt_string = classmethod(cached)

    def parse_ms(self, strings: list[str], repeats: int) -> list[float]:
        """Milliseconds compel's parser needs for `strings` (each parse timed afresh), `repeats` times."""
        parse = self.original.__func__
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            for text in strings:
                parse(self.compel_class, text)
            samples.append((time.perf_counter() - start) * 1000)
        return samples


def count_rows(module, counter: list[int]):
    def hook(_, args, kwargs):
        counter[0] += (kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape[0]

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also when piped to a file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="SDXL base repo or folder (default: tiny random)")
    parser.add_argument("--adapter", default=None, help="adapter folder from `mmhub convert longclip-sdxl`")
    parser.add_argument("--real-size", action="store_true", help="random text encoders of SDXL's real sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--batch", type=int, default=4, help="prompts per call in table 1")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tokens", type=int, nargs="+", default=[75, 160, 246], help="content tokens per prompt")
    parser.add_argument(
        "--weights",
        choices=["up", "mixed", "none"],
        default="up",
        help="table 1 prompts: every 12th word weighted 1.3 (up), 1.3 and 0.8 alternately (mixed: compel computes "
        "each down-weighted word with extra forwards of the whole prompt), or no weights (compel skips its weighting)",
    )
    parser.add_argument("--tables", type=int, nargs="+", choices=[1, 2], default=[1, 2])
    args = parser.parse_args()
    require("compel", "diffusers")
    if bool(args.base) != bool(args.adapter):
        parser.error("--base and --adapter go together")
    from compel import CompelForSDXL
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from diffusers_adapters.sdxl_long_prompt_encoder import encode_long_prompt, tokenize_weighted

    # Stock's truncation warnings and compel's tokenizer length notices on every call would drown the tables.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()

    stock, long, paper, label = build(args)
    compel = CompelForSDXL(stock, device=args.device)
    parse_cache = CompelParseCache()
    device = torch.device(args.device)
    print(f"# {label}; device {args.device}, {args.dtype}, {torch.get_num_threads()} torch threads")
    print(f"# median [min-max] of {args.repeats} alternated runs; ratios: median ratio [min-max of paired ratios]")
    weights = {"up": "1.3", "mixed": "1.3 and 0.8 alternately"}.get(args.weights)
    weights = f"every {WEIGHT_EVERY}th word weighted {weights}" if weights else "no weights"
    print(f"# table 1: batch {args.batch}, prompts with {weights}, negative {NEGATIVE!r}")
    print(
        "tokens | stock ms | compel ms | compel parse ms | compel encode ms | adapter parse ms | chunked ms | "
        "paper ms | chunked/compel | chunked/compel encode | paper/compel encode | chunked/stock"
    )
    with torch.inference_mode():
        for tokens in args.tokens if 1 in args.tables else []:
            pairs = [prompt_pair(tokens - index, index, args.weights) for index in range(args.batch)]
            ours, theirs = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
            negatives = [NEGATIVE] * args.batch

            def adapter_parse(ours=ours, negatives=negatives):
                for tokenizer in (long.tokenizer, long.tokenizer_2):
                    tokenize_weighted(tokenizer, ours + negatives)

            parse_cache.parsed.clear()
            compel(theirs, negative_prompt=negatives)  # one call: which strings does compel parse?
            strings = list(parse_cache.parsed)
            functions = {
                "stock": lambda o=ours, n=negatives: stock.encode_prompt(o, device=device, negative_prompt=n),
                "compel encode": lambda t=theirs, n=negatives: compel(t, negative_prompt=n),
                "chunked": lambda o=ours, n=negatives: long.encode_prompt(o, device=device, negative_prompt=n),
                "paper": lambda o=ours, n=negatives: paper.encode_prompt(o, device=device, negative_prompt=n),
                "adapter parse": adapter_parse,
            }
            samples = milliseconds(functions, args.repeats, f"table 1, {tokens} tokens", args.device)
            parse = parse_cache.parse_ms(strings, args.repeats)
            total = [encode + parsing for encode, parsing in zip(samples["compel encode"], parse)]
            print(
                f"{tokens} | {summary(samples['stock'])} | {summary(total)} | {summary(parse)} | "
                f"{summary(samples['compel encode'])} | {summary(samples['adapter parse'])} | "
                f"{summary(samples['chunked'])} | {summary(samples['paper'])} | {ratio(samples['chunked'], total)} | "
                f"{ratio(samples['chunked'], samples['compel encode'])} | "
                f"{ratio(samples['paper'], samples['compel encode'])} | {ratio(samples['chunked'], samples['stock'])}"
            )

        # Offsets 0-3 over 16 words: no full 75-token window of one prompt repeats in another (75 = 11 mod 16).
        if 2 not in args.tables:
            return
        prompts = [plain_prompt(246, offset=index) for index in range(4)]
        windows, rows = [0], [0]
        handles = [count_rows(long.text_encoder_2, windows), count_rows(long.text_encoder, rows)]

        def encode(deduplicate: bool):
            return encode_long_prompt(long, prompts, device=device, negative_prompt=NEGATIVE, deduplicate=deduplicate)

        counts, outputs = {}, {}
        for deduplicate in (True, False):
            windows[0] = rows[0] = 0
            outputs[deduplicate] = encode(deduplicate)
            counts[deduplicate] = (windows[0], rows[0])
        identical = all(torch.equal(on, off) for on, off in zip(outputs[True], outputs[False]))
        for handle in handles:
            handle.remove()
        on_off = {"on": lambda: encode(True), "off": lambda: encode(False)}
        samples = milliseconds(on_off, args.repeats, "table 2", args.device)
        print(f"\n# table 2: batch 4, 246 tokens (no weights), negative {NEGATIVE!r}, chunked mode")
        print("deduplication | bigG window forwards | LongCLIP rows | ms")
        for name, deduplicate in (("on", True), ("off", False)):
            print(f"{name} | {counts[deduplicate][0]} | {counts[deduplicate][1]} | {summary(samples[name])}")
        print(f"on/off time: {ratio(samples['on'], samples['off'])}; outputs identical (torch.equal): {identical}")


if __name__ == "__main__":
    main()
