"""Shared fixtures: tiny LongCLIP checkpoints in the original format, converted repos, Hub-cache layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def longclip_original_state_dict():
    from hub_configs.longclip import random_original_checkpoint

    return random_original_checkpoint(seed=1234)


@pytest.fixture(scope="session")
def longclip_checkpoint_path(tmp_path_factory, longclip_original_state_dict):
    path = tmp_path_factory.mktemp("ckpt") / "longclip-L.pt"
    torch.save(longclip_original_state_dict, path)
    return str(path)


@pytest.fixture(scope="session")
def longclip_repo(tmp_path_factory, longclip_checkpoint_path):
    """A repo folder written by `mmhub convert longclip` from the random original checkpoint."""
    from hub_configs.cli import main

    out = str(tmp_path_factory.mktemp("repo") / "LongCLIP-L")
    assert main(["convert", "longclip", "--checkpoint", longclip_checkpoint_path, "--out", out]) == 0
    return out


def make_hub_cache(cache_dir: str, repo_id: str, folder: str, revision: str = "0" * 40) -> str:
    """Lay `folder` out as the Hub cache does for `repo_id` (snapshots/<revision>, refs/main)."""
    org, name = repo_id.split("/")
    repo_dir = os.path.join(cache_dir, f"models--{org}--{name}")
    snapshot = os.path.join(repo_dir, "snapshots", revision)
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as handle:
        handle.write(revision)
    return snapshot


def run_fresh_python(code: str, tmp_path, env_extra: dict[str, str] | None = None, timeout: int = 240) -> str:
    """Run `code` in a new interpreter whose cwd and sys.path exclude this checkout; return stdout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "PYTHONPATH"))}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_MODULES_CACHE": str(tmp_path / "modules")})
    env.update(env_extra or {})
    script = tmp_path / "fresh_process.py"
    # Guard: this package must not be importable (an editable install would make it so), so only the repo's own
    # remote code can run.
    preamble = textwrap.dedent(
        f"""
        import sys
        sys.path = [p for p in sys.path if p not in ("", {REPO_ROOT!r})]

        class _BlockCheckout:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("st_modules", "hub_configs", "diffusers_adapters"):
                    raise ImportError(f"{{name}} comes from the checkout, not from the repo's remote code")
                return None

        sys.meta_path.insert(0, _BlockCheckout())
        """
    )
    script.write_text(preamble + textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"fresh process failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr[-4000:]}")
    return result.stdout
