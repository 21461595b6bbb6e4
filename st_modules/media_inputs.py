"""Classify and load the inputs of one `encode` call: texts, images and audio in any of their usual forms.

Rules (every error names the item: its position where the caller knows it, and what it is):

- `str`: a `data:image/...` or `data:audio/...` URI (scheme and media type in any case) is media; an http(s) URL
  whose path ends in a media extension is media; a string that looks like a file path (ends in a media extension
  and has a path separator or no spaces) must be an existing regular file, otherwise it is an error rather than
  silently embedded as text; a `file://` URL is an error (pass the path); everything else is text, which must be
  valid Unicode (no lone surrogates).
- `PIL.Image.Image`: image, EXIF orientation applied, every mode converted to 8-bit RGB: alpha (RGBA, LA, PA, P with
  transparency) composited on white, 16-bit modes (`I;16*`, `I`) scaled from [0, 65535], `F` from [0, 1].
- numpy / torch: 3-D is an image (HWC or CHW): uint8, uint16 (scaled from [0, 65535]), float in [0, 1], other
  integers in [0, 255]; 1-D or 2-D is a waveform (2-D is multi-channel, channels on the shorter axis), float or
  integer PCM (scaled to [-1, 1]). bool, complex, object and string arrays are a `TypeError`.
- `{"array": waveform, "sampling_rate": rate}`: audio at that rate (an int in [1 kHz, 768 kHz], not a bool); bare
  waveforms are taken at the model's rate.
- `{"text": ...}`, `{"image": ...}`, `{"audio": ...}`: the value, with the modality stated.
- anything else, `None` included: `TypeError`.

`classify` raises every `TypeError` (before anything is read or fetched); loading raises `ValueError` or
`FileNotFoundError` only. Memory follows `LoadSettings`, not the input: URL and data-URI bytes are capped, image
pixels are checked from the file header before decoding (and the processor's resize is checked before it runs),
the pixels being decoded at once across threads are bounded by a `PixelBudget`, and audio longer than it needs to
be is cut before it is resampled.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import http.client
import io
import math
import os
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
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

try:  # glibc: hand freed memory back to the system (see `_return_free_memory`)
    _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _malloc_trim = None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aac", ".m4a", ".opus", ".aiff", ".aif")
DEFAULT_URL_TIMEOUT = 10.0
DEFAULT_URL_MAX_BYTES = 50 * 1024 * 1024
# Pixels one image may decode to. PIL only warns at 89 Mpx and refuses at 179 Mpx; 40 Mpx covers the photos of
# current phone cameras, and (with the in-flight bound below) keeps the worst case of one load near 0.6 GB.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# Pixels being decoded at once by all loader threads together (one maximal image, or many small ones).
DEFAULT_MAX_DECODE_PIXELS = 40_000_000
# Audio longer than this (or than the model's window, where the feature extractor has a fixed one) is cut to its
# middle before resampling.
DEFAULT_MAX_AUDIO_SECONDS = 300.0
MIN_SAMPLING_RATE = 1_000
MAX_SAMPLING_RATE = 768_000
MAX_REDIRECTS = 5
# Decoded images above this many pixels go through the image processor as soon as they are decoded, inside the
# pixel budget, so that a batch never holds many large decoded images at once.
PROCESS_AT_ONCE_PIXELS = 4_000_000
_READ_CHUNK = 1 << 16
_PREVIEW = 80
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
_EXIF_ORIENTATION = 0x0112


class InputError(ValueError):
    """A bad input, with a message that already names it (a `ValueError`, as callers catch it)."""


@dataclass(frozen=True)
class LoadSettings:
    """Limits and decoding options for media inputs.

    Args:
        url_timeout: Total seconds one http(s) fetch may take (connecting, headers and body, redirects included).
        url_max_bytes: Largest http(s) download or decoded data URI.
        max_image_pixels: Most pixels one image may decode to, and most pixels the image processor's resize may
            produce from it (this bounds extreme aspect ratios, whose short-side resize would be huge).
        max_decode_pixels: Most pixels being decoded at once across all loader threads (one `PixelBudget`).
        reduced_decoding: Decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the size the
            image processor resizes to. A JPEG over `max_image_pixels` is decoded reduced even when this is off.
        max_audio_seconds: Audio longer than this is cut to its middle `max_audio_seconds` before resampling.
    """

    url_timeout: float = DEFAULT_URL_TIMEOUT
    url_max_bytes: int = DEFAULT_URL_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    reduced_decoding: bool = False
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS

    def __post_init__(self) -> None:
        for name in ("url_timeout", "max_audio_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("url_max_bytes", "max_image_pixels", "max_decode_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.reduced_decoding, bool):
            raise ValueError(f"reduced_decoding must be true or false, got {self.reduced_decoding!r}")


DEFAULT_SETTINGS = LoadSettings()


class PixelBudget:
    """Bounds the pixels decoded at once by several threads: each decode holds its pixel count until it is done."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._free = capacity
        self._condition = threading.Condition()

    def __reduce__(self):
        # A copy sent to another process (sentence-transformers' multi-process pool) bounds that process alone.
        return type(self), (self.capacity,)

    @contextlib.contextmanager
    def hold(self, pixels: int):
        # An image larger than the whole budget (allowed by a larger max_image_pixels) waits for all of it.
        pixels = min(max(int(pixels), 1), self.capacity)
        with self._condition:
            self._condition.wait_for(lambda: self._free >= pixels)
            self._free -= pixels
        try:
            yield
        finally:
            with self._condition:
                self._free += pixels
                self._condition.notify_all()


