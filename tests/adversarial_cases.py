"""The adversarial input table of `test_adversarial_inputs.py`, and the subprocess that runs it.

Every case feeds one bad or unusual input through a real door (the sentence-transformers module of LongCLIP,
CLIPCLAP or a stock CLAP; jina-clip-v2's `encode_image` / `encode_text`; the CLIPCLAP processor; `media_inputs`
directly) and states the outcome: an embedding equal to an independent reference computed from the canonical
form of the input, or an error of a given type whose message has given fragments. The runner loads the tiny
models once, then measures each case's peak RSS separately (writing 5 to /proc/self/clear_refs resets VmHWM), under
an address-space limit so a regression fails its case instead of swapping the machine.

Run as `python tests/adversarial_cases.py REPOS_JSON OUT_JSON`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gc
import http.server
import io
import json
import os
import re
import resource
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RATE = 48_000
URL_TIMEOUT = 2.0  # written into the tiny repos' multimodal_config.json (and jina's load_settings) for this suite
URL_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_RSS_MB = 1536  # the bound: no case above 1.5 GB over its baseline
IMAGE_SIZE = 224


# --------------------------------------------------------------------------------------------------- the table


@dataclass
class Case:
    """One input and its expected outcome.

    `make(env)` returns the door's input list; `reference(env)` (for successes) returns the canonical inputs whose
    embeddings (computed directly with the processor and the model's `get_*_features`) the door must reproduce, and
    None for a case that only needs to run. `error` is the expected exception class name (matched against the
    raised exception's MRO) and `fragments` must all occur in its message. `prepare(env)` builds large assets
    outside the measured window.
    """

    name: str
    door: str
    make: Callable[[Any], list]
    error: str | None = None
    fragments: tuple[str, ...] = ()
    reference: Callable[[Any], list] | None = None
    prepare: Callable[[Any], None] | None = None
    rss_mb: int = DEFAULT_RSS_MB
    seconds: float = 20.0
    atol: float = 1e-4
    position: int | None = None  # the position the message must name (doors that know positions)


CASES: list[Case] = []


def case(name: str, door: str, make, **kwargs) -> None:
    CASES.append(Case(name, door, make, **kwargs))


def ok(name: str, door: str, make, reference=None, **kwargs) -> None:
    case(name, door, make, reference=reference, **kwargs)


def fails(name: str, door: str, make, error: str, *fragments: str, **kwargs) -> None:
    case(name, door, make, error=error, fragments=fragments, **kwargs)


# ------------------------------------------------------------------------------------------------ input builders


def _pil():
    from PIL import Image

    return Image


def _torch():
    import torch

    return torch


def random_image(seed: int = 0, size=(52, 40), mode: str = "RGB"):
    from PIL import Image

    array = (np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype(np.uint8)
    image = Image.fromarray(array)
    return image if mode == "RGB" else image.convert(mode)


def grey_from(values: np.ndarray):
    from PIL import Image

    return Image.fromarray(values.astype(np.uint8)).convert("RGB")


def composite_on_white(rgba):
    from PIL import Image

    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba.convert("RGBA")).convert(
        "RGB"
    )


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def zero_png(width: int, height: int, channels: int = 3) -> bytes:
    """A valid PNG of black pixels, compressed as it streams (no full-size buffer): a tiny decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    colour = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = bytes(1 + width * channels)
    rows_per_block = max(1, (1 << 22) // len(row))
    parts = []
    for start in range(0, height, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, height - start)))
    parts.append(compressor.flush())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def data_uri(payload: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(payload).decode()


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    return (envelope * (0.5 * np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 3.1 * freq * t))).astype(
        np.float32
    )


def resampled(wave: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(wave, rate, RATE, quality="HQ").astype(np.float32)


def centre(wave: np.ndarray, seconds: float = 10.0) -> np.ndarray:
    keep = int(seconds * RATE)
    if len(wave) <= keep:
        return wave
    start = (len(wave) - keep) // 2
    return wave[start : start + keep]


def wav_bytes(wave: np.ndarray, rate: int, subtype: str = "FLOAT", fmt: str = "WAV") -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, subtype=subtype, format=fmt)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------ texts

A = "fine text"  # a neighbour in every sentence-transformers batch, so the bad item is not alone
ok("text_plain", "image", lambda e: ["A cat on a sofa"], lambda e: ["A cat on a sofa"])
ok("text_empty", "image", lambda e: [""], lambda e: [""])
ok("text_whitespace", "image", lambda e: [" \n\t  "], lambda e: [" \n\t  "])
ok("text_emoji_scripts", "image", lambda e: ["🐱 кошка 猫 قطة"], lambda e: ["🐱 кошка 猫 قطة"])
ok("text_nul_byte", "image", lambda e: ["a\x00b"], lambda e: ["a\x00b"])
ok(
    "text_caption_with_extension",
    "image",
    lambda e: ["photo of dog.jpg on a wall"],
    lambda e: ["photo of dog.jpg on a wall"],
)
ok(
    "text_url_without_extension",
    "image",
    lambda e: ["https://example.com/page"],
    lambda e: ["https://example.com/page"],
)
ok("text_stated_path", "image", lambda e: [{"text": "/data/cat.png"}], lambda e: ["/data/cat.png"])
ok("text_two_megabytes", "image", lambda e: ["a cat " * 350_000], lambda e: ["a cat " * 350_000], seconds=30)
ok(
    "text_data_uri_text_plain",
    "image",
    lambda e: ["data:text/plain;base64,aGk="],
    lambda e: ["data:text/plain;base64,aGk="],
)
fails("text_lone_surrogate", "image", lambda e: [A, "a\ud800b"], "ValueError", "lone surrogate", "U+D800")
fails("text_stated_lone_surrogate", "image", lambda e: [{"text": "x\udfff"}], "ValueError", "lone surrogate")
fails("text_stated_int", "image", lambda e: [{"text": 3}], "TypeError", "needs a string, got int")
fails("text_none", "image", lambda e: [A, None], "TypeError", "NoneType")
fails("text_bytes", "image", lambda e: [A, b"abc"], "TypeError", "bytes")
fails("text_int", "image", lambda e: [A, 7], "TypeError", "int")
fails("text_nested_list", "image", lambda e: [A, ["a", "b"]], "TypeError", "nested")
fails("text_pair_tuple", "image", lambda e: [A, ("a", "b")], "TypeError", "pairs")
fails(
    "text_missing_path",
    "image",
    lambda e: [A, "/data/cat.png"],
    "FileNotFoundError",
    "/data/cat.png",
    "does not exist",
)
fails("text_home_missing_path", "image", lambda e: [A, "~/no-such-dir/cat.png"], "FileNotFoundError", "cat.png")
fails("text_to_audio_only_dict", "image", lambda e: [{"audio": "x.wav"}], "ValueError", "audio", "not supported")
ok("jina_text_plain", "jina_text", lambda e: ["A cat", "Кошка"], lambda e: ["A cat", "Кошка"])
ok("jina_text_empty", "jina_text", lambda e: [""], lambda e: [""])
fails("jina_text_none", "jina_text", lambda e: ["a", None], "TypeError", "sentences[1]", "NoneType")
fails("jina_text_int", "jina_text", lambda e: ["a", "b", 5], "TypeError", "sentences[2]")
fails(
    "jina_text_lone_surrogate_at_40",
    "jina_text",
    lambda e: [f"text {i}" for i in range(40)] + ["bad \ud83d"] + ["tail"],
    "ValueError",
    "Input 40",
    "lone surrogate",
    position=40,
)
fails("jina_text_not_a_list", "jina_text", lambda e: 12, "TypeError", "sentences")


# ------------------------------------------------------------------------------------------------------ paths


def _file(env, name: str, payload: bytes) -> str:
    path = os.path.join(env.root, name)
    with open(path, "wb") as handle:
        handle.write(payload)
    return path


ok("path_png", "image", lambda e: [_file(e, "a.png", png_bytes(random_image(1)))], lambda e: [random_image(1)])
for _fmt, _ext in (("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")):

    def _encoded(env, fmt=_fmt, ext=_ext):
        buffer = io.BytesIO()
        random_image(2).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return [_file(env, f"b.{ext}", buffer.getvalue())]

    def _decoded(env, ext=_ext):
        from PIL import Image

        return [Image.open(os.path.join(env.root, f"b.{ext}")).convert("RGB")]

    ok(f"path_{_ext}", "image", _encoded, _decoded)


def _jpeg_named_png(env):
    buffer = io.BytesIO()
    random_image(3).save(buffer, format="JPEG", quality=95)
    return [_file(env, "really-a-jpeg.png", buffer.getvalue())]


def _decoded_mislabelled(env):
    from PIL import Image

    return [Image.open(os.path.join(env.root, "really-a-jpeg.png")).convert("RGB")]


ok("path_jpeg_named_png", "image", _jpeg_named_png, _decoded_mislabelled)
fails(
    "path_text_named_png",
    "image",
    lambda e: [A, _file(e, "notes.png", b"hello, not an image")],
    "ValueError",
    "notes.png",
    "not a readable image",
)
fails(
    "path_empty_file",
    "image",
    lambda e: [A, _file(e, "empty.png", b"")],
    "ValueError",
    "empty.png",
    "not a readable image",
)
fails(
    "path_truncated_png",
    "image",
    lambda e: [A, _file(e, "cut.png", png_bytes(random_image(4))[:300])],
    "ValueError",
    "cut.png",
    "not a readable image",
)


def _truncated_jpeg(env):
    buffer = io.BytesIO()
    random_image(5, size=(300, 200)).save(buffer, format="JPEG")
    return [A, _file(env, "cut.jpg", buffer.getvalue()[:2000])]


fails("path_truncated_jpeg", "image", _truncated_jpeg, "ValueError", "cut.jpg", "not a readable image")


def _folder(env, name: str = "folder.png"):
    path = os.path.join(env.root, name)
    os.makedirs(path, exist_ok=True)
    return [A, path]


def _loop(env):
    first, second = os.path.join(env.root, "loop1.png"), os.path.join(env.root, "loop2.png")
    for link, target in ((first, second), (second, first)):
        if not os.path.islink(link):
            os.symlink(target, link)
    return [A, first]


def _broken_link(env):
    link = os.path.join(env.root, "broken.png")
    if not os.path.islink(link):
        os.symlink(os.path.join(env.root, "gone.png"), link)
    return [A, link]


def _fifo(env):
    path = os.path.join(env.root, "pipe.png")
    if not os.path.exists(path):
        os.mkfifo(path)
    return [A, path]


fails("path_folder", "image", _folder, "ValueError", "folder.png", "is a folder")
fails("path_symlink_loop", "image", _loop, "ValueError", "loop1.png", "loop of symbolic links")
fails("path_broken_symlink", "image", _broken_link, "FileNotFoundError", "broken.png", "symbolic link", "gone.png")
fails("path_fifo", "image", _fifo, "ValueError", "pipe.png", "not a regular file")
fails(
    "path_file_url",
    "image",
    lambda e: [A, "file://" + _file(e, "real.png", png_bytes(random_image(6)))],
    "ValueError",
    "file:// URL",
    "real.png",
)


def _jina_missing_at_37(env):
    path = _file(env, "ok.png", png_bytes(random_image(7)))
    items = [path] * 64
    items[37] = os.path.join(env.root, "missing-37.png")
    return items


fails(
    "jina_missing_path_37_of_64",
    "jina_image",
    _jina_missing_at_37,
    "FileNotFoundError",
    "Input 37",
    "missing-37.png",
    position=37,
)
fails(
    "jina_bad_type_at_33",
    "jina_image",
    lambda e: [random_image(1)] * 33 + [object()],
    "TypeError",
    "images[33]",
    position=33,
)
fails(
    "jina_text_string_as_image",
    "jina_image",
    lambda e: [random_image(1), "a caption"],
    "ValueError",
    "Input 1",
    "is text",
    position=1,
)
ok(
    "jina_pil_and_path",
    "jina_image",
    lambda e: [random_image(8), _file(e, "j.png", png_bytes(random_image(9)))],
    lambda e: [random_image(8), random_image(9)],
)


# -------------------------------------------------------------------------------------------- memory bounds


def _bomb_assets(env):
    if "bomb30k" not in env.assets:
        env.assets["bomb30k"] = _file(env, "bomb30k.png", zero_png(30_000, 30_000, 1))
        big = zero_png(12_000, 12_000)
        env.assets["big12k"] = [_file(env, f"big12k_{i}.png", big) for i in range(4)]
        env.assets["near"] = _file(env, "near.png", zero_png(6_000, 6_000))
        env.assets["wide"] = _file(env, "wide.png", zero_png(100_000, 2))
        env.assets["tall"] = _file(env, "tall.png", zero_png(2, 100_000))


def _huge_jpeg(env):
    if "jpeg9k" not in env.assets:
        from PIL import Image

        gradient = np.linspace(0, 255, 9_000, dtype=np.float32).astype(np.uint8)
        image = Image.fromarray(np.broadcast_to(gradient[None, :, None], (9_000, 9_000, 3)).copy())
        env.assets["jpeg9k"] = os.path.join(env.root, "huge.jpg")
        image.save(env.assets["jpeg9k"], quality=90)
        del image


def _drafted(env):
    from PIL import Image

    image = Image.open(env.assets["jpeg9k"])
    image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    return [image.convert("RGB")]


def _black(env):
    from PIL import Image

    return [Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))]


