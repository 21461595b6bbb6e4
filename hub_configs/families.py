"""The family registry: every model family this package publishes, declared once.

A family is one kind of Hub repo (LongCLIP-B/L share the `longclip` family). Its entry names everything the rest of
the package derives from it: the `mmhub` targets (`convert`, `tiny`, `train`, `export-onnx`), the template folder
`hub_configs/<name>/` (model card), the remote-code files every repo of the family carries, the `auto_map` of its
`config.json`, the sentence-transformers module configuration, and the doors its repos claim, which the contract
tests in `tests/test_family_contract.py` check for every family automatically.

Adding a family: write its remote code in `st_modules/` (or `diffusers_adapters/`), a converter module in
`hub_configs/` with `add_convert_arguments(parser)`, `convert(args) -> RepoBuild` and `tiny(seed, args) -> RepoBuild`,
a card template `hub_configs/<name>/model_card.md`, and one `Family(...)` entry below (plus its stock-class
reference in `tests/family_references.py`, which the contract suite asks for).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# Doors a repo can claim. The contract suite has one test per door and runs it on every family that claims it.
DOORS = {
    "automodel": "AutoModel / AutoProcessor with trust_remote_code: forward, get_*_features, save/reload, bf16",
    "processor": "the processor called the transformers-5 way (flat kwargs and text_kwargs= / images_kwargs= / ...)",
    "sentence_transformers": "SentenceTransformer(repo, trust_remote_code=True): encode any mix of inputs",
    "stock_sentence_transformers": "stock sentence-transformers Transformer on a save_pretrained copy",
    "finetune": "SentenceTransformerTrainer / model.fit with MultipleNegativesRankingLoss, save, reload",
    "stock_clip": "stock CLIPModel / CLIPProcessor without remote code, identical outputs",
    "zero_shot_pipeline": 'pipeline("zero-shot-image-classification", model=repo, trust_remote_code=True)',
    "text_encoder": "stock CLIPTextModel / CLIPTokenizer from the text_encoder/ and tokenizer/ subfolders",
    "custom_pipeline": "DiffusionPipeline.from_pretrained(base, custom_pipeline=repo, trust_remote_code=True)",
    "onnx": "mmhub export-onnx: onnx/ tower and joint graphs with fp16/int8 variants for ONNX Runtime, "
    'sentence-transformers (backend="onnx") and transformers.js',
}
# The doors of every embedding family (a transformers model with get_<modality>_features and the ST module).
EMBEDDING_DOORS = (
    "automodel",
    "processor",
    "sentence_transformers",
    "stock_sentence_transformers",
    "finetune",
    "onnx",
)

# The sentence-transformers input module (st_modules/multimodal_transformer.py) and the files it needs.
ST_MODULE_TYPE = "multimodal_transformer.MultimodalTransformer"
ST_MODULE_CODE_FILES = (
    "st_modules/multimodal_transformer.py",
    "st_modules/media_inputs.py",
    "st_modules/token_truncation.py",
    "st_modules/onnx_backend.py",
)
ST_DOORS = ("sentence_transformers", "stock_sentence_transformers", "finetune")


@dataclass(frozen=True)
class Family:
    """One published kind of repo.

    Args:
        name: The one spelling used everywhere: `mmhub` target, template folder `hub_configs/<name>/`, card.
        summary: One line for `mmhub --help` and the README.
        converter: Module with `add_convert_arguments`, `convert(args)` and `tiny(seed, args)` (and optionally
            `add_tiny_arguments`), each building a `RepoBuild`.
        code_files: Every remote-code file the repo carries (`st_modules/x.py` or `diffusers_adapters/x.py`), the
            sentence-transformers module's own files included; the contract suite checks that the files' relative
            imports and the `auto_map` entries resolve within this list.
        rename: Code files stored under another name in the repo (`pipeline.py` for diffusers).
        generated_code: Code files the converter writes per repo (not package files), which the code files import.
        auto_map: The `auto_map` of the repo's `config.json` (the processor's `AutoProcessor` entry included).
        modalities: What the repo embeds, in the sentence-transformers module's terms.
        st_module: Default `multimodal_config.json` of the sentence-transformers module, less its `modalities`
            (those are `modalities`; see `st_module_config`). None: no ST files.
        doors: The doors (keys of `DOORS`) the repos claim.
        default_dtype: Weight dtype `mmhub convert` saves unless `--dtype` says otherwise.
        extras: pip extras the family needs beyond the core install.
        trainer: Module with `add_arguments(parser)` and `run_from_args(args)` for `mmhub train <name>`.
        onnx_exporter: Module with `run_from_args(args)` for `mmhub export-onnx` (the `onnx` door): the generic
            `hub_configs.onnx_export`, or a family module that adds its own layouts (CLIPCLAP's Termite folder).
        repos: Hub repo names built from this family.
    """

    name: str
    summary: str
    converter: str
    code_files: tuple[str, ...]
    rename: Mapping[str, str] = field(default_factory=dict)
    generated_code: tuple[str, ...] = ()
    auto_map: Mapping[str, str] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()
    st_module: Mapping[str, Any] | None = None
    doors: tuple[str, ...] = ()
    default_dtype: str = "fp32"
    extras: tuple[str, ...] = ()
    trainer: str | None = None
    onnx_exporter: str | None = None
    repos: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.doors) - set(DOORS))
        if unknown:
            raise ValueError(f"Family {self.name!r} claims unknown doors {unknown}; known: {sorted(DOORS)}")
        if (self.st_module is None) == any(door in ST_DOORS for door in self.doors):
            raise ValueError(f"Family {self.name!r}: sentence-transformers doors need st_module, and only they")
        if ("onnx" in self.doors) != (self.onnx_exporter is not None):
            raise ValueError(f"Family {self.name!r}: the onnx door needs an onnx_exporter, and only it")

    @property
    def template_dir(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), self.name)

    def module(self, role: str = "converter") -> ModuleType:
        """Import the family's converter, trainer or ONNX exporter, naming the extra to install when missing."""
        path = getattr(self, role)
        if path is None:
            raise ValueError(f"Family {self.name!r} has no {role}")
        try:
            return importlib.import_module(path)
        except ModuleNotFoundError as error:
            if error.name and error.name.split(".")[0] in ("hub_configs", "st_modules", "diffusers_adapters"):
                raise
            raise MissingExtraError(f"{self.name}: {missing_extra_message(error.name)}") from error

    def st_module_config(self) -> dict[str, Any]:
        """The sentence-transformers module's default `multimodal_config.json`."""
        if self.st_module is None:
            raise ValueError(f"Family {self.name!r} has no sentence-transformers module")
        return {**self.st_module, "modalities": list(self.modalities)}

    def claims(self, door: str) -> bool:
        if door not in DOORS:
            raise KeyError(f"Unknown door {door!r}; known: {sorted(DOORS)}")
        return door in self.doors


class MissingExtraError(ImportError):
    """An optional dependency of a family is not installed; the message names the pip extra."""


# Which pip extra of this package provides an optional top-level module (pyproject.toml's extras).
EXTRA_OF_MODULE = {
    "torchaudio": "audio",
    "soundfile": "audio",
    "soxr": "audio",
    "diffusers": "diffusers",
    "accelerate": "diffusers",
    "compel": "diffusers",
    "sentencepiece": "jina",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def missing_extra_message(module: str | None) -> str:
    """One line saying which extra installs `module` (a `ModuleNotFoundError.name`)."""
    top = (module or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return f"the Python module {top!r} is not installed"
    return f'this needs the optional dependency {top!r}: pip install "multimodal-hub-adapters[{extra}]"'


# The sentence-transformers module's defaults shared by the embedding families (`Family.st_module_config` adds the
# family's modalities).
_ST_DEFAULTS = {"normalize": True, "matryoshka_dims": None, "text_kwargs": {}, "image_kwargs": {}, "audio_kwargs": {}}

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="longclip",
            summary="LongCLIP-B/L: original Long-CLIP checkpoint -> CLIP repo with a 248-token text tower",
            converter="hub_configs.longclip",
            code_files=(
                "st_modules/configuration_longclip.py",
                "st_modules/modeling_longclip.py",
                "st_modules/processing_longclip.py",
                *ST_MODULE_CODE_FILES,
            ),
            auto_map={
                "AutoConfig": "configuration_longclip.LongCLIPConfig",
                "AutoModel": "modeling_longclip.LongCLIPModel",
                # The zero-shot-image-classification pipeline resolves its own auto class.
                "AutoModelForZeroShotImageClassification": "modeling_longclip.LongCLIPModel",
                "AutoProcessor": "processing_longclip.LongCLIPProcessor",
            },
            modalities=("text", "image"),
            st_module=_ST_DEFAULTS,
            doors=(*EMBEDDING_DOORS, "stock_clip", "zero_shot_pipeline"),
            trainer="hub_configs.finetune",
            onnx_exporter="hub_configs.onnx_export",
            repos=("LongCLIP-B", "LongCLIP-L"),
        ),
        Family(
            name="longclip-sdxl",
            summary="LongCLIP-L for SDXL: 248-token text encoder, tokenizer and pipeline code for any SDXL base",
            converter="hub_configs.longclip_sdxl",
            code_files=(
                "diffusers_adapters/pipeline_longclip_sdxl.py",
                "diffusers_adapters/sdxl_prompt_weights.py",
                "diffusers_adapters/sdxl_long_prompt_encoder.py",
                "diffusers_adapters/sdxl_modular_blocks.py",
            ),
            rename={"diffusers_adapters/pipeline_longclip_sdxl.py": "pipeline.py"},
            # The Hub id the repo is published as, read by pipeline.py for one-line custom_pipeline loading.
            generated_code=("longclip_sdxl_repo.py",),
            doors=("text_encoder", "custom_pipeline"),
            default_dtype="fp16",
            extras=("diffusers",),
            repos=("LongCLIP-L-SDXL",),
        ),
        Family(
            name="clipclap",
            summary="CLIPCLAP: CLIP text and images plus CLAP audio in CLIP's 512-d space",
            converter="hub_configs.clipclap",
            code_files=(
                "st_modules/configuration_clipclap.py",
                "st_modules/modeling_clipclap.py",
                "st_modules/processing_clipclap.py",
                "st_modules/clap_features.py",
                *ST_MODULE_CODE_FILES,
            ),
            auto_map={
                "AutoConfig": "configuration_clipclap.ClipClapConfig",
                "AutoModel": "modeling_clipclap.ClipClapModel",
                "AutoProcessor": "processing_clipclap.ClipClapProcessor",
            },
            modalities=("text", "image", "audio"),
            st_module=_ST_DEFAULTS,
            doors=EMBEDDING_DOORS,
            extras=("audio",),
            trainer="hub_configs.clipclap_train",
            onnx_exporter="hub_configs.clipclap_onnx",
            repos=("CLIPCLAP",),
        ),
        Family(
            name="jina-clip-v2",
            summary="jina-clip-v2 on transformers 5: upstream snapshot -> native XLM-R text tower + EVA02 vision",
            converter="hub_configs.jina_clip_v2",
            code_files=(
                "st_modules/configuration_jina_clip.py",
                "st_modules/modeling_jina_clip.py",
                "st_modules/jina_eva_vision.py",
                "st_modules/image_processing_jina_clip.py",
                "st_modules/processing_jina_clip.py",
                *ST_MODULE_CODE_FILES,
            ),
            auto_map={
                "AutoConfig": "configuration_jina_clip.JinaCLIPConfig",
                "AutoModel": "modeling_jina_clip.JinaCLIPModel",
                "AutoProcessor": "processing_jina_clip.JinaCLIPProcessor",
                "AutoImageProcessor": "image_processing_jina_clip.JinaCLIPImageProcessor",
            },
            modalities=("text", "image"),
            st_module=_ST_DEFAULTS,
            doors=EMBEDDING_DOORS,
            default_dtype="auto",
            extras=("jina",),
            trainer="hub_configs.finetune",
            onnx_exporter="hub_configs.onnx_export",
            repos=("jina-clip-v2-hf",),
        ),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"Unknown family {name!r}; known: {sorted(FAMILIES)}") from None


def family_of(repo_dir: str) -> Family:
    """The family a built repo folder belongs to, from its `config.json` `auto_map` or its renamed code files."""
    if not os.path.isdir(repo_dir):
        raise FileNotFoundError(f"Repo folder {repo_dir!r} does not exist")
    config_path = os.path.join(repo_dir, "config.json")
    auto_model = None
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            auto_model = json.load(handle).get("auto_map", {}).get("AutoModel")
    for family in FAMILIES.values():
        if family.auto_map and family.auto_map.get("AutoModel") == auto_model:
            return family
        if (
            not family.auto_map
            and family.rename
            and all(os.path.isfile(os.path.join(repo_dir, name)) for name in family.rename.values())
        ):
            return family
    raise ValueError(
        f"{repo_dir!r} is not a repo built by mmhub (no known auto_map AutoModel, found {auto_model!r}); "
        f"families: {sorted(FAMILIES)}"
    )