# One budget for callers that do not bring their own (jina's encode_image, direct calls): the bound then holds
# across every model of the process.
DEFAULT_PIXEL_BUDGET = PixelBudget(DEFAULT_MAX_DECODE_PIXELS)


# ------------------------------------------------------------------------------------------------------- naming


def input_label(index: int | None) -> str:
    """How an error names an input: by its position when the caller knows it, else (with `describe`) by content.

    Callers that see the user's whole list (jina's `encode_image`) pass positions; the sentence-transformers
    module passes None, because `encode` sorts and batches inputs without telling modules their positions.
    """
    return "Input" if index is None else f"Input {index}"


def describe(item: Any) -> str:
    """A short, printable description of an input for error messages (never the whole of a long input)."""
    if isinstance(item, str):
        return repr(item if len(item) <= _PREVIEW else item[:_PREVIEW] + "...")
    if Image is not None and isinstance(item, Image.Image):
        return f"PIL image (mode {item.mode}, {item.width}x{item.height})"
    if isinstance(item, dict):
        if "array" in item and "sampling_rate" in item:
            return f"audio dict: {describe(item['array'])} at {item['sampling_rate']!r} Hz"
        return f"dict with keys {sorted(map(str, item))}"
    shape = getattr(item, "shape", None)
    if shape is not None:
        return f"{type(item).__name__} of shape {tuple(shape)} and dtype {getattr(item, 'dtype', '?')}"
    return type(item).__name__


def item_name(index: int | None, item: Any) -> str:
    """`Input 3 ('cat.png')` with a position, `Input 'cat.png'` without one."""
    return f"{input_label(index)} ({describe(item)})" if index is not None else f"Input {describe(item)}"


# ------------------------------------------------------------------------------------------------ classification


def _has_extension(text: str, extensions: tuple[str, ...]) -> bool:
    return text.lower().endswith(extensions)


def _is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://")) and not any(char.isspace() for char in text)


def _is_data_uri(text: str) -> bool:
    return text[:5].lower() == "data:"


def _looks_like_path(text: str) -> bool:
    # A caption such as "a photo of dog.jpg" has spaces and no separator; "/data/cat.png" and "cat.png" are paths.
    if "\n" in text or len(text) > 4096:
        return False
    return os.sep in text or "/" in text or " " not in text.strip()


def classify(item: Any, index: int | None, modalities: tuple[str, ...] | list[str]) -> tuple[str, Any]:
    """Return `(modality, payload)` for one input, or raise an error naming it.

    Reads nothing but file metadata (`os.stat`): a `TypeError` from here always comes before any I/O.
    """
    if isinstance(item, dict):
        return _classify_dict(item, index, modalities)
    if isinstance(item, str):
        modality = _classify_string(item, index, modalities)
    elif Image is not None and isinstance(item, Image.Image):
        _check_image_size(item.width, item.height, index, item)
        modality = "image"
    elif _is_array(item):
        modality = _classify_array(item, index)
    else:
        raise TypeError(
            f"{item_name(index, item)} has unsupported type {type(item).__name__}; expected str, PIL.Image, numpy "
            "array, torch tensor, an audio dict {'array': ..., 'sampling_rate': ...} or {'text'|'image'|'audio': ...}"
        )
    if modality not in modalities:
        raise InputError(f"{item_name(index, item)} is {modality}, but this model embeds only {', '.join(modalities)}")
    return modality, item


def _is_array(item: Any) -> bool:
    return isinstance(item, np.ndarray) or (torch is not None and isinstance(item, torch.Tensor))


def _check_text(text: str, index: int | None) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"{item_name(index, text)} holds a lone surrogate (U+{ord(text[error.start]):04X} at character "
            f"{error.start}); texts must be valid Unicode"
        ) from None


