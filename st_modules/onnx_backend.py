"""ONNX Runtime towers behind the `get_<modality>_features` surface of a transformers model.

`MultimodalTransformer(..., backend="onnx")` (what `SentenceTransformer(repo, trust_remote_code=True,
backend="onnx")` builds) uses `OnnxTowers` in place of the PyTorch model: one ONNX Runtime session per modality,
reading `onnx/text_model.onnx`, `onnx/vision_model.onnx` and `onnx/audio_model.onnx` (written by
`mmhub export-onnx`). No PyTorch weights are loaded: only `config.json` (for the embedding width) and the ONNX files.

Variants follow the file names of both ecosystems: `model_kwargs={"file_name": "model_qint8_avx512_vnni.onnx"}`
(sentence-transformers' names) or `"model_quantized.onnx"` / `"model_fp16.onnx"` (transformers.js' names) selects
`<tower>_qint8_avx512_vnni.onnx` etc. for every tower; a dict `{"text": ..., "image": ...}` chooses per modality.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# File stems of the per-tower graphs (transformers.js' names) and of the joint graph, inside `ONNX_SUBFOLDER`.
TOWER_FILE_STEMS = {"text": "text_model", "image": "vision_model", "audio": "audio_model"}
JOINT_FILE_STEM = "model"
ONNX_SUBFOLDER = "onnx"
EXPORT_COMMAND = "mmhub export-onnx {repo}"
# transformers.js' external-data convention: the tensors of `x.onnx` live in `x.onnx_data`.
EXTERNAL_DATA_SUFFIX = "_data"
# The `config.json` section transformers.js reads its ONNX settings from (`use_external_data_format`, ...).
TRANSFORMERS_JS_CONFIG = "transformers.js_config"
# The model_kwargs this backend reads; anything else (dtype, device_map, ...) belongs to the torch backend.
ACCEPTED_MODEL_KWARGS = ("file_name", "subfolder", "provider", "provider_options", "session_options")
# Execution providers that do not compute locally and must not be the default.
_NON_COMPUTE_PROVIDERS = ("AzureExecutionProvider",)


PROCESSOR_CONFIG = "processor_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"


def write_preprocessor_config(directory: str) -> str | None:
    """Write `preprocessor_config.json` from the image processor settings in `processor_config.json`.

    transformers.js and other ONNX runtimes read the image settings from `preprocessor_config.json`, and pick their
    processor class (tokenizer and image processor together) from its `processor_class`; transformers 5 saves them
    nested in `processor_config.json` only. Returns the path written, or None when there is no image processor.
    """
    source = os.path.join(directory, PROCESSOR_CONFIG)
    if not os.path.isfile(source):
        return None
    with open(source, encoding="utf-8") as handle:
        processor = json.load(handle)
    image = processor.get("image_processor")
    if not isinstance(image, dict):
        return None
    settings = dict(image)
    if processor.get("processor_class"):
        settings["processor_class"] = processor["processor_class"]
    path = os.path.join(directory, PREPROCESSOR_CONFIG)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    return path


def tower_file_name(modality: str, file_name: str | None = None) -> str:
    """The tower file that `file_name` selects for `modality`.

    `None` is the fp32 graph (`text_model.onnx`); a joint-model name (`model.onnx`, `model_fp16.onnx`,
    `model_qint8_avx512_vnni.onnx`) selects the same variant of the tower (`text_model_fp16.onnx`, ...); a tower
    name of this modality (`text_model_quantized.onnx`) is used as given.

    Raises:
        ValueError: `file_name` is not an `.onnx` name of the joint model or of this modality's tower.
    """
    stem = TOWER_FILE_STEMS[modality]
    if file_name is None:
        return f"{stem}.onnx"
    if not isinstance(file_name, str) or not file_name.endswith(".onnx") or "/" in file_name or "\\" in file_name:
        raise ValueError(f"file_name for {modality} must be a bare '.onnx' file name, got {file_name!r}")
    base = file_name[: -len(".onnx")]
    if base == stem or base.startswith(stem + "_"):
        return file_name
    if base == JOINT_FILE_STEM or base.startswith(JOINT_FILE_STEM + "_"):
        return stem + base[len(JOINT_FILE_STEM) :] + ".onnx"
    raise ValueError(
        f"file_name {file_name!r} names neither a variant of the joint model ('{JOINT_FILE_STEM}_<variant>.onnx') "
        f"nor a {modality} tower file ('{stem}_<variant>.onnx')"
    )


def _split_subfolder(file_name: Any, subfolder: str) -> tuple[Any, str]:
    # sentence-transformers accepts `file_name="onnx/model_O1.onnx"`; the folder part becomes the subfolder.
    if isinstance(file_name, str) and "/" in file_name:
        folder, _, name = file_name.rpartition("/")
        return name, folder
    return file_name, subfolder


def _onnxruntime():
    """onnxruntime, imported on first use: importing it writes a session file into the temporary folder, which
    nothing that stays on the torch backend (every `mmhub` command builds a parser that imports this file) should do.

    Raises:
        ImportError: onnxruntime is not installed (the message says how to install it).
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            'backend="onnx" needs onnxruntime: pip install onnxruntime (or "multimodal-hub-adapters[onnx]")'
        ) from error
    return onnxruntime


