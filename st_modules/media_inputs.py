"""Classify and load the inputs of one `encode` call: texts, images and audio in any of their usual forms.

Rules (each raises a `TypeError`/`ValueError`/`FileNotFoundError` that names the item's index):

- `str`: a `data:image/...` or `data:audio/...` URI is media; an http(s) URL whose path ends in a media extension is
  media; a string that looks like a file path (ends in a media extension and has a path separator or no spaces)
  must exist, otherwise it is an error rather than silently embedded as text; everything else is text.
- `PIL.Image.Image`: image (EXIF orientation applied, RGBA / L / P / CMYK converted to RGB).
- numpy / torch: 3-D is an image (HWC or CHW, uint8 or float in [0, 1]); 1-D or 2-D is a waveform (2-D is
  multi-channel, channels first or last), integer PCM is scaled to [-1, 1].
- `{"array": waveform, "sampling_rate": rate}`: audio at that rate; bare waveforms are taken at the model's rate.
- `{"text": ...}`, `{"image": ...}`, `{"audio": ...}`: the value, with the modality stated.
- anything else, `None` included: `TypeError`.
"""

from __future__ import annotations

import base64
import io
import os
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - torch is always present next to transformers models
    torch = None

try:
    from PIL import Image, ImageOps
except ImportError:  # pragma: no cover
    Image = None
    ImageOps = None

try:
    import soundfile
except ImportError:  # pragma: no cover - only needed for audio files
    soundfile = None

try:
    import soxr
except ImportError:  # pragma: no cover - falls back to torchaudio
    soxr = None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aac", ".m4a", ".opus", ".aiff", ".aif")
DEFAULT_URL_TIMEOUT = 10.0
DEFAULT_URL_MAX_BYTES = 50 * 1024 * 1024
_PREVIEW = 80


@dataclass(frozen=True)
class FetchSettings:
    """Limits for http(s) inputs."""

    timeout: float = DEFAULT_URL_TIMEOUT
    max_bytes: int = DEFAULT_URL_MAX_BYTES


def input_label(index: int | None) -> str:
    """How an error names an input: by its position when the caller knows it, else (with `describe`) by content.

    Callers that see the user's whole list (jina's `encode_image`) pass positions; the sentence-transformers
    module passes None, because `encode` sorts and batches inputs without telling modules their positions.
    """
    return "Input" if index is None else f"Input {index}"


def describe(item: Any) -> str:
    """A short, printable description of an input for error messages."""
    if isinstance(item, str):
        return repr(item if len(item) <= _PREVIEW else item[:_PREVIEW] + "...")
    shape = getattr(item, "shape", None)
    if shape is not None:
        return f"{type(item).__name__} of shape {tuple(shape)}"
    return type(item).__name__


def _has_extension(text: str, extensions: tuple[str, ...]) -> bool:
    return text.lower().endswith(extensions)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://")) and not any(char.isspace() for char in text)


def _looks_like_path(text: str) -> bool:
    # A caption such as "a photo of dog.jpg" has spaces and no separator; "/data/cat.png" and "cat.png" are paths.
    if "\n" in text or len(text) > 4096:
        return False
    return os.sep in text or "/" in text or " " not in text.strip()


def classify(item: Any, index: int, modalities: tuple[str, ...] | list[str]) -> tuple[str, Any]:
    """Return `(modality, payload)` for one input, or raise an error naming `index`."""
    if isinstance(item, dict):
        return _classify_dict(item, index, modalities)
    if isinstance(item, str):
        modality = _classify_string(item, index, modalities)
    elif Image is not None and isinstance(item, Image.Image):
        modality = "image"
    elif isinstance(item, np.ndarray) or (torch is not None and isinstance(item, torch.Tensor)):
        modality = _classify_array(item, index)
    else:
        raise TypeError(
            f"{input_label(index)} has unsupported type {type(item).__name__}; expected str, PIL.Image, numpy array, "
            "torch tensor or an audio dict {'array': ..., 'sampling_rate': ...}"
        )
    if modality not in modalities:
        raise ValueError(
            f"{input_label(index)} ({describe(item)}) is {modality}, but this model embeds only {', '.join(modalities)}"
        )
    return modality, item


