"""`mmhub export-onnx` for CLIPCLAP: the generic `onnx/` folder plus the seed card's Termite file set.

Termite (antflydb's Go runtime and Zig runtime, the seed card's only consumer) loads a flat folder:

- `text_model.onnx` (`input_ids`, `attention_mask`), `visual_model.onnx` (`pixel_values`), `audio_model.onnx`
  (`input_features`, any number of log-mel frames up to HTSAT's 1024: the Go runtime sends 1000, the Zig runtime and
  CLAP's extractor 1001). Each has the outputs `pooler_output` and `last_hidden_state`, in that order: both runtimes
  embed texts from the first output, mean-pooling it when it is 3-D, so the pooled CLIP output comes first.
- `text_projection.onnx`, `visual_projection.onnx`, `audio_projection.onnx`: input `input` `[batch, hidden]` (the
  Zig runtime binds it by that name and reads its fixed width), output `output`, the unit embedding in CLIP's space
  (the audio one is CLAP's projection, L2, the trained map, L2).
- `clip_config.json` with `model_type` "clipclap" and `vision_config` / `text_config` / `audio_config` sections
  (`hidden_size`, `image_size`, `patch_size`, `max_position_embeddings`, `sample_rate`, `max_length_s`,
  `projection_dim`), `tokenizer.json` whose truncation keeps the end token within CLIP's 77 positions (the Go
  runtime cuts longer id lists itself, which would drop it), `tokenizer_config.json`, `preprocessor_config.json`
  (CLIP image preprocessing), `audio_preprocessor_config.json` (CLAP log-mel settings) and
  `projection_training_metadata.json`.

Every axis but the hidden widths is dynamic. The audio graph stretches its frames to HTSAT's input inside the
graph exactly as PyTorch's bicubic interpolation does, and declares its output widths symbolic: the Zig runtime
takes a fixed output width between 1001 and 4096 that is a multiple of 32 for a frame count.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from typing import Any

from . import onnx_export
from .builder import read_json, write_json
from .clipclap import METADATA_FILE
from .onnx_export import GraphSpec, bicubic_stretch_time, clap_frames_target

logger = logging.getLogger(__name__)

ENCODER_FILES = {"text": "text_model.onnx", "image": "visual_model.onnx", "audio": "audio_model.onnx"}
PROJECTION_FILES = {
    "text": "text_projection.onnx",
    "image": "visual_projection.onnx",
    "audio": "audio_projection.onnx",
}
MODEL_FILES = (*ENCODER_FILES.values(), *PROJECTION_FILES.values())
# Pooled output first: the Go and Zig runtimes read a text encoder's first output (and mean-pool a 3-D one).
ENCODER_OUTPUTS = ("pooler_output", "last_hidden_state")
PROJECTION_INPUT = "input"
PROJECTION_OUTPUT = "output"
CLIP_CONFIG_FILE = "clip_config.json"
AUDIO_PREPROCESSOR_FILE = "audio_preprocessor_config.json"
TERMITE_DIR = "termite"


def _encoders(model):
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_model = model.clip.text_model

        def forward(self, input_ids, attention_mask):
            out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return out.pooler_output, out.last_hidden_state

    class VisualEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = model.clip.vision_model

        def forward(self, pixel_values):
            out = self.vision_model(pixel_values=pixel_values)
            return out.pooler_output, out.last_hidden_state

    class AudioEncoder(torch.nn.Module):
        def __init__(self, stretch: bool):
            super().__init__()
            self.audio_model = model.clap.audio_model
            self.target = clap_frames_target(model.config.audio_config) if stretch else None

        def forward(self, input_features):
            if self.target is not None:
                input_features = bicubic_stretch_time(input_features, self.target)
            out = self.audio_model(input_features=input_features)
            pooled, hidden = out.pooler_output, out.last_hidden_state
            if self.target is None:
                return pooled, hidden
            # The Zig runtime reads a fixed output width in (1001, 4096] that is a multiple of 32 (HTSAT's 1024) as
            # the frame count to feed. Slicing to a bound known only at run time (always past the end, so nothing is
            # cut) keeps the widths out of the file's signature; ONNX Runtime then reports them as dynamic.
            bound = hidden.numel() + hidden.shape[1] + pooled.shape[1]
            return pooled[:, :bound], hidden[:, :bound]

    return TextEncoder(), VisualEncoder(), AudioEncoder(stretch=True), AudioEncoder(stretch=False)


def _projections(model) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    class Projection(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, pooled):
            return F.normalize(self.linear(pooled), dim=-1)

    class AudioProjection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.audio_projection = model.clap.audio_projection
            self.audio_to_clip = model.audio_to_clip

        def forward(self, pooled):
            clap_embeds = F.normalize(self.audio_projection(pooled), dim=-1)
            return F.normalize(self.audio_to_clip(clap_embeds), dim=-1)

    return {
        "text": Projection(model.clip.text_projection),
        "image": Projection(model.clip.visual_projection),
        "audio": AudioProjection(),
    }


def _rows(width: int, seed_base: int):
    import numpy as np

    def sample(k: int) -> dict[str, Any]:
        rows = (2, 3, 2, 5)[k]
        return {
            PROJECTION_INPUT: np.random.default_rng(seed_base + k).standard_normal((rows, width)).astype(np.float32)
        }

    return sample


def termite_graphs(model, processor) -> list[GraphSpec]:
    """The six Termite graphs of a CLIPCLAP model."""
    if model.config.audio_config.enable_fusion:
        raise ValueError("export-onnx supports unfused CLAP audio towers only (the fused branch is data-dependent)")
    text, visual, audio, audio_reference = _encoders(model)
    batch = {0: "batch_size"}
    encoders = [
        GraphSpec(
            stem="text_model",
            module=text,
            inputs=("input_ids", "attention_mask"),
            outputs=ENCODER_OUTPUTS,
            axes={
                "input_ids": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "sequence_length"},
                "pooler_output": batch,
                "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
            },
            sample=lambda k: onnx_export.text_sample(processor, k),
        ),
        GraphSpec(
            stem="visual_model",
            module=visual,
            inputs=("pixel_values",),
            outputs=ENCODER_OUTPUTS,
            axes={"pixel_values": batch, "pooler_output": batch, "last_hidden_state": batch},
            sample=lambda k: onnx_export.image_sample(processor, k),
        ),
        GraphSpec(
            stem="audio_model",
            module=audio,
            inputs=("input_features",),
            outputs=ENCODER_OUTPUTS,
            axes={"input_features": {0: "batch_size", 2: "time"}, "pooler_output": batch, "last_hidden_state": batch},
            sample=lambda k: onnx_export.audio_sample(processor, k),
            symbolic_output_dims={"pooler_output": [1], "last_hidden_state": [1]},
            reference=audio_reference,
        ),
    ]
    widths = {
        "text": model.config.clip_config.text_config.hidden_size,
        "image": model.config.clip_config.vision_config.hidden_size,
        "audio": model.config.audio_config.hidden_size,
    }
    projections = [
        GraphSpec(
            stem=PROJECTION_FILES[modality][: -len(".onnx")],
            module=module,
            inputs=(PROJECTION_INPUT,),
            outputs=(PROJECTION_OUTPUT,),
            axes={PROJECTION_INPUT: batch, PROJECTION_OUTPUT: batch},
            sample=_rows(widths[modality], 30 + 10 * index),
        )
        for index, (modality, module) in enumerate(_projections(model).items())
    ]
    return encoders + projections


def clip_config(model, processor) -> dict[str, Any]:
    """`clip_config.json` as Termite reads it (the keys of antflydb's builder, plus the image normalisation)."""
    clip = model.config.clip_config
    audio = model.config.audio_config
    extractor = processor.feature_extractor
    return {
        "model_type": "clipclap",
        "projection_dim": model.config.projection_dim,
        "vision_config": {
            "hidden_size": clip.vision_config.hidden_size,
            "image_size": clip.vision_config.image_size,
            "patch_size": clip.vision_config.patch_size,
            "projection_dim": clip.projection_dim,
        },
        "text_config": {
            "hidden_size": clip.text_config.hidden_size,
            "max_position_embeddings": clip.text_config.max_position_embeddings,
            "projection_dim": clip.projection_dim,
        },
        "audio_config": {
            "hidden_size": audio.hidden_size,
            "sample_rate": extractor.sampling_rate,
            "max_length_s": extractor.max_length_s,
            "num_mel_bins": audio.num_mel_bins,
            "enable_fusion": bool(audio.enable_fusion),
            "projection_dim": model.config.projection_dim,
        },
        "image_mean": list(processor.image_processor.image_mean),
        "image_std": list(processor.image_processor.image_std),
    }


def termite_tokenizer(repo_dir: str, processor, max_length: int):
    """The repo's `tokenizers` tokenizer truncating to `max_length` ids, end token kept, without padding."""
    from tokenizers import Tokenizer

    path = os.path.join(repo_dir, "tokenizer.json")
    tokenizer = (
        Tokenizer.from_file(path)
        if os.path.isfile(path)
        else Tokenizer.from_str(processor.tokenizer.backend_tokenizer.to_str())
    )
    # Truncation counts the special tokens the post-processor adds, so the end token stays within the limit.
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def _without_remote_code(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key not in ("auto_map", "processor_class")}


def write_termite_side_files(repo_dir: str, out_dir: str, model, processor) -> None:
    config = clip_config(model, processor)
    write_json(os.path.join(out_dir, CLIP_CONFIG_FILE), config)
    limit = config["text_config"]["max_position_embeddings"]
    termite_tokenizer(repo_dir, processor, limit).save(os.path.join(out_dir, "tokenizer.json"))
    tokenizer_config = _without_remote_code(read_json(os.path.join(repo_dir, "tokenizer_config.json")))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {**tokenizer_config, "model_max_length": limit})
    image = _without_remote_code(processor.image_processor.to_dict())
    write_json(os.path.join(out_dir, onnx_export.PREPROCESSOR_CONFIG), {**image, "processor_class": "CLIPProcessor"})
    write_json(
        os.path.join(out_dir, AUDIO_PREPROCESSOR_FILE), _without_remote_code(processor.feature_extractor.to_dict())
    )
    metadata = os.path.join(repo_dir, METADATA_FILE)
    if os.path.isfile(metadata):
        shutil.copyfile(metadata, os.path.join(out_dir, METADATA_FILE))
    else:
        logger.warning("%s has no %s; writing a placeholder", repo_dir, METADATA_FILE)
        write_json(os.path.join(out_dir, METADATA_FILE), {"note": "the source repo carried no training metadata"})