fails(
    "bomb_png_30000x30000",
    "image",
    lambda e: [A, e.assets["bomb30k"]],
    "ValueError",
    "bomb30k.png",
    "max_image_pixels",
    prepare=_bomb_assets,
)
fails(
    "png_12000x12000",
    "image",
    lambda e: [A, e.assets["big12k"][0]],
    "ValueError",
    "big12k_0.png",
    "40000000-pixel limit",
    prepare=_bomb_assets,
)
fails(
    "four_12000x12000_pngs",
    "image",
    lambda e: [A, *e.assets["big12k"]],
    "ValueError",
    "max_image_pixels",
    prepare=_bomb_assets,
)
fails(
    "png_2x100000_aspect",
    "image",
    lambda e: [A, e.assets["wide"]],
    "ValueError",
    "wide.png",
    "aspect ratio",
    prepare=_bomb_assets,
)
fails(
    "png_100000x2_aspect",
    "image",
    lambda e: [A, e.assets["tall"]],
    "ValueError",
    "tall.png",
    "aspect ratio",
    prepare=_bomb_assets,
)
ok(
    "eight_36mpx_pngs_in_one_batch",
    "image",
    lambda e: [e.assets["near"]] * 8,
    lambda e: _black(e) * 8,
    prepare=_bomb_assets,
    seconds=60,
)
ok("jpeg_9000x9000_decoded_reduced", "image", lambda e: [e.assets["jpeg9k"]], _drafted, prepare=_huge_jpeg, seconds=30)
ok(
    "jina_jpeg_9000x9000_decoded_reduced",
    "jina_image",
    lambda e: [e.assets["jpeg9k"]],
    None,
    prepare=_huge_jpeg,
    seconds=30,
)


