"""Upload a built repo folder to the Hugging Face Hub."""

from __future__ import annotations

import os

# Files a build may leave behind that never belong on the Hub.
_IGNORED = ("__pycache__", ".DS_Store", ".ipynb_checkpoints")


def list_upload_files(folder: str) -> list[str]:
    """Relative paths `push_folder` uploads, sorted."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Repo folder {folder!r} does not exist")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED and not d.startswith("."))
        for name in names:
            if name in _IGNORED or name.startswith(".") or name.endswith(".pyc"):
                continue
            files.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    if "README.md" not in files:
        raise ValueError(f"{folder!r} has no README.md model card; build it with `mmhub convert` or `mmhub tiny`")
    return sorted(files)


def prepare_for_repo_id(folder: str, repo_id: str) -> None:
    """Let the folder's family record the Hub id it is published under (its converter's `before_push` hook)."""
    from .families import family_of

    try:
        family = family_of(folder)
    except ValueError:
        return  # not a folder of a registered family: nothing to record
    hook = getattr(family.module(), "before_push", None)
    if hook is not None:
        hook(folder, repo_id)


def push_folder(folder: str, repo_id: str, *, private: bool = False, dry_run: bool = False, message: str = "") -> None:
    """Create `repo_id` if needed and upload `folder` to it, or only list the files with `dry_run`."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    files = list_upload_files(folder)
    total = sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    print(f"{'Would upload' if dry_run else 'Uploading'} {len(files)} files ({total / 1e6:.1f} MB) to {repo_id}:")
    for name in files:
        print(f"  {name}  {os.path.getsize(os.path.join(folder, name)) / 1e6:.2f} MB")
    if dry_run:
        return
    prepare_for_repo_id(folder, repo_id)
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=message or "Upload with mmhub")
