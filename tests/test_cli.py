"""`mmhub push --dry-run` and `mmhub demo` on the tiny LongCLIP repo."""

from __future__ import annotations

import pytest

from hub_configs.cli import main


def test_push_dry_run_lists_every_file(longclip_repo, capsys):
    import os

    assert main(["push", longclip_repo, "--repo-id", "org/LongCLIP-L", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "Would upload" in printed
    for name in os.listdir(longclip_repo):
        assert name in printed


def test_push_rejects_bad_input(tmp_path, longclip_repo, capsys):
    assert main(["push", longclip_repo, "--repo-id", "no-slash", "--dry-run"]) == 2
    assert "ORG/NAME" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["push", str(tmp_path / "empty"), "--repo-id", "org/x", "--dry-run"]) == 2
    assert "README.md" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "missing"), "--repo-id", "org/x", "--dry-run"]) == 2


def test_demo_on_a_local_repo(longclip_repo, capsys):
    assert main(["demo", "--model", longclip_repo]) == 0
    printed = capsys.readouterr().out
    assert "Both doors rank identically: True" in printed
    lengths = printed.split("Caption lengths in tokens: [")[1].split("]")[0]
    assert all(int(value) > 77 for value in lengths.split(","))


def test_unknown_target_is_an_argparse_error():
    with pytest.raises(SystemExit):
        main(["convert", "no-such-model", "--out", "x"])
