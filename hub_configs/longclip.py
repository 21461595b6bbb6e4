"""LongCLIP-B/L: convert an original Long-CLIP checkpoint (longclip-B.pt / longclip-L.pt) into a Hub repo folder."""

from __future__ import annotations

import argparse
import logging
import os
import re

import torch

from .builder import RepoBuild

logger = logging.getLogger(__name__)

# The original forward takes rows 0..19 from the frozen CLIP table and the rest from the trained one.
ORIGINAL_KEEP_POSITIONS = 20
# The paper's R@1 (image-to-text / text-to-image), shown in every LongCLIP card as reference anchors.
PAPER_RESULTS = (
    "| LongCLIP-B | 94.6 / 93.3 | n/a | 57.6 / 40.4 |",
    "| LongCLIP-L | 95.8 / 95.6 | 82.7 / 86.1 | 62.8 / 46.3 |",
)


def load_original_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Read an original Long-CLIP checkpoint: a plain pickled state dict, loaded without running pickled code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path!r} does not exist")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path!r} is not a loadable PyTorch state dict: {error}") from error
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or "positional_embedding" not in state_dict:
        raise ValueError(f"{path!r} does not look like a Long-CLIP checkpoint (no 'positional_embedding')")
    # Checkpoints saved from a DataParallel wrapper carry a "module." prefix.
    return {re.sub(r"^module\.", "", key): value for key, value in state_dict.items()}


