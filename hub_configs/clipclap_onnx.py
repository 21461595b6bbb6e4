"""`mmhub export-onnx`: write a CLIPCLAP repo as the ONNX file set of the original Go service.

Files: `text_model.onnx` / `visual_model.onnx` / `audio_model.onnx` (encoder -> pooled output),
`text_projection.onnx` / `visual_projection.onnx` / `audio_projection.onnx` (pooled output -> final L2-normalised
embedding in the shared space; the audio one is CLAP's projection, normalise, the trained map, normalise),
`clip_config.json`, `tokenizer.json`, `preprocessor_config.json` (CLIP image preprocessing),
`audio_preprocessor_config.json` (CLAP log-mel settings) and `projection_training_metadata.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import warnings
from typing import Any

from .builder import write_json
from .clipclap import METADATA_FILE

logger = logging.getLogger(__name__)

OPSET = 17
MODEL_FILES = (
    "text_model.onnx",
    "text_projection.onnx",
    "visual_model.onnx",
    "visual_projection.onnx",
    "audio_model.onnx",
    "audio_projection.onnx",
)


def _wrappers(model):
    """The six exported graphs as small modules, with the ONNX input/output names of each."""
    import torch
    import torch.nn.functional as F

    class TextModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_model = model.clip.text_model

        def forward(self, input_ids, attention_mask):
            return self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    class VisualModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = model.clip.vision_model

        def forward(self, pixel_values):
            return self.vision_model(pixel_values=pixel_values).pooler_output

    class Projection(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, pooled):
            return F.normalize(self.linear(pooled), dim=-1)

    class AudioModel(torch.nn.Module):
        def __init__(self, frames: int, target_frames: int):
            super().__init__()
            self.audio_model = model.clap.audio_model
            # HTSAT stretches the 1001 frames to its square input with bicubic interpolation; ONNX Resize's cubic
            # kernel differs from PyTorch's at the ~1e-3 level, so the stretch is exported as an exact matrix.
            identity = torch.eye(frames, dtype=torch.float64).reshape(frames, 1, frames, 1)
            stretch = F.interpolate(identity, (target_frames, 1), mode="bicubic", align_corners=True)
            self.register_buffer("stretch", stretch.reshape(frames, target_frames).T.float().contiguous())

        def forward(self, input_features):
            # Bicubic weights sum to one, so stretching before CLAP's per-mel BatchNorm equals stretching after it.
            return self.audio_model(input_features=torch.matmul(self.stretch, input_features)).pooler_output

    class AudioProjection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.audio_projection = model.clap.audio_projection
            self.audio_to_clip = model.audio_to_clip

        def forward(self, pooled):
            clap_embeds = F.normalize(self.audio_projection(pooled), dim=-1)
            return F.normalize(self.audio_to_clip(clap_embeds), dim=-1)

    return TextModel, VisualModel, Projection, AudioModel, AudioProjection


def example_inputs(model, processor, batch: int = 2, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Deterministic example inputs of every exported graph (also used for the parity check)."""
    import numpy as np
    import torch

    generator = np.random.default_rng(seed)
    texts = ["a dog barking in the distance", "rain"] * batch
    tokens = processor.tokenizer(texts[:batch], padding=True, truncation=True, return_tensors="np")
    size = model.config.clip_config.vision_config.image_size
    pixel_values = generator.standard_normal((batch, 3, size, size)).astype(np.float32)
    waveforms = [generator.standard_normal(48_000 * (2 + i)).astype(np.float32) * 0.1 for i in range(batch)]
    features = processor.feature_extractor(waveforms, sampling_rate=processor.feature_extractor.sampling_rate)
    with torch.inference_mode():
        text_pooled = model.clip.text_model(
            input_ids=torch.from_numpy(tokens["input_ids"]), attention_mask=torch.from_numpy(tokens["attention_mask"])
        ).pooler_output
        visual_pooled = model.clip.vision_model(pixel_values=torch.from_numpy(pixel_values)).pooler_output
        audio_pooled = model.clap.audio_model(
            input_features=torch.from_numpy(np.asarray(features["input_features"]))
        ).pooler_output
    return {
        "text_model.onnx": {
            "input_ids": tokens["input_ids"].astype(np.int64),
            "attention_mask": tokens["attention_mask"].astype(np.int64),
        },
        "visual_model.onnx": {"pixel_values": pixel_values},
        "audio_model.onnx": {"input_features": np.asarray(features["input_features"], dtype=np.float32)},
        "text_projection.onnx": {"pooler_output": text_pooled.numpy()},
        "visual_projection.onnx": {"pooler_output": visual_pooled.numpy()},
        "audio_projection.onnx": {"pooler_output": audio_pooled.numpy()},
    }


