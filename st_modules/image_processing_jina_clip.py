"""Image processor of jina-clip-v2 that reproduces the upstream pixels exactly.

Upstream preprocesses PIL images with torchvision on PIL: bicubic resize of the short side to `size` (the long side
becomes `int(size * long / short)`), a centre crop whose offsets are `round((extent - size) / 2)` (Python rounding,
half to even), conversion to RGB *after* resizing, `ToTensor` (divide by 255 in float32) and normalisation with the
OpenAI CLIP mean and std. transformers' `CLIPImageProcessor` floors the crop offset and resizes tensors, which shifts
some non-square images by one pixel and changes grey levels by one; this class does every step the upstream way, on
PIL, for images of any size and mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .media_inputs import load_image

try:
    from PIL import Image
except ImportError:  # pragma: no cover - pillow is a transformers vision dependency
    Image = None

# Upstream `interpolation` names -> PIL filters (what torchvision's InterpolationMode maps to for PIL images).
INTERPOLATIONS = {"bicubic": 3, "bilinear": 2, "nearest": 0}
# Upstream also knows "longest" and "squash"; the published checkpoint uses "shortest", the only mode kept here.
RESIZE_MODES = ("shortest",)
# Per-call overrides upstream's processor accepts (same names as its preprocessor_config.json).
_SETTINGS = ("size", "mean", "std", "resize_mode", "interpolation", "fill_color")


def _check_settings(size: Any, mean: Any, std: Any, resize_mode: Any, interpolation: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"JinaCLIPImageProcessor size must be a positive int (square output side), got {size!r}")
    for name, value in (("mean", mean), ("std", std)):
        if not (
            isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
        ):
            raise ValueError(f"JinaCLIPImageProcessor {name} must be three numbers (R, G, B), got {value!r}")
    if any(v == 0 for v in std):
        raise ValueError(f"JinaCLIPImageProcessor std must not contain 0, got {std!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"JinaCLIPImageProcessor resize_mode must be one of {list(RESIZE_MODES)}, got {resize_mode!r}"
        )
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"JinaCLIPImageProcessor interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}"
        )


def shortest_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to `size`, the long side truncated as torchvision does."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def centre_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """PIL crop box of the centred `size` x `size` window, offsets rounded half to even as torchvision does."""
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def _as_pil(image: Any, index: int):
    if Image is not None and isinstance(image, Image.Image):
        return image
    if isinstance(image, str):
        # URLs, data:image/ URIs and paths, read as upstream's `encode_image` reads them (the card's ONNX snippet
        # passes URLs to the processor directly).
        return load_image(image, index)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(
                f"images[{index}]: arrays must be uint8 of shape (H, W), (H, W, 3|4) or (3|4, H, W), "
                f"got {array.dtype} {tuple(image.shape)}"
            )
        if min(array.shape[:2]) < 1:
            raise ValueError(f"images[{index}] is empty: shape {tuple(image.shape)}")
        return Image.fromarray(np.ascontiguousarray(array))
    raise TypeError(
        f"images[{index}] must be a PIL image, a uint8 array, or a URL / data URI / path string, "
        f"got {type(image).__name__}"
    )


class JinaCLIPImageProcessor(BaseImageProcessor):
    """Upstream jina-clip-v2 image preprocessing (PIL resize and crop), returning `pixel_values` (batch, 3, S, S).

    Args:
        size: output side in pixels (the published model: 512).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        resize_mode: `"shortest"` (resize the short side to `size`, then centre crop).
        interpolation: `"bicubic"` (upstream), `"bilinear"` or `"nearest"`.
        fill_color: kept for upstream config compatibility (only used by modes that pad).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 512,
        mean: list[float] | tuple[float, ...] = OPENAI_CLIP_MEAN,
        std: list[float] | tuple[float, ...] = OPENAI_CLIP_STD,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
        fill_color: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_settings(size, mean, std, resize_mode, interpolation)
        self.size = size
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.resize_mode = resize_mode
        self.interpolation = interpolation
        self.fill_color = fill_color

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def transform_one(self, image, size: int, interpolation: str):
        """Resize, crop and convert one PIL image (in its own mode, as upstream), returning an RGB PIL image."""
        width, height = image.size
        if min(width, height) < 1:
            raise ValueError(f"Cannot preprocess an empty image of size {image.size}")
        target = shortest_side_size(width, height, size)
        if target != (width, height):
            image = image.resize(target, resample=INTERPOLATIONS[interpolation])
        image = image.crop(centre_crop_box(target[0], target[1], size))
        # Upstream converts to RGB after the geometric steps, so palette, alpha and grey images resize in their
        # own mode (PIL resizes palette images with nearest and alpha images premultiplied).
        return image.convert("RGB")

    def preprocess(
        self,
        images: Any,
        return_tensors: str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess one image or a list of images.

        Args:
            images: a PIL image, a uint8 array, a URL / `data:image/` URI / file path, or a list of them (any mode
                and size).
            return_tensors: `"pt"`, `"np"`, or None (one numpy batch, as upstream returns and ONNX Runtime takes).
            device: move the resulting tensor there.
            **kwargs: per-call overrides of `size`, `mean`, `std`, `resize_mode`, `interpolation`, `fill_color`;
                transformers' generic image kwargs are accepted when unset (`None`).

        Returns:
            `BatchFeature` with `pixel_values` of shape (batch, 3, size, size), float32.
        """
        settings = {name: getattr(self, name) for name in _SETTINGS}
        for name in list(kwargs):
            if name in _SETTINGS:
                value = kwargs.pop(name)
                if value is not None:
                    settings[name] = value
        unknown = sorted(name for name, value in kwargs.items() if value is not None)
        if unknown:
            raise ValueError(
                f"JinaCLIPImageProcessor got unsupported arguments {unknown}; it accepts {list(_SETTINGS)}, "
                "return_tensors and device"
            )
        _check_settings(
            settings["size"], settings["mean"], settings["std"], settings["resize_mode"], settings["interpolation"]
        )
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("JinaCLIPImageProcessor needs at least one image")
        size = settings["size"]
        batch = np.empty((len(items), size, size, 3), dtype=np.uint8)
        for index, item in enumerate(items):
            batch[index] = np.asarray(self.transform_one(_as_pil(item, index), size, settings["interpolation"]))
        # ToTensor then Normalize, in float32 and in that order, so values match upstream bit for bit.
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(settings["mean"], dtype=torch.float32)[:, None, None]
        std = torch.tensor(settings["std"], dtype=torch.float32)[:, None, None]
        pixels = pixels.sub_(mean).div_(std).contiguous()
        if device is not None:
            pixels = pixels.to(device)
        data = {"pixel_values": pixels if return_tensors == "pt" else pixels.cpu().numpy()}
        return BatchFeature(data=data)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["size"] = self.size
        return output


__all__ = ["JinaCLIPImageProcessor", "centre_crop_box", "shortest_side_size"]
