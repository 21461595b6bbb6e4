"""Shared pieces of every Hub repo this package builds: code files, JSON configs, sentence-transformers files, cards."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

HUB_CONFIGS_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(HUB_CONFIGS_DIR)
# The sentence-transformers input module every repo uses (st_modules/multimodal_transformer.py).
MODULE_TYPE = "multimodal_transformer.MultimodalTransformer"
MODULE_CONFIG_FILE = "multimodal_config.json"
MODULE_CODE_FILES = ["st_modules/multimodal_transformer.py", "st_modules/media_inputs.py", "st_modules/token_truncation.py"]


def repo_config_dir(name: str) -> str:
    """Folder of one published repo's templates, e.g. `hub_configs/longclip`."""
    path = os.path.join(HUB_CONFIGS_DIR, name)
    if not os.path.isdir(path):
        raise ValueError(f"Unknown repo template {name!r}: no folder {path}")
    return path


def load_manifest(name: str) -> dict[str, Any]:
    """Read `hub_configs/<name>/manifest.json`: which code files the repo carries and its card template."""
    with open(os.path.join(repo_config_dir(name), "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _code_source(relative_path: str) -> str:
    # Code ships with the installed packages, so resolve through them rather than the checkout.
    package, _, filename = relative_path.partition("/")
    if package not in ("st_modules", "diffusers_adapters") or not filename or "/" in filename:
        raise ValueError(f"Code files must be flat files of st_modules/ or diffusers_adapters/, got {relative_path!r}")
    module = __import__(package)
    return os.path.join(os.path.dirname(os.path.abspath(module.__file__)), filename)


def copy_code_files(code_files: list[str], out_dir: str, rename: dict[str, str] | None = None) -> list[str]:
    """Copy remote-code files byte for byte into `out_dir` (flat, so relative imports keep working)."""
    rename = rename or {}
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for relative_path in code_files:
        source = _code_source(relative_path)
        target_name = rename.get(relative_path, os.path.basename(source))
        shutil.copyfile(source, os.path.join(out_dir, target_name))
        written.append(target_name)
    return written


def write_json(path: str, payload: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def update_json(path: str, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into an existing JSON file and return the result."""
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    payload.update(fields)
    write_json(path, payload)
    return payload


def write_sentence_transformers_files(
    out_dir: str,
    *,
    module_config: dict[str, Any],
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    similarity_fn_name: str = "cosine",
) -> None:
    """Write `modules.json`, `config_sentence_transformers.json` and the input module's config.

    The input module is `multimodal_transformer.MultimodalTransformer`, kept at index 0 in the repo root, because
    sentence-transformers fetches remote module code from the root only.
    """
    write_json(
        os.path.join(out_dir, "modules.json"),
        [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}],
    )
    import sentence_transformers
    import torch
    import transformers

    write_json(
        os.path.join(out_dir, "config_sentence_transformers.json"),
        {
            "__version__": {
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            "model_type": "SentenceTransformer",
            "prompts": dict(prompts or {}),
            "default_prompt_name": default_prompt_name,
            "similarity_fn_name": similarity_fn_name,
        },
    )
    write_json(os.path.join(out_dir, MODULE_CONFIG_FILE), module_config)


def render_model_card(name: str, out_dir: str, **fields: Any) -> str:
    """Fill `hub_configs/<name>/<card_template>` with `fields` and write it as the repo's README.md."""
    manifest = load_manifest(name)
    with open(os.path.join(repo_config_dir(name), manifest["card_template"]), encoding="utf-8") as handle:
        template = handle.read()
    card = template
    for key, value in fields.items():
        card = card.replace("{{" + key + "}}", str(value))
    if "{{" in card:
        missing = sorted({part.split("}}")[0] for part in card.split("{{")[1:]})
        raise ValueError(f"Model card template {name!r} has unfilled fields: {missing}")
    path = os.path.join(out_dir, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(card)
    return path
