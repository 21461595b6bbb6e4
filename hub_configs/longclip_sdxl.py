"""LongCLIP-L for SDXL: an adapter repo (248-token text encoder, tokenizer, pipeline code) for any SDXL base."""

from __future__ import annotations

import argparse
import logging
import os

import torch

from .builder import RepoBuild

logger = logging.getLogger(__name__)

# Generated into the repo (not a package file): the Hub id `pipeline.py` loads the LongCLIP-L pair from when
# `custom_pipeline=<this repo>` is used without `text_encoder`/`tokenizer`.
REPO_ID_FILE = "longclip_sdxl_repo.py"
_REPO_ID_HELP = "ORG/NAME the repo will be pushed as; lets custom_pipeline=<repo> load the text encoder by itself"
# SDXL's first encoder is CLIP ViT-L/14: its hidden size must match what the UNet cross-attends to.
SDXL_FIRST_ENCODER_WIDTH = 768
# Tiny SDXL, sized like diffusers' own SDXL tests: both encoders 32 wide, UNet cross-attention 64 = 32 + 32.
TINY_WIDTH = 32
TINY_LAYERS = 2


def text_encoder_from_clip(config, hf_state_dict: dict[str, torch.Tensor]):
    """A stock `CLIPTextModel` holding the text tower of a converted LongCLIP `CLIPModel` state dict.

    Args:
        config: The `CLIPConfig` (or `LongCLIPConfig`) returned by `hub_configs.longclip.original_to_hf`.
        hf_state_dict: Its `CLIPModel` state dict (`text_model.*`, `vision_model.*`, projections).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(**config.text_config.to_dict())
    model = CLIPTextModel(text_config)
    prefix = "text_model."
    text_state = {key[len(prefix) :]: value for key, value in hf_state_dict.items() if key.startswith(prefix)}
    missing, unexpected = model.load_state_dict(text_state, strict=False)
    if unexpected or [key for key in missing if not key.endswith("position_ids")]:
        raise ValueError(
            f"Converted text weights do not fit CLIPTextModel: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


def repo_id_module(repo_id: str | None) -> str:
    """The source of `longclip_sdxl_repo.py`, recording the Hub id (or None) the adapter repo is published as.

    Every adapter repo carries this file: diffusers copies each relatively imported module next to `pipeline.py`,
    and fails on a missing one.
    """
    if repo_id is not None and (repo_id.count("/") != 1 or not all(repo_id.split("/"))):
        raise ValueError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    return '"""Hub id of this LongCLIP-L SDXL adapter repo (None: not recorded); written by mmhub."""\n\n' + (
        f"ADAPTER_REPO = {repo_id!r}\n"
    )


def write_repo_id(out_dir: str, repo_id: str | None) -> str:
    """Rewrite `longclip_sdxl_repo.py` of a built adapter repo (for example before pushing it under another id)."""
    path = os.path.join(out_dir, REPO_ID_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(repo_id_module(repo_id))
    return path


def before_push(out_dir: str, repo_id: str) -> None:
    """`mmhub push` hook: the pushed repo records the id it is pushed as, so one-line loading finds its encoder."""
    write_repo_id(out_dir, repo_id)


def adapter_build(
    text_encoder,
    *,
    dtype: str = "fp16",
    model_name: str = "LongCLIP-L-SDXL",
    source: str = "",
    random_weights: bool = False,
    repo_id: str | None = None,
) -> RepoBuild:
    """The adapter repo: `text_encoder/` and `tokenizer/` (stock classes, 248 tokens), the code files, card.

    `repo_id` is the Hub id the repo will be published as; with it, `custom_pipeline=<repo>` loads the LongCLIP-L
    pair by itself.
    """
    from .clip_tokenizer import build_clip_tokenizer

    positions = text_encoder.config.max_position_embeddings
    card = {
        "model_name": model_name,
        "weights_note": (
            "**These weights are random.** This repo exists to run the code paths offline; its images mean nothing."
            if random_weights
            else f"Text tower of the original Long-CLIP checkpoint `{source}`, converted with "
            "`mmhub convert longclip-sdxl`."
        ),
        "positions": positions,
        "width": text_encoder.config.hidden_size,
        "layers": text_encoder.config.num_hidden_layers,
        "dtype": dtype,
    }
    components = {"text_encoder": text_encoder, "tokenizer": build_clip_tokenizer(model_max_length=positions)}
    return RepoBuild(components=components, card=card, text_files={REPO_ID_FILE: repo_id_module(repo_id)})


def build_from_checkpoint(checkpoint: str, *, dtype: str = "fp16", repo_id: str | None = None) -> RepoBuild:
    """Original `longclip-L.pt` -> adapter `RepoBuild` (the `mmhub convert longclip-sdxl` path)."""
    from .longclip import load_original_checkpoint, original_to_hf

    config, hf_state_dict = original_to_hf(load_original_checkpoint(checkpoint))
    width = config.text_config.hidden_size
    if width != SDXL_FIRST_ENCODER_WIDTH:
        raise ValueError(
            f"SDXL's first text encoder is {SDXL_FIRST_ENCODER_WIDTH} wide; {checkpoint!r} has a {width}-wide text "
            f"tower. Use longclip-L.pt (LongCLIP-B does not fit SDXL)."
        )
    return adapter_build(
        text_encoder_from_clip(config, hf_state_dict),
        dtype=dtype,
        source=os.path.basename(checkpoint),
        repo_id=repo_id,
    )


def build_tiny_text_encoder(*, seed: int = 0, positions: int = 248):
    """A tiny random LongCLIP text tower, made through the real conversion path from an original-layout state dict."""
    from .longclip import original_to_hf, random_original_checkpoint

    state_dict = random_original_checkpoint(
        text_width=TINY_WIDTH,
        text_layers=TINY_LAYERS,
        vision_width=TINY_WIDTH,
        vision_layers=1,
        embed_dim=TINY_WIDTH,
        patch_size=8,
        image_size=16,
        context_length=positions,
        seed=seed,
    )
    config, hf_state_dict = original_to_hf(state_dict)
    return text_encoder_from_clip(config, hf_state_dict)


def build_tiny_sdxl_components(*, seed: int = 0) -> dict:
    """Random components of a tiny stock SDXL base (77-token encoders, real CLIP BPE tokenizers).

    Sizes follow diffusers' SDXL tests, so a 2-step 64x64 run takes well under a second on a CPU.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .clip_tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # pooled 32 + 6 micro-conditioning values * 8
        cross_attention_dim=2 * TINY_WIDTH,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=128,
    )
    text_config = {
        "hidden_size": TINY_WIDTH,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": TINY_LAYERS,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "projection_dim": TINY_WIDTH,
        "hidden_act": "gelu",
        "bos_token_id": 49406,
        "pad_token_id": 1,
    }
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config, eos_token_id=49407)).eval()
    torch.manual_seed(seed + 1)
    # Real SDXL's bigG config keeps the legacy eos_token_id 2 (pooling by argmax of the ids).
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config, eos_token_id=2)).eval()
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": build_clip_tokenizer(77),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": build_clip_tokenizer(77, pad_token="!"),
        "image_encoder": None,
        "feature_extractor": None,
    }