def _classify_string(text: str, index: int | None, modalities) -> str:
    if _is_data_uri(text):
        media_type = text[5:32].lower()
        if media_type.startswith("image/"):
            return "image"
        if media_type.startswith("audio/"):
            return "audio"
    lowered = text[:8].lower()
    if lowered.startswith("file://") and not any(char.isspace() for char in text):
        raise InputError(
            f"{item_name(index, text)} is a file:// URL, which is not fetched; pass the local path "
            f"{urllib.request.url2pathname(urllib.parse.urlsplit(text).path)!r} instead"
        )
    candidates = [
        (modality, extensions)
        for modality, extensions in (("image", IMAGE_EXTENSIONS), ("audio", AUDIO_EXTENSIONS))
        if modality in modalities
    ]
    if _is_url(text):
        bare = text.split("#", 1)[0].split("?", 1)[0]
        for modality, extensions in candidates:
            if _has_extension(bare, extensions):
                _check_url(text, index)
                return modality
        _check_text(text, index)
        return "text"
    for modality, extensions in candidates:
        if _has_extension(text, extensions) and _looks_like_path(text):
            check_file(text, index, modality)
            return modality
    _check_text(text, index)
    return "text"


def _check_url(url: str, index: int | None) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as error:
        raise InputError(f"{item_name(index, url)} is not a valid URL ({error})") from None
    if not parts.hostname:
        raise InputError(f"{item_name(index, url)} is not a valid URL (no host)")


def check_file(path: str, index: int | None, modality: str = "media") -> None:
    """Raise unless `path` is an existing regular file, saying what it is instead."""
    name = item_name(index, path)
    expanded = os.path.expanduser(path)
    try:
        mode = os.stat(expanded).st_mode
    except FileNotFoundError:
        if os.path.islink(expanded):
            raise FileNotFoundError(
                f"{name} is a symbolic link to {os.readlink(expanded)!r}, which does not exist"
            ) from None
        kind = f"an {modality} file" if modality in ("image", "audio") else "a file"
        raise FileNotFoundError(
            f"{name} looks like the path of {kind}, but it does not exist. Pass an existing file, or wrap it as "
            "{'text': ...} to embed the string as text."
        ) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{name} is a loop of symbolic links") from None
        raise InputError(f"{name} cannot be read: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{name} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{name} is not a regular file (a device, pipe or socket), so it is not read")


_REJECTED_KINDS = {
    "b": "bool",
    "c": "complex",
    "O": "object",
    "U": "string",
    "S": "bytes",
    "V": "void",
    "M": "datetime",
}


def _array_kind(array) -> str:
    """numpy's dtype kind letter (`f`, `i`, `u`, `b`, `c`, ...) of an array or tensor."""
    if torch is not None and isinstance(array, torch.Tensor):
        if array.dtype == torch.bool:
            return "b"
        if array.dtype.is_complex:
            return "c"
        return "f" if array.dtype.is_floating_point else ("u" if array.dtype == torch.uint8 else "i")
    return array.dtype.kind


def _classify_array(array, index: int | None) -> str:
    kind = _array_kind(array)
    if kind not in "fiu":
        raise TypeError(
            f"{item_name(index, array)} has {_REJECTED_KINDS.get(kind, kind)} values; images need uint8, uint16 or "
            "float in [0, 1], waveforms float or integer PCM"
        )
    if array.ndim == 3:
        if 0 in tuple(array.shape):
            raise InputError(f"{item_name(index, array)} is an empty image")
        height, width = _image_array_hw(array)
        _check_image_size(width, height, index, array)
        return "image"
    if array.ndim in (1, 2):
        if 0 in tuple(array.shape):
            raise InputError(f"{item_name(index, array)} is an empty waveform")
        _check_waveform_dtype(array, index)
        return "audio"
    raise InputError(
        f"{item_name(index, array)} is a {array.ndim}-D array; expected 3-D for an image (HWC or CHW) or 1-D / 2-D "
        "for a waveform"
    )


def _classify_dict(item: dict, index: int | None, modalities) -> tuple[str, Any]:
    name = item_name(index, item)
    if "array" in item:
        extra = sorted(set(map(str, item)) - {"array", "sampling_rate", "path"})
        if "sampling_rate" not in item or extra:
            raise InputError(f"{name} is an audio dict; it needs exactly 'array' and 'sampling_rate' keys")
        if "audio" not in modalities:
            raise InputError(f"{name} is audio, but this model embeds only {', '.join(modalities)}")
        check_sampling_rate(item["sampling_rate"], index, item)
        array = item["array"]
        if not _is_array(array):
            raise TypeError(f"{name}: 'array' must be a numpy array or torch tensor, got {type(array).__name__}")
        if _classify_array(array, index) != "audio":
            raise InputError(f"{name}: 'array' must be a 1-D or 2-D waveform, got shape {tuple(array.shape)}")
        return "audio", item
    if len(item) == 1:
        ((modality, value),) = item.items()
        if modality in ("text", "image", "audio"):
            if modality not in modalities:
                raise InputError(f"{name} is {modality}, but this model embeds only {', '.join(modalities)}")
            _check_stated(modality, value, index)
            return modality, value
    raise InputError(
        f"{name}: expected {{'array', 'sampling_rate'}} for audio or one of {{'text': ...}}, {{'image': ...}}, "
        "{'audio': ...}"
    )


