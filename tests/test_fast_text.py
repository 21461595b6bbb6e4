"""The fast text path gives exactly the ids of the tokenizer's own truncating call, on a large diverse corpus.

Reference: `tokenizer(texts, truncation=True, max_length=n, padding=True, return_tensors="pt")` of the very tokenizer
the module holds (CLIP's BPE for LongCLIP/CLIPCLAP; XLM-R-style Unigram tokenizers for jina-clip-v2: the tiny repo's
NFKC + Metaspace one and one trained with sentencepiece and converted by transformers, whose normalizer is
sentencepiece's precompiled NFKC map, as in the published XLM-R tokenizer).
"""

from __future__ import annotations

import io
import logging
import random

import pytest
import torch

from st_modules.token_truncation import FastTruncatingTokenizer

# Letters per script (words are random draws); Thai and CJK are written without spaces.
SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "accents": "éèêëàâäôöûüçñßøåæœÉÀÇ",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωςΑΒΓΔΣΩΆΈ",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщъыьэюяАБВГДЁЖ",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهويَُِّ",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשתְִ",
    "devanagari": "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसहािीुूेैोौं्",
    "thai": "กขคงจฉชซญดตถทนบปผพฟมยรลวสหอะาิีึืุู่้",
    "cjk": "東京都渋谷区日本語中文字漢語言葉書",
    "kana": "あいうえおかきくけこアイウエオカキクケコー",
    "hangul": "한국어가나다라마바사아자차카타파하",
    "digits": "0123456789",
}
WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\n\n\n",
    " \t ",
    "\x0b",
    "\x0c",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\x85",
]
# Strings that stress normalizers, pre-tokenizers and added tokens, dropped in at random and at the cut.
HAZARDS = [
    "<|endoftext|>",
    "<|ENDOFTEXT|>",
    "<|startoftext|>",
    "<|startof",
    "<s>",
    "</s>",
    "<mask>",
    "<pad>",
    "<unk>",
    "it's",
    "IT'S",
    "we'll",
    "they're",
    "''s",
    "'d",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious" * 3,
    "1234567890",
    "3.14159",
    "https://example.com/a/b?c=d&e=f#g",
    "e\u0301",
    "a\u0308\u0301",
    " \u0301\u0301",
    "Tie\u0302\u0301ng Vie\u0323\u0302t",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ",
    "İstanbul",
    "ǅemal",
    "ﬁne ﬂow",
    "ＡＢＣ１２３",
    "①②③",
    "¨´¸",
    "\u1112\u1161\u11ab\u1100\u1173\u11af",
    "🙂",
    "👩\u200d👩\u200d👧\u200d👦",
    "👍🏽",
    "🇯🇵🇫🇷",
    "❤️",
    "1️⃣",
    "\x00\x7f",
    "\x1c\x1d\x1e\x1f",
    "\ufeff",
    "\u200b",
    "\ufffd",
    "!!!???...",
    "—–-",
    "ภาษาไทยไม่มีช่องว่าง",
    "東京都渋谷区神南一丁目",
]


ASCII_SCRIPTS = ("latin", "digits")
ASCII_WHITESPACE = [space for space in WHITESPACE if space.isascii()]
ASCII_HAZARDS = [hazard for hazard in HAZARDS if hazard.isascii()]


def _word(rng: random.Random, scripts=tuple(SCRIPTS)) -> str:
    letters = SCRIPTS[rng.choice(scripts)]
    return "".join(rng.choice(letters) for _ in range(rng.choice((1, 2, 3, 4, 5, 6, 8, 12, 30))))


def _text(rng: random.Random, chars: int, hazard_at: tuple[int, ...] = (), ascii_only: bool | None = None) -> str:
    """Random words, separators and hazards; ASCII-only for a third of the texts (CLIP's Python normalizer path)."""
    if ascii_only is None:
        ascii_only = rng.random() < 0.35
    scripts, spaces, hazards = (
        (ASCII_SCRIPTS, ASCII_WHITESPACE, ASCII_HAZARDS) if ascii_only else (tuple(SCRIPTS), WHITESPACE, HAZARDS)
    )
    parts, length = [], 0
    while length < chars:
        roll = rng.random()
        piece = rng.choice(hazards) if roll < 0.08 else _word(rng, scripts)
        separator = rng.choice(spaces) if roll < 0.2 else ("" if roll < 0.25 else " ")
        parts.append(piece + separator)
        length += len(parts[-1])
    text = "".join(parts)[:chars]
    for position in hazard_at:
        hazard = rng.choice(hazards)
        start = max(0, position - rng.randrange(len(hazard) + 1))
        text = text[:start] + hazard + text[start:]
    return text