def infer_dimensions(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """Every architecture size, read from tensor shapes the way the original `build_model` does."""
    required = ["token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"]
    required += ["visual.conv1.weight", "visual.positional_embedding", "visual.proj"]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(f"Checkpoint lacks {missing}; only ViT-based Long-CLIP checkpoints are supported")
    if "positional_embedding_res" not in state_dict:
        raise ValueError("Checkpoint lacks 'positional_embedding_res': it is not a Long-CLIP checkpoint")

    def count_layers(prefix: str) -> int:
        pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.attn\.in_proj_weight$")
        return len({match.group(1) for key in state_dict if (match := pattern.match(key))})

    vision_width = state_dict["visual.conv1.weight"].shape[0]
    patch_size = state_dict["visual.conv1.weight"].shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    dims = {
        "embed_dim": state_dict["text_projection"].shape[1],
        "context_length": state_dict["positional_embedding"].shape[0],
        "vocab_size": state_dict["token_embedding.weight"].shape[0],
        "text_width": text_width,
        "text_heads": max(text_width // 64, 1),
        "text_layers": count_layers("transformer.resblocks."),
        "vision_width": vision_width,
        "vision_heads": max(vision_width // 64, 1),
        "vision_layers": count_layers("visual.transformer.resblocks."),
        "patch_size": patch_size,
        "image_size": patch_size * grid,
    }
    if grid * grid + 1 != state_dict["visual.positional_embedding"].shape[0]:
        raise ValueError("visual.positional_embedding does not hold a square grid plus a class token")
    if state_dict["positional_embedding_res"].shape != state_dict["positional_embedding"].shape:
        raise ValueError("positional_embedding and positional_embedding_res differ in shape")
    return dims


def fold_position_tables(
    positional_embedding: torch.Tensor, positional_embedding_res: torch.Tensor, keep: int = ORIGINAL_KEEP_POSITIONS
) -> torch.Tensor:
    """One table equal to `pos * mask1 + pos_res * mask2` of the original forward (mask1 = rows < keep)."""
    return torch.cat([positional_embedding[:keep], positional_embedding_res[keep:]], dim=0)


def _convert_blocks(state_dict, source_prefix: str, target_prefix: str, layers: int) -> dict[str, torch.Tensor]:
    converted = {}
    for index in range(layers):
        source = f"{source_prefix}{index}."
        target = f"{target_prefix}{index}."
        query, key, value = state_dict[source + "attn.in_proj_weight"].chunk(3, dim=0)
        query_bias, key_bias, value_bias = state_dict[source + "attn.in_proj_bias"].chunk(3, dim=0)
        for name, weight, bias in (("q", query, query_bias), ("k", key, key_bias), ("v", value, value_bias)):
            converted[f"{target}self_attn.{name}_proj.weight"] = weight
            converted[f"{target}self_attn.{name}_proj.bias"] = bias
        renames = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for old, new in renames.items():
            for parameter in ("weight", "bias"):
                converted[f"{target}{new}.{parameter}"] = state_dict[f"{source}{old}.{parameter}"]
    return converted


def original_to_hf(state_dict: dict[str, torch.Tensor]):
    """Map an original Long-CLIP state dict to a `LongCLIPConfig` and `CLIPModel` state dict.

    Returns:
        `(config, hf_state_dict)`; the config is a `LongCLIPConfig` (`model_type` "clip").
    """
    from st_modules.configuration_longclip import LongCLIPConfig

    dims = infer_dimensions(state_dict)
    converted = {
        "text_model.embeddings.token_embedding.weight": state_dict["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": fold_position_tables(
            state_dict["positional_embedding"], state_dict["positional_embedding_res"]
        ),
        "text_model.final_layer_norm.weight": state_dict["ln_final.weight"],
        "text_model.final_layer_norm.bias": state_dict["ln_final.bias"],
        "text_projection.weight": state_dict["text_projection"].t(),
        "vision_model.embeddings.class_embedding": state_dict["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state_dict["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state_dict["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state_dict["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state_dict["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state_dict["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state_dict["visual.ln_post.bias"],
        "visual_projection.weight": state_dict["visual.proj"].t(),
        "logit_scale": state_dict["logit_scale"].reshape(()),
    }
    converted.update(
        _convert_blocks(state_dict, "transformer.resblocks.", "text_model.encoder.layers.", dims["text_layers"])
    )
    converted.update(
        _convert_blocks(
            state_dict, "visual.transformer.resblocks.", "vision_model.encoder.layers.", dims["vision_layers"]
        )
    )
    converted = {key: value.contiguous() for key, value in converted.items()}
    config = LongCLIPConfig(
        text_config={
            "vocab_size": dims["vocab_size"],
            "hidden_size": dims["text_width"],
            "intermediate_size": 4 * dims["text_width"],
            "num_hidden_layers": dims["text_layers"],
            "num_attention_heads": dims["text_heads"],
            "max_position_embeddings": dims["context_length"],
            "projection_dim": dims["embed_dim"],
            "hidden_act": "quick_gelu",
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": dims["vision_width"],
            "intermediate_size": 4 * dims["vision_width"],
            "num_hidden_layers": dims["vision_layers"],
            "num_attention_heads": dims["vision_heads"],
            "image_size": dims["image_size"],
            "patch_size": dims["patch_size"],
            "projection_dim": dims["embed_dim"],
            "hidden_act": "quick_gelu",
        },
        projection_dim=dims["embed_dim"],
        keep_positions=ORIGINAL_KEEP_POSITIONS,
    )
    return config, converted


def load_tokenizer(tokenizer: str | None, max_length: int, vocab_size: int = 49408):
    """The CLIP tokenizer at `max_length`: from a folder or Hub id, else offline from open_clip's vocabulary.

    A loaded tokenizer must cover the text tower's vocabulary: transformers returns a near-empty tokenizer for a Hub
    id it cannot reach, which would otherwise be written into the repo without a word.
    """
    if tokenizer is None:
        from .clip_tokenizer import build_clip_tokenizer

        logger.info("No --tokenizer given: building the CLIP BPE tokenizer from open-clip-torch's vocabulary")
        return build_clip_tokenizer(model_max_length=max_length)
    from transformers import CLIPTokenizer

    loaded = CLIPTokenizer.from_pretrained(tokenizer)
    if len(loaded) != vocab_size:
        raise ValueError(
            f"--tokenizer {tokenizer!r} loaded a tokenizer of {len(loaded)} tokens, but the checkpoint's text tower "
            f"has {vocab_size}; pass a CLIP tokenizer folder (or omit --tokenizer to use the bundled CLIP BPE)"
        )
    loaded.model_max_length = max_length
    return loaded


def build_image_processor(image_size: int):
    from transformers import CLIPImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=3,  # bicubic, as the original preprocessing
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def longclip_build(
    config,
    hf_state_dict: dict[str, torch.Tensor],
    *,
    tokenizer: str | None = None,
    dtype: str = "fp32",
    model_name: str = "LongCLIP",
    source: str = "",
    random_weights: bool = False,
) -> RepoBuild:
    """Assemble a LongCLIP repo (model, processor, card fields) from a converted config and state dict."""
    from st_modules.modeling_longclip import LongCLIPModel
    from st_modules.processing_longclip import LongCLIPProcessor

    model = LongCLIPModel(config)
    missing, unexpected = model.load_state_dict(hf_state_dict, strict=False)
    if unexpected or [key for key in missing if not key.endswith("position_ids")]:
        raise ValueError(f"Converted weights do not fit the model: missing {missing}, unexpected {unexpected}")
    max_length = config.text_config.max_position_embeddings
    processor = LongCLIPProcessor(
        image_processor=build_image_processor(config.vision_config.image_size),
        tokenizer=load_tokenizer(tokenizer, max_length, config.text_config.vocab_size),
    )
    text, vision = config.text_config, config.vision_config
    card = {
        "model_name": model_name,
        "source": source or "random weights",
        "weights_note": (
            "**These weights are random.** This repo exists to test the code paths offline; its embeddings mean nothing."
            if random_weights
            else f"Converted from the original checkpoint `{source}` with `mmhub convert longclip`."
        ),
        "context_length": max_length,
        "embed_dim": config.projection_dim,
        "text_width": text.hidden_size,
        "text_layers": text.num_hidden_layers,
        "vision_width": vision.hidden_size,
        "vision_layers": vision.num_hidden_layers,
        "patch_size": vision.patch_size,
        "image_size": vision.image_size,
        "dtype": dtype,
        "keep_positions": config.keep_positions,
        "paper_results": "\n".join(PAPER_RESULTS),
    }
    module_config = {"max_seq_length": max_length, "embedding_dimension": config.projection_dim}
    return RepoBuild(model=model, processor=processor, card=card, module_config=module_config)


def build_from_checkpoint(checkpoint: str, *, tokenizer: str | None = None, dtype: str = "fp32") -> RepoBuild:
    """Original Long-CLIP checkpoint -> `RepoBuild` (the `mmhub convert longclip` path)."""
    state_dict = load_original_checkpoint(checkpoint)
    config, hf_state_dict = original_to_hf(state_dict)
    name = os.path.splitext(os.path.basename(checkpoint))[0]
    pretty = {"longclip-b": "LongCLIP-B", "longclip-l": "LongCLIP-L"}.get(name.lower(), name)
    return longclip_build(
        config,
        hf_state_dict,
        tokenizer=tokenizer,
        dtype=dtype,
        model_name=pretty,
        source=os.path.basename(checkpoint),
    )


def random_original_checkpoint(
    *,
    text_width: int = 64,
    text_layers: int = 2,
    vision_width: int = 64,
    vision_layers: int = 2,
    embed_dim: int = 32,
    patch_size: int = 8,
    image_size: int = 32,
    context_length: int = 248,
    vocab_size: int = 49408,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random state dict in the ORIGINAL Long-CLIP key layout; the two text position tables differ in every row."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=0.02):
        return torch.randn(*shape, generator=generator) * scale

    def blocks(prefix: str, width: int, layers: int) -> dict[str, torch.Tensor]:
        tensors = {}
        for index in range(layers):
            block = f"{prefix}{index}."
            tensors.update(
                {
                    block + "ln_1.weight": 1 + randn(width, scale=0.1),
                    block + "ln_1.bias": randn(width, scale=0.1),
                    block + "attn.in_proj_weight": randn(3 * width, width, scale=width**-0.5),
                    block + "attn.in_proj_bias": randn(3 * width, scale=0.1),
                    block + "attn.out_proj.weight": randn(width, width, scale=width**-0.5),
                    block + "attn.out_proj.bias": randn(width, scale=0.1),
                    block + "ln_2.weight": 1 + randn(width, scale=0.1),
                    block + "ln_2.bias": randn(width, scale=0.1),
                    block + "mlp.c_fc.weight": randn(4 * width, width, scale=width**-0.5),
                    block + "mlp.c_fc.bias": randn(4 * width, scale=0.1),
                    block + "mlp.c_proj.weight": randn(width, 4 * width, scale=(4 * width) ** -0.5),
                    block + "mlp.c_proj.bias": randn(width, scale=0.1),
                }
            )
        return tensors

    grid = image_size // patch_size
    state_dict = {
        "token_embedding.weight": randn(vocab_size, text_width),
        "positional_embedding": randn(context_length, text_width, scale=0.1),
        "positional_embedding_res": randn(context_length, text_width, scale=0.1),
        "ln_final.weight": 1 + randn(text_width, scale=0.1),
        "ln_final.bias": randn(text_width, scale=0.1),
        "text_projection": randn(text_width, embed_dim, scale=text_width**-0.5),
        "logit_scale": torch.tensor(4.6052),
        "visual.conv1.weight": randn(vision_width, 3, patch_size, patch_size, scale=0.05),
        "visual.class_embedding": randn(vision_width, scale=0.1),
        "visual.positional_embedding": randn(grid * grid + 1, vision_width, scale=0.1),
        "visual.ln_pre.weight": 1 + randn(vision_width, scale=0.1),
        "visual.ln_pre.bias": randn(vision_width, scale=0.1),
        "visual.ln_post.weight": 1 + randn(vision_width, scale=0.1),
        "visual.ln_post.bias": randn(vision_width, scale=0.1),
        "visual.proj": randn(vision_width, embed_dim, scale=vision_width**-0.5),
    }
    state_dict.update(blocks("transformer.resblocks.", text_width, text_layers))
    state_dict.update(blocks("visual.transformer.resblocks.", vision_width, vision_layers))
    return state_dict


# ------------------------------------------------------------------------------------------- registry hooks


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="original longclip-B.pt / longclip-L.pt")
    parser.add_argument("--tokenizer", default=None, help="CLIP tokenizer folder or Hub id (default: offline BPE)")


def convert(args: argparse.Namespace) -> RepoBuild:
    """`mmhub convert longclip`: original checkpoint -> repo."""
    return build_from_checkpoint(args.checkpoint, tokenizer=args.tokenizer, dtype=args.dtype)


def tiny(seed: int, args: argparse.Namespace | None = None) -> RepoBuild:
    """`mmhub tiny longclip`: a random original-format checkpoint pushed through the real conversion path."""
    config, hf_state_dict = original_to_hf(random_original_checkpoint(seed=seed))
    return longclip_build(config, hf_state_dict, model_name="LongCLIP-tiny-random", random_weights=True)
