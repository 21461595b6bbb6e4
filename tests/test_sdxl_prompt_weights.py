"""Prompt-weight parser (`diffusers_adapters/sdxl_prompt_weights.py`) and weighted tokenization."""

from __future__ import annotations

import gc
import math
import time

import pytest
from sdxl_fixtures import longclip_pair, token_ids, words

from diffusers_adapters.sdxl_long_prompt_encoder import BREAK_FILLER, tokenize_weighted
from diffusers_adapters.sdxl_prompt_weights import has_weight_syntax, parse_prompt_weights

UP, DOWN = 1.1, 1 / 1.1

PARSE_CASES = {
    "plain": ("a red cat", [[("a red cat", 1.0)]]),
    "empty": ("", [[]]),
    "paren": ("a (red) cat", [[("a ", 1.0), ("red", UP), (" cat", 1.0)]]),
    "square": ("a [red] cat", [[("a ", 1.0), ("red", DOWN), (" cat", 1.0)]]),
    "explicit": ("(red:1.5) cat", [[("red", 1.5), (" cat", 1.0)]]),
    "explicit-spaces": ("(red : 0.25 )", [[("red ", 0.25)]]),
    "explicit-forms": (
        "(a:2) (b:.5) (c:-1.5) (d:3.)",
        [[("a", 2.0), (" ", 1.0), ("b", 0.5), (" ", 1.0), ("c", -1.5), (" ", 1.0), ("d", 3.0)]],
    ),
    "nested": ("((red))", [[("red", UP * UP)]]),
    "nested-explicit": ("((red:1.5) cat)", [[("red", UP * 1.5), (" cat", UP)]]),
    "nested-mixed": ("([red])", [[("red", UP * DOWN)]]),
    "weight-after-group": ("(a (b) :1.3)", [[("a ", 1.3), ("b", 1.3 * UP), (" ", 1.3)]]),
    "last-colon": ("(time: 12:30:2)", [[("time: 12:30", 2.0)]]),
    "colon-not-number": ("(a:b)", [[("a:b", UP)]]),
    "two-dots": ("(a:1.2.3)", [[("a:1.2.3", UP)]]),
    "square-colon-literal": ("[a:1.5]", [[("a:1.5", DOWN)]]),
    "empty-group": ("a () (:1.5) b", [[("a   b", 1.0)]]),
    "escapes": (r"\(a\) \[b\] c\\d \q", [[(r"(a) [b] c\d \q", 1.0)]]),
    "escape-inside-group": (r"(a \) b:1.2)", [[("a ) b", 1.2)]]),
    "unmatched-close": ("a cat :)", [[("a cat :)", 1.0)]]),
    "unmatched-open": ("(a cat", [[("(a cat", 1.0)]]),
    "unmatched-open-weight": ("(a:1.5", [[("(a:1.5", 1.0)]]),
    "unmatched-open-before-group": ("((a)", [[("(", 1.0), ("a", UP)]]),
    "crossing": ("[a (b] c)", [[("a (b", DOWN), (" c)", 1.0)]]),
    "wrong-kind-close": ("(a] b)", [[("a] b", UP)]]),
    "break": ("a BREAK b", [[("a ", 1.0)], [(" b", 1.0)]]),
    "break-start": ("BREAK a", [[], [(" a", 1.0)]]),
    "break-twice": ("a BREAK BREAK b", [[("a ", 1.0)], [(" ", 1.0)], [(" b", 1.0)]]),
    "break-in-group": ("(a BREAK b:1.2)", [[("a ", 1.2)], [(" b", 1.2)]]),
    "break-punctuation": ("a,BREAK,b", [[("a,", 1.0)], [(",b", 1.0)]]),
    "break-not-a-word": ("BREAKfast break Break", [[("BREAKfast break Break", 1.0)]]),
}