def corpus(seed: int, count: int, keep: int, chars_per_token: int) -> list[str]:
    """Short, limit-sized and long texts; long ones get hazards around the fast path's first cut and bound."""
    rng = random.Random(seed)
    bound = chars_per_token * (keep + 2) + 64
    texts = ["", " ", "   \t\n ", "a", "<|endoftext|>", "<s>", " " * (3 * bound), "x" * (3 * bound)]
    while len(texts) < count:
        kind = rng.random()
        if kind < 0.25:
            texts.append(_text(rng, rng.randrange(0, 80)))
        elif kind < 0.5:
            texts.append(_text(rng, rng.randrange(keep, 6 * keep + 20)))
        else:
            ascii_only = rng.random() < 0.35
            text = _text(rng, rng.randrange(bound, 3 * bound), ascii_only=ascii_only)
            cut = max(text.rfind(" ", 0, bound), 0)
            hazard = _text(rng, 40, (rng.randrange(40),), ascii_only=ascii_only)
            texts.append(text[:cut] + " " + hazard + text[cut:])
            texts.append(_text(rng, rng.randrange(bound, 2 * bound), (bound - 1, bound, bound + 1), ascii_only))
    return texts[:count]


def _assert_identical(tokenizer, fast: FastTruncatingTokenizer, texts: list[str], max_length: int) -> None:
    expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ids, cut = fast(texts, max_length)
    mismatches = [(text, a, b) for text, a, b in zip(texts, ids, expected) if a != b]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]!r}"
    # Only texts that reach the limit can have been cut; the full tokenization says which were.
    at_limit = [text for text, row in zip(texts, expected) if len(row) == max_length]
    full = tokenizer(at_limit, truncation=False)["input_ids"] if at_limit else []
    assert cut == sum(len(row) > max_length for row in full)


def _spy_prefixes(fast: FastTruncatingTokenizer) -> list[str]:
    """Record every text the fast tokenizer tokenizes (its prefixes and retries)."""
    seen: list[str] = []
    encode = fast._encode

    def recording(texts):
        seen.extend(texts)
        return encode(texts)

    fast._encode = recording
    return seen


# ---------------------------------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def clip_tokenizer():
    from hub_configs.clip_tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(248)


@pytest.fixture(scope="module")
def jina_tiny_tokenizer():
    from hub_configs.jina_clip_v2 import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def xlmr_tokenizer(tmp_path_factory):
    """An XLM-R tokenizer converted by transformers from a sentencepiece unigram model trained here (nmt_nfkc)."""
    sentencepiece = pytest.importorskip("sentencepiece")
    from transformers import XLMRobertaTokenizer

    rng = random.Random(7)
    lines = [" ".join(_word(rng) for _ in range(rng.randint(3, 15))) for _ in range(3000)]
    lines += [hazard for hazard in HAZARDS if not hazard.startswith("<")]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=800,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        num_threads=1,
        minloglevel=2,
    )
    folder = tmp_path_factory.mktemp("xlmr")
    (folder / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    tokenizer = XLMRobertaTokenizer.from_pretrained(str(folder))
    assert type(tokenizer.backend_tokenizer.normalizer).__name__ == "Precompiled"
    return tokenizer


# --------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("max_length", "chars_per_token", "count"),
    [
        (248, 6, 600),
        (77, 3, 600),
        (16, 1, 800),
        pytest.param(248, 6, 4000, marks=pytest.mark.slow),
        pytest.param(248, 2, 1500, marks=pytest.mark.slow),
    ],
)
def test_clip_ids_identical(clip_tokenizer, max_length, chars_per_token, count):
    fast = FastTruncatingTokenizer.build(clip_tokenizer, chars_per_token=chars_per_token)
    # All three shortcuts are on for CLIP.
    assert fast._fast is not fast._exact and fast._ascii is not None and fast._marks_end_words
    seen = _spy_prefixes(fast)
    texts = corpus(max_length, count, max_length - 2, chars_per_token)
    _assert_identical(clip_tokenizer, fast, texts, max_length)
    prefixes = [text for text in seen[: len(texts)] if text not in texts]
    assert len(prefixes) > count // 10, "the prefix shortcut was hardly used"