def _classify_string(text: str, index: int, modalities) -> str:
    lowered = text[:32].lower()
    if lowered.startswith("data:image/"):
        return "image"
    if lowered.startswith("data:audio/"):
        return "audio"
    candidates = [
        (modality, extensions)
        for modality, extensions in (("image", IMAGE_EXTENSIONS), ("audio", AUDIO_EXTENSIONS))
        if modality in modalities
    ]
    if _is_url(text):
        path = urllib.parse.urlparse(text).path
        for modality, extensions in candidates:
            if _has_extension(path, extensions):
                return modality
        return "text"
    for modality, extensions in candidates:
        if _has_extension(text, extensions) and _looks_like_path(text):
            if not os.path.isfile(os.path.expanduser(text)):
                raise FileNotFoundError(
                    f"{input_label(index)} looks like the path of an {modality} file, but {describe(text)} does not exist. "
                    f"Pass an existing file, or wrap it as {{'text': ...}} to embed the string as text."
                )
            return modality
    return "text"


def _classify_array(array, index: int) -> str:
    if array.ndim == 3:
        return "image"
    if array.ndim in (1, 2):
        return "audio"
    raise ValueError(
        f"{input_label(index)} is a {array.ndim}-D array of shape {tuple(array.shape)}; expected 3-D for an image "
        "(HWC or CHW) or 1-D / 2-D for a waveform"
    )


def _classify_dict(item: dict, index: int, modalities) -> tuple[str, Any]:
    if "array" in item:
        if "sampling_rate" not in item:
            raise ValueError(f"{input_label(index)} is an audio dict without 'sampling_rate' (keys: {sorted(item)})")
        if "audio" not in modalities:
            raise ValueError(f"{input_label(index)} is audio, but this model embeds only {', '.join(modalities)}")
        return "audio", item
    if len(item) == 1:
        ((modality, value),) = item.items()
        if modality in ("text", "image", "audio"):
            if modality not in modalities:
                raise ValueError(
                    f"{input_label(index)} is {modality}, but this model embeds only {', '.join(modalities)}"
                )
            if modality == "text" and not isinstance(value, str):
                raise TypeError(f"{input_label(index)}: {{'text': ...}} needs a string, got {type(value).__name__}")
            return modality, value
    raise ValueError(
        f"{input_label(index)} is a dict with keys {sorted(map(str, item))}; expected {{'array', 'sampling_rate'}} for "
        "audio or one of {'text': ...}, {'image': ...}, {'audio': ...}"
    )


def fetch_url(url: str, settings: FetchSettings, index: int) -> bytes:
    """Download `url` within the timeout and size cap; errors name the URL and the HTTP status."""
    request = urllib.request.Request(url, headers={"User-Agent": "multimodal-hub-adapters"})
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > settings.max_bytes:
                raise ValueError(
                    f"{input_label(index)}: {url} is {int(declared)} bytes, over the {settings.max_bytes}-byte limit"
                )
            payload = response.read(settings.max_bytes + 1)
    except urllib.error.HTTPError as error:
        raise ValueError(
            f"{input_label(index)}: fetching {url} failed with HTTP {error.code} {error.reason}"
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ValueError(f"{input_label(index)}: fetching {url} failed: {reason}") from error
    if len(payload) > settings.max_bytes:
        raise ValueError(f"{input_label(index)}: {url} is larger than the {settings.max_bytes}-byte limit")
    return payload


def _decode_data_uri(uri: str, index: int) -> bytes:
    header, _, data = uri.partition(",")
    if not header.endswith(";base64") or not data:
        raise ValueError(
            f"{input_label(index)}: data URI {describe(uri)} must be base64 encoded ('data:<type>;base64,...')"
        )
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as error:
        raise ValueError(f"{input_label(index)}: data URI {describe(uri)} is not valid base64") from error


def _read_source(source: str, index: int, settings: FetchSettings) -> bytes | str:
    """Bytes for URLs and data URIs, the expanded path for files."""
    if source.startswith("data:"):
        return _decode_data_uri(source, index)
    if _is_url(source):
        return fetch_url(source, settings, index)
    return os.path.expanduser(source)


# ----------------------------------------------------------------------------------------------------------- images


def _to_rgb(image, index: int):
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: dropping alpha would expose whatever colour the transparent pixels happen to hold.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_image(array, index: int):
    if torch is not None and isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        array = array.float().numpy() if array.dtype in (torch.float16, torch.bfloat16) else array.numpy()
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{input_label(index)}: image array of shape {array.shape} needs 1, 3 or 4 channels")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{input_label(index)}: image array contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"{input_label(index)}: float image arrays must hold values in [0, 1]")
        array = np.round(array * 255)
    elif array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{input_label(index)}: integer image arrays must hold values in [0, 255]")
    array = array.astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def load_image(item: Any, index: int, settings: FetchSettings = FetchSettings()):
    """Return an RGB `PIL.Image` for a PIL image, a path, a URL, a data URI or an array."""
    if Image is None:
        raise ImportError("Image inputs need pillow: pip install pillow")
    if isinstance(item, Image.Image):
        return _to_rgb(item, index)
    if isinstance(item, str):
        source = _read_source(item, index, settings)
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            image.load()
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{input_label(index)}: image file {describe(item)} does not exist") from error
        except Exception as error:
            raise ValueError(f"{input_label(index)}: {describe(item)} is not a readable image ({error})") from error
        return _to_rgb(image, index)
    return _to_rgb(_array_to_image(item, index), index)


# ------------------------------------------------------------------------------------------------------------ audio

_PCM_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}