def _check_stated(modality: str, value: Any, index: int | None) -> None:
    """Check the value of `{modality: value}`: a string there is a source (path, URL, data URI) whatever its name."""
    label = f"{input_label(index)}: {{'{modality}': ...}}"
    if modality == "text":
        if not isinstance(value, str):
            raise TypeError(f"{label} needs a string, got {type(value).__name__}")
        _check_text(value, index)
        return
    if isinstance(value, str):
        if _is_data_uri(value):
            if not value[5:32].lower().startswith(modality + "/"):
                raise InputError(f"{label} holds a data URI that is not data:{modality}/...")
        elif _is_url(value):
            _check_url(value, index)
        else:
            check_file(value, index, modality)
        return
    if modality == "image" and Image is not None and isinstance(value, Image.Image):
        _check_image_size(value.width, value.height, index, value)
        return
    if modality == "audio" and isinstance(value, dict):
        _classify_dict(value, index, ("audio",))
        return
    if _is_array(value):
        if _classify_array(value, index) == modality:
            return
        raise InputError(f"{label} holds an array of shape {tuple(value.shape)}, which is not {modality}")
    expected = (
        "a PIL image, path, URL, data URI or 3-D array"
        if modality == "image"
        else ("a path, URL, data URI, waveform array or {'array', 'sampling_rate'} dict")
    )
    raise TypeError(f"{label} needs {expected}, got {type(value).__name__}")


def check_sampling_rate(rate: Any, index: int | None, item: Any = None, *, label: str | None = None) -> int:
    """An int number of Hz in [MIN_SAMPLING_RATE, MAX_SAMPLING_RATE] (`TypeError` for other types, bools included).

    Errors start with `label`, else with the item's name.
    """
    name = label or (item_name(index, item) if item is not None else input_label(index))
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer)):
        raise TypeError(f"{name}: 'sampling_rate' must be an int number of Hz, got {type(rate).__name__} {rate!r}")
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        raise InputError(
            f"{name}: 'sampling_rate' {int(rate)} Hz is outside [{MIN_SAMPLING_RATE}, {MAX_SAMPLING_RATE}] Hz"
        )
    return int(rate)


# -------------------------------------------------------------------------------------------------------- fetching


class _Deadline:
    """A total time limit for one fetch: when it passes, every socket the fetch opened is shut down.

    Socket timeouts bound each read, not the whole transfer: a server sending one byte per second never trips them.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def register(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock) -> None:
    # The plain socket call also stops a TLS socket's blocked read without touching its TLS state from this thread.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _DeadlineConnection:
    """Mixin for `http.client` connections: connect within the time left and register the socket."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self):
        remaining = self._deadline.remaining()
        if remaining <= 0:
            raise TimeoutError("no time left to connect")
        self.timeout = remaining if self.timeout is None else min(self.timeout, remaining)
        super().connect()
        self._deadline.register(self.sock)


class _DeadlineHTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._connection = functools.partial(_DeadlineHTTPConnection, deadline=deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Loading the system certificates takes tens of milliseconds; one context serves every fetch and thread.
    return ssl.create_default_context()


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._connection = functools.partial(_DeadlineHTTPSConnection, deadline=deadline)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=_tls_context())