def _big_pil(env):
    from PIL import Image

    env.assets["big_pil"] = Image.new("RGB", (7_000, 7_000))


def _big_array(env):
    env.assets["big_array"] = np.zeros((7_000, 7_000, 3), dtype=np.uint8)


fails(
    "pil_7000x7000_over_limit",
    "image",
    lambda e: [A, e.assets["big_pil"]],
    "ValueError",
    "7000x7000",
    "max_image_pixels",
    prepare=_big_pil,
)
fails(
    "array_7000x7000_over_limit",
    "image",
    lambda e: [A, e.assets["big_array"]],
    "ValueError",
    "7000x7000",
    "max_image_pixels",
    prepare=_big_array,
)
ok(
    "panorama_4000x400",
    "image",
    lambda e: [random_image(10, size=(4000, 400))],
    lambda e: [random_image(10, size=(4000, 400))],
)


# ------------------------------------------------------------------------------------------------- PIL modes


def _modes():
    from PIL import Image

    rng = np.random.RandomState(0)
    grey16 = (rng.rand(40, 52) * 65535).astype(np.uint16)
    floats = rng.rand(40, 52).astype(np.float32)
    rgba = random_image(11).convert("RGBA")
    rgba.putalpha(Image.fromarray((rng.rand(40, 52) * 255).astype(np.uint8)))
    palette = random_image(12).convert("P")
    palette_t = palette.copy()
    palette_t.info["transparency"] = int(np.asarray(palette)[0, 0])
    return grey16, floats, rgba, palette, palette_t


def _i16(e, mode="I;16"):
    from PIL import Image

    image = Image.fromarray(_modes()[0])
    return [image if mode == "I;16" else image.convert(mode)]


ok(
    "mode_I16_png",
    "image",
    lambda e: [_file(e, "grey16.png", png_bytes(_i16(e)[0]))],
    lambda e: [grey_from(np.round(_modes()[0] / 257.0))],
)
ok("mode_I16", "image", _i16, lambda e: [grey_from(np.round(_modes()[0] / 257.0))])
ok("mode_I", "image", lambda e: _i16(e, "I"), lambda e: [grey_from(np.round(_modes()[0] / 257.0))])
ok(
    "mode_F_unit",
    "image",
    lambda e: [_pil().fromarray(_modes()[1])],
    lambda e: [grey_from(np.round(_modes()[1] * 255))],
)
fails("mode_F_0_255", "image", lambda e: [A, _pil().fromarray(_modes()[1] * 255)], "ValueError", "mode F", "[0, 1]")
fails("mode_F_nan", "image", lambda e: [A, _pil().fromarray(np.full((8, 8), np.nan, np.float32))], "ValueError", "NaN")
fails(
    "mode_I_negative",
    "image",
    lambda e: [A, _pil().fromarray(np.full((8, 8), -5, np.int32))],
    "ValueError",
    "mode I",
    "[0, 65535]",
)
ok("mode_RGBA", "image", lambda e: [_modes()[2]], lambda e: [composite_on_white(_modes()[2])])
ok(
    "mode_LA",
    "image",
    lambda e: [_modes()[2].convert("LA")],
    lambda e: [composite_on_white(_modes()[2].convert("LA"))],
)
ok(
    "mode_PA",
    "image",
    lambda e: [_modes()[2].convert("PA")],
    lambda e: [composite_on_white(_modes()[2].convert("PA"))],
)
ok("mode_P", "image", lambda e: [_modes()[3]], lambda e: [_modes()[3].convert("RGB")])
ok("mode_P_transparency", "image", lambda e: [_modes()[4]], lambda e: [composite_on_white(_modes()[4])])
ok("mode_L", "image", lambda e: [random_image(13, mode="L")], lambda e: [random_image(13, mode="L").convert("RGB")])
ok(
    "mode_1",
    "image",
    lambda e: [random_image(14, mode="1")],
    lambda e: [grey_from(np.asarray(random_image(14, mode="1"), np.uint8) * 255)],
)


