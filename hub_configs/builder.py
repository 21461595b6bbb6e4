"""The one repo writer: every Hub repo this package builds is written by `write_repo` from a `RepoBuild`.

A converter (`hub_configs/<family module>.py`) only assembles what a repo holds (model, processor, card fields,
prompts); `write_repo` writes it the same way for every family: `auto_map` set before saving, the family's
remote-code files copied, the sentence-transformers files and the model card written once each.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .families import ST_MODULE_TYPE, Family

if TYPE_CHECKING:
    import torch

# `--dtype` choices of every `mmhub convert` target; "auto" keeps the source checkpoint's dtype.
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
ST_MODULE_CONFIG_FILE = "multimodal_config.json"


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a `--dtype` choice (None for "auto")."""
    import torch

    dtypes = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {name!r}")
    return dtypes[name]


@dataclass
class RepoBuild:
    """Everything one repo holds, as a converter assembles it; `write_repo` writes it.

    Args:
        model: The `PreTrainedModel` saved at the repo root (None for repos without one, like the SDXL adapter).
        processor: The processor saved at the root.
        components: Objects with `save_pretrained` saved in subfolders (`{"text_encoder": model, ...}`).
        card: Fields of the family's model card template.
        prompts: sentence-transformers prompts (`config_sentence_transformers.json`).
        default_prompt_name: sentence-transformers default prompt.
        module_config: Overrides of the family's default `multimodal_config.json`.
        files: Extra JSON files `{name: payload}` (for example training metadata).
        text_files: Extra generated text files `{name: content}` (for example a generated code file).
        dtype: Weight dtype to save (None keeps the model's).
        after_write: Called with the output folder once the repo is written (for side outputs such as a tiny
            SDXL base folder); its return value is reported by `mmhub`.
    """

    model: Any = None
    processor: Any = None
    components: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    module_config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    text_files: dict[str, str] = field(default_factory=dict)
    dtype: torch.dtype | None = None
    after_write: Callable[[str], Any] | None = None


def write_repo(family: Family, build: RepoBuild, out_dir: str) -> str:
    """Write `build` as a complete repo folder of `family` into `out_dir` and return `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    _register_auto_classes(family, build)
    if build.model is not None:
        model = build.model.to(build.dtype) if build.dtype is not None else build.model
        if config_auto_map(family):
            # Set before saving so config.json is written once with every auto class: a class registers one auto
            # class only, and the zero-shot pipeline needs a second one for the same model class.
            model.config.auto_map = config_auto_map(family)
        model.save_pretrained(out_dir)
    if build.processor is not None:
        build.processor.save_pretrained(out_dir)
    for subfolder, component in build.components.items():
        if build.dtype is not None and hasattr(component, "parameters"):
            component = component.to(build.dtype)
        component.save_pretrained(os.path.join(out_dir, subfolder))
    copy_code_files(family.code_files, out_dir, rename=family.rename)
    if family.st_module is not None:
        write_sentence_transformers_files(
            out_dir,
            module_config={**family.st_module_config(), **build.module_config},
            prompts=build.prompts,
            default_prompt_name=build.default_prompt_name,
        )
    for name, payload in build.files.items():
        write_json(os.path.join(out_dir, name), payload)
    for name, content in build.text_files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as handle:
            handle.write(content)
    render_model_card(family, out_dir, **build.card)
    if build.after_write is not None:
        build.after_write(out_dir)
    return out_dir


def source_label(source: str) -> str:
    """How a source appears in cards and metadata: Hub ids as given, local folders by their name only."""
    if os.path.exists(source):
        return os.path.basename(os.path.normpath(source))
    return source


# Auto classes saved with the processor (its config and its components' entries); the rest go into config.json.
_PROCESSOR_AUTO_CLASSES = {
    "AutoProcessor": lambda processor: processor,
    "AutoImageProcessor": lambda processor: processor.image_processor,
    "AutoFeatureExtractor": lambda processor: processor.feature_extractor,
}
# The model-side auto classes that a class registration carries (one per class); other model auto classes, such as
# the zero-shot pipeline's, are written into config.auto_map directly.
_MODEL_AUTO_CLASSES = {"AutoConfig": lambda model: model.config, "AutoModel": lambda model: model}


def config_auto_map(family: Family) -> dict[str, str]:
    """The `auto_map` of the repo's `config.json`: the family's model-side entries."""
    return {key: value for key, value in family.auto_map.items() if key not in _PROCESSOR_AUTO_CLASSES}


def _register_auto_classes(family: Family, build: RepoBuild) -> None:
    """Register the classes the family's `auto_map` names, so saving writes `auto_map` (and user re-saves too)."""
    for auto_class, reference in family.auto_map.items():
        if auto_class in _PROCESSOR_AUTO_CLASSES:
            target = _PROCESSOR_AUTO_CLASSES[auto_class](build.processor) if build.processor is not None else None
        elif auto_class in _MODEL_AUTO_CLASSES:
            target = _MODEL_AUTO_CLASSES[auto_class](build.model) if build.model is not None else None
        else:
            continue
        class_name = reference.rsplit(".", 1)[1]
        if target is None or type(target).__name__ != class_name:
            raise ValueError(
                f"Family {family.name!r} maps {auto_class} to {reference}, but the build holds {type(target).__name__}"
            )
        type(target).register_for_auto_class(auto_class)


def _code_source(relative_path: str) -> str:
    # Code ships with the installed packages, so resolve through them rather than the checkout.
    package, _, filename = relative_path.partition("/")
    if package not in ("st_modules", "diffusers_adapters") or not filename or "/" in filename:
        raise ValueError(f"Code files must be flat files of st_modules/ or diffusers_adapters/, got {relative_path!r}")
    module = __import__(package)
    return os.path.join(os.path.dirname(os.path.abspath(module.__file__)), filename)


def copy_code_files(code_files, out_dir: str, rename=None) -> list[str]:
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


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_pairs_lines(path: str) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSON-lines pairs file with their line numbers (blank lines skipped).

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: a line is not a JSON object (named as `path:line`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Pairs file {path!r} does not exist")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number} must be a JSON object, got {row!r}")
            rows.append((number, row))
    return rows


def resolve_media_path(value: Any, pairs_file: str) -> Any:
    """A relative local path in a pairs file, taken from the file's folder; URLs, data URIs, absolute paths and
    non-strings unchanged."""
    if not isinstance(value, str) or "://" in value or value.startswith("data:") or os.path.isabs(value):
        return value
    return os.path.join(os.path.dirname(os.path.abspath(pairs_file)), value)


def write_json(path: str, payload: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


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
    write_json(os.path.join(out_dir, "modules.json"), [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPE}])
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
    write_json(os.path.join(out_dir, ST_MODULE_CONFIG_FILE), module_config)


def render_model_card(family: Family, out_dir: str, **fields: Any) -> str:
    """Fill `hub_configs/<family>/model_card.md` with `fields` and write it as the repo's README.md."""
    with open(os.path.join(family.template_dir, "model_card.md"), encoding="utf-8") as handle:
        card = handle.read()
    for key, value in fields.items():
        card = card.replace("{{" + key + "}}", str(value))
    if "{{" in card:
        missing = sorted({part.split("}}")[0] for part in card.split("{{")[1:]})
        raise ValueError(f"Model card template of {family.name!r} has unfilled fields: {missing}")
    path = os.path.join(out_dir, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(card)
    return path