def export_onnx(repo_dir: str, out_dir: str, verify: bool = True, atol: float = 1e-4) -> dict[str, float]:
    """Export a CLIPCLAP repo folder to the ONNX file set; with `verify`, check ONNX Runtime against PyTorch.

    Returns:
        Max absolute difference per exported model file (empty without `verify`).
    """
    import torch
    from transformers import AutoModel, AutoProcessor

    if not os.path.isfile(os.path.join(repo_dir, "config.json")):
        raise FileNotFoundError(f"{repo_dir!r} is not a CLIPCLAP repo folder (no config.json)")
    model = AutoModel.from_pretrained(repo_dir, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(repo_dir, trust_remote_code=True)
    if getattr(model.config, "model_type", None) != "clipclap":
        raise ValueError(f"{repo_dir!r} holds a {model.config.model_type!r} model, not clipclap")
    if model.config.audio_config.enable_fusion:
        raise ValueError("export-onnx supports unfused CLAP audio towers only (the fused branch is data-dependent)")
    os.makedirs(out_dir, exist_ok=True)
    inputs = example_inputs(model, processor)
    text_model, visual_model, projection, audio_model, audio_projection = _wrappers(model)
    extractor = processor.feature_extractor
    frames = extractor.nb_max_samples // extractor.hop_length + 1
    spec = model.config.audio_config.spec_size
    freq_ratio = spec // model.config.audio_config.num_mel_bins
    graphs = {
        "text_model.onnx": (text_model(), ["input_ids", "attention_mask"], {0: "batch", 1: "sequence"}),
        "visual_model.onnx": (visual_model(), ["pixel_values"], {0: "batch"}),
        "audio_model.onnx": (audio_model(frames, spec * freq_ratio), ["input_features"], {0: "batch"}),
        "text_projection.onnx": (projection(model.clip.text_projection), ["pooler_output"], {0: "batch"}),
        "visual_projection.onnx": (projection(model.clip.visual_projection), ["pooler_output"], {0: "batch"}),
        "audio_projection.onnx": (audio_projection(), ["pooler_output"], {0: "batch"}),
    }
    output_names = {
        "text_model.onnx": "pooler_output",
        "visual_model.onnx": "pooler_output",
        "audio_model.onnx": "pooler_output",
        "text_projection.onnx": "text_embeds",
        "visual_projection.onnx": "image_embeds",
        "audio_projection.onnx": "audio_embeds",
    }
    for filename, (module, input_names, axes) in graphs.items():
        # eval() on the wrapper itself: the exporter restores the wrapper's mode afterwards, recursively.
        module.eval()
        args = tuple(torch.from_numpy(inputs[filename][name]) for name in input_names)
        dynamic_axes = {name: axes for name in input_names}
        dynamic_axes[output_names[filename]] = {0: "batch"}
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter warns about every traced Python branch; the parity check is what counts.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                os.path.join(out_dir, filename),
                input_names=input_names,
                output_names=[output_names[filename]],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
    model.eval()
    _write_side_files(repo_dir, out_dir, model, processor)
    return verify_export(repo_dir, out_dir, atol=atol, model=model, processor=processor) if verify else {}


def _write_side_files(repo_dir: str, out_dir: str, model, processor) -> None:
    clip_config = model.config.clip_config.to_dict()
    clip_config.pop("_name_or_path", None)
    write_json(os.path.join(out_dir, "clip_config.json"), clip_config)
    tokenizer_file = os.path.join(repo_dir, "tokenizer.json")
    if os.path.isfile(tokenizer_file):
        shutil.copyfile(tokenizer_file, os.path.join(out_dir, "tokenizer.json"))
    else:
        processor.tokenizer.backend_tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    image_config = processor.image_processor.to_dict()
    image_config.pop("auto_map", None)
    write_json(os.path.join(out_dir, "preprocessor_config.json"), image_config)
    audio_config = processor.feature_extractor.to_dict()
    audio_config.pop("auto_map", None)
    write_json(os.path.join(out_dir, "audio_preprocessor_config.json"), audio_config)
    metadata_file = os.path.join(repo_dir, METADATA_FILE)
    if os.path.isfile(metadata_file):
        shutil.copyfile(metadata_file, os.path.join(out_dir, METADATA_FILE))
    else:
        logger.warning("%s has no %s; writing a placeholder", repo_dir, METADATA_FILE)
        write_json(os.path.join(out_dir, METADATA_FILE), {"note": "the source repo carried no training metadata"})


def verify_export(repo_dir: str, out_dir: str, atol: float = 1e-4, model=None, processor=None) -> dict[str, float]:
    """Run every exported graph in ONNX Runtime on fresh inputs and compare with the PyTorch model.

    Raises:
        ValueError: if any file differs by more than `atol`.
    """
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModel, AutoProcessor

    if model is None:
        model = AutoModel.from_pretrained(repo_dir, trust_remote_code=True, dtype=torch.float32).eval()
    if processor is None:
        processor = AutoProcessor.from_pretrained(repo_dir, trust_remote_code=True)
    # Another batch size and seed than the export used, so baked-in shapes would show.
    inputs = example_inputs(model, processor, batch=3, seed=1)
    with torch.inference_mode():
        text = inputs["text_model.onnx"]
        audio = torch.from_numpy(inputs["audio_model.onnx"]["input_features"])
        expected = {
            "text_model.onnx": model.clip.text_model(
                input_ids=torch.from_numpy(text["input_ids"]), attention_mask=torch.from_numpy(text["attention_mask"])
            ).pooler_output,
            "visual_model.onnx": model.clip.vision_model(
                pixel_values=torch.from_numpy(inputs["visual_model.onnx"]["pixel_values"])
            ).pooler_output,
            "audio_model.onnx": model.clap.audio_model(input_features=audio).pooler_output,
            "text_projection.onnx": torch.nn.functional.normalize(
                model.clip.text_projection(torch.from_numpy(inputs["text_projection.onnx"]["pooler_output"])), dim=-1
            ),
            "visual_projection.onnx": torch.nn.functional.normalize(
                model.clip.visual_projection(torch.from_numpy(inputs["visual_projection.onnx"]["pooler_output"])),
                dim=-1,
            ),
            "audio_projection.onnx": model.get_audio_features(input_features=audio).pooler_output,
        }
    differences = {}
    for filename in MODEL_FILES:
        session = onnxruntime.InferenceSession(os.path.join(out_dir, filename), providers=["CPUExecutionProvider"])
        feeds = inputs[filename]
        if filename == "audio_projection.onnx":
            # Chain from the audio encoder's pooled output so the whole audio path is compared end to end.
            feeds = {"pooler_output": expected["audio_model.onnx"].numpy()}
        got = session.run(None, feeds)[0]
        differences[filename] = float(np.abs(got - expected[filename].numpy()).max())
    failed = {name: diff for name, diff in differences.items() if diff > atol}
    if failed:
        raise ValueError(f"ONNX Runtime differs from PyTorch by more than {atol}: {json.dumps(failed)}")
    return differences


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="a CLIPCLAP repo folder (from `mmhub convert clipclap` or `mmhub tiny clipclap`)")
    parser.add_argument("--out", required=True, help="output folder for the ONNX file set")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    parser.add_argument("--atol", type=float, default=1e-4, help="parity tolerance (max abs difference)")


def run_from_args(args: argparse.Namespace) -> int:
    differences = export_onnx(args.repo, args.out, verify=not args.no_verify, atol=args.atol)
    for name, diff in differences.items():
        print(f"{name}: max |onnxruntime - torch| = {diff:.2e}")
    print(f"wrote {args.out}")
    return 0