class _RefusedRedirect(Exception):
    pass


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise _RefusedRedirect(f"it redirects to {newurl!r}; only http(s) redirects are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _TooLarge(Exception):
    pass


def fetch_url(
    url: str, settings: LoadSettings = DEFAULT_SETTINGS, index: int | None = None, item: Any = None
) -> bytes:
    """Download `url` within `settings.url_timeout` (total) and `settings.url_max_bytes`.

    Every failure (HTTP status, DNS, TLS, resets, malformed responses, redirects to other schemes, redirect loops,
    the deadline) is a `ValueError` naming the item and the URL.
    """
    name = item_name(index, url if item is None else item)
    deadline = _Deadline(settings.url_timeout)
    limit = settings.url_max_bytes
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _RedirectHandler())
    request = urllib.request.Request(url, headers={"User-Agent": "multimodal-hub-adapters"})
    try:
        with opener.open(request, timeout=settings.url_timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.strip().isdigit() and int(declared) > limit:
                raise _TooLarge(f"it declares {int(declared)} bytes, over the {limit}-byte limit (url_max_bytes)")
            chunks, total = [], 0
            while chunk := response.read1(_READ_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise _TooLarge(f"it sends more than the {limit}-byte limit (url_max_bytes)")
                chunks.append(chunk)
            if declared is not None and declared.strip().isdigit() and total < int(declared):
                raise http.client.IncompleteRead(b"".join(chunks), int(declared) - total)
    except urllib.error.HTTPError as error:
        error.close()
        if deadline.expired:
            raise _timeout_error(name, url, settings) from error
        raise InputError(f"{name}: fetching {url} failed with HTTP {error.code} {error.reason}") from error
    except (_TooLarge, _RefusedRedirect) as error:
        raise InputError(f"{name}: fetching {url} failed: {error}") from None
    except MemoryError:
        raise
    except Exception as error:
        if deadline.expired:
            raise _timeout_error(name, url, settings) from error
        reason = getattr(error, "reason", None) or error
        raise InputError(f"{name}: fetching {url} failed: {type(reason).__name__}: {reason}") from error
    finally:
        deadline.cancel()
    if deadline.expired:  # the server went quiet or closed early after the deadline shut the socket
        raise _timeout_error(name, url, settings)
    return b"".join(chunks)


def _timeout_error(name: str, url: str, settings: LoadSettings) -> InputError:
    return InputError(f"{name}: fetching {url} took longer than the {settings.url_timeout:g} s limit (url_timeout)")


def _decode_data_uri(uri: str, name: str, settings: LoadSettings) -> bytes:
    header, separator, data = uri.partition(",")
    if not separator or not header.lower().endswith(";base64") or not data:
        raise InputError(f"{name}: a data URI must be base64 encoded ('data:<type>;base64,...')")
    limit = settings.url_max_bytes
    if len(data) // 4 * 3 > limit + 3:
        raise InputError(f"{name}: the data URI holds about {len(data) // 4 * 3} bytes, over the {limit}-byte limit")
    try:
        payload = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{name}: the data URI is not valid base64") from None
    if len(payload) > limit:
        raise InputError(f"{name}: the data URI holds {len(payload)} bytes, over the {limit}-byte limit")
    return payload


def read_source(source: str, index: int | None, settings: LoadSettings = DEFAULT_SETTINGS, item: Any = None):
    """Bytes for URLs and data URIs, the expanded (checked) path for files."""
    name = item_name(index, source if item is None else item)
    if _is_data_uri(source):
        return _decode_data_uri(source, name, settings)
    if _is_url(source):
        return fetch_url(source, settings, index, item if item is not None else source)
    check_file(source, index)
    return os.path.expanduser(source)


# ----------------------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageTarget:
    """The size an image processor resizes to: a shortest edge, or a fixed height and width."""

    shortest_edge: int | None = None
    height: int | None = None
    width: int | None = None

    @classmethod
    def of(cls, image_processor) -> ImageTarget | None:
        """Read the processor's public `size` setting; None when it does not resize in one of these two ways."""
        if image_processor is None or getattr(image_processor, "do_resize", True) is False:
            return None
        size = getattr(image_processor, "size", None)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return cls(shortest_edge=size)  # an int size is the short side (jina-clip-v2's upstream convention)
        get = size.get if isinstance(size, dict) else functools.partial(getattr, size)
        try:
            edge, height, width = get("shortest_edge", None), get("height", None), get("width", None)
        except TypeError:
            return None
        if isinstance(edge, int) and edge > 0:
            return cls(shortest_edge=edge)
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
            return cls(height=height, width=width)
        return None

    def output_pixels(self) -> int:
        side = self.shortest_edge
        return side * side if side is not None else self.height * self.width

    def resize_limit(self, max_image_pixels: int) -> int:
        """Most pixels the processor's resize may make: `max_image_pixels`, and never less than 4x its output."""
        return max(max_image_pixels, 4 * self.output_pixels())

    def resized_pixels(self, width: int, height: int) -> int:
        if self.shortest_edge is None:
            return self.height * self.width
        scale = self.shortest_edge / min(width, height)
        return math.ceil(width * scale) * math.ceil(height * scale)

    def draft_request(self) -> tuple[int, int]:
        """The smallest (width, height) a reduced decode must still cover."""
        if self.shortest_edge is not None:
            return self.shortest_edge, self.shortest_edge
        return self.width, self.height


def _check_image_size(width: int, height: int, index: int | None, item: Any, limit: int | None = None) -> None:
    name = item_name(index, item)
    if width < 1 or height < 1:
        raise InputError(f"{name} has no pixels ({width}x{height})")
    if limit is not None and width * height > limit:
        raise InputError(
            f"{name} is {width}x{height} = {width * height} pixels, over the {limit}-pixel limit (max_image_pixels)"
        )


def _image_array_hw(array) -> tuple[int, int]:
    shape = tuple(array.shape)
    if shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return shape[1], shape[2]
    return shape[0], shape[1]


def _check_resize(target: ImageTarget | None, width: int, height: int, limit: int, name: str) -> None:
    if target is None:
        return
    resized, bound = target.resized_pixels(width, height), target.resize_limit(limit)
    if resized > bound:
        raise InputError(
            f"{name} is {width}x{height}; the model's resize would make {resized} pixels of it, over the {bound}-"
            "pixel limit (max_image_pixels); its aspect ratio is too extreme"
        )


def _plan_decode(image, target: ImageTarget | None, settings: LoadSettings, name: str) -> None:
    """Check an opened (not yet decoded) image against the limits; set up a reduced JPEG decode where it applies."""
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"{name} has no pixels ({width}x{height})")
    limit = settings.max_image_pixels
    _check_resize(target, width, height, limit, name)
    oversized = width * height > limit
    if image.format == "JPEG" and (settings.reduced_decoding or oversized):
        if target is not None:
            request = target.draft_request()
        elif oversized:  # no known target: the smallest DCT scale that fits the limit
            scale = next((s for s in (2, 4, 8) if width * height / (s * s) <= limit), 8)
            request = (max(1, width // scale), max(1, height // scale))
        else:
            request = None
        if request is not None:
            image.draft("RGB", request)
    width, height = image.size
    if width * height > limit:
        raise InputError(
            f"{name} is {width}x{height} = {width * height} pixels, over the {limit}-pixel limit (max_image_pixels)"
        )


def _to_rgb(image, name: str, owned: bool = False):
    """8-bit RGB with EXIF orientation applied, from any PIL mode (see the module docstring).

    The caller's image is never changed; an `owned` one (decoded here) is rotated in place, and is returned as is
    when it is RGB already, so a large image is not copied for nothing.
    """
    if image.getexif().get(_EXIF_ORIENTATION, 1) not in (None, 1):
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        values = np.asarray(image, dtype=np.float32)  # exact for 16-bit values
        low, high = (0.0, 1.0) if mode == "F" else (0.0, 65535.0)
        if not np.isfinite(values).all():
            raise InputError(f"{name} has NaN or infinite pixel values")
        if values.min() < low or values.max() > high:
            raise InputError(f"{name}: mode {mode} pixel values must lie in [{low:g}, {high:g}]")
        grey = np.round(values * (255.0 if mode == "F" else 255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        # Composite on white: dropping alpha would expose whatever colour the transparent pixels happen to hold.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_image(array, name: str):
    if torch is not None and isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        array = array.float().numpy() if array.dtype in (torch.float16, torch.bfloat16) else array.numpy()
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name}: an image array needs 1, 3 or 4 channels")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{name}: the image array holds NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise InputError(f"{name}: float image arrays must hold values in [0, 1]")
        array = np.round(array * 255)
    elif array.dtype == np.uint16:
        array = np.round(array * (255.0 / 65535.0))
    elif array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise InputError(f"{name}: integer image arrays other than uint16 must hold values in [0, 255]")
    array = np.ascontiguousarray(array.astype(np.uint8))
    if array.shape[-1] == 1:
        array = array[..., 0]
    image = Image.fromarray(array)
    return image.convert("RGB") if image.mode == "RGB" else _to_rgb(image, name)


def load_image(
    item: Any,
    index: int | None,
    settings: LoadSettings = DEFAULT_SETTINGS,
    *,
    target: ImageTarget | None = None,
    budget: PixelBudget | None = None,
    finish: Callable[[Any], Any] | None = None,
):
    """Return an RGB `PIL.Image` (or `finish(image)`) for a PIL image, a path, a URL, a data URI or an array.

    Args:
        item: The input.
        index: Its position in the caller's whole call, or None when the caller does not know it.
        settings: Limits and decoding options.
        target: The size the image processor resizes to (for reduced decoding and the resize bound).
        budget: Pixels decoded at once across threads (default: the process-wide `DEFAULT_PIXEL_BUDGET`).
        finish: Run on the RGB image while its pixels are still counted against the budget.
    """
    if Image is None:
        raise ImportError("Image inputs need pillow: pip install pillow")
    name = item_name(index, item)
    budget = budget or DEFAULT_PIXEL_BUDGET
    finish = finish or (lambda image: image)
    limit = settings.max_image_pixels
    if isinstance(item, Image.Image) or _is_array(item):
        height, width = (item.height, item.width) if isinstance(item, Image.Image) else _image_array_hw(item)
        _check_image_size(width, height, index, item, limit)
        _check_resize(target, width, height, limit, name)
        with budget.hold(width * height):
            try:
                if isinstance(item, Image.Image):
                    item.load()  # decodes a lazily opened image here, inside the budget; a closed one raises
                image = _to_rgb(item, name) if isinstance(item, Image.Image) else _array_to_image(item, name)
            except InputError:
                raise
            except Exception as error:  # a closed image, a mode PIL cannot convert
                raise InputError(f"{name} cannot be read ({type(error).__name__}: {error})") from None
            result = finish(image)
            del image
            if width * height > PROCESS_AT_ONCE_PIXELS:
                _return_free_memory()
            return result
    if not isinstance(item, str):
        raise InputError(f"{name} is not an image")
    source = read_source(item, index, settings)
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: the image file does not exist") from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{name} is over the {limit}-pixel limit (max_image_pixels): {error}") from None
    except Exception as error:
        raise InputError(f"{name} is not a readable image ({type(error).__name__}: {error})") from None
    try:
        _plan_decode(opened, target, settings, name)
    except BaseException:
        opened.close()
        raise
    pixels = opened.width * opened.height
    with budget.hold(pixels):
        try:
            opened.load()
            image = _to_rgb(opened, name, owned=True)
            if image is opened and getattr(opened, "n_frames", 1) > 1:
                image = opened.copy()  # keep no file open for the other frames
        except InputError:
            opened.close()
            raise
        except Exception as error:  # truncated or corrupt data
            opened.close()
            raise InputError(f"{name} is not a readable image ({type(error).__name__}: {error})") from None
        result = finish(image)
        del image
        if result is not opened:  # closing frees the decoded pixels now, not when the garbage collector runs
            opened.close()
        if pixels > PROCESS_AT_ONCE_PIXELS:
            _return_free_memory()
    return result


def process_images(
    items: list[tuple[int | None, Any]],
    image_processor,
    *,
    settings: LoadSettings = DEFAULT_SETTINGS,
    budget: PixelBudget | None = None,
    workers: int = 8,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load `(index, item)` pairs with threads and run the image processor; returns its tensors in input order.

    Images decoded above `PROCESS_AT_ONCE_PIXELS` are processed one by one as soon as they are decoded (the
    processor's output for one image equals its row in a batched call), the rest in one batched call.
    """
    options = dict(options or {})
    target = ImageTarget.of(image_processor)

    def run(images):
        return image_processor(images, return_tensors="pt", **options)

    def finish(image):
        if image.width * image.height <= PROCESS_AT_ONCE_PIXELS:
            return image
        return run([image])

    loaded = load_all(
        lambda item, index: load_image(item, index, settings, target=target, budget=budget, finish=finish),
        items,
        workers,
    )
    small = [position for position, value in enumerate(loaded) if isinstance(value, Image.Image)]
    if len(small) == len(loaded):
        return dict(run(loaded))
    batched = run([loaded[position] for position in small]) if small else None
    rows = {position: row for row, position in enumerate(small)}
    result = {}
    for key in batched if batched is not None else loaded[0]:
        parts = [
            batched[key][rows[position] : rows[position] + 1] if position in rows else value[key]
            for position, value in enumerate(loaded)
        ]
        result[key] = torch.cat(parts) if isinstance(parts[0], torch.Tensor) else parts
    return result


def _return_free_memory() -> None:
    """Release freed heap memory to the system after a large image.

    glibc gives each loader thread its own heap and keeps what PIL frees there (PIL allocates images in 16 MB
    blocks, below glibc's mmap threshold): without this, eight threads that each decoded one 36 Mpx image held
    1.4 GB after the batch and peaked at 3.6 GB, against 0.65 GB with one thread.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


# ------------------------------------------------------------------------------------------------------------ audio

_PCM_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}
_TORCH_PCM = {"torch.int16": np.int16, "torch.int32": np.int32, "torch.int8": np.int8, "torch.uint8": np.uint8}


def _check_waveform_dtype(array, index: int | None) -> None:
    dtype = str(array.dtype)
    if torch is not None and isinstance(array, torch.Tensor):
        ok = array.dtype.is_floating_point or dtype in _TORCH_PCM
    else:
        ok = array.dtype.kind == "f" or array.dtype in _PCM_SCALE or array.dtype == np.uint8
    if not ok:
        raise TypeError(f"{item_name(index, array)}: waveform dtype {dtype} is not float or integer PCM (8/16/32-bit)")


def _time_axis(shape: tuple[int, ...]) -> int:
    # Channels are the short axis: (channels, samples) or (samples, channels).
    return 0 if len(shape) == 1 else (1 if shape[0] <= shape[1] else 0)


def waveform_to_mono(array, name: str = "Input") -> np.ndarray:
    """A finite, non-empty mono float32 waveform from float or integer-PCM data, mono or multi-channel.

    `name` starts every error message (`item_name(index, item)`).
    """
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
        raise InputError(f"{name}: waveform dtype {array.dtype} is not float or integer PCM (8/16/32-bit)")
    if array.ndim == 2:
        array = array.mean(axis=1 - _time_axis(array.shape))
    if array.ndim != 1:
        raise InputError(f"{name}: a waveform must be 1-D or 2-D, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{name}: the waveform is empty")
    if not np.isfinite(array).all():
        raise InputError(f"{name}: the waveform contains NaN or infinite values")
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


def resampled_length(samples: int, source_rate: int, target_rate: int) -> int:
    """How many samples `resample` returns for `samples` input samples (soxr rounds to the nearest)."""
    return samples if source_rate == target_rate else int(samples * target_rate / source_rate + 0.5)


@dataclass(frozen=True)
class _Span:
    """Which source samples to resample so that the middle `keep` output samples come out as from the whole clip."""

    begin: int  # first source sample read
    end: int  # one past the last source sample read
    skip: int  # output samples to drop from the resampled span
    keep: int


def _centre_span(samples: int, source_rate: int, target_rate: int, keep: int | None) -> _Span | None:
    total = resampled_length(samples, source_rate, target_rate)
    if keep is None or total <= keep:
        return None
    start = (total - keep) // 2  # the middle window, as the CLAP extractors' centre crop takes it
    if source_rate == target_rate:
        return _Span(start, start + keep, 0, keep)
    # Begin on a sample where both rates' grids meet, so the span's output samples sit exactly on the whole clip's
    # output grid; the margin covers the resampling filter's edge transient (checked to 2e-6 from 8 to 96 kHz).
    step_source, step_target = (
        source_rate // math.gcd(source_rate, target_rate),
        target_rate // math.gcd(source_rate, target_rate),
    )
    margin = max(256, math.ceil(256 * target_rate / source_rate))
    first = max(0, start - margin) // step_target * step_target
    begin = first // step_target * step_source
    end = min(samples, math.ceil((start + keep + margin) * source_rate / target_rate) + 1)
    return _Span(begin, end, start - first, keep)


def load_audio(
    item: Any,
    index: int | None,
    target_rate: int,
    settings: LoadSettings = DEFAULT_SETTINGS,
    *,
    window: int | None = None,
) -> tuple[np.ndarray, bool]:
    """Return `(waveform, cropped)`: a mono float32 waveform at `target_rate` and whether it was cut.

    Sources: a path, URL, data URI, array, tensor or `{"array", "sampling_rate"}` dict. A clip longer than
    `window` target samples (the model's window) or than `settings.max_audio_seconds` keeps only its middle part,
    and only that part is read (files), downmixed and resampled, so memory follows the window, not the input. The
    kept samples equal those of resampling the whole clip and then cutting its middle (to about 2e-6).
    """
    name = item_name(index, item)
    cap = int(settings.max_audio_seconds * target_rate)
    keep = cap if window is None else min(window, cap)
    if isinstance(item, str):
        return _load_audio_file(read_source(item, index, settings), name, target_rate, keep)
    if isinstance(item, dict):
        rate, array = check_sampling_rate(item["sampling_rate"], index, item), item["array"]
    else:
        rate, array = target_rate, item
    if not _is_array(array):
        array = np.asarray(array)  # a list of samples (the processor door accepts them)
    _check_waveform_dtype(array, index)  # classified inputs passed this already; processor-door inputs were not
    if array.ndim not in (1, 2):
        raise InputError(f"{name}: a waveform must be 1-D or 2-D, got shape {tuple(array.shape)}")
    axis = _time_axis(tuple(array.shape))
    span = _centre_span(int(array.shape[axis]), rate, target_rate, keep)
    if span is not None:
        array = array[span.begin : span.end] if axis == 0 else array[:, span.begin : span.end]
    waveform = resample(waveform_to_mono(array, name), rate, target_rate)
    if span is None:
        return waveform, False
    return np.ascontiguousarray(waveform[span.skip : span.skip + span.keep]), True


def _load_audio_file(source: bytes | str, name: str, target_rate: int, keep: int) -> tuple[np.ndarray, bool]:
    if soundfile is None:
        raise ImportError("Audio files need soundfile: pip install soundfile")
    try:
        with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as handle:
            rate, frames = handle.samplerate, handle.frames
            if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
                raise InputError(f"{name}: the file's sampling rate {rate} Hz is outside the supported range")
            span = _centre_span(frames, rate, target_rate, keep) if frames > 0 else None
            if span is not None:
                handle.seek(span.begin)
            data = handle.read(frames=-1 if span is None else span.end - span.begin, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: the audio file does not exist") from None
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{name} is not a readable audio file ({type(error).__name__}: {error})") from None
    # soundfile returns (samples, channels).
    waveform = resample(waveform_to_mono(data.mean(axis=1), name), rate, target_rate)
    if span is None:
        return waveform, False
    return np.ascontiguousarray(waveform[span.skip : span.skip + span.keep]), True


# --------------------------------------------------------------------------------------------------------- threads


def load_all(loader, items: list[tuple[int | None, Any]], workers: int) -> list:
    """Apply `loader(item, index)` to every `(index, item)`, in order, with threads when it pays off.

    `index` is the item's position for error messages, or None when the caller does not know the user's position.

    Loading runs after every item of the batch has been classified, so it never raises `TypeError` or
    `AttributeError` (sentence-transformers would take those for a signature mismatch and preprocess the batch a
    second time): an unexpected failure becomes a `ValueError` naming the item. The first failure in item order
    is raised; loads not started by then are cancelled.
    """

    def guarded(pair: tuple[int | None, Any]):
        index, item = pair
        try:
            return loader(item, index)
        except (ValueError, FileNotFoundError, ImportError, MemoryError):
            raise
        except Exception as error:
            raise InputError(
                f"{item_name(index, item)} could not be loaded: {type(error).__name__}: {error}"
            ) from error

    if workers <= 1 or len(items) <= 1:
        return [guarded(pair) for pair in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(guarded, items))
