"""Prompt grid: stock SDXL (truncates at 77 tokens, reads weights as text) next to LongCLIP-L chunked and paper modes.

Rows: a short prompt, a long one, and the long one with A1111-style weights and a BREAK.

With real weights:

    mmhub convert longclip-sdxl --checkpoint longclip-L.pt --out longclip-l-sdxl
    python examples/sdxl_long_prompt_grid.py --base stabilityai/stable-diffusion-xl-base-1.0 \\
        --adapter longclip-l-sdxl --device cuda --dtype fp16 --steps 30 --size 1024

Without arguments it builds the tiny random SDXL and adapter (`mmhub tiny longclip-sdxl`) in a temporary folder:
that only shows the code path runs offline; the images are noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHORT = "A lighthouse on a rocky coast at sunset."
LONG = (
    "A lighthouse on a rocky coast at sunset. The tower is painted in red and white stripes and its lamp is already "
    "glowing. Waves crash against black rocks below, throwing white spray into the air. To the left, a small wooden "
    "fishing boat with a green hull and a yellow sail is heading home, and three seagulls circle above it. In the "
    "foreground, a narrow dirt path lined with purple heather leads up the hill to a tiny cottage with a blue door "
    "and smoke rising from its chimney. The sky fades from orange near the horizon to deep violet overhead, with the "
    "first stars appearing. Painted in the style of a detailed oil painting with visible brush strokes."
)
# The same scene with weights past token 77 and a BREAK that starts the style part in a window of its own.
WEIGHTED = (
    "A lighthouse on a rocky coast at sunset. The tower is painted in (red and white stripes:1.3) and its lamp is "
    "already glowing. Waves crash against black rocks below, throwing white spray into the air. To the left, a small "
    "wooden fishing boat with a green hull and a (yellow sail:1.4) is heading home, and three seagulls circle above "
    "it. In the foreground, a narrow dirt path lined with (purple heather) leads up the hill to a tiny cottage with a "
    "blue door and [smoke rising from its chimney]. BREAK Painted in the style of a detailed oil painting with "
    "visible brush strokes."
)
NEGATIVE = "(blurry:1.2), low quality"


def load(args):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    base, adapter = args.base, args.adapter
    if base is None:
        from hub_configs.factory import make_repo

        folder = tempfile.mkdtemp(prefix="longclip-sdxl-")
        adapter = make_repo("longclip-sdxl", os.path.join(folder, "adapter"), tiny=True)
        base = adapter + "-sdxl-base"
        print("No --base/--adapter: using TINY RANDOM weights built offline; the images are noise.")
    stock = StableDiffusionXLPipeline.from_pretrained(base, torch_dtype=dtype).to(args.device)
    text_encoder = CLIPTextModel.from_pretrained(adapter, subfolder="text_encoder", torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(adapter, subfolder="tokenizer")
    long = StableDiffusionXLPipeline(**{**stock.components, "text_encoder": text_encoder, "tokenizer": tokenizer})
    return stock, enable_long_prompts(long.to(args.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="SDXL base repo id or folder")
    parser.add_argument("--adapter", default=None, help="LongCLIP SDXL adapter repo id or folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sdxl_long_prompt_grid.png")
    args = parser.parse_args()
    if (args.base is None) != (args.adapter is None):
        parser.error("--base and --adapter go together")
    from PIL import Image, ImageDraw

    stock, long = load(args)
    columns = [("stock SDXL", stock, None), ("LongCLIP chunked", long, "chunked"), ("LongCLIP paper", long, "paper")]
    rows = [("short", SHORT), ("long", LONG), ("weighted", WEIGHTED)]
    for label, text in rows:
        print(f"{label} prompt: {len(long.tokenizer(text).input_ids)} tokens")
    cell, header = args.size, 16
    grid = Image.new("RGB", (cell * len(columns), (cell + header) * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (row_label, text) in enumerate(rows):
        for column, (column_label, pipe, mode) in enumerate(columns):
            if mode is not None:
                pipe.long_prompt_mode = mode
            image = pipe(
                prompt=text,
                negative_prompt=NEGATIVE,
                num_inference_steps=args.steps,
                height=args.size,
                width=args.size,
                generator=torch.Generator("cpu").manual_seed(args.seed),
            ).images[0]
            top = row * (cell + header)
            grid.paste(image, (column * cell, top + header))
            draw.text((column * cell + 2, top + 2), f"{row_label}: {column_label}", fill="black")
    grid.save(args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except ModuleNotFoundError as error:
        from hub_configs.families import missing_extra_message

        sys.exit(f"{os.path.basename(__file__)}: error: {missing_extra_message(error.name)}")