def export_termite(
    repo_dir: str, out_dir: str, verify: bool = True, atol: float = 1e-4, model=None, processor=None
) -> onnx_export.ExportReport:
    """Write the Termite file set of a CLIPCLAP repo into `out_dir`; with `verify`, check it against PyTorch."""
    if model is None or processor is None:
        model, processor = onnx_export.load_fp32(repo_dir)
    if getattr(model.config, "model_type", None) != "clipclap":
        raise ValueError(f"{repo_dir!r} holds a {model.config.model_type!r} model, not clipclap")
    os.makedirs(out_dir, exist_ok=True)
    report = onnx_export.export_graphs(termite_graphs(model, processor), out_dir, verify=verify, atol=atol)
    write_termite_side_files(repo_dir, out_dir, model, processor)
    return report


# The seed's name for the Termite export (benchmarks/bench_clipclap.py calls it).
export_onnx = export_termite


def run_from_args(args: argparse.Namespace) -> int:
    """`mmhub export-onnx CLIPCLAP_REPO`: `REPO/onnx/` as for every family, then the Termite folder."""
    model, processor = onnx_export.load_fp32(args.repo)
    variants = onnx_export.parse_variants(args.variants)
    verify = not args.no_verify
    report = onnx_export.export_repo(
        args.repo, variants=variants, verify=verify, atol=args.atol, model=model, processor=processor
    )
    onnx_export.print_report(report, args.repo)
    termite_out = getattr(args, "termite_out", None) or os.path.join(args.repo, TERMITE_DIR)
    if termite_out.lower() != "none":
        termite = export_termite(
            args.repo, termite_out, verify=verify, atol=args.atol, model=model, processor=processor
        )
        onnx_export.print_report(termite, termite_out)
    return 0