# ONNX Runtime's public session option that runs int8 products with unsigned weights (U8U8) on x86 CPUs without VNNI.
# There its default signed-weight kernel (U8S8) adds pairs of products in 16 bits, which saturates: the
# `qint8_avx512_vnni` files (full-range signed weights) then fall to cosine 0.975 against fp32 on a tiny LongCLIP on
# an AVX2-only CPU, 0.9996 with this option. CPUs with VNNI, and other architectures, are unaffected.
PRECISE_INT8_ENTRY = ("session.x64quantprecision", "1")


def default_session_options(options=None):
    """`options` (a new `onnxruntime.SessionOptions` when None) with int8 products that do not saturate on x86 CPUs
    without VNNI (`PRECISE_INT8_ENTRY`), unless the caller set that entry already."""
    onnxruntime = _onnxruntime()
    options = onnxruntime.SessionOptions() if options is None else options
    key, value = PRECISE_INT8_ENTRY
    try:
        options.get_session_config_entry(key)
    except RuntimeError:  # not set: ONNX Runtime raises for a missing entry
        options.add_session_config_entry(key, value)
    return options


def default_providers() -> list[str]:
    """The highest-priority locally computing execution provider, with the CPU as fallback."""
    available = [name for name in _onnxruntime().get_available_providers() if name not in _NON_COMPUTE_PROVIDERS]
    first = available[0] if available else "CPUExecutionProvider"
    return [first] if first == "CPUExecutionProvider" else [first, "CPUExecutionProvider"]


class _RepoFiles:
    """Resolves files of a local repo folder or a Hub repo (downloaded into the Hub cache on first use)."""

    def __init__(self, path: str, hub_kwargs: Mapping[str, Any]):
        self.path = path
        self.local = os.path.isdir(path)
        self.hub_kwargs = {key: value for key, value in hub_kwargs.items() if value is not None}

    def get(self, subfolder: str, name: str) -> str | None:
        if self.local:
            candidate = os.path.join(self.path, subfolder, name)
            return candidate if os.path.isfile(candidate) else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        options = {
            "cache_dir": self.hub_kwargs.get("cache_dir"),
            "revision": self.hub_kwargs.get("revision"),
            "token": self.hub_kwargs.get("token"),
            "local_files_only": bool(self.hub_kwargs.get("local_files_only", False)),
        }
        try:
            return hf_hub_download(self.path, name, subfolder=subfolder or None, **options)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None

    def onnx_files(self) -> list[str]:
        """Every `.onnx` file of the repo (relative paths), for error messages; empty when it cannot be listed."""
        if self.local:
            found = []
            for root, _, names in os.walk(self.path):
                found += [os.path.relpath(os.path.join(root, n), self.path) for n in names if n.endswith(".onnx")]
            return sorted(found)
        try:
            from huggingface_hub import list_repo_files

            files = list_repo_files(
                self.path, revision=self.hub_kwargs.get("revision"), token=self.hub_kwargs.get("token")
            )
        except Exception:  # offline or no access: the message simply lists nothing
            return []
        return sorted(name for name in files if name.endswith(".onnx"))


