"""Long-prompt encode time: LongCLIP SDXL adapter vs stock `encode_prompt` and compel's long-prompt path.

Stock SDXL truncates at 77 tokens (it is the floor, not a peer); compel runs 75-token chunks through both stock
encoders. Ratios > 1 mean the adapter is slower. Offline by default on the tiny random SDXL; pass real folders
(`--base stabilityai/...` or a local SDXL folder, `--adapter` a `mmhub convert longclip-sdxl` folder) for real
figures.

    python benchmarks/bench_sdxl_encode.py [--base DIR --adapter DIR] [--device cuda --dtype fp16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Words that are one BPE token each, so a prompt of N words is N tokens plus BOS/EOS.
WORDS = "a quiet harbour at dawn with small fishing boats and old stone houses in warm light".split()  # noqa: SIM905


def prompt_of(tokens: int) -> str:
    return " ".join(WORDS[index % len(WORDS)] for index in range(tokens))


def build(args):
    from diffusers import StableDiffusionXLPipeline

    from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.base:
        from transformers import CLIPTextModel, CLIPTokenizer

        stock = StableDiffusionXLPipeline.from_pretrained(args.base, torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(args.adapter, subfolder="text_encoder", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(args.adapter, subfolder="tokenizer")
        label = f"{args.base} + {args.adapter}"
    elif args.real_size:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from hub_configs.clip_tokenizer import build_clip_tokenizer
        from hub_configs.longclip_sdxl import build_tiny_sdxl_components

        # Real SDXL text-encoder sizes (CLIP ViT-L/14 text, OpenCLIP bigG text) with random weights; the UNet and
        # VAE stay tiny because encode_prompt never touches them.
        clip_l = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
            "eos_token_id": 49407,
        }
        big_g = {
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 20,
            "projection_dim": 1280,
            "hidden_act": "gelu",
            "eos_token_id": 2,
        }
        components = build_tiny_sdxl_components()
        components["text_encoder"] = CLIPTextModel(CLIPTextConfig(**clip_l)).eval()
        components["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**big_g)).eval()
        stock = StableDiffusionXLPipeline(**components)
        text_encoder = CLIPTextModel(CLIPTextConfig(**clip_l, max_position_embeddings=248)).eval()
        tokenizer = build_clip_tokenizer(248)
        label = "real-size SDXL text encoders with random weights (CLIP-L 77 / LongCLIP-L 248 and bigG)"
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


def timed(function, repeats: int, device: str) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="SDXL base repo or folder (default: tiny random)")
    parser.add_argument("--adapter", default=None, help="adapter folder from `mmhub convert longclip-sdxl`")
    parser.add_argument("--real-size", action="store_true", help="random text encoders of SDXL's real sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    try:
        import compel  # noqa: F401
        import diffusers  # noqa: F401
    except ModuleNotFoundError as error:
        from hub_configs.families import missing_extra_message

        raise SystemExit(missing_extra_message(error.name)) from None
    if bool(args.base) != bool(args.adapter):
        parser.error("--base and --adapter go together")
    from compel import CompelForSDXL
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # stock truncation warnings on every call would drown the table

    stock, long, paper, label = build(args)
    compel = CompelForSDXL(stock, device=args.device)
    print(f"# {label}; device {args.device}, {args.dtype}, batch {args.batch}, median of {args.repeats}")
    print(
        f"{'tokens':>6} {'stock ms':>9} {'compel ms':>10} {'chunked ms':>11} {'paper ms':>9} "
        f"{'chunked/stock':>14} {'chunked/compel':>15} {'paper/compel':>13}"
    )
    device = torch.device(args.device)
    with torch.inference_mode():
        for tokens in (75, 160, 246):  # content tokens; 77, 162 and 248 with BOS/EOS
            prompts = [prompt_of(tokens - index) for index in range(args.batch)]
            negatives = ["blurry, low quality"] * args.batch

            def run(pipe, prompts=prompts, negatives=negatives):
                return pipe.encode_prompt(prompts, device=device, negative_prompt=negatives)

            stock_ms = timed(lambda: run(stock), args.repeats, args.device)
            compel_ms = timed(lambda p=prompts, n=negatives: compel(p, negative_prompt=n), args.repeats, args.device)
            chunked_ms = timed(lambda: run(long), args.repeats, args.device)
            paper_ms = timed(lambda: run(paper), args.repeats, args.device)
            print(
                f"{tokens:>6} {stock_ms:>9.2f} {compel_ms:>10.2f} {chunked_ms:>11.2f} {paper_ms:>9.2f} "
                f"{chunked_ms / stock_ms:>14.2f} {chunked_ms / compel_ms:>15.2f} {paper_ms / compel_ms:>13.2f}"
            )


if __name__ == "__main__":
    main()