def _cmyk_reference(e):
    cmyk = np.asarray(random_image(15, mode="CMYK"), np.float64)
    rgb = np.round((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255)
    return [_pil().fromarray(rgb.astype(np.uint8))]


ok("mode_CMYK", "image", lambda e: [random_image(15, mode="CMYK")], _cmyk_reference, atol=2e-3)
ok(
    "mode_YCbCr",
    "image",
    lambda e: [random_image(16, mode="YCbCr")],
    lambda e: [random_image(16, mode="YCbCr").convert("RGB")],
)
ok(
    "mode_HSV",
    "image",
    lambda e: [random_image(17, mode="HSV")],
    lambda e: [random_image(17, mode="HSV").convert("RGB")],
)
fails("mode_zero_size", "image", lambda e: [A, _pil().new("RGB", (0, 0))], "ValueError", "0x0", "no pixels")


def _closed(env):
    image = random_image(18)
    image.close()
    return [A, image]


fails("mode_closed_image", "image", _closed, "ValueError", "PIL image", "closed")


def _exif_rotated(env):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    random_image(19).save(buffer, format="JPEG", quality=95, exif=exif)
    return [_file(env, "rotated.jpg", buffer.getvalue())]


ok(
    "exif_rotated_jpeg",
    "image",
    _exif_rotated,
    lambda e: [_pil().open(os.path.join(e.root, "rotated.jpg")).convert("RGB").transpose(4)],
)


def _animated(env):
    frames = [random_image(20), random_image(21)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return [_file(env, "anim.gif", buffer.getvalue())]


ok(
    "animated_gif_first_frame",
    "image",
    _animated,
    lambda e: [_pil().open(os.path.join(e.root, "anim.gif")).convert("RGB")],
)


# ---------------------------------------------------------------------------------------------------- arrays

_BASE = np.asarray(random_image(22))
ok("array_uint8_hwc", "image", lambda e: [_BASE], lambda e: [grey_or_rgb(_BASE)])
ok("array_uint8_chw", "image", lambda e: [np.moveaxis(_BASE, -1, 0).copy()], lambda e: [grey_or_rgb(_BASE)])
ok("array_uint16", "image", lambda e: [_BASE.astype(np.uint16) * 257], lambda e: [grey_or_rgb(_BASE)])
ok("array_float32_unit", "image", lambda e: [_BASE.astype(np.float32) / 255], lambda e: [grey_or_rgb(_BASE)])
ok("array_float64_unit", "image", lambda e: [_BASE.astype(np.float64) / 255], lambda e: [grey_or_rgb(_BASE)])
ok(
    "array_float16_unit",
    "image",
    lambda e: [(_BASE.astype(np.float32) / 255).astype(np.float16)],
    lambda e: [grey_or_rgb(_BASE)],
    atol=3e-3,
)
ok("array_int64_0_255", "image", lambda e: [_BASE.astype(np.int64)], lambda e: [grey_or_rgb(_BASE)])
ok("array_single_channel", "image", lambda e: [_BASE[..., :1]], lambda e: [grey_from(_BASE[..., 0])])
ok(
    "array_rgba_uint8",
    "image",
    lambda e: [np.dstack([_BASE, np.full(_BASE.shape[:2], 128, np.uint8)])],
    lambda e: [composite_on_white(_pil().fromarray(np.dstack([_BASE, np.full(_BASE.shape[:2], 128, np.uint8)])))],
)
ok(
    "tensor_uint8_chw",
    "image",
    lambda e: [_torch().from_numpy(np.moveaxis(_BASE, -1, 0).copy())],
    lambda e: [grey_or_rgb(_BASE)],
)
ok(
    "tensor_bfloat16",
    "image",
    lambda e: [_torch().from_numpy(np.moveaxis(_BASE, -1, 0).copy()).bfloat16() / 255],
    lambda e: [grey_or_rgb(_BASE)],
    atol=1e-2,  # bfloat16 keeps 8 significant bits: pixels within one level of 255
)
fails("array_bool", "image", lambda e: [A, _BASE > 128], "TypeError", "bool")
fails("array_complex", "image", lambda e: [A, _BASE.astype(np.complex64)], "TypeError", "complex")
fails("array_object", "image", lambda e: [A, _BASE.astype(object)], "TypeError", "object")
fails("array_strings", "image", lambda e: [A, np.full((4, 4, 3), "x")], "TypeError", "string")
fails("tensor_bool", "image", lambda e: [A, _torch().zeros(3, 8, 8, dtype=_torch().bool)], "TypeError", "bool")
fails(
    "tensor_complex", "image", lambda e: [A, _torch().zeros(3, 8, 8, dtype=_torch().complex64)], "TypeError", "complex"
)
fails("array_empty_image", "image", lambda e: [A, np.zeros((0, 0, 3), np.uint8)], "ValueError", "(0, 0, 3)", "empty")
fails("array_nan_image", "image", lambda e: [A, np.full((8, 8, 3), np.nan, np.float32)], "ValueError", "NaN")
fails("array_float_out_of_range", "image", lambda e: [A, np.full((8, 8, 3), 7.0, np.float32)], "ValueError", "[0, 1]")
fails("array_int_out_of_range", "image", lambda e: [A, np.full((8, 8, 3), 300, np.int32)], "ValueError", "[0, 255]")
fails("array_two_channels", "image", lambda e: [A, np.zeros((8, 8, 2), np.uint8)], "ValueError", "channels")
fails("array_4d", "image", lambda e: [A, np.zeros((1, 2, 3, 4), np.float32)], "ValueError", "4-D")
fails(
    "array_waveform_to_image_model", "image", lambda e: [A, tone(1.0, RATE)], "ValueError", "is audio", "embeds only"
)


def grey_or_rgb(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array).convert("RGB")


# ------------------------------------------------------------------------------------------------ data URIs

_PNG = png_bytes(random_image(23))
ok("data_uri_png", "image", lambda e: [data_uri(_PNG)], lambda e: [random_image(23)])
ok(
    "data_uri_upper_case",
    "image",
    lambda e: [data_uri(_PNG).replace("data:image/png;base64", "DATA:IMAGE/PNG;BASE64")],
    lambda e: [random_image(23)],
)
ok(
    "data_uri_mixed_case",
    "image",
    lambda e: [data_uri(_PNG).replace("data:image/png;base64", "Data:Image/PNG;Base64")],
    lambda e: [random_image(23)],
)
ok(
    "jina_data_uri_upper_case",
    "jina_image",
    lambda e: [data_uri(_PNG).replace("data:image/png;base64", "DATA:IMAGE/PNG;BASE64")],
    lambda e: [random_image(23)],
)
fails("data_uri_not_base64", "image", lambda e: [A, "data:image/png,rawbytes"], "ValueError", "base64")
fails("data_uri_bad_base64", "image", lambda e: [A, "data:image/png;base64,@@@@"], "ValueError", "not valid base64")
fails("data_uri_empty", "image", lambda e: [A, "data:image/png;base64,"], "ValueError", "base64")
fails(
    "data_uri_garbage_image", "image", lambda e: [A, data_uri(b"garbage" * 10)], "ValueError", "not a readable image"
)
fails(
    "data_uri_over_cap", "image", lambda e: [A, data_uri(bytes(URL_MAX_BYTES + 10))], "ValueError", "data URI", "limit"
)
fails("data_uri_image_to_audio_model", "clap", lambda e: [A, data_uri(_PNG)], "ValueError", "is image", "embeds only")


# ------------------------------------------------------------------------------------------------------ URLs


def url(env, path: str) -> str:
    return f"{env.base_url}/{path}"


def bad(env, path: str) -> str:
    return f"{env.bad_url}/{path}"


ok("url_png", "image", lambda e: [url(e, "served.png")], lambda e: [random_image(24)])
ok("url_query_string", "image", lambda e: [url(e, "served.png") + "?size=2#frag"], lambda e: [random_image(24)])
ok(
    "url_upper_case_scheme",
    "image",
    lambda e: [url(e, "served.png").replace("http://", "HTTP://")],
    lambda e: [random_image(24)],
)
ok("url_redirect_to_http", "image", lambda e: [bad(e, "redirect-ok.png")], lambda e: [random_image(24)])
ok("jina_url_png", "jina_image", lambda e: [url(e, "served.png")], lambda e: [random_image(24)])
fails("url_404", "image", lambda e: [A, url(e, "missing.png")], "ValueError", "missing.png", "HTTP 404")
fails("url_500", "image", lambda e: [A, bad(e, "status-500.png")], "ValueError", "status-500.png", "HTTP 500")
fails(
    "url_bad_status_line",
    "image",
    lambda e: [A, bad(e, "bad-status.png")],
    "ValueError",
    "bad-status.png",
    "BadStatusLine",
)
fails(
    "url_too_many_headers",
    "image",
    lambda e: [A, bad(e, "many-headers.png")],
    "ValueError",
    "many-headers.png",
    "100 headers",
)
fails(
    "url_header_line_70kb",
    "image",
    lambda e: [A, bad(e, "long-header.png")],
    "ValueError",
    "long-header.png",
    "LineTooLong",
)
fails("url_broken_chunked", "image", lambda e: [A, bad(e, "bad-chunk.png")], "ValueError", "bad-chunk.png", "failed")
fails(
    "url_cut_chunked",
    "image",
    lambda e: [A, bad(e, "short-chunk.png")],
    "ValueError",
    "short-chunk.png",
    "IncompleteRead",
)
fails(
    "url_cut_content_length",
    "image",
    lambda e: [A, bad(e, "short-length.png")],
    "ValueError",
    "short-length.png",
    "IncompleteRead",
)
fails(
    "url_one_byte_per_second",
    "image",
    lambda e: [A, bad(e, "slow-body.png")],
    "ValueError",
    "slow-body.png",
    "url_timeout",
    seconds=URL_TIMEOUT + 2,
)
fails(
    "url_slow_headers",
    "image",
    lambda e: [A, bad(e, "slow-headers.png")],
    "ValueError",
    "slow-headers.png",
    "url_timeout",
    seconds=URL_TIMEOUT + 2,
)
fails("url_connection_reset", "image", lambda e: [A, bad(e, "reset.png")], "ValueError", "reset.png", "failed")
fails(
    "url_redirect_to_file",
    "image",
    lambda e: [A, bad(e, "redirect-file.png")],
    "ValueError",
    "redirect-file.png",
    "file:///",
)
fails(
    "url_redirect_to_ftp",
    "image",
    lambda e: [A, bad(e, "redirect-ftp.png")],
    "ValueError",
    "redirect-ftp.png",
    "only http(s)",
)
fails(
    "url_redirect_loop",
    "image",
    lambda e: [A, bad(e, "redirect-loop.png")],
    "ValueError",
    "redirect-loop.png",
    "HTTP 30",
)
fails(
    "url_declares_10_gb",
    "image",
    lambda e: [A, bad(e, "declared-huge.png")],
    "ValueError",
    "declared-huge.png",
    "byte limit",
)
fails("url_endless_stream", "image", lambda e: [A, bad(e, "endless.png")], "ValueError", "endless.png", "byte limit")
fails(
    "url_empty_body",
    "image",
    lambda e: [A, bad(e, "empty-body.png")],
    "ValueError",
    "empty-body.png",
    "not a readable image",
)
fails("url_html_body", "image", lambda e: [A, bad(e, "html.png")], "ValueError", "html.png", "not a readable image")
fails(
    "url_tls_to_plain_server",
    "image",
    lambda e: [A, url(e, "served.png").replace("http://", "https://")],
    "ValueError",
    "https://",
    "SSL",
)
fails(
    "url_connection_refused",
    "image",
    lambda e: [A, f"http://127.0.0.1:{e.closed_port}/x.png"],
    "ValueError",
    "x.png",
    "refused",
)
fails("url_invalid_ipv6", "image", lambda e: [A, "http://[::1/a.png"], "ValueError", "[::1/a.png", "not a valid URL")
fails(
    "url_invalid_port",
    "image",
    lambda e: [A, "http://127.0.0.1:99999/a.png"],
    "ValueError",
    "99999",
    "not a valid URL",
)
fails("url_no_host", "image", lambda e: [A, "http:///a.png"], "ValueError", "no host")


def _jina_404_at_37(env):
    items = [random_image(25)] * 40
    items[37] = url(env, "gone-37.png")
    return items


fails(
    "jina_url_404_at_37_of_40",
    "jina_image",
    _jina_404_at_37,
    "ValueError",
    "Input 37",
    "gone-37.png",
    "HTTP 404",
    position=37,
)
fails(
    "media_default_50mb_cap",
    "media_fetch",
    lambda e: [bad(e, "endless.png")],
    "ValueError",
    "52428800-byte limit",
    rss_mb=400,
)


# ------------------------------------------------------------------------------------------------------ audio

_WAVE = tone(1.5, RATE)
ok("wave_float32", "audio", lambda e: [_WAVE], lambda e: [_WAVE])
ok("wave_float64", "audio", lambda e: [_WAVE.astype(np.float64)], lambda e: [_WAVE])
ok(
    "wave_int16",
    "audio",
    lambda e: [np.round(_WAVE * 32767).astype(np.int16)],
    lambda e: [np.round(_WAVE * 32767).astype(np.int16).astype(np.float32) / 32768],
)
ok(
    "wave_int32",
    "audio",
    lambda e: [np.round(_WAVE * 2**31 * 0.99).astype(np.int32)],
    lambda e: [(np.round(_WAVE * 2**31 * 0.99).astype(np.int32) / 2**31).astype(np.float32)],
)
ok(
    "wave_int8",
    "audio",
    lambda e: [np.round(_WAVE * 127).astype(np.int8)],
    lambda e: [np.round(_WAVE * 127).astype(np.int8).astype(np.float32) / 128],
)
ok(
    "wave_uint8",
    "audio",
    lambda e: [np.round(_WAVE * 127 + 128).astype(np.uint8)],
    lambda e: [(np.round(_WAVE * 127 + 128).astype(np.float32) - 128) / 128],
)
ok("wave_stereo_channels_first", "audio", lambda e: [np.stack([_WAVE, 0.5 * _WAVE])], lambda e: [0.75 * _WAVE])
ok("wave_stereo_channels_last", "audio", lambda e: [np.stack([_WAVE, 0.5 * _WAVE], axis=1)], lambda e: [0.75 * _WAVE])
ok("wave_torch", "audio", lambda e: [_torch().from_numpy(_WAVE)], lambda e: [_WAVE])
ok(
    "wave_torch_float16",
    "audio",
    lambda e: [_torch().from_numpy(_WAVE).half()],
    lambda e: [_WAVE.astype(np.float16).astype(np.float32)],
)
ok(
    "wave_dict_44k",
    "audio",
    lambda e: [{"array": tone(1.5, 44_100), "sampling_rate": 44_100}],
    lambda e: [resampled(tone(1.5, 44_100), 44_100)],
    atol=1e-3,
)
ok(
    "wave_dict_numpy_int_rate",
    "audio",
    lambda e: [{"array": tone(1.5, 16_000), "sampling_rate": np.int64(16_000)}],
    lambda e: [resampled(tone(1.5, 16_000), 16_000)],
    atol=1e-3,
)
ok("wave_stated_audio", "audio", lambda e: [{"audio": _WAVE}], lambda e: [_WAVE])
ok(
    "wave_datasets_style_dict",
    "audio",
    lambda e: [{"array": _WAVE, "sampling_rate": RATE, "path": "x.wav"}],
    lambda e: [_WAVE],
)
ok(
    "wave_600s_at_8k_cut_before_resampling",
    "audio",
    lambda e: [{"array": tone(600.0, 8_000), "sampling_rate": 8_000}],
    lambda e: [centre(resampled(tone(600.0, 8_000), 8_000))],
    rss_mb=300,
)
ok(
    "wave_10min_at_16k_stock_clap_window",
    "clap",
    lambda e: [{"array": e.assets["long16k"], "sampling_rate": 16_000}],
    lambda e: [e.assets["long16k_reference"]],
    prepare=lambda e: e.assets.update(
        long16k=tone(600.0, 16_000), long16k_reference=centre(resampled(tone(600.0, 16_000), 16_000))
    ),
    rss_mb=300,
    seconds=30,
)
ok("wave_15s_stock_clap_window", "clap", lambda e: [tone(15.0, RATE)], lambda e: [centre(tone(15.0, RATE))])
fails(
    "rate_1_hz",
    "audio",
    lambda e: [A, {"array": np.zeros(48_000, np.float32), "sampling_rate": 1}],
    "ValueError",
    "1 Hz",
    "outside",
)
fails(
    "rate_true", "audio", lambda e: [A, {"array": _WAVE, "sampling_rate": True}], "TypeError", "bool", "sampling_rate"
)
fails("rate_float", "audio", lambda e: [A, {"array": _WAVE, "sampling_rate": 44_100.0}], "TypeError", "float")
fails("rate_string", "audio", lambda e: [A, {"array": _WAVE, "sampling_rate": "48k"}], "TypeError", "str")
fails(
    "rate_huge",
    "audio",
    lambda e: [A, {"array": _WAVE, "sampling_rate": 10**9}],
    "ValueError",
    "1000000000 Hz",
    "outside",
)
fails("rate_negative", "audio", lambda e: [A, {"array": _WAVE, "sampling_rate": -16_000}], "ValueError", "outside")
fails("rate_missing", "audio", lambda e: [A, {"array": _WAVE}], "ValueError", "sampling_rate")
fails(
    "audio_dict_extra_keys",
    "audio",
    lambda e: [A, {"array": _WAVE, "sampling_rate": RATE, "x": 1}],
    "ValueError",
    "'array' and 'sampling_rate'",
)
fails(
    "audio_dict_list_array",
    "audio",
    lambda e: [A, {"array": [0.1, 0.2], "sampling_rate": RATE}],
    "TypeError",
    "'array' must be",
)
fails("wave_empty", "audio", lambda e: [A, np.zeros(0, np.float32)], "ValueError", "empty")
fails("wave_nan", "audio", lambda e: [A, np.full(4800, np.nan, np.float32)], "ValueError", "NaN")
fails("wave_inf", "audio", lambda e: [A, np.array([0.1, np.inf] * 100, np.float32)], "ValueError", "infinite")
fails("wave_bool", "audio", lambda e: [A, np.ones(4800, bool)], "TypeError", "bool")
fails("wave_complex", "audio", lambda e: [A, _WAVE.astype(np.complex64)], "TypeError", "complex")
fails("wave_object", "audio", lambda e: [A, _WAVE.astype(object)], "TypeError", "object")
fails("wave_int64", "audio", lambda e: [A, np.zeros(4800, np.int64)], "TypeError", "int64", "PCM")
fails("stated_image_none", "audio", lambda e: [A, {"image": None}], "TypeError", "{'image': ...}", "NoneType")
fails("stated_image_int", "audio", lambda e: [A, {"image": 5}], "TypeError", "{'image': ...}", "int")
fails("stated_audio_none", "audio", lambda e: [A, {"audio": None}], "TypeError", "{'audio': ...}", "NoneType")
fails(
    "stated_audio_image_array",
    "audio",
    lambda e: [A, {"audio": np.zeros((8, 8, 3), np.float32)}],
    "ValueError",
    "not audio",
)
fails("stated_image_missing_path", "audio", lambda e: [A, {"image": "/nowhere/x"}], "FileNotFoundError", "/nowhere/x")
fails("dict_two_keys", "audio", lambda e: [A, {"text": "a", "image": "b"}], "ValueError", "keys ['image', 'text']")
fails("dict_empty", "audio", lambda e: [A, {}], "ValueError", "keys []")
fails("dict_video", "audio", lambda e: [A, {"video": "x.mp4"}], "ValueError", "video")


def _audio_file(env, name: str, payload: bytes) -> list:
    return [_file(env, name, payload)]


ok(
    "audio_wav_44k_file",
    "audio",
    lambda e: _audio_file(e, "a44.wav", wav_bytes(tone(1.5, 44_100), 44_100)),
    lambda e: [resampled(tone(1.5, 44_100), 44_100)],
    atol=1e-3,
)
ok(
    "audio_flac_stereo_file",
    "audio",
    lambda e: _audio_file(e, "st.flac", wav_bytes(np.stack([_WAVE, _WAVE], 1), RATE, "PCM_24", "FLAC")),
    lambda e: [_WAVE],
    atol=1e-3,
)
ok(
    "audio_data_uri_upper",
    "audio",
    lambda e: [
        data_uri(wav_bytes(_WAVE, RATE), "audio/wav").replace("data:audio/wav;base64", "DATA:AUDIO/WAV;BASE64")
    ],
    lambda e: [_WAVE],
)
ok("audio_url_flac", "audio", lambda e: [url(e, "clip.flac")], lambda e: [e.assets["served_flac"]], atol=1e-3)
ok(
    "audio_20_minute_wav_reads_the_window",
    "audio",
    lambda e: [e.assets["hour_wav"]],
    lambda e: [centre(resampled(tone(1200.0, 8_000), 8_000))],
    prepare=lambda e: e.assets.update(hour_wav=_audio_file(e, "hour.wav", wav_bytes(tone(1200.0, 8_000), 8_000))[0]),
    rss_mb=300,
    seconds=30,
    atol=1e-3,
)
fails(
    "audio_corrupt_file",
    "audio",
    lambda e: [A, *_audio_file(e, "bad.wav", b"RIFF0000WAVEgarbage")],
    "ValueError",
    "bad.wav",
    "not a readable audio file",
)
fails(
    "audio_empty_file",
    "audio",
    lambda e: [A, *_audio_file(e, "empty.wav", b"")],
    "ValueError",
    "empty.wav",
    "not a readable audio file",
)
fails("audio_missing_file", "audio", lambda e: [A, "recordings/missing.wav"], "FileNotFoundError", "missing.wav")
fails("audio_folder", "audio", lambda e: [A, _folder(e, "folder.wav")[1]], "ValueError", "folder.wav", "is a folder")
fails(
    "processor_rate_true",
    "processor",
    lambda e: {"audio": [_WAVE], "sampling_rate": True},
    "TypeError",
    "sampling_rate",
)
fails(
    "processor_rate_huge", "processor", lambda e: {"audio": [_WAVE], "sampling_rate": 10**8}, "ValueError", "outside"
)
ok(
    "processor_long_8k_clip",
    "processor",
    lambda e: {"audio": [tone(60.0, 8_000)], "sampling_rate": 8_000},
    lambda e: [centre(resampled(tone(60.0, 8_000), 8_000))],
)
ok(
    "repeat_calls_no_growth",
    "repeat",
    lambda e: [url(e, "served.png"), random_image(26), "a cat", _WAVE],
    None,
    seconds=60,
)


# ------------------------------------------------------------------------------------------------ tiny repos


def build_longclip_224(out: str) -> str:
    """A tiny random LongCLIP whose processor resizes to 224 px like the real ones (patch 32, 7x7 grid)."""
    from hub_configs.builder import write_repo
    from hub_configs.families import get_family
    from hub_configs.longclip import longclip_build, original_to_hf, random_original_checkpoint

    state_dict = random_original_checkpoint(patch_size=32, image_size=IMAGE_SIZE, seed=3)
    config, hf_state_dict = original_to_hf(state_dict)
    build = longclip_build(config, hf_state_dict, model_name="LongCLIP-tiny-224", random_weights=True)
    return write_repo(get_family("longclip"), build, out)


def build_stock_clap(
    out: str, truncation: str = "rand_trunc", module_config: dict | None = None, prompts: dict | None = None
) -> str:
    """A tiny stock CLAP (text + audio) wrapped by the module: the stock extractor's window rules."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    from hub_configs.builder import copy_code_files, write_sentence_transformers_files
    from hub_configs.clip_tokenizer import build_clip_tokenizer
    from hub_configs.families import ST_MODULE_CODE_FILES

    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=80,
            projection_hidden_size=16,
        ),
        audio_config=dict(
            hidden_size=32,
            patch_embeds_hidden_size=16,
            depths=[1, 1],
            num_attention_heads=[2, 4],
            window_size=8,
            spec_size=256,
            num_mel_bins=64,
            projection_hidden_size=16,
            enable_fusion=truncation == "fusion",
            fusion_type="aff_2d" if truncation == "fusion" else None,
        ),
        projection_dim=16,
    )
    ClapModel(config).save_pretrained(out)
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=RATE, truncation=truncation, padding="repeatpad")
    ClapProcessor(feature_extractor=extractor, tokenizer=build_clip_tokenizer(77)).save_pretrained(out)
    copy_code_files(ST_MODULE_CODE_FILES, out)
    write_sentence_transformers_files(
        out,
        module_config={
            "modalities": ["text", "audio"],
            "normalize": True,
            "max_seq_length": 77,
            **(module_config or {}),
        },
        prompts=prompts or {},
        default_prompt_name=None,
    )
    return out


def build_repos(root: str) -> dict[str, str]:
    """Every tiny repo of the suite."""
    from hub_configs.factory import make_repo

    repos = {
        "longclip": build_longclip_224(os.path.join(root, "longclip")),
        "clap": build_stock_clap(os.path.join(root, "clap")),
        "clipclap": make_repo("clipclap", os.path.join(root, "clipclap"), tiny=True),
        "jina": make_repo("jina-clip-v2", os.path.join(root, "jina"), tiny=True),
    }
    return repos


def with_suite_limits(repos: dict[str, str], root: str) -> dict[str, str]:
    """Copies of the sentence-transformers repos with this suite's URL limits as `multimodal_config.json` keys."""
    import shutil

    copies = dict(repos)
    for name in ("longclip", "clap", "clipclap"):
        copies[name] = shutil.copytree(repos[name], os.path.join(root, name))
        path = os.path.join(copies[name], "multimodal_config.json")
        with open(path) as handle:
            config = json.load(handle)
        config.update(url_timeout=URL_TIMEOUT, url_max_bytes=URL_MAX_BYTES)
        with open(path, "w") as handle:
            json.dump(config, handle, indent=2)
    return copies


# ----------------------------------------------------------------------------------------------------- servers


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _BadHandler(socketserver.BaseRequestHandler):
    """Raw-socket responses that break HTTP in the ways a hostile or broken server does (each bounded in time)."""

    def handle(self):
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            data = self.request.recv(4096)
            if not data:
                return
            request += data
        path = request.split(b" ", 2)[1].decode()
        send = self.request.sendall
        ok_header = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
        try:
            if path == "/bad-status.png":
                send(b"HELLO THERE\r\n\r\n")
            elif path == "/many-headers.png":
                send(ok_header + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n")
            elif path == "/long-header.png":
                send(ok_header + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n")
            elif path == "/bad-chunk.png":
                send(ok_header + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
            elif path == "/short-chunk.png":
                send(ok_header + b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 100)
            elif path == "/short-length.png":
                send(ok_header + b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
            elif path == "/slow-body.png":
                send(ok_header + b"Content-Length: 100\r\n\r\n")
                for _ in range(20):  # bounded: at most 20 s
                    send(b"x")
                    time.sleep(1.0)
            elif path == "/slow-headers.png":
                for byte in (b"HTTP/1.1 200 OK\r\n" + b"X" * 40)[:40]:
                    send(bytes([byte]))
                    time.sleep(0.5)
            elif path == "/reset.png":
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif path == "/redirect-ok.png":
                send(
                    f"HTTP/1.1 302 Found\r\nLocation: {self.server.good_url}/served.png\r\nContent-Length: 0\r\n\r\n".encode()
                )
            elif path == "/redirect-file.png":
                send(b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n")
            elif path == "/redirect-ftp.png":
                send(b"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x.png\r\nContent-Length: 0\r\n\r\n")
            elif path == "/redirect-loop.png":
                send(b"HTTP/1.1 302 Found\r\nLocation: /redirect-loop.png\r\nContent-Length: 0\r\n\r\n")
            elif path == "/status-500.png":
                send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
            elif path == "/declared-huge.png":
                send(ok_header + b"Content-Length: 10000000000\r\n\r\n" + b"x" * 1000)
            elif path == "/endless.png":
                send(ok_header + b"Connection: close\r\n\r\n")
                block = b"\0" * 65536
                for _ in range(2000):  # bounded: 131 MB at most
                    send(block)
            elif path == "/empty-body.png":
                send(ok_header + b"Content-Length: 0\r\n\r\n")
            elif path == "/html.png":
                body = b"<html><body>not found</body></html>"
                send(ok_header + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            else:
                send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass  # the client gave up (deadline, size cap): expected


class _BadServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


# ------------------------------------------------------------------------------------------------------ runner


@dataclass
class Env:
    root: str
    base_url: str = ""
    bad_url: str = ""
    closed_port: int = 0
    assets: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{key}:\s+(\d+)", handle.read()).group(1)) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _trim() -> None:
    gc.collect()  # cheap: the models' objects are frozen out of the collector (see `main`)
    with contextlib.suppress(OSError):  # not glibc: no trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _unit(rows):
    import torch

    rows = torch.as_tensor(np.asarray(rows, dtype=np.float32))
    return torch.nn.functional.normalize(rows, dim=-1)


def reference_embeddings(env: Env, door: str, items: list):
    """Embeddings computed directly (processor + `get_*_features`), not through the door."""
    import torch

    if door in ("jina_image", "jina_text"):
        model, processor = env.models["jina"]
        with torch.inference_mode():
            if door == "jina_image":
                pixels = processor.image_processor(items, return_tensors="pt")["pixel_values"]
                return _unit(model.get_image_features(pixel_values=pixels).pooler_output)
            tokens = processor.tokenizer(
                items, padding=True, truncation=True, max_length=model.config.max_text_length, return_tensors="pt"
            )
            return _unit(model.get_text_features(**tokens).pooler_output)
    module = env.models[{"image": "longclip", "clap": "clap", "audio": "clipclap", "processor": "clipclap"}[door]][0]
    rows = []
    with torch.inference_mode():
        for item in items:
            if isinstance(item, str):
                tokens = module.tokenizer(
                    [item], return_tensors="pt", truncation=True, max_length=module.max_seq_length
                )
                rows.append(module.model.get_text_features(**tokens).pooler_output[0])
            elif isinstance(item, np.ndarray):
                extractor = module.processor.feature_extractor
                features = extractor([item], sampling_rate=RATE, return_tensors="pt")
                output = module.model.get_audio_features(
                    **{k: v for k, v in features.items() if k in ("input_features", "is_longer")}
                )
                rows.append(output.pooler_output[0])
            else:
                pixels = module.processor.image_processor([item], return_tensors="pt")["pixel_values"]
                rows.append(module.model.get_image_features(pixel_values=pixels).pooler_output[0])
    return _unit(torch.stack(rows))


def run_door(env: Env, door: str, inputs):
    import torch

    if door in ("image", "clap", "audio"):
        model = env.models[{"image": "longclip", "clap": "clap", "audio": "clipclap"}[door]]
        return model.encode(inputs, batch_size=32, convert_to_tensor=True)
    if door == "jina_image":
        return torch.as_tensor(env.models["jina"][0].encode_image(inputs))
    if door == "jina_text":
        return torch.as_tensor(env.models["jina"][0].encode_text(inputs))
    if door == "processor":
        module = env.models["clipclap"][0]
        features = module.processor(**inputs, return_tensors="pt")
        with torch.inference_mode():
            return _unit(
                module.model.get_audio_features(
                    input_features=features["input_features"], is_longer=features["is_longer"]
                ).pooler_output
            )
    if door == "media_fetch":
        from st_modules.media_inputs import fetch_url

        return fetch_url(inputs[0])
    if door == "repeat":
        model = env.models["clipclap"]
        first = model.encode(inputs, convert_to_tensor=True)
        for _ in range(3):
            model.encode(inputs)
        _trim()
        settled = _status("VmRSS")
        for _ in range(20):
            again = model.encode(inputs, convert_to_tensor=True)
        _trim()
        growth = (_status("VmRSS") - settled) / 2**20
        torch.testing.assert_close(again, first, atol=1e-6, rtol=0)
        if growth > 40:
            raise AssertionError(f"RSS grew by {growth:.0f} MB over 20 repeated calls")
        return again
    raise KeyError(door)


def run_case(env: Env, item: Case) -> dict:
    record: dict[str, Any] = {"name": item.name}
    setup_started = time.perf_counter()
    try:
        if item.prepare:
            item.prepare(env)
        inputs = item.make(env)
    except Exception as error:  # a broken case, not a broken door
        return {
            **record,
            "outcome": "setup-error",
            "message": f"{type(error).__name__}: {error}\n{traceback.format_exc()}",
        }
    _trim()
    record["setup_seconds"] = time.perf_counter() - setup_started
    before = _status("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    try:
        output = run_door(env, item.door, inputs)
        record.update(outcome="ok", mro=[], message="")
    except BaseException as error:  # noqa: BLE001 - MemoryError and friends are outcomes too
        output = None
        record.update(
            outcome=type(error).__name__, mro=[cls.__name__ for cls in type(error).__mro__], message=str(error)
        )
    record["seconds"] = time.perf_counter() - started
    record["peak_mb"] = (_status("VmHWM") - before) / 2**20
    reference_started = time.perf_counter()
    if output is not None and item.reference is not None and item.door != "media_fetch":
        try:
            expected = reference_embeddings(env, item.door, item.reference(env))
            got = _unit(output.float().cpu().numpy())
            if got.shape != expected.shape:
                raise ValueError(
                    f"the door returned {tuple(got.shape)} embeddings, the reference {tuple(expected.shape)}"
                )
            record["max_diff"] = float((got - expected).abs().max())
        except Exception as error:
            record["reference_error"] = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
    record["reference_seconds"] = time.perf_counter() - reference_started
    del output, inputs
    return record


def _load_models(repos: dict) -> dict:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    from st_modules.media_inputs import LoadSettings

    models = {
        name: SentenceTransformer(repos[name], trust_remote_code=True) for name in ("longclip", "clap", "clipclap")
    }
    jina = AutoModel.from_pretrained(repos["jina"], trust_remote_code=True, dtype="float32").eval()
    jina.load_settings = LoadSettings(url_timeout=URL_TIMEOUT, url_max_bytes=URL_MAX_BYTES)
    models["jina"] = (jina, AutoProcessor.from_pretrained(repos["jina"], trust_remote_code=True))
    return models


def main(repos_json: str, out_json: str, only: str | None = None) -> None:
    import functools

    from PIL import Image

    with open(repos_json) as handle:
        repos = json.load(handle)
    with tempfile.TemporaryDirectory() as root:
        env = Env(root=root)
        www = os.path.join(root, "www")
        os.makedirs(www)
        random_image(24).save(os.path.join(www, "served.png"))
        import soundfile

        soundfile.write(os.path.join(www, "clip.flac"), _WAVE, RATE)
        env.assets["served_flac"] = soundfile.read(os.path.join(www, "clip.flac"), dtype="float32")[0]
        good = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_FileHandler, directory=www))
        good.daemon_threads = True
        badserver = _BadServer(("127.0.0.1", 0), _BadHandler)
        env.base_url = f"http://127.0.0.1:{good.server_address[1]}"
        env.bad_url = f"http://127.0.0.1:{badserver.server_address[1]}"
        badserver.good_url = env.base_url
        with socket.socket() as probe:  # a port with nothing listening
            probe.bind(("127.0.0.1", 0))
            env.closed_port = probe.getsockname()[1]
        for server in (good, badserver):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        loading = time.perf_counter()
        env.models = _load_models(repos)
        print(f"models loaded in {time.perf_counter() - loading:.1f} s", flush=True)
        gc.collect()
        gc.freeze()
        Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS  # untouched: the module must not rely on PIL's own limit
        # Safety net: a regression that allocates gigabytes fails its case with MemoryError instead of swapping.
        _trim()
        headroom = 5 * 2**30
        limit = _status("VmSize") + headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        records = []
        for item in CASES:
            if only and not re.search(only, item.name):
                continue
            records.append(run_case(env, item))
            env.assets.pop("big_pil", None)
            env.assets.pop("big_array", None)
        good.shutdown()
        badserver.shutdown()
    with open(out_json, "w") as handle:
        json.dump(records, handle, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(*sys.argv[1:])
