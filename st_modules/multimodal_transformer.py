"""A sentence-transformers 6 input module that embeds texts, images and audio through one transformers model.

The wrapped model (remote code or stock) exposes `get_text_features`, `get_image_features` and/or
`get_audio_features`; the processor exposes `tokenizer`, `image_processor` and/or `feature_extractor`. One `encode`
call may mix every supported input form (see `media_inputs`): the module groups a batch by modality, runs one
forward per modality and writes the embeddings back in input order.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule
from transformers import AutoModel, AutoProcessor

from .media_inputs import (
    DEFAULT_MAX_AUDIO_SECONDS,
    DEFAULT_MAX_DECODE_PIXELS,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_URL_MAX_BYTES,
    DEFAULT_URL_TIMEOUT,
    LoadSettings,
    PixelBudget,
    classify,
    describe,
    load_all,
    load_audio,
    process_images,
)
from .token_truncation import FastTruncatingTokenizer, pad_to_tensors, truncate_keeping_end_token, warn_truncated

logger = logging.getLogger(__name__)

SUPPORTED_MODALITIES = ("text", "image", "audio")
# Input names used when a processor component does not declare `model_input_names`.
_DEFAULT_INPUT_NAMES = {
    "text": ("input_ids", "attention_mask"),
    "image": ("pixel_values",),
    "audio": ("input_features", "is_longer"),
}
# Files this module needs beside modules.json so that a saved model reloads with trust_remote_code.
_CODE_FILES = ("multimodal_transformer.py", "media_inputs.py", "token_truncation.py", "onnx_backend.py")
# Backends of `load(..., backend=...)`: PyTorch, or ONNX Runtime sessions over the repo's `onnx/` tower files.
SUPPORTED_BACKENDS = ("torch", "onnx")
# Feature names: each modality's processor outputs keep their own names (`input_ids`, `pixel_values`,
# `input_features`, ...), because sentence-transformers' trainer finds a column's features by those suffixes
# (`<column>_input_ids`); the batch positions of a modality's items travel as `<modality>_positions`.
_POSITIONS_SUFFIX = "_positions"


class MatryoshkaEmbeddings(dict):
    """The module's output features.

    sentence-transformers applies `truncate_dim` after every module by assigning
    `features["sentence_embedding"] = embedding[..., :truncate_dim]`. For a normalising model that would return
    vectors of norm below one, so this dict checks the width it receives against the trained widths and
    re-normalises the prefix. It sees only the sliced tensor, never the caller's arguments: a width of 0 or an
    untrained width is an error; a request wider than the model slices to the full width, as sentence-transformers
    does for every model. The constructor's `truncate_dim` is validated in `MultimodalTransformer.on_model_ready`.
    """

    def __init__(self, *args, normalize: bool, full_dim: int, valid_dims: list[int] | None, **kwargs):
        super().__init__(*args, **kwargs)
        self._normalize = normalize
        self._full_dim = full_dim
        self._valid_dims = valid_dims

    def __setitem__(self, key, value):
        if key == "sentence_embedding" and isinstance(value, torch.Tensor) and value.shape[-1] != self._full_dim:
            check_truncate_dim(value.shape[-1], self._full_dim, self._valid_dims)
            if self._normalize:
                value = torch.nn.functional.normalize(value, p=2, dim=-1)
        super().__setitem__(key, value)


def check_truncate_dim(truncate_dim: Any, full_dim: int, valid_dims: list[int] | None) -> None:
    """Raise a `ValueError` listing the valid dimensions unless `truncate_dim` is one of them."""
    if truncate_dim is None:
        return
    allowed = valid_dims or None
    description = f"one of {sorted(allowed)}" if allowed else f"an integer in [1, {full_dim}]"
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int):
        raise ValueError(f"truncate_dim must be {description}, got {truncate_dim!r}")
    if not 1 <= truncate_dim <= full_dim or (allowed and truncate_dim not in allowed):
        raise ValueError(f"truncate_dim must be {description}, got {truncate_dim}")


def check_backend(backend: Any) -> None:
    """Raise a `ValueError` naming the supported backends unless `backend` is one of them."""
    if backend not in SUPPORTED_BACKENDS:
        hint = " (OpenVINO files are not exported for this model)" if backend == "openvino" else ""
        raise ValueError(
            f"MultimodalTransformer runs on backend {' or '.join(map(repr, SUPPORTED_BACKENDS))}, got backend={backend!r}{hint}"
        )


def _fixed_window(feature_extractor, options: dict[str, Any]) -> int | None:
    """Samples of the one window a CLAP-style extractor keeps of a long clip, or None to keep the whole clip.

    The stock CLAP extractor picks that window at random with numpy's global RNG; cutting the middle window here
    (before resampling, see `media_inputs.load_audio`) gives it nothing to draw, so embeddings are deterministic
    and the caller's RNG state is never touched. With `truncation="fusion"` the stock extractor would draw three
    windows and view the whole clip: through this module it sees the middle window only. CLIPCLAP's extractor
    (`chunk_selection="center"`) fuses deterministically, so it keeps the whole clip (up to `max_audio_seconds`);
    with `chunk_selection="random"` the caller asked for random windows (training) and gets them.
    """
    max_length = options.get("max_length") or getattr(feature_extractor, "nb_max_samples", None)
    truncation = options.get("truncation")
    if not isinstance(truncation, str):
        truncation = getattr(feature_extractor, "truncation", None)
    if not isinstance(max_length, int) or truncation not in ("rand_trunc", "fusion"):
        return None
    selection = getattr(feature_extractor, "chunk_selection", None)
    if selection == "random" or (selection == "center" and truncation == "fusion"):
        return None
    return max_length


def _draws_a_long_clip(feature_extractor, options: dict[str, Any]) -> bool:
    """Whether a batch call would mark a random clip as long: the stock CLAP extractor with `truncation="fusion"`.

    Extractors that choose their windows themselves (`chunk_selection`, CLIPCLAP's) process each clip on its own.
    """
    truncation = options.get("truncation")
    if not isinstance(truncation, str):
        truncation = getattr(feature_extractor, "truncation", None)
    return truncation == "fusion" and getattr(feature_extractor, "chunk_selection", None) is None


def _accepts_device(component) -> bool:
    """Whether a processor component's `__call__` names a `device` parameter."""
    try:
        return "device" in inspect.signature(component.__call__).parameters
    except (TypeError, ValueError):
        return False


class MultimodalTransformer(InputModule):
    """Embed texts, images and audio with a transformers model that has `get_<modality>_features` methods.

    Args:
        model_name_or_path: Hub id or folder of the transformers model and processor.
        modalities: Modalities the model embeds, a subset of `("text", "image", "audio")`.
        normalize: L2-normalise embeddings (and re-normalise after `truncate_dim`).
        matryoshka_dims: Trained Matryoshka widths; `truncate_dim` must then be one of them.
        max_seq_length: Token limit for texts (longer texts are cut, keeping the end token, with one warning).
        embedding_dimension: Width of the embeddings; read from the model config when omitted.
        text_kwargs: Extra tokenizer arguments.
        image_kwargs: Extra image-processor arguments.
        audio_kwargs: Extra feature-extractor arguments.
        url_timeout: Total seconds one http(s) input may take to fetch (redirects included).
        url_max_bytes: Largest http(s) download or decoded data URI accepted.
        loader_threads: Threads for reading and decoding media files and URLs.
        max_image_pixels: Most pixels one image may decode to (checked from the file header), and most pixels the
            image processor's resize may make of it.
        max_decode_pixels: Most pixels being decoded at once by all loader threads of this module together.
        reduced_decoding: Decode JPEGs at the smallest DCT scale that still covers the processor's resize target
            (faster; embeddings change slightly, see the README). Oversized JPEGs are decoded reduced regardless.
        max_audio_seconds: Clips longer than this keep their middle part (cut before resampling); clips longer
            than a CLAP extractor's fixed window keep their middle window.
        model_kwargs: Passed to `AutoModel.from_pretrained` (for example `{"torch_dtype": torch.float16}`); with
            `backend="onnx"`, the ONNX options of `onnx_backend.OnnxTowers.from_pretrained` (`file_name`,
            `provider`, ...).
        processor_kwargs: Passed to `AutoProcessor.from_pretrained`.
        config_kwargs: Passed to the model config.
        trust_remote_code: Allow the repo's own model and processor code.
        cache_dir, revision, local_files_only, token: Hub loading options.
        backend: `"torch"` (the transformers model) or `"onnx"` (ONNX Runtime sessions over `onnx/<tower>.onnx`,
            no PyTorch weights loaded).
    """

    config_file_name = "multimodal_config.json"
    config_keys = [
        "modalities",
        "normalize",
        "matryoshka_dims",
        "max_seq_length",
        "embedding_dimension",
        "text_kwargs",
        "image_kwargs",
        "audio_kwargs",
        "url_timeout",
        "url_max_bytes",
        "loader_threads",
        "max_image_pixels",
        "max_decode_pixels",
        "reduced_decoding",
        "max_audio_seconds",
    ]
    save_in_root = True

    def __init__(
        self,
        model_name_or_path: str,
        *,
        modalities: Sequence[str] = ("text", "image"),
        normalize: bool = True,
        matryoshka_dims: list[int] | None = None,
        max_seq_length: int | None = None,
        embedding_dimension: int | None = None,
        text_kwargs: dict[str, Any] | None = None,
        image_kwargs: dict[str, Any] | None = None,
        audio_kwargs: dict[str, Any] | None = None,
        url_timeout: float = DEFAULT_URL_TIMEOUT,
        url_max_bytes: int = DEFAULT_URL_MAX_BYTES,
        loader_threads: int = 8,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
        reduced_decoding: bool = False,
        max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        check_backend(backend)
        unknown = sorted(set(modalities) - set(SUPPORTED_MODALITIES))
        if unknown or not modalities:
            raise ValueError(
                f"modalities must be a non-empty subset of {SUPPORTED_MODALITIES}, got {list(modalities)}"
            )
        self.model_name_or_path = model_name_or_path
        self._modalities = tuple(modalities)
        self.normalize = normalize
        self.matryoshka_dims = sorted(matryoshka_dims) if matryoshka_dims else None
        self.text_kwargs = dict(text_kwargs or {})
        self.image_kwargs = dict(image_kwargs or {})
        self.audio_kwargs = dict(audio_kwargs or {})
        self.loader_threads = loader_threads
        self._settings = LoadSettings(
            url_timeout=url_timeout,
            url_max_bytes=url_max_bytes,
            max_image_pixels=max_image_pixels,
            max_decode_pixels=max_decode_pixels,
            reduced_decoding=reduced_decoding,
            max_audio_seconds=max_audio_seconds,
        )
        # Shared by every call and loader thread of this module, so concurrent encodes stay within it too.
        self._pixel_budget = PixelBudget(max_decode_pixels)
        self._warned: set[str] = set()

        hub_kwargs = {"cache_dir": cache_dir, "revision": revision, "local_files_only": local_files_only}
        if token is not None:
            hub_kwargs["token"] = token
        model_kwargs = dict(model_kwargs or {})
        self.backend = backend
        if backend == "onnx":
            from .onnx_backend import OnnxTowers

            self.model = OnnxTowers.from_pretrained(
                model_name_or_path,
                self._modalities,
                trust_remote_code=trust_remote_code,
                hub_kwargs=hub_kwargs,
                config_kwargs=config_kwargs,
                model_kwargs=model_kwargs,
            )
        else:
            if config_kwargs:
                from transformers import AutoConfig

                model_kwargs["config"] = AutoConfig.from_pretrained(
                    model_name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs, **config_kwargs
                )
            self.model = AutoModel.from_pretrained(
                model_name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs, **model_kwargs
            )
        self.processor = AutoProcessor.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs, **(processor_kwargs or {})
        )
        for modality in self._modalities:
            if not hasattr(self.model, f"get_{modality}_features"):
                raise ValueError(
                    f"{type(self.model).__name__} has no get_{modality}_features for modality {modality!r}"
                )
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if "text" in self._modalities and self.tokenizer is None:
            raise ValueError(f"{type(self.processor).__name__} has no tokenizer, but 'text' is a modality")

        if max_seq_length is None and self.tokenizer is not None:
            max_seq_length = self.tokenizer.model_max_length
        self.max_seq_length = max_seq_length
        self.embedding_dimension = embedding_dimension or self._dimension_from_config()
        if self.matryoshka_dims and max(self.matryoshka_dims) > self.embedding_dimension:
            raise ValueError(
                f"matryoshka_dims {self.matryoshka_dims} exceed the embedding dimension {self.embedding_dimension}"
            )

    # ------------------------------------------------------------------------------------------ module contract

    @property
    def modalities(self) -> list[str]:
        # "message" tells sentence-transformers that one batch may mix modalities; this module splits it itself.
        return [*self._modalities, "message"]

    @property
    def forward_kwargs(self) -> set[str]:
        return set()

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def on_model_ready(self, model) -> None:
        """Validate a `truncate_dim` given to the `SentenceTransformer` constructor as soon as it is known."""
        check_truncate_dim(getattr(model, "truncate_dim", None), self.embedding_dimension, self.matryoshka_dims)

    def _dimension_from_config(self) -> int:
        config = self.model.config
        for name in ("projection_dim", "embed_dim", "hidden_size"):
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        raise ValueError("Could not read the embedding dimension from the model config; set embedding_dimension")

    # ------------------------------------------------------------------------------------------------ preprocess

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Classify, load and process a batch that may mix texts, images and audio.

        Every item is classified before anything is read or fetched, so a `TypeError` (an unsupported input) is
        raised before any I/O; later failures (unreadable files, HTTP errors) are `ValueError` /
        `FileNotFoundError`. Errors name the item by its content (path, URL, or type and shape), not by a position:
        sentence-transformers sorts and batches the user's list before calling modules.

        Args:
            inputs: The batch, in order.
            prompt: Prepended to text inputs only; images and audio never see it.
            **kwargs: `task` (unused: every task shares one model), `max_length` (text token limit for this call,
                as sentence-transformers' trainer passes it) and `processing_kwargs`, per-modality processor
                overrides such as `{"text": {"max_length": 77}}`.

        Returns:
            Flat features: each modality's processor outputs under their own names, the positions of that
            modality's items in `"<modality>_positions"`, and `"batch_size"`.
        """
        overrides = kwargs.get("processing_kwargs") or {}
        if kwargs.get("max_length") is not None:
            overrides = {**overrides, "text": {"max_length": kwargs["max_length"], **(overrides.get("text") or {})}}
        grouped: dict[str, list[tuple[int, Any]]] = {}
        for position, item in enumerate(inputs):
            if isinstance(item, (tuple, list)):
                raise TypeError(
                    f"Input {describe(item)} is a {type(item).__name__} of {len(item)} items; pairs and nested "
                    "lists are not embeddable here, pass each item separately"
                )
            # Positions in this batch are not the user's (`encode` sorts by length), so errors name the item by
            # its content instead (index None).
            modality, payload = classify(item, None, self._modalities)
            grouped.setdefault(modality, []).append((position, payload))

        features: dict[str, Any] = {}
        for modality, items in grouped.items():
            try:
                processed = getattr(self, f"_process_{modality}")(items, prompt, overrides.get(modality) or {})
            except (TypeError, AttributeError) as error:
                # After classification nothing may raise these: sentence-transformers would take them for a
                # signature mismatch and preprocess (and fetch) the whole batch again.
                raise ValueError(
                    f"Preprocessing the {modality} inputs failed: {type(error).__name__}: {error}"
                ) from error
            for key, value in processed.items():
                if key in features:
                    raise ValueError(
                        f"The {modality} processor returns {key!r}, which another modality's processor also returns; "
                        "MultimodalTransformer needs distinct input names per modality"
                    )
                features[key] = value
            features[modality + _POSITIONS_SUFFIX] = torch.tensor([position for position, _ in items])
        features["batch_size"] = torch.tensor(len(inputs))
        return features

    def _input_names(self, modality: str) -> list[str]:
        """The model inputs a modality's processor produces (its `model_input_names`)."""
        component = {"text": "tokenizer", "image": "image_processor", "audio": "feature_extractor"}[modality]
        names = getattr(getattr(self.processor, component, None), "model_input_names", None)
        return list(names) if names else list(_DEFAULT_INPUT_NAMES[modality])

    def _process_text(self, items, prompt, overrides) -> dict[str, Any]:
        texts = [text if not prompt else prompt + text for _, text in items]
        options = {**self.text_kwargs, **overrides}
        max_length = options.pop("max_length", self.max_seq_length)
        fast = self._fast_tokenizer() if not options else None
        if fast is not None and (not max_length or max_length > fast.num_special_tokens):
            # Same ids as the tokenizer's own truncating call (the special tokens stay), tokenizing only the prefix
            # of a long text that the limit keeps.
            token_ids, cut = fast(texts, max_length or None)
            warn_truncated(cut, len(texts), max_length, self._warned)
        else:
            token_ids = self.tokenizer(texts, truncation=False, padding=False, verbose=False, **options)["input_ids"]
            if max_length:
                token_ids, cut = truncate_keeping_end_token(token_ids, max_length, set(self.tokenizer.all_special_ids))
                warn_truncated(cut, len(texts), max_length, self._warned)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return pad_to_tensors(token_ids, pad_id, getattr(self.tokenizer, "padding_side", "right"))

    def _fast_tokenizer(self) -> FastTruncatingTokenizer | None:
        """The exact fast tokenizer for this module's tokenizer, built once (None where it does not apply)."""
        return FastTruncatingTokenizer.cached_on(self, self.tokenizer)

    def _process_image(self, items, prompt, overrides) -> dict[str, Any]:
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None:
            raise ValueError(f"{type(self.processor).__name__} has no image_processor")
        options = {**self.image_kwargs, **overrides}
        device = self.model.device
        valid = getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", {})
        if device.type != "cpu" and "device" in valid and "device" not in options:
            # Torchvision-backed processors can resize and normalise on the model's accelerator, leaving the CPU
            # only the decoding (measured on an H100: image encode throughput 0.11 -> 0.56 of the raw forward).
            options["device"] = device
        processed = process_images(
            [(None, item) for _, item in items],
            image_processor,
            settings=self._settings,
            budget=self._pixel_budget,
            workers=self.loader_threads,
            options=options,
        )
        return {name: processed[name] for name in self._input_names("image") if name in processed}

    def _process_audio(self, items, prompt, overrides) -> dict[str, Any]:
        feature_extractor = getattr(self.processor, "feature_extractor", None)
        if feature_extractor is None:
            raise ValueError(f"{type(self.processor).__name__} has no feature_extractor")
        rate = feature_extractor.sampling_rate
        options = {**self.audio_kwargs, **overrides}
        device = self.model.device
        if device.type != "cpu" and "device" not in options and _accepts_device(feature_extractor):
            # Extractors that take `device` (CLIPCLAP's) compute their spectrograms next to the model.
            options["device"] = device
        window = _fixed_window(feature_extractor, options)
        clips = load_all(
            lambda item, index: load_audio(item, index, rate, self._settings, window=window),
            [(None, item) for _, item in items],
            self.loader_threads,
        )
        waveforms = [waveform for waveform, _ in clips]
        if _draws_a_long_clip(feature_extractor, options):
            # One clip per call: a stock CLAP extractor given several short clips with "fusion" marks one of them
            # as long at random (numpy's global RNG); alone, the draw has one outcome and leaves the RNG untouched.
            per_clip = [
                feature_extractor([waveform], sampling_rate=rate, return_tensors="pt", **options)
                for waveform in waveforms
            ]
            names = [name for name in self._input_names("audio") if name in per_clip[0]]
            features = {name: torch.cat([clip[name] for clip in per_clip]) for name in names}
        else:
            processed = feature_extractor(waveforms, sampling_rate=rate, return_tensors="pt", **options)
            features = {name: processed[name] for name in self._input_names("audio") if name in processed}
        if "is_longer" in features:
            # Clips cut to the window before the extractor saw them were longer than it.
            cropped = torch.tensor([was_cropped for _, was_cropped in clips]).view(
                -1, *[1] * (features["is_longer"].ndim - 1)
            )
            features["is_longer"] = features["is_longer"] | cropped
        return features

    # --------------------------------------------------------------------------------------------------- forward

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        batch_size = int(features["batch_size"])
        dtype = self.model.dtype
        device = self.model.device
        embeddings = None
        for modality in SUPPORTED_MODALITIES:
            positions = features.get(modality + _POSITIONS_SUFFIX)
            if positions is None:
                continue
            inputs = {
                name: value.to(device=device, dtype=dtype) if torch.is_floating_point(value) else value.to(device)
                for name in self._input_names(modality)
                if isinstance(value := features.get(name), torch.Tensor)
            }
            output = getattr(self.model, f"get_{modality}_features")(**inputs)
            output = getattr(output, "pooler_output", output)
            if embeddings is None:
                embeddings = torch.empty((batch_size, output.shape[-1]), device=output.device, dtype=output.dtype)
            # index_copy (not in-place assignment) keeps the autograd graph simple when fine-tuning.
            embeddings = embeddings.index_copy(0, positions.to(output.device), output)
        if embeddings is None:
            embeddings = torch.empty((0, self.embedding_dimension), device=device, dtype=dtype)
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=-1)
        result = MatryoshkaEmbeddings(
            normalize=self.normalize, full_dim=embeddings.shape[-1], valid_dims=self.matryoshka_dims
        )
        result.update(features)
        result["sentence_embedding"] = embeddings
        return result

    # ------------------------------------------------------------------------------------------------ save / load

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self._modalities),
            "normalize": self.normalize,
            "matryoshka_dims": self.matryoshka_dims,
            "max_seq_length": self.max_seq_length,
            "embedding_dimension": self.embedding_dimension,
            "text_kwargs": self.text_kwargs,
            "image_kwargs": self.image_kwargs,
            "audio_kwargs": self.audio_kwargs,
            "loader_threads": self.loader_threads,
            **dataclasses.asdict(self._settings),  # url_timeout, url_max_bytes, max_image_pixels, ...
        }

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)
        # sentence-transformers copies remote module code itself; a module imported from the installed package
        # needs its files copied here so the saved folder reloads on machines without the package.
        source_dir = os.path.dirname(os.path.abspath(__file__))
        for name in _CODE_FILES:
            target = os.path.join(output_path, name)
            if not os.path.exists(target):
                shutil.copyfile(os.path.join(source_dir, name), target)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        **kwargs,
    ) -> MultimodalTransformer:
        check_backend(backend)
        config = cls.load_config(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ValueError(f"{cls.config_file_name} has unknown keys {unknown}; known: {cls.config_keys}")
        path = model_name_or_path if not subfolder else f"{model_name_or_path}/{subfolder}"
        return cls(
            path,
            **config,
            model_kwargs=model_kwargs,
            processor_kwargs=processor_kwargs,
            config_kwargs=config_kwargs,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
            token=token,
            backend=backend,
        )

    def __repr__(self) -> str:
        config = json.dumps({"modalities": list(self._modalities), "model": type(self.model).__name__})
        return f"MultimodalTransformer({config})"


__all__ = ["MultimodalTransformer", "MatryoshkaEmbeddings", "check_truncate_dim", "describe"]
