"""Independent references for the family contract suite: each family's embeddings computed WITHOUT its remote code.

For every family with a model, `REFERENCES[name]` gives functions that read the built repo folder with stock
transformers classes (or, where transformers has no class for a tower, the plain-torch forward of
`tests/jina_fixtures.py`) and return L2-normalised embeddings. The contract suite compares every door against these;
a new family must add its entry here (the suite checks that every registered family with a model has one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def _state_dict(repo: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(repo, "model.safetensors"))


def _config(repo: str) -> dict:
    with open(os.path.join(repo, "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


@dataclass(frozen=True)
class Reference:
    """`text(repo, texts)`, `image(repo, images)`, `audio(repo, waveforms at the model rate)`: unit embeddings."""

    text: Callable
    image: Callable
    audio: Callable | None = None
    logits: bool = True  # forward returns CLIP-style logits_per_image


# ------------------------------------------------------------------------------------------------------ LongCLIP


@lru_cache(maxsize=4)
def _stock_clip(repo: str):
    from transformers import CLIPModel, CLIPProcessor

    return CLIPModel.from_pretrained(repo).eval(), CLIPProcessor.from_pretrained(repo)


def _longclip_text(repo: str, texts: list[str]) -> torch.Tensor:
    model, processor = _stock_clip(repo)
    # The fast CLIP tokenizer cuts to max_length keeping BOS and EOS, exactly as Long-CLIP's tokenizer does.
    tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=248, return_tensors="pt")
    with torch.inference_mode():
        return F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)


def _longclip_image(repo: str, images) -> torch.Tensor:
    model, processor = _stock_clip(repo)
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        return F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)


# ------------------------------------------------------------------------------------------------------ CLIPCLAP


@lru_cache(maxsize=4)
def _clipclap_parts(repo: str):
    """Stock `CLIPModel`, CLAP audio tower + projection and the trained map, loaded from the repo's tensors."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clap.configuration_clap import ClapAudioConfig
    from transformers.models.clap.modeling_clap import ClapAudioModel, ClapProjectionLayer

    config, state = _config(repo), _state_dict(repo)
    clip = CLIPModel(CLIPConfig(**config["clip_config"])).eval()
    clip.load_state_dict(_sub_state(state, "clip."), strict=False)
    audio_config = ClapAudioConfig(**config["audio_config"])
    audio_model = ClapAudioModel(audio_config).eval()
    audio_model.load_state_dict(_sub_state(state, "clap.audio_model."), strict=True)
    projection = ClapProjectionLayer(audio_config).eval()
    projection.load_state_dict(_sub_state(state, "clap.audio_projection."), strict=True)
    return clip, CLIPTokenizer.from_pretrained(repo), audio_model, projection, state["audio_to_clip.weight"]


def _clipclap_text(repo: str, texts: list[str]) -> torch.Tensor:
    clip, tokenizer, *_ = _clipclap_parts(repo)
    tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return F.normalize(clip.get_text_features(**tokens).pooler_output, dim=-1)


def _clipclap_image(repo: str, images) -> torch.Tensor:
    from transformers import CLIPImageProcessor

    clip = _clipclap_parts(repo)[0]
    with open(os.path.join(repo, "processor_config.json"), encoding="utf-8") as handle:
        settings = json.load(handle)["image_processor"]
    settings = {key: value for key, value in settings.items() if key not in ("auto_map", "image_processor_type")}
    pixels = CLIPImageProcessor(**settings)(images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        return F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)


def _clipclap_audio(repo: str, waveforms) -> torch.Tensor:
    """Stock `ClapFeatureExtractor` (clips under 10 s: no random crop), CLAP tower, projection, map."""
    from transformers import ClapFeatureExtractor

    _, _, audio_model, projection, weight = _clipclap_parts(repo)
    with open(os.path.join(repo, "processor_config.json"), encoding="utf-8") as handle:
        settings = json.load(handle)["feature_extractor"]
    settings = {
        k: v for k, v in settings.items() if k not in ("auto_map", "feature_extractor_type", "chunk_selection")
    }
    extractor = ClapFeatureExtractor(**settings)
    features = extractor(list(waveforms), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    with torch.inference_mode():
        pooled = audio_model(input_features=features["input_features"]).pooler_output
        clap = F.normalize(projection(pooled), dim=-1)
        return F.normalize(clap @ weight.T, dim=-1)


# -------------------------------------------------------------------------------------------------- jina-clip-v2


@lru_cache(maxsize=4)
def _jina_text_model(repo: str):
    """transformers' native `JinaEmbeddingsV3Model` loaded from the repo's text weights (in their saved names)."""
    import tempfile

    from safetensors.torch import save_file
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    config, state = _config(repo), _state_dict(repo)
    text_config = {key: value for key, value in config["text_config"].items() if key != "model_type"}
    with tempfile.TemporaryDirectory() as folder:
        JinaEmbeddingsV3Config(**text_config).save_pretrained(folder)
        save_file(_sub_state(state, "text_model."), os.path.join(folder, "model.safetensors"), {"format": "pt"})
        return JinaEmbeddingsV3Model.from_pretrained(folder, add_pooling_layer=False).eval()


def _jina_text(repo: str, texts: list[str]) -> torch.Tensor:
    """Masked mean pooling over stock `JinaEmbeddingsV3Model` outputs (no text projection: 1024 = embed dim)."""
    from transformers import XLMRobertaTokenizer

    model = _jina_text_model(repo)
    tokenizer = XLMRobertaTokenizer.from_pretrained(repo)
    tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"][..., None].float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def _jina_image(repo: str, images) -> torch.Tensor:
    """Upstream's torchvision transform (PIL bicubic short-side resize, CenterCrop, CLIP mean/std) on RGB images,
    then the plain-torch EVA02 forward of `tests/jina_fixtures.py`."""
    from torchvision import transforms

    from tests.jina_fixtures import reference_image_embeddings

    config, state = _config(repo), _state_dict(repo)
    size = config["vision_config"]["image_size"]
    transform = transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
        ]
    )
    pixels = torch.stack([transform(image.convert("RGB")) for image in images])
    return F.normalize(reference_image_embeddings(state, config, pixels).float(), dim=-1)


REFERENCES: dict[str, Reference] = {
    "longclip": Reference(text=_longclip_text, image=_longclip_image),
    "clipclap": Reference(text=_clipclap_text, image=_clipclap_image, audio=_clipclap_audio, logits=False),
    "jina-clip-v2": Reference(text=_jina_text, image=_jina_image),
}
