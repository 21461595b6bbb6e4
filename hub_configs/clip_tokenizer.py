"""Build a real CLIP BPE tokenizer offline from the vocabulary shipped in the open-clip-torch wheel."""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache

# OpenAI CLIP uses the first 48894 merges of the 16e6 vocabulary: 49152 ids = 256 bytes * 2 + merges + 2 specials.
_NUM_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def bpe_vocabulary_path() -> str:
    """Return the path of open_clip's `bpe_simple_vocab_16e6.txt.gz`."""
    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - open-clip-torch is a core dependency
        raise ImportError(
            "The offline CLIP vocabulary comes from open-clip-torch: pip install open-clip-torch"
        ) from error
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"open-clip-torch is installed but {path} is missing")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The OpenAI CLIP vocabulary (49408 ids) and merge list, read from the open_clip file."""
    with gzip.open(bpe_vocabulary_path()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]
    byte_symbols = list(_bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + "</w>" for symbol in byte_symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_tokenizer_files(out_dir: str) -> None:
    """Write `vocab.json` and `merges.txt` of the CLIP BPE into `out_dir`."""
    vocab, merges = clip_vocab_and_merges()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def build_clip_tokenizer(model_max_length: int = 77, pad_token: str = EOS_TOKEN):
    """A `transformers.CLIPTokenizer` with the real CLIP vocabulary, built without the Hub.

    Args:
        model_max_length: Context length the tokenizer truncates and pads to (77 for CLIP, 248 for LongCLIP).
        pad_token: Padding token; OpenAI's CLIP repos pad with the end-of-text token, SDXL's second tokenizer
            with "!".
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    # transformers 5 takes merges as (left, right) pairs; a copy keeps the cached lists untouched.
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(merge.split()) for merge in merges],
        model_max_length=model_max_length,
        pad_token=pad_token,
    )
