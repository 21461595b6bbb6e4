"""`mmhub` as a command: push --dry-run, one-line errors, missing extras, logging, and the Hub when unreachable."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
from conftest import REPO_ROOT, make_hub_cache

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


def test_unknown_target_is_an_argparse_error():
    with pytest.raises(SystemExit):
        main(["convert", "no-such-model", "--out", "x"])


# ------------------------------------------------------------------------------------- environment and messages


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update({"TMPDIR": str(tmp_path / "tmp"), "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": REPO_ROOT, **extra})
    return env


def _python(code: str, env: dict[str, str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout
    )


def _mmhub(args: list[str], env: dict[str, str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    return _python(f"import sys; from hub_configs.cli import main; sys.exit(main({args!r}))", env, cwd, timeout)


def _message_lines(stderr: str) -> list[str]:
    """stderr without progress bars (tqdm redraws with carriage returns)."""
    lines = [line.split("\r")[-1].strip() for line in stderr.splitlines()]
    return [line for line in lines if line and "%|" not in line and "it/s]" not in line]


class _FakeHub:
    """A loopback HTTP server standing in for the Hub: HEAD / answers `root_status`, everything else `status`."""

    def __init__(self, status: int, root_status: int | None = None):
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                hub.requests.append(f"{self.command} {self.path}")
                code = root_status if (self.path == "/" and root_status) else status
                self.send_response(code)
                self.send_header("Content-Length", "0")
                if code == 404:  # what the Hub says about a repo that does not exist
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.send_header("X-Error-Message", "Repository not found")
                self.end_headers()

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub_down():
    hub = _FakeHub(503)
    yield hub
    hub.close()


def test_parser_does_not_import_huggingface_hub(tmp_path):
    """The offline decision has to come before huggingface_hub reads HF_HUB_OFFLINE (once, on import)."""
    code = (
        "import sys; from hub_configs.cli import build_parser; build_parser(); print('huggingface_hub' in sys.modules)"
    )
    done = _python(code, _env(tmp_path), tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


@pytest.mark.slow
def test_unreachable_hub_is_one_line_then_the_cache_is_used(hub_down, longclip_repo, tmp_path):
    make_hub_cache(str(tmp_path / "hf" / "hub"), "org/LongCLIP-tiny", longclip_repo)
    env = _env(tmp_path, HF_ENDPOINT=hub_down.url)
    done = _mmhub(["demo", "--model", "org/LongCLIP-tiny", "--held-out", "6", "--json", "--png", ""], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["doors_agree"] is True
    messages = _message_lines(done.stderr)
    assert "cannot be reached (HTTP 503)" in messages[0] and "working offline" in messages[0], messages
    # transformers' one-time notice about remote code new to this machine may follow; nothing about the Hub does.
    assert not [line for line in messages[1:] if "reach" in line or "retry" in line.lower()], messages
    assert hub_down.requests == ["HEAD /"]  # one question, no retries, nothing fetched afterwards


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--model", "org/LongCLIP-L"],
        ["train", "longclip", "--model", "org/LongCLIP-L", "--pairs", "PAIRS", "--out", "OUT"],
    ],
    ids=["demo", "train"],
)
def test_unreachable_hub_and_an_uncached_repo_print_two_lines(args, hub_down, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"caption": "a black square", "image": "a.png"}) + "\n")
    args = [{"PAIRS": str(tmp_path / "pairs.jsonl"), "OUT": str(tmp_path / "out")}.get(arg, arg) for arg in args]
    done = _mmhub(args, _env(tmp_path, HF_ENDPOINT=hub_down.url), tmp_path)
    assert done.returncode == 2
    messages = _message_lines(done.stderr)
    assert len(messages) == 2, messages
    assert "cannot be reached" in messages[0] and messages[1].startswith(f"mmhub {args[0]}: error:"), messages
    if args[0] == "demo":  # the demo names its input; other commands pass on the library's first line
        assert "'org/LongCLIP-L' is not in the local Hub cache" in messages[1], messages
    assert not [line for line in messages if "retry" in line.lower()]
    assert hub_down.requests == ["HEAD /"]


def test_push_to_an_unreachable_hub_is_one_line(hub_down, longclip_repo, tmp_path):
    done = _mmhub(["push", longclip_repo, "--repo-id", "org/x"], _env(tmp_path, HF_ENDPOINT=hub_down.url), tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert _message_lines(done.stderr) == [
        f"mmhub push: error: the Hugging Face Hub at {hub_down.url} cannot be reached (HTTP 503)"
    ]
    assert hub_down.requests == ["HEAD /"]


def test_a_hub_that_answers_gives_a_one_line_error_for_a_missing_repo(tmp_path):
    hub = _FakeHub(404, root_status=200)
    try:
        done = _mmhub(["demo", "--model", "org/no-such-model"], _env(tmp_path, HF_ENDPOINT=hub.url), tmp_path)
    finally:
        hub.close()
    assert done.returncode == 2
    messages = _message_lines(done.stderr)
    assert messages == [
        "mmhub demo: error: --model 'org/no-such-model' could not be loaded: no such repo on the Hub "
        "(or it is private: log in with hf auth login)"
    ]
    assert len(hub.requests) == len(set(hub.requests)), hub.requests  # nothing asked twice


def test_log_lines_are_printed_once(tmp_path):
    done = _mmhub(["-v", "tiny", "longclip", "--out", str(tmp_path / "tiny")], _env(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = _message_lines(done.stderr)
    assert any("building the CLIP BPE tokenizer" in line for line in messages), messages
    assert len(messages) == len(set(messages)), messages


# A finder that makes one top-level module look uninstalled, as after `pip install -e .` without the extra.
_BLOCK = """
import sys

class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, _Missing())
"""


@pytest.mark.parametrize(
    "module,command,extra",
    [
        (
            "diffusers",
            "from hub_configs.cli import main; sys.exit(main(['tiny', 'longclip-sdxl', '--out', 'x']))",
            "[diffusers]",
        ),
        (
            "diffusers",
            "import runpy; runpy.run_path('EXAMPLES/sdxl_long_prompt_grid.py', run_name='__main__')",
            "[diffusers]",
        ),
        (
            "ray",
            "import runpy; sys.argv = ['x', '.', '--model', 'm']; runpy.run_path('EXAMPLES/ray_embed_images.py', run_name='__main__')",
            'pip install "ray[data]"',
        ),
    ],
    ids=["mmhub-tiny-longclip-sdxl", "sdxl-example", "ray-example"],
)
def test_a_missing_extra_is_one_line(module, command, extra, tmp_path):
    code = _BLOCK.format(module=module) + command.replace("EXAMPLES", os.path.join(REPO_ROOT, "examples"))
    done = _python(code, _env(tmp_path), tmp_path)
    assert done.returncode != 0
    messages = _message_lines(done.stderr)
    assert len(messages) == 1 and extra in messages[0], messages
