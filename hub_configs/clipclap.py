"""CLIPCLAP: CLIP text and images plus CLAP audio mapped into CLIP's 512-d space."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from typing import Any

from .builder import RepoBuild, source_label, write_json

logger = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_CLAP = "laion/larger_clap_music_and_speech"
METADATA_FILE = "projection_training_metadata.json"

# Tiny random towers: small enough for CPU tests, shaped like the real ones where the code depends on it
# (CLAP's HTSAT needs spec_size 256 with 64 mel bins; the CLIP tokenizer is the real 49408-id BPE).
TINY_PROJECTION_DIM = 16
TINY_CLIP = {
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "projection_dim": TINY_PROJECTION_DIM,
}
TINY_CLAP = {
    "text_config": {
        "vocab_size": 128,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
    },
    "audio_config": {
        "hidden_size": 32,
        "patch_embeds_hidden_size": 16,
        "depths": [1, 1],
        "num_attention_heads": [2, 4],
        "window_size": 8,
        "spec_size": 256,
        "num_mel_bins": 64,
    },
    "projection_dim": TINY_PROJECTION_DIM,
}
# `laion/larger_clap_*` are unfused HTSAT towers; their extractor uses one 10 s window and librosa-style mels.
TINY_FEATURE_EXTRACTOR = {"truncation": "rand_trunc", "frequency_min": 50, "frequency_max": 14000}


def load_projection_weight(path: str, dim: int | None = None):
    """Read the trained `Linear(dim, dim, bias=False)` weight from `.safetensors`, `.pt`/`.pth`/`.bin` or `.npy`.

    A state dict may hold the tensor as `weight` or under any single key ending in `weight`; the layout is
    `nn.Linear.weight` (rows are outputs).
    """
    import numpy as np
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Projection file {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        payload: Any = load_file(path)
    elif path.endswith(".npy"):
        payload = torch.from_numpy(np.load(path))
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict):
        candidates = {key: value for key, value in payload.items() if key.endswith("weight")}
        if "weight" in candidates:
            payload = candidates["weight"]
        elif len(candidates) == 1:
            payload = next(iter(candidates.values()))
        else:
            raise ValueError(
                f"Projection file {path!r} should hold one weight tensor, found keys {sorted(payload)}; "
                "save {'weight': tensor}"
            )
    weight = torch.as_tensor(payload).float()
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1] or (dim is not None and weight.shape[0] != dim):
        expected = f"({dim}, {dim})" if dim else "square"
        raise ValueError(f"Projection weight in {path!r} must be {expected}, got shape {tuple(weight.shape)}")
    return weight


def _load_sources(clip: str, clap: str):
    from transformers import AutoProcessor, ClapModel, CLIPModel

    clip_model = CLIPModel.from_pretrained(clip).eval()
    clap_model = ClapModel.from_pretrained(clap).eval()
    clip_processor = AutoProcessor.from_pretrained(clip)
    clap_processor = AutoProcessor.from_pretrained(clap)
    return clip_model, clap_model, clip_processor, clap_processor


def _training_summary(metadata: dict[str, Any] | None) -> str:
    if not metadata:
        return "No training metadata was supplied with this build."
    settings = metadata.get("settings", {})
    final = metadata.get("final", {})
    lines = [
        f"Symmetric InfoNCE (temperature {settings.get('temperature')}), Adam lr {settings.get('learning_rate')}, "
        f"{settings.get('epochs')} epochs, batch {settings.get('batch_size')}, {metadata.get('num_pairs')} pairs "
        f"({settings.get('validation_fraction')} held out), identity initialisation, best validation loss kept.",
        "",
        "| split | loss | audio->text R@1 | text->audio R@1 |",
        "|---|---|---|---|",
    ]
    for split in ("identity", "best"):
        row = final.get(split) if split == "best" else metadata.get("identity_start")
        if row:
            lines.append(
                f"| validation ({split}) | {row.get('loss', float('nan')):.4f} | "
                f"{row.get('audio_to_text_r@1', float('nan')):.3f} | {row.get('text_to_audio_r@1', float('nan')):.3f} |"
            )
    return "\n".join(lines)


def clipclap_build(
    clip_model,
    clap_model,
    audio_to_clip_weight,
    tokenizer,
    image_processor,
    feature_extractor,
    *,
    clip_source: str,
    clap_source: str,
    metadata: dict[str, Any] | None = None,
    build_note: str = "",
    training_summary: str | None = None,
    repo_id: str = "ORG/clipclap",
) -> RepoBuild:
    """Assemble a CLIPCLAP repo (model, processor, metadata, card fields) from loaded CLIP and CLAP parts."""
    from st_modules.modeling_clipclap import ClipClapModel
    from st_modules.processing_clipclap import ClipClapProcessor

    model = ClipClapModel.from_clip_and_clap(clip_model, clap_model, audio_to_clip_weight)
    for key in ("is_local", "local_files_only", "name_or_path"):
        # Loading leaves these in init_kwargs; they describe this machine, not the tokenizer.
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.model_max_length = min(tokenizer.model_max_length, clip_model.config.text_config.max_position_embeddings)
    processor = ClipClapProcessor(image_processor, tokenizer, feature_extractor)
    extractor = processor.feature_extractor
    card = {
        "clip_source": clip_source,
        "clap_source": clap_source,
        "projection_dim": model.config.projection_dim,
        "sampling_rate": extractor.sampling_rate,
        "max_length_s": extractor.max_length_s,
        "truncation": extractor.truncation,
        "training_summary": training_summary or _training_summary(metadata),
        "build_note": build_note,
        "repo_id": repo_id,
    }
    return RepoBuild(
        model=model,
        processor=processor,
        card=card,
        module_config={"max_seq_length": int(tokenizer.model_max_length)},
        files={METADATA_FILE: metadata} if metadata is not None else {},
    )


def build_from_sources(
    clip: str, clap: str, projection: str, metadata_path: str | None = None, repo_id: str = "ORG/clipclap", **card
) -> RepoBuild:
    """A CLIPCLAP `RepoBuild` from a CLIP model, a CLAP model (folders or Hub ids) and the trained projection file.

    Args:
        clip: CLIP source, e.g. `openai/clip-vit-base-patch32`.
        clap: CLAP source, e.g. `laion/larger_clap_music_and_speech`.
        projection: Trained `Linear` weight file (see `load_projection_weight`).
        metadata_path: Training metadata JSON; defaults to `projection_training_metadata.json` beside `projection`.
        repo_id: Hub id used in the model card's snippets.
        **card: Card fields to override (`clip_source`, `build_note`, `training_summary`, ...).
    """
    clip_model, clap_model, clip_processor, clap_processor = _load_sources(clip, clap)
    weight = load_projection_weight(projection, clip_model.config.projection_dim)
    if clap_model.config.projection_dim != clip_model.config.projection_dim:
        raise ValueError(
            f"CLIP projects to {clip_model.config.projection_dim} dims but CLAP to {clap_model.config.projection_dim}"
        )
    if metadata_path is None:
        candidate = os.path.join(os.path.dirname(os.path.abspath(projection)), METADATA_FILE)
        metadata_path = candidate if os.path.isfile(candidate) else None
    metadata = None
    if metadata_path is not None:
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    options = {"clip_source": source_label(clip), "clap_source": source_label(clap), **card}
    return clipclap_build(
        clip_model,
        clap_model,
        weight,
        clip_processor.tokenizer,
        clip_processor.image_processor,
        clap_processor.feature_extractor,
        metadata=metadata,
        repo_id=repo_id,
        **options,
    )


def build_tiny_sources(out_dir: str, seed: int = 0, fused: bool = False) -> tuple[str, str, str]:
    """Write tiny random stock CLIP and CLAP folders and a random projection file; return their paths.

    The folders are ordinary `CLIPModel` / `ClapModel` checkpoints with processors, so they serve as the
    independent reference in tests and as converter input.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        RobertaTokenizer,
    )

    from .clip_tokenizer import build_clip_tokenizer

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clip_dir, clap_dir = os.path.join(out_dir, "clip"), os.path.join(out_dir, "clap")
    clip_model = CLIPModel(CLIPConfig(**TINY_CLIP)).eval()
    clip_model.save_pretrained(clip_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=build_clip_tokenizer()).save_pretrained(clip_dir)

    clap_config = json.loads(json.dumps(TINY_CLAP))
    extractor_kwargs = dict(TINY_FEATURE_EXTRACTOR)
    if fused:
        clap_config["audio_config"].update(enable_fusion=True, fusion_type="aff_2d")
        extractor_kwargs.update(truncation="fusion", frequency_min=0)
    clap_model = ClapModel(ClapConfig(**clap_config)).eval()
    with torch.no_grad():
        # Random init leaves the relative-position tables at zero; fill them so the test exercises them.
        for name, parameter in clap_model.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_(0, 0.2, generator=generator)
    clap_model.save_pretrained(clap_dir)
    # CLAP's text tokenizer is unused by CLIPCLAP; a tiny byte-level vocabulary keeps the folder a valid ClapProcessor.
    vocab = {token: index for index, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file, merges_file = os.path.join(scratch, "vocab.json"), os.path.join(scratch, "merges.txt")
        write_json(vocab_file, vocab)
        with open(merges_file, "w", encoding="utf-8") as handle:
            handle.write("#version: 0.2\n")
        clap_tokenizer = RobertaTokenizer(vocab_file=vocab_file, merges_file=merges_file)
    ClapProcessor(
        feature_extractor=ClapFeatureExtractor(**extractor_kwargs), tokenizer=clap_tokenizer
    ).save_pretrained(clap_dir)

    projection_file = os.path.join(out_dir, "audio_to_clip.safetensors")
    dim = TINY_PROJECTION_DIM
    weight = torch.eye(dim) + 0.5 * torch.randn(dim, dim, generator=generator)
    save_file({"weight": weight.contiguous()}, projection_file)
    write_json(
        os.path.join(out_dir, METADATA_FILE),
        {
            "note": "tiny random build: the projection is the identity plus Gaussian noise, not trained",
            "settings": {},
            "seed": seed,
        },
    )
    return clip_dir, clap_dir, projection_file


# ------------------------------------------------------------------------------------------- registry hooks


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", default=DEFAULT_CLIP, help=f"CLIP folder or Hub id (default {DEFAULT_CLIP})")
    parser.add_argument("--clap", default=DEFAULT_CLAP, help=f"CLAP folder or Hub id (default {DEFAULT_CLAP})")
    parser.add_argument("--projection", required=True, help="trained Linear weight (.safetensors, .pt or .npy)")
    parser.add_argument(
        "--metadata", default=None, help=f"training metadata JSON (default: {METADATA_FILE} beside it)"
    )
    parser.add_argument("--repo-id", default="ORG/clipclap", help="Hub id shown in the model card")


def convert(args: argparse.Namespace) -> RepoBuild:
    """`mmhub convert clipclap`: CLIP + CLAP + trained projection -> repo."""
    return build_from_sources(args.clip, args.clap, args.projection, args.metadata, repo_id=args.repo_id)


def add_tiny_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fused", action="store_true", help="use a fused CLAP tower (truncation='fusion')")


def tiny(seed: int, args: argparse.Namespace | None = None) -> RepoBuild:
    """`mmhub tiny clipclap`: the repo from tiny random CLIP and CLAP models, through the real conversion path."""
    fused = bool(getattr(args, "fused", False))
    with tempfile.TemporaryDirectory() as scratch:
        clip_dir, clap_dir, projection = build_tiny_sources(scratch, seed=seed, fused=fused)
        return build_from_sources(
            clip_dir,
            clap_dir,
            projection,
            repo_id="ORG/clipclap-tiny",
            clip_source="tiny-random-clip",
            clap_source="tiny-random-clap",
            training_summary=f"Not trained: the projection is the identity plus Gaussian noise (seed {seed}).",
            build_note="**Tiny random build** (`mmhub tiny clipclap`): random weights for tests and demos; "
            "embeddings are meaningless.",
        )