@pytest.mark.parametrize("case", sorted(PARSE_CASES))
def test_parse(case):
    prompt, expected = PARSE_CASES[case]
    parsed = parse_prompt_weights(prompt)
    assert len(parsed) == len(expected), parsed
    for got_part, want_part in zip(parsed, expected):
        assert [text for text, _ in got_part] == [text for text, _ in want_part], parsed
        assert [weight for _, weight in got_part] == pytest.approx([weight for _, weight in want_part]), parsed


def test_parse_rejects_non_strings_and_detects_syntax():
    with pytest.raises(TypeError, match="prompt must be a string"):
        parse_prompt_weights(None)
    assert not has_weight_syntax("a red cat, 4k, photo")
    assert all(has_weight_syntax(text) for text in ("(a)", "a]", r"a\b", "a BREAK b"))


def _pathological(size: int) -> list[str]:
    """Deep nesting, runs of unmatched brackets and one huge number: the inputs a quadratic parser chokes on."""
    return ["(" * size + "x" + ")" * size, "a)" * size + "[" * size, "(" + ":" + "1" * size + "x)", "(a)" * size]


def _parse_seconds(prompts: list[str]) -> float:
    # CPU time, as the machine is shared; without the cyclic collector, whose passes grow with the test process.
    gc.disable()
    try:
        start = time.process_time()
        for prompt in prompts:
            parse_prompt_weights(prompt)
        return time.process_time() - start
    finally:
        gc.enable()


def test_parse_is_linear_time():
    small, large = _parse_seconds(_pathological(5000)), _parse_seconds(_pathological(20000))
    # 4x the input: about 4x the time when linear, 16x when quadratic.
    assert large < 8 * small + 0.05, (small, large)
    assert parse_prompt_weights("(" * 20000 + "x" + ")" * 20000) == [[("x", math.inf)]]  # 1.1 ** 20000 overflows
    assert parse_prompt_weights("a)" * 500 + "[" * 500) == [[("a)" * 500 + "[" * 500, 1.0)]]


# ---------------------------------------------------------------- tokenization


def test_tokenize_plain_prompts_like_the_tokenizer():
    _, tokenizer = longclip_pair()
    prompts = ["a red cat :)", words(300), "(unclosed", r"\(x\)"]
    ids, weights = tokenize_weighted(tokenizer, prompts)
    assert ids[:3] == [token_ids(tokenizer, prompt) for prompt in prompts[:3]]
    assert ids[3] == token_ids(tokenizer, "(x)")
    assert weights == [None, None, None, None]


def test_tokenize_weighted_runs_and_break():
    _, tokenizer = longclip_pair()
    prompt = f"{words(3)} (river:1.5) {words(2)} BREAK [{words(4)}] BREAK BREAK {words(80)} BREAK"
    ids, weights = tokenize_weighted(tokenizer, [prompt, "([red])"])
    river = token_ids(tokenizer, "river")
    first = token_ids(tokenizer, words(3)) + river + token_ids(tokenizer, words(2))
    second = token_ids(tokenizer, words(4))
    third = token_ids(tokenizer, words(80))
    # BREAK pads to the next 75-token window; a BREAK right at a window start and a trailing BREAK add nothing.
    expected = first + [BREAK_FILLER] * (75 - len(first)) + second + [BREAK_FILLER] * (75 - len(second)) + third
    assert ids[0] == expected
    assert weights[0] == pytest.approx(
        [1.0] * 3 + [1.5] + [1.0] * 2 + [1.0] * (75 - len(first)) + [DOWN] * 4 + [1.0] * (71 + 80)
    )
    assert ids[1] == token_ids(tokenizer, "red") and weights[1] is None  # 1.1 / 1.1 is no weight


def test_tokenize_off_reads_syntax_as_text():
    _, tokenizer = longclip_pair()
    prompt = "a (red:1.5) cat BREAK dog"
    ids, weights = tokenize_weighted(tokenizer, [prompt], weighting="off")
    assert ids == [token_ids(tokenizer, prompt)] and weights == [None]


def test_tokenize_rejects_infinite_weights():
    _, tokenizer = longclip_pair()
    with pytest.raises(ValueError, match="finite"):
        tokenize_weighted(tokenizer, ["(" * 8000 + "x" + ")" * 8000])
