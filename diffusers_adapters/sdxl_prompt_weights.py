"""Prompt-weight syntax as SDXL users write it (A1111, ComfyUI, compel's bracket form), parsed in linear time.

Syntax:

- `(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by 1.1; nesting multiplies, so `((text))`
  is 1.21 and `([text])` is 1.0.
- `(text:1.3)` multiplies by 1.3 instead of 1.1. The number may carry a sign and decimals (`-0.5`, `.8`, `2`);
  anything else after the last colon (`(a:b)`) is text and the group gets the plain 1.1.
- `\\(`, `\\)`, `\\[`, `\\]` and `\\\\` are the literal characters; a backslash before anything else is itself literal.
- A bracket without a partner of its kind is literal text: `a :)`, `(unclosed`, and in `[a (b] c)` the `(` and
  the last `)`, because `]` closes the `[` and an open `(` inside it ends with it.
- `BREAK` (upper case, a whole word) ends the current 75-token window: the text after it starts a new one.

Prompt editing (`[a:b:0.5]`), alternation (`[a|b]`) and compel's `word++` / `.blend()` are not parsed; their
characters are read as text.
"""

from __future__ import annotations

import re

__all__ = ["BRACKET_FACTOR", "has_weight_syntax", "parse_prompt_weights"]

BRACKET_FACTOR = 1.1
_OPENERS = {"(": ")", "[": "]"}
_CLOSERS = {")": "(", "]": "["}
# An escaped character, a bracket, or a run of anything else (a lone backslash included).
_TOKEN = re.compile(r"\\([()\[\]\\])|([()\[\]])|[^()\[\]\\]+|\\")
_BREAK = re.compile(r"\bBREAK\b")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*")


def has_weight_syntax(prompt: str) -> bool:
    """Whether `prompt` contains any character or keyword the parser treats specially."""
    return "BREAK" in prompt or any(char in prompt for char in "()[]\\")


def _pieces(prompt: str) -> tuple[list[str], list]:
    """Split into parallel lists: kinds (`"text"` or a bracket) and values (the text; None for brackets).

    Escapes are resolved here and neighbouring text (escapes included) is one piece.
    """
    kinds: list[str] = []
    values: list = []
    text: list[str] = []
    for match in _TOKEN.finditer(prompt):
        escaped, bracket = match.group(1), match.group(2)
        if bracket is None:
            text.append(escaped if escaped is not None else match.group(0))
            continue
        if text:
            kinds.append("text")
            values.append("".join(text))
            text = []
        kinds.append(bracket)
        values.append(None)
    if text:
        kinds.append("text")
        values.append("".join(text))
    return kinds, values


def _match_brackets(kinds: list[str], values: list) -> None:
    """Pair brackets in place: matched openers get their factor as value, unmatched brackets become text.

    A closer pairs with the innermost open bracket of its kind; brackets of the other kind opened after that one
    and still open are unmatched. Every bracket is pushed and popped at most once, so this is linear.
    """
    stack: list[int] = []
    open_count = {"(": 0, "[": 0}
    for index, kind in enumerate(kinds):
        if kind in _OPENERS:
            stack.append(index)
            open_count[kind] += 1
        elif kind in _CLOSERS:
            opener = _CLOSERS[kind]
            if open_count[opener] == 0:
                kinds[index], values[index] = "text", kind
                continue
            while kinds[stack[-1]] != opener:
                unmatched = stack.pop()
                open_count[kinds[unmatched]] -= 1
                kinds[unmatched], values[unmatched] = "text", kinds[unmatched]
            start = stack.pop()
            open_count[opener] -= 1
            values[start] = _group_factor(kinds, values, start, index)
    for unmatched in stack:
        kinds[unmatched], values[unmatched] = "text", kinds[unmatched]


def _group_factor(kinds: list[str], values: list, start: int, end: int) -> float:
    """Factor of the group `start..end`; strips a trailing `:number` from `(...)` groups."""
    if kinds[start] == "[":
        return 1 / BRACKET_FACTOR
    last = end - 1
    if last == start or kinds[last] != "text":
        return BRACKET_FACTOR
    # Only the text run right before this closer can hold the number, and no other group looks at that run.
    colon = values[last].rfind(":")
    number = _NUMBER.fullmatch(values[last], colon + 1) if colon >= 0 else None
    if number is None:
        return BRACKET_FACTOR
    values[last] = values[last][:colon]
    return float(number.group(1))


def parse_prompt_weights(prompt: str) -> list[list[tuple[str, float]]]:
    """Parse weight syntax into BREAK-separated parts of `(text, weight)` runs.

    Args:
        prompt: One prompt.

    Returns:
        One list per BREAK-separated part (at least one), each holding `(text, weight)` runs in prompt order.
        Neighbouring runs of equal weight are merged and empty runs dropped, so a prompt without syntax gives
        `[[(prompt, 1.0)]]`.

    Example:
        >>> parse_prompt_weights("a (red:1.5) cat BREAK [dark] sky")
        [[('a ', 1.0), ('red', 1.5), (' cat ', 1.0)], [(' ', 1.0), ('dark', 0.9090909090909091), (' sky', 1.0)]]
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    kinds, values = _pieces(prompt)
    _match_brackets(kinds, values)
    # Runs collect their text as lists so that merging many neighbours stays linear.
    parts: list[list[tuple[list[str], float]]] = [[]]
    factors = [1.0]

    def emit(text: str, weight: float) -> None:
        if not text:
            return
        runs = parts[-1]
        if runs and runs[-1][1] == weight:
            runs[-1][0].append(text)
        else:
            runs.append(([text], weight))

    for kind, value in zip(kinds, values):
        if kind == "text":
            segments = _BREAK.split(value)
            emit(segments[0], factors[-1])
            for segment in segments[1:]:
                parts.append([])
                emit(segment, factors[-1])
        elif kind in _OPENERS:
            factors.append(factors[-1] * value)
        else:
            factors.pop()
    return [[("".join(texts), weight) for texts, weight in runs] for runs in parts]