def waveform_to_mono(array, index: int) -> np.ndarray:
    """A finite, non-empty mono float32 waveform from float or integer-PCM data, mono or multi-channel."""
    if torch is not None and isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        array = array.float().numpy() if array.dtype in (torch.float16, torch.bfloat16) else array.numpy()
    array = np.asarray(array)
    if array.dtype == np.uint8:
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif array.dtype in _PCM_SCALE:
        array = array.astype(np.float32) / _PCM_SCALE[array.dtype]
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    else:
        raise TypeError(f"{input_label(index)}: waveform dtype {array.dtype} is not float or integer PCM")
    if array.ndim == 2:
        # Channels are the short axis: (channels, samples) or (samples, channels).
        array = array.mean(axis=0 if array.shape[0] <= array.shape[1] else 1)
    if array.ndim != 1:
        raise ValueError(f"{input_label(index)}: waveform must be 1-D or 2-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{input_label(index)}: waveform is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{input_label(index)}: waveform contains NaN or infinite values")
    return np.ascontiguousarray(array)


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono float32 waveform (soxr, else torchaudio)."""
    if source_rate == target_rate:
        return waveform
    if soxr is not None:
        return soxr.resample(waveform, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    try:
        import torchaudio.functional as audio_functional
    except ImportError as error:  # pragma: no cover
        raise ImportError("Resampling audio needs soxr or torchaudio: pip install soxr") from error
    return audio_functional.resample(torch.from_numpy(waveform), source_rate, target_rate).numpy()


def _decode_audio_file(source: bytes | str, item: Any, index: int) -> tuple[np.ndarray, int]:
    if soundfile is None:
        raise ImportError("Audio files need soundfile: pip install soundfile")
    if isinstance(source, str) and not os.path.isfile(source):
        raise FileNotFoundError(f"{input_label(index)}: audio file {describe(item)} does not exist")
    try:
        data, rate = soundfile.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{input_label(index)}: audio file {describe(item)} does not exist") from error
    except Exception as error:
        raise ValueError(f"{input_label(index)}: {describe(item)} is not a readable audio file ({error})") from error
    # soundfile returns (samples, channels) for multi-channel files.
    return (data.mean(axis=1) if data.ndim == 2 else data), rate


def load_audio(item: Any, index: int, target_rate: int, settings: FetchSettings = FetchSettings()) -> np.ndarray:
    """Return a mono float32 waveform at `target_rate` from a path, URL, data URI, array, tensor or audio dict."""
    if isinstance(item, dict):
        rate = item["sampling_rate"]
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"{input_label(index)}: 'sampling_rate' must be a positive integer, got {rate!r}")
        waveform = waveform_to_mono(item["array"], index)
    elif isinstance(item, str):
        data, rate = _decode_audio_file(_read_source(item, index, settings), item, index)
        waveform = waveform_to_mono(data, index)
    else:
        waveform, rate = waveform_to_mono(item, index), target_rate
    return resample(waveform, int(rate), target_rate)


def load_all(loader, items: list[tuple[int | None, Any]], workers: int) -> list:
    """Apply `loader(item, index)` to every `(index, item)`, in order, with threads when it pays off.

    `index` is the item's position for error messages, or None when the caller does not know the user's position.

    Loading runs after every item of the batch has been classified, so it never raises `TypeError` or
    `AttributeError` (sentence-transformers would take those for a signature mismatch and preprocess the batch a
    second time): an unexpected failure becomes a `ValueError` naming the item.
    """

    def guarded(pair: tuple[int | None, Any]):
        index, item = pair
        try:
            return loader(item, index)
        except (ValueError, FileNotFoundError, ImportError, MemoryError):
            raise
        except Exception as error:
            raise ValueError(f"{input_label(index)} ({describe(item)}) could not be loaded: {error}") from error

    if workers <= 1 or len(items) <= 1:
        return [guarded(pair) for pair in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(guarded, items))