@pytest.mark.parametrize(
    ("max_length", "count"), [(512, 300), (8194, 8), (16, 800), pytest.param(512, 1500, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("name", ["jina_tiny_tokenizer", "xlmr_tokenizer"])
def test_xlmr_ids_identical(request, name, max_length, count):
    tokenizer = request.getfixturevalue(name)
    fast = FastTruncatingTokenizer.build(tokenizer, chars_per_token=1)
    assert fast is not None and fast._word_marks is not None and not fast._marks_end_words
    seen = _spy_prefixes(fast)
    texts = corpus(max_length, count, max_length - 2, 1)
    _assert_identical(tokenizer, fast, texts, max_length)
    assert any(text not in texts for text in seen), "the prefix shortcut was never used"


def test_limit_inside_a_word_and_no_space_texts(clip_tokenizer):
    """The limit falls inside multi-token words; texts without a space before the bound are tokenized whole."""
    fast = FastTruncatingTokenizer.build(clip_tokenizer)
    word = "pneumonoultramicroscopicsilicovolcanoconiosis"
    texts = [" ".join([word] * 200), word * 200, "東京都" * 2000, " " * 5000 + "cat " * 300, "a " + "b" * 9000]
    _assert_identical(clip_tokenizer, fast, texts, 248)
    kept_last = clip_tokenizer.convert_ids_to_tokens(fast(texts[:1], 248)[0][0][-2])
    assert not kept_last.endswith("</w>"), "the 248-token limit should fall inside a word here"


def test_shortcuts_off_give_the_same_ids(clip_tokenizer):
    texts = corpus(3, 200, 246, 6)
    reference = clip_tokenizer(texts, truncation=True, max_length=248)["input_ids"]
    for flags in (
        {"skip_regex": False},
        {"python_normalizer": False},
        {"skip_regex": False, "python_normalizer": False},
    ):
        fast = FastTruncatingTokenizer.build(clip_tokenizer, **flags)
        assert fast(texts, 248)[0] == reference


def test_unsupported_tokenizers_fall_back(clip_tokenizer):
    import copy

    left = copy.deepcopy(clip_tokenizer)
    left.truncation_side = "left"
    assert FastTruncatingTokenizer.build(left) is None
    spaced = copy.deepcopy(clip_tokenizer)
    spaced.add_tokens(["new york"])
    assert FastTruncatingTokenizer.build(spaced) is None
    with pytest.raises(ValueError, match="max_length"):
        FastTruncatingTokenizer.build(clip_tokenizer)(["a cat"], 2)


# ------------------------------------------------------------------------------------------ through the module


@pytest.fixture(scope="module")
def longclip_st(longclip_repo):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(longclip_repo, trust_remote_code=True)


def test_module_features_equal_the_plain_call(longclip_st):
    module = longclip_st[0]
    texts = corpus(11, 24, 246, 6)
    features = module.preprocess(texts)
    expected = module.tokenizer(texts, truncation=True, max_length=248, padding=True, return_tensors="pt")
    assert torch.equal(features["input_ids"], expected["input_ids"])
    assert torch.equal(features["attention_mask"], expected["attention_mask"])
    assert module._fast_tokenizer() is not None
    embeddings = longclip_st.encode(texts, convert_to_tensor=True, batch_size=16)
    with torch.inference_mode():
        reference = module.model.get_text_features(**expected)
    reference = torch.nn.functional.normalize(getattr(reference, "pooler_output", reference), dim=-1)
    torch.testing.assert_close(embeddings, reference, atol=1e-5, rtol=0)


def test_truncation_warning_fires_once(longclip_repo, caplog):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(longclip_repo, trust_remote_code=True)
    with caplog.at_level(logging.WARNING):
        model.encode(["a short caption", "another"])
        assert "truncated" not in caplog.text
        model.encode(["cat " * 400, "dog " * 300, "short"])
        model.encode(["cat " * 400])
    assert caplog.text.count("were truncated") == 1
    assert "2 of 3 texts are longer than 248 tokens" in caplog.text


def test_text_kwargs_keep_the_tokenizer_path(longclip_st):
    """Tokenizer options the fast path does not model go to the tokenizer itself, as before."""
    module = longclip_st[0]
    texts = ["a photo of a cat " * 80, "dog"]
    features = module.preprocess(texts, processing_kwargs={"text": {"add_special_tokens": False, "max_length": 20}})
    expected = module.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert features["input_ids"][0].tolist() == expected[0][:20]


def _cuts_near_the_limit(tokenizer, keep: int, count: int, seed: int) -> list[tuple[str, int]]:
    """(text, bound) pairs whose bound falls anywhere from the limit's token to four tokens past it.

    Character offsets of the real tokenizer say where each token ends, so the cut lands inside the words around the
    limit: inside a word, a combining sequence, an emoji sequence, a special-token string or a whitespace run. Half
    the cases cut the very word that the limit splits, behind its kept tokens.
    """
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        text = _text(rng, rng.randrange(4 * keep, 12 * keep + 40))
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets, words = encoding["offset_mapping"], encoding.word_ids()
        if len(offsets) < keep + 6:
            continue
        if rng.random() < 0.5:
            cases.append((text, rng.randrange(offsets[keep - 1][0], offsets[keep + 4][1] + 1)))
        elif words[keep - 1] == words[keep]:
            word_end = max(end for (_, end), word in zip(offsets, words) if word == words[keep])
            if word_end > offsets[keep - 1][1]:
                cases.append((text, rng.randrange(offsets[keep - 1][1] + 1, word_end + 1)))
    return cases


@pytest.mark.parametrize("name", ["clip_tokenizer", "jina_tiny_tokenizer", "xlmr_tokenizer"])
def test_word_check_alone_makes_arbitrary_cuts_exact(request, name):
    """Cut anywhere (not at a space) right next to the limit: dropping the prefix's last two words keeps ids exact.

    For CLIP the same cases with the check removed (every prefix token trusted) must go wrong, so they reach it.
    """
    tokenizer = request.getfixturevalue(name)
    keep = 30
    cases = _cuts_near_the_limit(tokenizer, keep, 300, seed=5)
    expected = [tokenizer(text, truncation=True, max_length=keep + 2)["input_ids"] for text, _ in cases]
    checked = FastTruncatingTokenizer.build(tokenizer)
    trusting = FastTruncatingTokenizer.build(tokenizer)
    trusting._complete_tokens = len
    wrong = 0
    for (text, bound), reference in zip(cases, expected):
        for fast in (checked, trusting):
            fast._prefix_bound = lambda keep, bound=bound: bound
            fast._cut = lambda text, bound: bound
        assert checked([text], keep + 2)[0][0] == reference, (text, bound)
        wrong += trusting([text], keep + 2)[0][0] != reference
    if name == "clip_tokenizer":
        # BPE re-merges a cut word (its end-of-word suffix moves), so trusting every token goes wrong here. Unigram
        # segmentations of these small vocabularies are nearly per character and survive a cut.
        assert wrong > 0, "no case reaches the word check"


def test_jina_encode_text_matches_the_tokenizer_call(tmp_path):
    """jina-clip-v2's `encode_text` (default truncating call, 512 tokens) gives the plain tokenizer call's embeddings."""
    from transformers import AutoModel

    from hub_configs.factory import make_repo

    repo = make_repo("jina-clip-v2", str(tmp_path / "jina"), tiny=True)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    tokenizer = model.get_tokenizer()
    texts = corpus(13, 16, 510, 1) + ["hello world " * 400]
    encoded = model.encode_text(texts, batch_size=8, convert_to_tensor=True)
    assert model._fast_text[1] is not None
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        reference = model.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(encoded, torch.nn.functional.normalize(reference, dim=-1), atol=1e-5, rtol=0)
    explicit = model.encode_text(texts[:4], convert_to_tensor=True, max_length=512, padding="max_length")
    torch.testing.assert_close(explicit, encoded[:4], atol=1e-5, rtol=0)