def default_base_dir(out_dir: str) -> str:
    out_dir = os.path.normpath(out_dir)
    return os.path.join(os.path.dirname(out_dir), os.path.basename(out_dir) + "-sdxl-base")


def write_tiny_sdxl_base(out_dir: str, *, seed: int = 0) -> str:
    """A tiny random stock SDXL base pipeline folder (77-token encoders), the adapter's test partner."""
    from diffusers import StableDiffusionXLPipeline

    StableDiffusionXLPipeline(**build_tiny_sdxl_components(seed=seed)).save_pretrained(out_dir)
    return out_dir


# ------------------------------------------------------------------------------------------- registry hooks


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="original longclip-L.pt")
    parser.add_argument("--repo-id", default=None, help=_REPO_ID_HELP)


def convert(args: argparse.Namespace) -> RepoBuild:
    """`mmhub convert longclip-sdxl`: original `longclip-L.pt` -> adapter repo."""
    return build_from_checkpoint(args.checkpoint, dtype=args.dtype, repo_id=args.repo_id)


def add_tiny_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-out", default=None, help="tiny SDXL base folder (default: <out>-sdxl-base beside it)")
    parser.add_argument("--repo-id", default=None, help=_REPO_ID_HELP)


def tiny(seed: int, args: argparse.Namespace | None = None) -> RepoBuild:
    """`mmhub tiny longclip-sdxl`: a tiny random adapter repo plus a tiny random SDXL base folder beside it."""
    build = adapter_build(
        build_tiny_text_encoder(seed=seed),
        dtype="fp32",
        model_name="LongCLIP-SDXL-tiny-random",
        random_weights=True,
        repo_id=getattr(args, "repo_id", None),
    )
    base_out = getattr(args, "base_out", None)
    build.after_write = lambda out: write_tiny_sdxl_base(base_out or default_base_dir(out), seed=seed)
    return build
