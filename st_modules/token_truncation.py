"""Text truncation: keeping a sequence's closing special token as CLIP's original tokenizer does, and a fast exact
tokenizer for texts longer than the limit (`FastTruncatingTokenizer`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def truncate_keeping_end_token(
    token_ids: list[list[int]], max_length: int, special_ids: set[int] | frozenset[int]
) -> tuple[list[list[int]], int]:
    """Cut every sequence to `max_length`, keeping its final token when that token is special (EOS/EOT).

    Pooling of CLIP-like models reads the end token, so a plain cut would pool a content token instead.

    Returns:
        The truncated sequences and how many were cut.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    truncated = 0
    result = []
    for ids in token_ids:
        if len(ids) > max_length:
            truncated += 1
            ids = ids[: max_length - 1] + ids[-1:] if ids[-1] in special_ids else ids[:max_length]
        result.append(ids)
    return result, truncated


def warn_truncated(count: int, total: int, max_length: int, warned: set[str], key: str = "text") -> None:
    """Warn once per `warned` set that texts were cut to `max_length` tokens."""
    if count and key not in warned:
        warned.add(key)
        logger.warning(
            "%d of %d texts are longer than %d tokens and were truncated (the end token is kept last). "
            "This warning is shown once.",
            count,
            total,
            max_length,
        )