class OnnxTowers:
    """ONNX Runtime sessions with the `get_<modality>_features` methods `MultimodalTransformer.forward` calls.

    Each method takes the processor's tensors (extra inputs the graph does not declare are ignored), runs the tower
    and returns its first output, the model's `get_<modality>_features` embedding, as a float32 CPU tensor.

    Args:
        sessions: `{modality: onnxruntime.InferenceSession}`.
        files: `{modality: local path of the loaded .onnx file}` (copied by `save_pretrained`).
        config: The repo's transformers config (`config.json`), for the embedding width.
    """

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, sessions: Mapping[str, Any], files: Mapping[str, str], config: Any):
        self.sessions = dict(sessions)
        self.files = dict(files)
        self.config = config
        self._input_names = {
            modality: [node.name for node in session.get_inputs()] for modality, session in self.sessions.items()
        }

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        modalities: tuple[str, ...] | list[str],
        *,
        trust_remote_code: bool = False,
        hub_kwargs: Mapping[str, Any] | None = None,
        config_kwargs: Mapping[str, Any] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> OnnxTowers:
        """Open one session per modality from `<repo>/onnx/`.

        Args:
            model_name_or_path: Local folder or Hub id of a repo with an `onnx/` folder from `mmhub export-onnx`.
            modalities: The modalities to load (each needs its tower file).
            trust_remote_code: Passed to `AutoConfig` (the config class may be the repo's own).
            hub_kwargs: `cache_dir`, `revision`, `local_files_only`, `token`.
            config_kwargs: Passed to `AutoConfig.from_pretrained`.
            model_kwargs: `file_name` (a name of the joint model's variant for every tower, or a dict per modality),
                `subfolder` (default `onnx`), `provider` / `provider_options` (as sentence-transformers takes them)
                and `session_options` (an `onnxruntime.SessionOptions`; `default_session_options` adds the precise
                int8 entry unless it is set).

        Raises:
            ImportError: onnxruntime is not installed.
            ValueError: unknown `model_kwargs` keys or a malformed `file_name`.
            FileNotFoundError: a tower file is missing; the message lists the expected paths, the `.onnx` files
                present and the export command.
        """
        onnxruntime = _onnxruntime()
        options = dict(model_kwargs or {})
        unknown = sorted(set(options) - set(ACCEPTED_MODEL_KWARGS))
        if unknown:
            raise ValueError(
                f'backend="onnx" takes model_kwargs {list(ACCEPTED_MODEL_KWARGS)}, got unsupported {unknown}'
            )
        if options.pop("export", False):
            raise ValueError(
                f'backend="onnx" cannot export on load; run `{EXPORT_COMMAND.format(repo=model_name_or_path)}`'
            )
        file_name, subfolder = _split_subfolder(options.get("file_name"), options.get("subfolder", ONNX_SUBFOLDER))
        if isinstance(file_name, Mapping):
            stray = sorted(set(file_name) - set(TOWER_FILE_STEMS))
            if stray:
                raise ValueError(f"file_name keys must be modalities {sorted(TOWER_FILE_STEMS)}, got {stray}")
            names = {modality: tower_file_name(modality, file_name.get(modality)) for modality in modalities}
        else:
            names = {modality: tower_file_name(modality, file_name) for modality in modalities}

        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, **(hub_kwargs or {}), **(config_kwargs or {})
        )
        # Graphs over 2 GB keep their tensors in `<file>_data`, declared where transformers.js reads it.
        js_config = getattr(config, TRANSFORMERS_JS_CONFIG, None) or {}
        with_data = set(js_config.get("use_external_data_format") or {})
        repo = _RepoFiles(model_name_or_path, hub_kwargs or {})
        files, missing = {}, []
        for modality, name in names.items():
            path = repo.get(subfolder, name)
            if path is None:
                missing.append(f"{subfolder}/{name}" if subfolder else name)
                continue
            if name in with_data:
                # Downloaded beside the graph (a local folder has it already), where ONNX Runtime looks for it.
                repo.get(subfolder, name + EXTERNAL_DATA_SUFFIX)
            files[modality] = path
        if missing:
            present = repo.onnx_files()
            raise FileNotFoundError(
                f"{model_name_or_path!r} has no ONNX file for backend='onnx': expected {missing}; .onnx files present: "
                f"{present or 'none'}. Export them with `{EXPORT_COMMAND.format(repo=model_name_or_path)}` "
                "(from the multimodal-hub-adapters package)"
            )

        providers = options.get("provider") or default_providers()
        providers = [providers] if isinstance(providers, str) else list(providers)
        provider_options = options.get("provider_options")
        if isinstance(provider_options, Mapping):
            provider_options = [provider_options] + [{}] * (len(providers) - 1)
        sessions = {
            modality: onnxruntime.InferenceSession(
                path,
                sess_options=default_session_options(options.get("session_options")),
                providers=providers,
                provider_options=provider_options,
            )
            for modality, path in files.items()
        }
        return cls(sessions, files, config)

    # ------------------------------------------------------------------------------------------------ features

    def _run(self, modality: str, inputs: Mapping[str, Any]) -> torch.Tensor:
        session = self.sessions.get(modality)
        if session is None:
            raise ValueError(f"This model was loaded without a {modality} tower (loaded: {sorted(self.sessions)})")
        feeds = {}
        for name in self._input_names[modality]:
            value = inputs.get(name)
            if value is None:
                raise ValueError(
                    f"The {modality} ONNX graph needs input {name!r}; got {sorted(k for k, v in inputs.items() if v is not None)}"
                )
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            # Graphs take int64 ids and float32 features (fp16 variants keep float32 inputs and outputs).
            array = array.astype(np.float32 if np.issubdtype(array.dtype, np.floating) else np.int64, copy=False)
            feeds[name] = array
        output = session.run(None, feeds)[0]
        return torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32))

    def get_text_features(self, input_ids=None, attention_mask=None, **kwargs) -> torch.Tensor:
        """The text tower's embedding (what the model's `get_text_features` returns in `pooler_output`)."""
        return self._run("text", {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})

    def get_image_features(self, pixel_values=None, **kwargs) -> torch.Tensor:
        """The vision tower's embedding (what the model's `get_image_features` returns in `pooler_output`)."""
        return self._run("image", {"pixel_values": pixel_values, **kwargs})

    def get_audio_features(self, input_features=None, **kwargs) -> torch.Tensor:
        """The audio tower's embedding (what the model's `get_audio_features` returns in `pooler_output`)."""
        return self._run("audio", {"input_features": input_features, **kwargs})

    # ------------------------------------------------------------------------------------------------- saving

    def save_pretrained(self, output_path: str, **kwargs) -> None:
        """Write `config.json` and the loaded ONNX files (as `onnx/<tower>.onnx`), which reload with backend='onnx'.

        The copy holds no PyTorch weights, so it loads with `backend="onnx"` only.
        """
        self.config.save_pretrained(output_path)
        target_dir = os.path.join(output_path, ONNX_SUBFOLDER)
        os.makedirs(target_dir, exist_ok=True)
        for modality, path in self.files.items():
            # Saved under the fp32 name so the copy loads without a file_name.
            target = os.path.join(target_dir, tower_file_name(modality))
            shutil.copyfile(path, target)
            if os.path.isfile(path + EXTERNAL_DATA_SUFFIX):
                # The graph refers to its data file by the name it was exported with.
                shutil.copyfile(
                    path + EXTERNAL_DATA_SUFFIX,
                    os.path.join(target_dir, os.path.basename(path) + EXTERNAL_DATA_SUFFIX),
                )

    def __repr__(self) -> str:
        files = {modality: os.path.basename(path) for modality, path in self.files.items()}
        return f"OnnxTowers({files})"


__all__ = [
    "OnnxTowers",
    "TOWER_FILE_STEMS",
    "JOINT_FILE_STEM",
    "ONNX_SUBFOLDER",
    "tower_file_name",
    "write_preprocessor_config",
]
