"""The JSON-lines pairs files of `mmhub train` (sentence-transformers fine-tuning and CLIPCLAP's projection)."""

from __future__ import annotations

import json
import os

import pytest

from hub_configs import clipclap_train, finetune

READERS = {"finetune": finetune.read_pairs, "clipclap": clipclap_train.read_pairs}


def _write(tmp_path, lines: list[str]) -> str:
    path = tmp_path / "pairs" / "train.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_paths_are_taken_from_the_pairs_file_folder(tmp_path, reader):
    absolute = str(tmp_path / "elsewhere" / "c.wav")
    media = ["a.wav", "sub/b.wav", absolute, "https://example.org/d.wav"]
    lines = [json.dumps({"caption": f"caption {i}", "audio": m}) for i, m in enumerate(media)]
    rows = READERS[reader](_write(tmp_path, ["", *lines, "   "]))  # blank lines are skipped
    folder = str(tmp_path / "pairs")
    assert [row["audio"] for row in rows] == [
        os.path.join(folder, "a.wav"),
        os.path.join(folder, "sub/b.wav"),
        absolute,
        "https://example.org/d.wav",
    ]
    assert [row["caption"] for row in rows] == [f"caption {i}" for i in range(4)]


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ('{"caption": "a", "audio": "a.wav"', ValueError, "train.jsonl:2 is not valid JSON"),
        ('["a", "a.wav"]', ValueError, "train.jsonl:2 must be a JSON object"),
        ('{"caption": "a"}', ValueError, "train.jsonl:2 needs"),
    ],
)
def test_bad_lines_are_named_with_their_line(tmp_path, reader, line, error, message):
    good = json.dumps({"caption": "b", "audio": "b.wav"})
    with pytest.raises(error, match=message):
        READERS[reader](_write(tmp_path, [good, line, good]))


@pytest.mark.parametrize("reader", sorted(READERS))
def test_missing_file_is_named(tmp_path, reader):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        READERS[reader](str(tmp_path / "missing.jsonl"))