def pad_to_tensors(token_ids: list[list[int]], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` padded to the longest sequence.

    Equivalent to `tokenizer.pad(..., padding=True, return_tensors="pt")` for plain id lists, without its per-item
    Python bookkeeping, which costs a quarter of the text preprocessing time on long captions.
    """
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    width = int(lengths.max()) if len(token_ids) else 0
    input_ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span] = ids
        attention_mask[row, span] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}


# ----------------------------------------------------------------------------------------- fast truncating tokenizer

# Characters of a long text tokenized on the first try, per token needed. English CLIP captions take 4-5 characters a
# token; a text that needs more (long words, whitespace runs) is tokenized in full on the second try.
CHARS_PER_TOKEN_BOUND = 6
# The pre-tokenizer of CLIP's tokenizer (as transformers' `CLIPTokenizer` and OpenAI's tokenizer.json build it). Every
# piece this regex splits off is one match of the GPT-2 regex that the following ByteLevel step applies again, except
# the two literal special-token alternatives: texts containing `SPECIAL_TOKEN_MARK` keep the original pre-tokenizer.
_CLIP_SPLIT_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_CLIP_SPECIAL_MARK = "<|"
# CLIP's normalizer; on ASCII text it is lowercasing plus collapsing whitespace runs, which Python does faster.
_CLIP_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "NFC"},
        {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
        {"type": "Lowercase"},
    ],
}
# Probes that fix where the special tokens go around a text and check the copy against the tokenizer itself.
_PROBES = ("a", "Hello, world! 123", "  two  spaces\tand\na tab ", "naïve café — 東京 🙂")


def _backend_copy(serialized: str, split_special: bool, *, pre_tokenizer: dict | None = None, normalizer: bool = True):
    """A `tokenizers.Tokenizer` rebuilt from `serialized`, without truncation or padding, optionally with another
    pre-tokenizer (given as its JSON) or without its normalizer. Only the small component is serialized anew: the
    model's vocabulary is parsed once per copy, never re-encoded as JSON."""
    import json

    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(serialized)
    copy.no_truncation()
    copy.no_padding()
    copy.encode_special_tokens = split_special
    if pre_tokenizer is not None:
        holder = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
        }
        copy.pre_tokenizer = Tokenizer.from_str(json.dumps(holder)).pre_tokenizer
    if not normalizer:
        copy.normalizer = None
    return copy


class FastTruncatingTokenizer:
    """Token ids identical to `tokenizer(texts, truncation=True, max_length=n)`, computed faster for long texts.

    Three shortcuts, each exact:

    1. **Only the needed prefix of a long text is tokenized.** Tokenizers work word by word (one pre-token at a time),
       so the tokens of a prefix cut at a space are the full text's first tokens, except near the cut. The prefix's
       last two words are not trusted (whatever a cut could disturb, such as a word, a combining sequence or a
       special-token string running into it, lies within them; the tests show this holds even for cuts at arbitrary
       characters); when the tokens before them outnumber what the limit keeps, the first tokens are the answer and
       the text is known to be truncated. Otherwise (or with no space before the bound) the whole text is tokenized.
       Words are found from the ids alone: the BPE end-of-word suffix (`</w>`, CLIP) or the Metaspace marker that
       starts every word (`▁`, XLM-R); a mark missed (an unknown or added token) only merges words, which drops more
       tokens, never too few.
    2. **CLIP's ByteLevel step skips its regex**, which re-splits pieces that CLIP's own split already produced.
    3. **CLIP's normalizer runs in Python on ASCII texts** (lowercasing and whitespace collapsing; the whitespace set
       is read from the tokenizer's own normalizer at build time).

    Texts that could behave differently under 2 or 3 (special-token strings, added tokens after lowercasing) take the
    unchanged tokenizer. Offsets are not tracked (`encode_batch_fast`). Build with `FastTruncatingTokenizer.build`,
    which returns None for tokenizers it cannot show these shortcuts exact for (no Rust backend, left truncation,
    added tokens containing spaces, a post-processor that does not wrap every text in the same special tokens).
    `chars_per_token`, `skip_regex` and `python_normalizer` exist for tests and benchmarks (a small bound puts cuts
    everywhere; the flags measure each shortcut); the output never depends on them.
    """

    def __init__(
        self,
        tokenizer,
        *,
        chars_per_token: int = CHARS_PER_TOKEN_BOUND,
        skip_regex: bool = True,
        python_normalizer: bool = True,
    ) -> None:
        import json

        self._chars_per_token = chars_per_token
        serialized = tokenizer.backend_tokenizer.to_str()
        backend_json = json.loads(serialized)
        split_special = bool(getattr(tokenizer, "split_special_tokens", False))
        self._exact = _backend_copy(serialized, split_special)
        # Lowercased once: the ASCII route compares them with each lowercased text.
        self._added = tuple(token.content.lower() for token in self._exact.get_added_tokens_decoder().values())

        # The special tokens the post-processor puts around a single text, read from probes and checked against the
        # tokenizer's own call.
        head = tail = None
        for probe in _PROBES:
            with_special = self._exact.encode(probe, add_special_tokens=True).ids
            content = self._exact.encode(probe, add_special_tokens=False).ids
            if with_special != tokenizer([probe], truncation=False, padding=False)["input_ids"][0]:
                raise ValueError("the backend copy does not reproduce the tokenizer")
            extra = len(with_special) - len(content)
            starts = [i for i in range(extra + 1) if with_special[i : i + len(content)] == content]
            if extra < 0 or not starts:
                raise ValueError("the post-processor does not wrap the text in fixed special tokens")
            start = starts[0]
            found = (tuple(with_special[:start]), tuple(with_special[start + len(content) :]))
            if head is None:
                head, tail = found
            elif (head, tail) != found:
                raise ValueError("the special tokens around a text depend on the text")
        self._head, self._tail = list(head), list(tail)

        self._word_marks, self._marks_end_words = self._word_boundary_marks(backend_json)

        # 2: the ByteLevel step without its regex, for the exact CLIP pre-tokenizer only.
        self._fast = self._exact
        self._regex_mark = None
        pre_tokenizer = backend_json.get("pre_tokenizer")
        if skip_regex and self._is_clip_pre_tokenizer(pre_tokenizer):
            split, byte_level = pre_tokenizer["pretokenizers"]
            without_regex = {**pre_tokenizer, "pretokenizers": [split, {**byte_level, "use_regex": False}]}
            self._fast = _backend_copy(serialized, split_special, pre_tokenizer=without_regex)
            self._regex_mark = _CLIP_SPECIAL_MARK

        # 3: CLIP's normalizer in Python for ASCII texts.
        self._ascii = None
        self._whitespace = None
        if python_normalizer and backend_json.get("normalizer") == _CLIP_NORMALIZER:
            whitespace = self._ascii_whitespace(self._exact.normalizer)
            if whitespace is not None:
                self._ascii = _backend_copy(
                    serialized,
                    split_special,
                    pre_tokenizer=without_regex if self._regex_mark else None,
                    normalizer=False,
                )
                self._whitespace = whitespace

        # The variants must agree with the exact copy on the probes (each on the texts it is used for).
        for probe in _PROBES:
            expected = self._exact.encode(probe, add_special_tokens=False).ids
            if self._fast.encode(probe, add_special_tokens=False).ids != expected:
                raise ValueError("the ByteLevel variant does not reproduce the tokenizer")
            if self._ascii is not None and probe.isascii():
                normalized = self._whitespace.sub(" ", probe.lower())
                if self._ascii.encode(normalized, add_special_tokens=False).ids != expected:
                    raise ValueError("the Python normalizer does not reproduce the tokenizer")

    # ------------------------------------------------------------------------------------------------ construction

    @classmethod
    def build(cls, tokenizer, **kwargs) -> FastTruncatingTokenizer | None:
        """The fast tokenizer for `tokenizer`, or None when its shortcuts cannot be shown to be exact for it."""
        if (
            getattr(tokenizer, "backend_tokenizer", None) is None
            or getattr(tokenizer, "truncation_side", "right") != "right"
        ):
            return None
        if any(
            any(ch.isspace() for ch in str(token)) for token in getattr(tokenizer, "added_tokens_decoder", {}).values()
        ):
            return None
        try:
            return cls(tokenizer, **kwargs)
        except ValueError:
            return None

    @classmethod
    def cached_on(cls, owner: object, tokenizer) -> FastTruncatingTokenizer | None:
        """`build(tokenizer)`, done once and kept on `owner` (a model or module) until its tokenizer changes."""
        cached = getattr(owner, "_fast_text", None)
        if cached is None or cached[0] is not tokenizer:
            cached = (tokenizer, cls.build(tokenizer))
            owner._fast_text = cached
        return cached[1]

    @staticmethod
    def _word_boundary_marks(backend_json: dict) -> tuple[bytearray | None, bool]:
        """Per id: whether the token ends a word (BPE end-of-word suffix) or starts one (Metaspace), and which."""
        model = backend_json.get("model") or {}
        vocab = model.get("vocab")
        if model.get("type") == "BPE" and model.get("end_of_word_suffix") and isinstance(vocab, dict):
            suffix = model["end_of_word_suffix"]
            tokens = {index: token for token, index in vocab.items()}
            marks = bytearray(max(tokens) + 1)
            for index, token in tokens.items():
                marks[index] = token.endswith(suffix)
            return marks, True
        pre_tokenizer = backend_json.get("pre_tokenizer") or {}
        steps = (
            pre_tokenizer.get("pretokenizers", [pre_tokenizer])
            if pre_tokenizer.get("type") == "Sequence"
            else [pre_tokenizer]
        )
        metaspace = [step for step in steps if step.get("type") == "Metaspace"]
        # Metaspace splits before every replacement character, so a token starting with it starts a word.
        if model.get("type") == "Unigram" and len(metaspace) == 1 and metaspace[0].get("split", True):
            replacement = metaspace[0].get("replacement", "\u2581")
            marks = bytearray(len(vocab))
            for index, (token, _score) in enumerate(vocab):
                marks[index] = token.startswith(replacement)
            return marks, False
        return None, False

    @staticmethod
    def _is_clip_pre_tokenizer(pre_tokenizer: dict | None) -> bool:
        if not pre_tokenizer or pre_tokenizer.get("type") != "Sequence" or len(pre_tokenizer["pretokenizers"]) != 2:
            return False
        split, byte_level = pre_tokenizer["pretokenizers"]
        return (
            split.get("type") == "Split"
            and split.get("pattern") == {"Regex": _CLIP_SPLIT_PATTERN}
            and split.get("behavior") == "Removed"
            and split.get("invert") is True
            and byte_level.get("type") == "ByteLevel"
            and byte_level.get("use_regex", True) is True
            and byte_level.get("add_prefix_space") is False
        )

    @staticmethod
    def _ascii_whitespace(normalizer):
        """A regex for the ASCII characters CLIP's normalizer treats as whitespace, verified on every ASCII pair."""
        import re

        spaces = [chr(code) for code in range(128) if normalizer.normalize_str(f"a{chr(code)}b") == "a b"]
        pattern = re.compile("[" + re.escape("".join(spaces)) + "]+") if spaces else None
        if pattern is None:
            return None
        ascii_chars = "".join(chr(code) for code in range(128))
        probe = ascii_chars + ascii_chars[::-1] + "".join(a + b for a in spaces for b in ascii_chars)
        if normalizer.normalize_str(probe) != pattern.sub(" ", probe.lower()):
            return None
        return pattern

    @property
    def num_special_tokens(self) -> int:
        """How many special tokens surround every text."""
        return len(self._head) + len(self._tail)

    # ---------------------------------------------------------------------------------------------------- tokenize

    def __call__(self, texts: Sequence[str], max_length: int | None) -> tuple[list[list[int]], int]:
        """Ids with special tokens, each cut to `max_length` (right side), and how many texts were cut.

        Raises:
            ValueError: `max_length` leaves no room for a content token beside the special tokens.
        """
        extra = self.num_special_tokens
        if max_length is not None and max_length <= extra:
            raise ValueError(f"max_length must be larger than the {extra} special tokens, got {max_length}")
        keep = None if max_length is None else max_length - extra
        texts = list(texts)
        content: list[list[int] | None] = [None] * len(texts)
        # First try: texts longer than the bound are cut at the last space before it.
        bound = None if keep is None else self._prefix_bound(keep)
        first_try = []
        for index, text in enumerate(texts):
            cut = self._cut(text, bound) if bound is not None and len(text) > bound else -1
            first_try.append((index, text[:cut] if cut > 0 else text, cut > 0))
        encoded = self._encode([piece for _, piece, _ in first_try])
        retry = []
        truncated = 0
        for (index, _, is_prefix), ids in zip(first_try, encoded):
            if not is_prefix:
                content[index] = ids
            elif self._complete_tokens(ids) > keep:
                content[index] = ids[:keep]
                truncated += 1
            else:
                retry.append(index)
        if retry:
            for index, ids in zip(retry, self._encode([texts[index] for index in retry])):
                content[index] = ids
        result = []
        for ids in content:
            if keep is not None and len(ids) > keep:
                ids = ids[:keep]
                truncated += 1
            result.append(self._head + ids + self._tail)
        return result, truncated

    def _prefix_bound(self, keep: int) -> int:
        """Characters of a long text tokenized on the first try when `keep` content tokens are wanted."""
        return self._chars_per_token * (keep + 2) + 64

    @staticmethod
    def _cut(text: str, bound: int) -> int:
        """Where the first try cuts a text longer than `bound`: its last space before the bound (-1: none)."""
        return text.rfind(" ", 0, bound)

    def _complete_tokens(self, ids: list[int]) -> int:
        """How many leading tokens of a prefix's ids lie before its last two words (0 when words are not marked)."""
        marks = self._word_marks
        if marks is None:
            return 0
        boundaries = 0
        # A word starts at j when token j-1 ends a word (end-of-word suffix) or token j starts one (Metaspace).
        offset = 1 if self._marks_end_words else 0
        for j in range(len(ids) - 1, 0, -1):
            token = ids[j - offset]
            if token < len(marks) and marks[token]:
                boundaries += 1
                if boundaries == 2:
                    return j
        return 0

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Content ids (no special tokens) of every text, each through the fastest exact path."""
        groups: dict[str, list[int]] = {"exact": [], "fast": [], "ascii": []}
        inputs: dict[str, list[str]] = {"exact": [], "fast": [], "ascii": []}
        for index, text in enumerate(texts):
            if self._regex_mark is not None and self._regex_mark in text:
                route = "exact"
            elif self._ascii is not None and text.isascii():
                lowered = text.lower()
                if any(token in lowered for token in self._added):
                    route = "exact"
                else:
                    route, text = "ascii", self._whitespace.sub(" ", lowered)
            else:
                route = "fast"
            groups[route].append(index)
            inputs[route].append(text)
        result: list[list[int] | None] = [None] * len(texts)
        for route, backend in (("exact", self._exact), ("fast", self._fast), ("ascii", self._ascii)):
            if groups[route]:
                for index, encoding in zip(
                    groups[route], backend.encode_batch_fast(inputs[route], add_special_tokens=False)
                ):
                    result[index] = encoding.ids
        return result
