"""Reference outputs of the upstream jina-clip-v2 implementation, for tests/test_jina_upstream.py.

Runs in the separate environment built by `make_venv.sh` (transformers 4.46, CPU torch), never in the project's
own. It builds tiny random jina-clip-v2 checkpoints with the upstream remote code itself (upstream's `JinaCLIPModel`
instantiated from a config in the published layout, random weights and LoRA factors, `save_pretrained`), reloads
them the way users do (`AutoModel.from_pretrained(..., trust_remote_code=True)`), runs upstream's doors and stores
what they return:

- `<layout>/`: the checkpoint upstream wrote (config.json, model.safetensors) plus the tokenizer and
  preprocessor_config.json in the published layout; `<layout>.npz`: upstream's outputs on it.
- `images/*.png`: the image inputs; `pixels.npz`: upstream's processor output for them (the same for both layouts).
- `backbone/jina-embeddings-v3/config.json`: the tiny text backbone config both checkpoints reference.
- `manifest.json`: texts, images, tasks, truncation widths, error messages, versions and input-file hashes.

The upstream files are not part of this repository (see tests/upstream/README.md for where they come from); pass
their folder. They are checked against the SHA-256 sums below, copied into a scratch Hugging Face cache under
their Hub ids (`jinaai/jina-clip-implementation`, `jinaai/xlm-roberta-flash-implementation`,
`jinaai/jina-embeddings-v3`) and resolved from there offline, exactly as the published `auto_map` entries name
them. The only public copy of the jina-clip-implementation files has flattened imports and local edits to how the
text tower is built. No upstream text is carried here: the scratch copy gets package-relative imports by a
mechanical rewrite of its import statements (`package_relative`), and the published text-tower behaviour is supplied
at run time through upstream's own classes (`use_published_text_tower`).

Usage: tests/upstream/regenerate.sh UPSTREAM_DIR VENV_DIR (builds the environment when missing, then runs
    VENV_DIR/bin/python tests/upstream/generate_jina_reference.py UPSTREAM_DIR tests/fixtures/jina_upstream).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

# SHA-256 of every upstream input file, so a rerun uses exactly the files the committed fixtures were made with.
UPSTREAM_FILES = {
    "jina-clip-implementation": {
        "configuration_clip.py": "871c90fe5cf7438ea47f811b3cd11906ce4d5eb140e8f485aa2a36d9e1e57592",
        "eva_model.py": "9f7d140fcc0c1c87f06b304b5346e82e647397970ca612e3cb7016eca2bd496b",
        "hf_model.py": "b23399f16b04597d0d862f4bad38d25c1d7da1980d396cdc377563905de450ad",
        "modeling_clip.py": "58a2a492fa6194f63a7fcd3298ef15dd4c0176463dc64d7a31ad13b4e51b643a",
        "processing_clip.py": "6d01925358ece107e568eb0363258971cf768851d27ce1dcbf8034f5110ff95b",
        "rope_embeddings.py": "960698db4a1ce96cb6ab9ae0f6611e00cadd16cee4d63fb50aed8e04af358521",
        "transform.py": "3dbae796192429c203db6840ade96f4a57397e47719675fd28266f7c301906ca",
    },
    "xlm-roberta-flash-implementation": {
        "block.py": "780b08f908042eb3cbc2819d41fb2bf5b65836e5ca0c23328735f02f7b59a74f",
        "configuration_xlm_roberta.py": "c9f89c2fca97b2495c2cc0f348c6b4133b0d164760291ac4549a0eeb7b650e4d",
        "embedding.py": "360f78e392055ff8a4a47e7c1fdf9e04277b3d1ea005ca0c78bc7bd6f2d21be7",
        "mha.py": "5277540434395421637a68791c297dc0a1195afe37cb27fcaed2922ff0248916",
        "mlp.py": "f7f2dde3508d1c40b42e2f82237190ce1d9a6310cc5204ce85ade2659b829d2b",
        "modeling_lora.py": "356365b8602a63e0a542fdadc1e72d6a02efdce4e47edfb15a43ad4da7539732",
        "modeling_xlm_roberta.py": "2a168042c63bb1b816893af5b319d1fd9ddbb435cf76551902367b8157d65902",
        "rotary.py": "3f11e130d4b5d6d25dcd8fb9d972ef28fea242858e268393ddc3942eec9325ac",
        "stochastic_depth.py": "6e352eab354052edc5a8eeba2a5e4f713312f790295230875d80f2eaf3bc0345",
        "xlm_padding.py": "df78bb408fb3bbbeb31ea471655b075b8628d0634c7a6416a22950c145ae7d41",
    },
    "jina-clip-v2": {
        "config.json": "b5466de03392479d778745bbdb1905e297cd07ca76694703bd7d7b84d58aa853",
        "config_sentence_transformers.json": "77e07a8d9ca412c537b80009d91c33492e24e3c0627d445dc16334e46a7a329d",
        "custom_st.py": "ef8c64be0cc5168989ea2fd605badc96728a88d6bf1401bdb64f6d673862c8b2",
        "modules.json": "30bf61a9b8910f812794c5ff4b4decb88952c020e56db8105ea62cba33298c2b",
        "preprocessor_config.json": "920bc482e3dad0de2bffe4e534181a1f61a4a6baefa1aee53b75849557786301",
        "special_tokens_map.json": "8c785abebea9ae3257b61681b4e6fd8365ceafde980c21970d001e834cf10835",
        "tokenizer_config.json": "e1bc77da5b90ba65b47aa8bd776c6317f47d50dc6717e92b10177686b3b8f161",
    },
    "jina-embeddings-v3": {
        "config.json": "556941599709401b3dc94acf775526f1c4670abe5e123cb53cca8eb5250b0cb5",
    },
}
# Hub ids the published configs' `auto_map` / `hf_model_name_or_path` name, and the input folder behind each.
CLIP_REPO = "jinaai/jina-clip-implementation"
HUB_REPOS = {
    CLIP_REPO: "jina-clip-implementation",
    "jinaai/xlm-roberta-flash-implementation": "xlm-roberta-flash-implementation",
}
BACKBONE_ID = "jinaai/jina-embeddings-v3"

# JinaCLIPModel.__init__ gets its text tower from this module-level function of upstream's modeling_clip; the public
# copy changed what it builds, so the generator supplies one with the published behaviour (see
# `use_published_text_tower`).
TEXT_TOWER_BUILDER = "_build_text_tower"

# Tiny sizes replacing the published ones; every key of the published configs is kept.
TEXT_SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VISION_SIZES = {
    "embed_dim": 32,
    "width": 32,
    "head_width": 16,
    "image_size": 64,
    "layers": 2,
    # 64 px / 14 px patches = a 4 x 4 grid with 8 unread border pixels and a rotary table interpolated from a
    # smaller pre-training grid, as the published 512 px / 36 x 36 grid with pt_hw_seq_len 16.
    "pt_hw_seq_len": 2,
}
MATRYOSHKA_DIMENSIONS = [8, 16, 32]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_VOCAB = 600

# The second layout: several LoRA tasks, a rank / alpha other than the published 4 / 4, a default adapter that
# is not the first slice, and a default instruction task.
MULTI_TASK = {
    "lora_adaptations": ["retrieval.query", "retrieval.passage", "text-matching"],
    "task_instructions": {
        "retrieval.query": "Represent the query for retrieving evidence documents: ",
        "retrieval.passage": "Represent the document for retrieval: ",
        "text-matching": "",
    },
    "lora_rank": 2,
    "lora_alpha": 3,
    "default_lora_task": "retrieval.passage",
    "default_instruction_task": "retrieval.query",
}
LAYOUTS = {"published": 0, "multitask": 1}  # name -> weight seed
CONFIG_FORMS = {
    "published": "the published config.json, key for key, with tiny sizes",
    "multitask": "exactly what upstream's save_pretrained wrote",
}

TEXTS = [
    "A photo of a cat sleeping on a red sofa.",  # Latin
    "Кошка спит на красном диване у окна.",  # Cyrillic
    "一只猫睡在红色的沙发上。",  # CJK (Chinese)
    "القطة تنام على الأريكة الحمراء بجانب النافذة.",  # Arabic
    "猫と犬が公園で遊んでいます。",  # CJK (Japanese)
    "Der Hund läuft schnell durch den grünen Park, und die Kinder lachen laut.",  # Latin with diacritics
    "dog",
    # Whitespace the tokenizer's normaliser and pre-tokenizer must treat as upstream's does.
    "  two leading spaces,  a double one and a trailing one ",
    "tab\tseparated\nand a new line",
    "non\u00a0breaking and ideographic\u3000spaces",
]
# More sentences for the tokenizer corpus and the long text.
EXTRA_SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river.",
    "Le chat dort sur le canapé rouge près de la fenêtre.",
    "El perro corre por la playa al atardecer.",
    "Быстрая рыжая лиса прыгает через ленивую собаку.",
    "Привет, как дела? Сегодня хорошая погода.",
    "今天天气很好，我们去公园散步吧。",
    "狗在河边跑得很快。",
    "الكلب يركض بسرعة في الحديقة الخضراء.",
    "مرحبا، كيف حالك اليوم؟",
    "Ο γάτος κοιμάται στον καναπέ.",
    "बिल्ली लाल सोफे पर सो रही है।",
    "Represent the query for retrieving evidence documents: where is the cat?",
    "Represent the document for retrieval: a dog runs in the park.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]
LONG_TEXT_TOKENS = 3000
TRUNCATE_DIMS = [None, 5, 8, 16]  # None: full width; 5 is not a Matryoshka width (upstream only warns)
IMAGE_TRUNCATE_DIMS = [None, 8]
FORWARD_TEXTS = 4  # forward logits: the first texts against every RGB image
# name, (width, height), mode ("PT": palette with a transparent entry), EXIF orientation. The manifest records
# which of them this package's encode_image / sentence-transformers decode exactly as upstream (upstream calls
# `.convert("RGB")`; this package also applies EXIF orientation and composites alpha on white).
IMAGES = [
    ("square_64_rgb", (64, 64), "RGB", None),
    ("square_130_rgb", (130, 130), "RGB", None),
    ("wide_90x70_rgb", (90, 70), "RGB", None),
    ("tall_50x120_rgb", (50, 120), "RGB", None),
    ("margin6_70x64_rgb", (70, 64), "RGB", None),  # crop offset 3
    ("margin7_64x71_rgb", (64, 71), "RGB", None),  # crop offset round(3.5) = 4, flooring gives 3
    ("odd_33x97_rgb", (33, 97), "RGB", None),
    ("wide_200x131_rgb", (200, 131), "RGB", None),
    ("tiny_5x3_rgb", (5, 3), "RGB", None),
    ("grey_90x70_L", (90, 70), "L", None),
    ("palette_64x71_P", (64, 71), "P", None),
    ("bilevel_33x97_1", (33, 97), "1", None),
    ("alpha_70x64_RGBA", (70, 64), "RGBA", None),
    ("grey_alpha_50x120_LA", (50, 120), "LA", None),
    ("palette_transparent_90x70_P", (90, 70), "PT", None),
    ("exif_rotated_90x70_rgb", (90, 70), "RGB", 6),
]


# ------------------------------------------------------------------------------------------------ environment
def declare_torchvision_op_schemas() -> None:
    """Let torchvision import next to a CPU build of torch.

    The torchvision wheel for torch 2.13 on the package index is built against CUDA torch, so its compiled ops
    cannot load next to the CPU build, and `torchvision._meta_registrations` then fails registering fake kernels
    for two ops that were never declared. Declaring their schemas lets the pure-Python transforms (which upstream
    uses on PIL images and which never call compiled ops) import; the ops themselves stay unavailable.
    """
    import torch

    library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    declare_torchvision_op_schemas.library = library  # keep the definitions alive


def check_environment() -> None:
    import torch

    if not torch.__version__.startswith("2.13.0") or torch.version.cuda is not None:
        raise SystemExit(
            f"expected the CPU build of torch 2.13.0, got {torch.__version__} (CUDA {torch.version.cuda})"
        )
    declare_torchvision_op_schemas()
    import einops  # noqa: F401
    import sentence_transformers
    import sentencepiece  # noqa: F401
    import timm  # noqa: F401
    import torchvision
    import transformers

    print(
        f"torch {torch.__version__} | transformers {transformers.__version__} | sentence-transformers "
        f"{sentence_transformers.__version__} | torchvision {torchvision.__version__}"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_inputs(upstream: Path) -> None:
    problems = []
    for folder, files in UPSTREAM_FILES.items():
        for name, digest in files.items():
            path = upstream / folder / name
            if not path.is_file():
                problems.append(f"missing {folder}/{name}")
            elif _sha256(path) != digest:
                problems.append(f"{folder}/{name} differs from the file the fixtures were made with")
    if problems:
        raise SystemExit("Upstream inputs do not match:\n  " + "\n  ".join(problems))


# The Hub loads the .py files of a repo as one package, so the published files import their siblings
# package-relatively. The public copy of jina-clip-implementation names its siblings, and two modules of
# xlm-roberta-flash-implementation, by their bare module names, as code run from a plain folder on sys.path does.
# Rather than carrying corrected text, the scratch copy is derived by a mechanical rewrite of the import statements
# (`package_relative`), and the bare names of the other folder's modules are bound to upstream's own modules
# (`bind_bare_module_names`).
def _absolute_imports(source: str) -> list[tuple[ast.Import | ast.ImportFrom, list[str]]]:
    """Every absolute import statement of `source`, at any depth, with the dotted module names it imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node, [node.module]))
        elif isinstance(node, ast.Import):
            found.append((node, [alias.name for alias in node.names]))
    return found


def _relative_import_count(source: str) -> int:
    return sum(isinstance(node, ast.ImportFrom) and node.level > 0 for node in ast.walk(ast.parse(source)))


def package_relative(folder: str, sources: dict[str, str]) -> dict[str, str]:
    """`sources` (the .py files of one upstream folder, by file name) with their sibling imports package-relative.

    An import statement whose module is a file of the same folder is rewritten in place: `from <sibling> import ...`
    gets a leading dot on the module name, `import <sibling>` becomes an import from the package itself. Only the
    head of the statement changes, so every other character (and every line number) stays as it was. A statement the
    rewrite cannot express (a dotted sibling name, siblings mixed with other modules, two statements on one line)
    stops the run. Afterwards no file may import a sibling absolutely, and each has exactly one more relative import
    per rewritten statement.
    """
    siblings = {Path(name).stem for name in sources if name.endswith(".py")}
    rewritten = {}
    for name, source in sources.items():
        if not name.endswith(".py"):
            rewritten[name] = source
            continue
        lines = source.splitlines(keepends=True)
        done: set[int] = set()
        for node, modules in _absolute_imports(source):
            local = [module for module in modules if module.split(".")[0] in siblings]
            if not local:
                continue
            where = f"{folder}/{name}:{node.lineno}"
            if len(local) != len(modules) or any("." in module for module in local) or node.lineno in done:
                raise SystemExit(f"{where}: cannot make this import of {local} package-relative")
            index = node.lineno - 1
            indent, statement = lines[index][: node.col_offset], lines[index][node.col_offset :]
            head = "from" if isinstance(node, ast.ImportFrom) else "import"
            if indent.strip() or not re.match(rf"{head}\s", statement):
                raise SystemExit(f"{where}: expected the statement to start its line with {head!r}")
            if head == "from":
                statement = re.sub(rf"^from\s+{re.escape(modules[0])}\b", f"from .{modules[0]}", statement, count=1)
            else:
                statement = "from . " + statement
            lines[index] = indent + statement
            done.add(node.lineno)
        result = "".join(lines)
        left = [
            module
            for _, modules in _absolute_imports(result)
            for module in modules
            if module.split(".")[0] in siblings
        ]
        if left or _relative_import_count(result) != _relative_import_count(source) + len(done):
            raise SystemExit(f"{folder}/{name}: sibling imports left absolute after the rewrite: {left}")
        rewritten[name] = result
    return rewritten


def hub_sources(upstream: Path) -> dict[str, dict[str, str]]:
    """The files of each code repo (by Hub id) as the scratch Hub cache serves them."""
    return {
        repo_id: package_relative(
            folder,
            {name: (upstream / folder / name).read_text(encoding="utf-8") for name in UPSTREAM_FILES[folder]},
        )
        for repo_id, folder in HUB_REPOS.items()
    }


def bare_names_across_repos(sources: dict[str, dict[str, str]]) -> dict[str, tuple[str, list[str]]]:
    """Modules of one code repo that another imports by bare name: {module: (its repo id, names imported from it)}."""
    owners = {Path(name).stem: repo_id for repo_id, files in sources.items() for name in files if name.endswith(".py")}
    found: dict[str, tuple[str, list[str]]] = {}
    for repo_id, files in sources.items():
        for name, source in files.items():
            if not name.endswith(".py"):
                continue
            for node, modules in _absolute_imports(source):
                for module in modules:
                    owner = owners.get(module)
                    if owner is None or owner == repo_id:
                        continue
                    if not isinstance(node, ast.ImportFrom):
                        raise SystemExit(f"{repo_id}/{name}:{node.lineno}: expected `from {module} import <name>`")
                    names = found.setdefault(module, (owner, []))[1]
                    names.extend(alias.name for alias in node.names if alias.name not in names)
    return found


def write_hub_repo(cache: Path, repo_id: str, files: dict[str, str]) -> None:
    """A Hugging Face cache entry for `repo_id` holding `files`, resolvable with HF_HUB_OFFLINE=1."""
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode())
    revision = digest.hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (snapshot / name).write_text(text, encoding="utf-8")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


# ----------------------------------------------------------------------------------------------------- inputs
def tiny_backbone_config(published: dict, vocab_size: int) -> dict:
    config = dict(published)
    config.update(TEXT_SIZES)
    config["vocab_size"] = vocab_size
    config["matryoshka_dimensions"] = list(MATRYOSHKA_DIMENSIONS)
    return config


def tiny_clip_config(published: dict, layout: str) -> dict:
    config = json.loads(json.dumps(published))
    config["projection_dim"] = VISION_SIZES["embed_dim"]
    config["matryoshka_dimensions"] = list(MATRYOSHKA_DIMENSIONS)
    config["text_config"]["embed_dim"] = VISION_SIZES["embed_dim"]
    config["vision_config"].update(VISION_SIZES)
    if layout == "multitask":
        kwargs = config["text_config"]["hf_model_config_kwargs"]
        for key in ("lora_adaptations", "task_instructions", "lora_rank", "lora_alpha"):
            kwargs[key] = MULTI_TASK[key]
        config["text_config"]["default_lora_task"] = MULTI_TASK["default_lora_task"]
        config["text_config"]["default_instruction_task"] = MULTI_TASK["default_instruction_task"]
    if set(config) != set(published) or set(config["text_config"]) != set(published["text_config"]):
        raise AssertionError("the tiny config must keep the published keys")
    return config


def build_tokenizer(out: Path, published: Path, work: Path):
    """A small XLM-RoBERTa tokenizer made the way the real one was: a SentencePiece Unigram model (nmt_nfkc
    normalisation) converted by transformers' XLM-R converter, so tokenizer.json has the published structure
    (Precompiled charsmap + whitespace collapsing, Metaspace, <s> $A </s>). Saved with the published tokenizer files'
    layout."""
    import sentencepiece
    from transformers import XLMRobertaTokenizerFast

    prefix = work / "sentencepiece"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS + EXTRA_SENTENCES),
        model_prefix=str(prefix),
        model_type="unigram",
        vocab_size=TOKENIZER_VOCAB,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,
        minloglevel=2,
    )
    tokenizer = XLMRobertaTokenizerFast(vocab_file=str(prefix) + ".model", model_max_length=8194)
    tokenizer.save_pretrained(out)
    (out / "sentencepiece.bpe.model").unlink(missing_ok=True)  # the published repo ships tokenizer.json only
    # The published tokenizer_config.json / special_tokens_map.json, with this vocabulary's ids.
    config = json.loads((published / "tokenizer_config.json").read_text(encoding="utf-8"))
    decoder = {}
    for entry in config["added_tokens_decoder"].values():
        decoder[str(tokenizer.convert_tokens_to_ids(entry["content"]))] = entry
    config["added_tokens_decoder"] = decoder
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    shutil.copyfile(published / "special_tokens_map.json", out / "special_tokens_map.json")
    return XLMRobertaTokenizerFast.from_pretrained(out)


def make_images(out: Path):
    """Smooth random images (they compress well) in several sizes and modes, written as PNG."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed, (name, (width, height), mode, orientation) in enumerate(IMAGES):
        rng = np.random.default_rng(1000 + seed)
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        channels = []
        for _ in range(4):
            fx, fy, phase = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6), rng.uniform(0, 6.3)
            channels.append(127.5 + 110 * np.sin(fx * x + fy * y + phase) + rng.normal(0, 6, (height, width)))
        rgba = Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8), "RGBA")
        info = {}
        if mode == "RGBA":
            image = rgba
        elif mode == "LA":
            image = rgba.convert("LA")
        elif mode == "PT":
            image = rgba.convert("RGB").quantize(colors=32)
            info["transparency"] = 0  # palette entry 0 is transparent
        elif mode == "P":
            image = rgba.convert("RGB").quantize(colors=64)
        else:
            image = rgba.convert(mode)
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            info["exif"] = exif.tobytes()
        path = out / f"{name}.png"
        image.save(path, **info)
        reopened = Image.open(path)
        same_pixels = reopened.mode in ("RGB", "L", "P", "1") and "transparency" not in reopened.info
        same_pixels = same_pixels and orientation is None
        records.append(
            {
                "file": path.name,
                "size": [width, height],
                "mode": reopened.mode,
                "exif_orientation": orientation,
                "transparency": "transparency" in reopened.info,
                # encode_image / sentence-transformers decode like upstream (`.convert("RGB")`) only here.
                "rgb_decoding_matches": bool(same_pixels),
            }
        )
    return records


def long_text(tokenizer) -> str:
    """Sentences of every script, numbered, until the text is about LONG_TEXT_TOKENS tokens."""
    pool = TEXTS + EXTRA_SENTENCES
    parts, index = [], 0
    while len(tokenizer(" ".join(parts))["input_ids"]) < LONG_TEXT_TOKENS:
        parts.append(f"{index}. {pool[index % len(pool)]}")
        index += 1
    return " ".join(parts)


# -------------------------------------------------------------------------------------------- the text tower
def bind_bare_module_names(bare: dict[str, tuple[str, list[str]]]) -> None:
    """Make each module name in `bare` (see `bare_names_across_repos`) import upstream's module of that name.

    transformers' dynamic-module loader refuses a remote-code file until every module it imports, inside functions
    too, can be imported. The public copy's two bare-name imports of xlm-roberta-flash-implementation modules sit in
    code the published path never runs (see `use_published_text_tower`), so they only have to resolve; they resolve
    to the module objects transformers itself loads for that repo, registered under the bare name.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    # Sorted: configuration_xlm_roberta before modeling_lora, the order in which AutoConfig and AutoModel load them on
    # the published path (a module first imported by a sibling would be executed again when the loader asks for it).
    for module, (repo_id, names) in sorted(bare.items()):
        if module in sys.modules or importlib.util.find_spec(module) is not None:
            raise SystemExit(f"the bare module name {module!r} is already importable here; refusing to shadow it")
        owners = {get_class_from_dynamic_module(f"{module}.{name}", repo_id).__module__ for name in names}
        if len(owners) != 1:
            raise SystemExit(f"{names} of {repo_id}/{module}.py come from several modules: {sorted(owners)}")
        sys.modules[module] = sys.modules[owners.pop()]
    for module, (repo_id, names) in bare.items():
        for name in names:
            if getattr(sys.modules[module], name) is not get_class_from_dynamic_module(f"{module}.{name}", repo_id):
                raise SystemExit(f"{repo_id}/{module}.py was executed twice; {name} is no longer one class")


def use_published_text_tower() -> None:
    """Make upstream's JinaCLIPModel build its text tower the published way, however it is constructed.

    Published behaviour: the text tower is upstream's HFTextEncoder given the backbone's Hub id
    (`hf_model_name_or_path`, here jinaai/jina-embeddings-v3) and `hf_model_config_kwargs`, and no config. For that
    call HFTextEncoder loads the backbone's config.json with AutoConfig (remote code allowed, so upstream's
    XLMRobertaFlashConfig), updates it with the kwargs and builds the backbone with AutoModel.from_config, which the
    backbone config's auto_map resolves to upstream's XLMRobertaLoRA. That branch of HFTextEncoder is unchanged in
    the public copy.

    The public copy's builder differs: it makes an XLMRobertaFlashConfig from the class defaults plus the kwargs
    (full-size layers the tiny checkpoints do not fit, a rotary base of 10000 where jina-embeddings-v3 has 20000, no
    matryoshka_dimensions), names the code folder as the backbone's location (where XLMRobertaModel then looks for a
    tokenizer), passes that config to HFTextEncoder with empty extra kwargs, and HFTextEncoder was edited to build
    XLMRobertaLoRA directly for such a config. It also changed JinaCLIPTextConfig's default `hf_model_name_or_path`,
    which never applies here: every config the generator builds or loads names the backbone (each model built is
    checked), and save_pretrained writes the nested configs in full, defaults included.

    JinaCLIPModel is constructed by `write_checkpoint`, inside `from_pretrained` and inside upstream's `custom_st`;
    what all of them run is the module-level function `TEXT_TOWER_BUILDER` of modeling_clip. Its text is left alone;
    the loaded module's binding is pointed at a builder of this file that makes the published call to upstream's own
    HFTextEncoder. The loader keeps the module (it only re-executes it when the files change), and
    `check_published_text_tower` confirms on every model built that the tower is the published one.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    # The configuration module first, as AutoModel.from_pretrained does: modeling_clip imports it, and asking the
    # loader for it after that would execute it again and make a second JinaCLIPConfig class.
    get_class_from_dynamic_module("configuration_clip.JinaCLIPConfig", CLIP_REPO)
    modeling = sys.modules[get_class_from_dynamic_module("modeling_clip.JinaCLIPModel", CLIP_REPO).__module__]
    if not callable(getattr(modeling, TEXT_TOWER_BUILDER, None)):
        raise SystemExit(f"upstream's modeling_clip has no {TEXT_TOWER_BUILDER}(); the text tower cannot be supplied")
    encoder_class = modeling.HFTextEncoder

    def published_builder(text_config):
        # No `config`: HFTextEncoder then resolves the backbone config itself, as published.
        return encoder_class(
            model_name_or_path=text_config.hf_model_name_or_path,
            output_dim=text_config.embed_dim,
            model_config_kwargs=text_config.hf_model_config_kwargs,
            pooler_type=text_config.pooler_type,
            proj_type=text_config.proj_type,
            proj_bias=text_config.proj_bias,
            default_instruction_task=text_config.default_instruction_task,
            default_lora_task=text_config.default_lora_task,
            pretrained=False,
            trust_remote_code=True,
        )

    setattr(modeling, TEXT_TOWER_BUILDER, published_builder)


def check_published_text_tower(model, where: str) -> None:
    """The text backbone of upstream's `model` was configured from the tiny jina-embeddings-v3 config."""
    config = model.text_model.config
    sizes = {key: getattr(config, key, None) for key in TEXT_SIZES}
    if config.name_or_path != BACKBONE_ID or sizes != TEXT_SIZES:
        raise AssertionError(f"{where}: the text backbone comes from {config.name_or_path!r} with {sizes}")


# ------------------------------------------------------------------------------------------------ checkpoints
def randomize(model, seed: int) -> None:
    """Random but well-conditioned weights everywhere, LoRA factors included (upstream zeroes one of each pair)."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    norms = {name for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)}
    state = model.state_dict()
    new = {}
    for key, value in state.items():
        if not torch.is_floating_point(value):
            new[key] = value
            continue
        owner, _, leaf = key.rpartition(".")
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float64)
        if owner in norms:
            new_value = 1.0 + 0.1 * noise if leaf == "weight" else 0.1 * noise
        elif key == "logit_scale":
            new_value = torch.tensor(2.9, dtype=torch.float64)
        elif leaf in ("lora_A", "lora_B"):
            new_value = 0.2 * noise
        elif "word_embeddings" in key or "token_type_embeddings" in key:
            new_value = 0.5 * noise
        elif "patch_embed" in key and value.dim() == 4:
            new_value = 0.05 * noise
        elif leaf in ("bias", "q_bias", "v_bias"):
            new_value = 0.1 * noise
        else:
            new_value = 0.2 * noise
        new[key] = new_value.to(value.dtype)
    model.load_state_dict(new, strict=True)


def write_checkpoint(layout: str, out: Path, clip_config: dict, tokenizer_dir: Path, published: Path) -> dict:
    """Instantiate upstream's JinaCLIPModel from `clip_config`, randomise it and `save_pretrained` it to `out`.

    Returns the state dict it saved.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config_class = get_class_from_dynamic_module("configuration_clip.JinaCLIPConfig", CLIP_REPO)
    model_class = get_class_from_dynamic_module("modeling_clip.JinaCLIPModel", CLIP_REPO)
    config = config_class.from_dict(json.loads(json.dumps(clip_config)))
    model = model_class(config).eval()
    check_published_text_tower(model, f"{layout}: JinaCLIPModel(config)")
    randomize(model, LAYOUTS[layout])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # save_pretrained also copies configuration_clip.py next to the weights; that is upstream code, which stays out
    # of the fixtures (the config's auto_map still names the Hub module, which is what loads it).
    for path in out.glob("*.py"):
        path.unlink()
    written = sorted(path.name for path in out.iterdir())
    if written != ["config.json", "model.safetensors"]:
        raise AssertionError(f"save_pretrained wrote {written}")
    if layout == "published":
        # The published config.json is not save_pretrained's output (that one spells out every PretrainedConfig
        # default in the nested configs, as the multitask layout keeps); here it is the published file, key for
        # key, with tiny sizes.
        (out / "config.json").write_text(json.dumps(clip_config, indent=4, ensure_ascii=False) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, out / name)
    processor = json.loads((published / "preprocessor_config.json").read_text(encoding="utf-8"))
    processor["size"] = VISION_SIZES["image_size"]
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=4) + "\n")
    return model.state_dict()


def check_reload(out: Path, saved: dict) -> None:
    """What upstream loads from the folder must be what it wrote."""
    import torch

    reloaded = load_upstream(out).state_dict()
    if list(reloaded) != list(saved):
        raise AssertionError(f"upstream reloads other tensors from {out} than it saved")
    for key, value in saved.items():
        if not torch.equal(value, reloaded[key]):
            raise AssertionError(f"upstream reloads {key} differently from what it saved")


def load_upstream(path: Path):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), trust_remote_code=True).eval()
    check_published_text_tower(model, f"AutoModel.from_pretrained({path.name})")
    return model


# ------------------------------------------------------------------------------------------------------ doors
def run_doors(ckpt: Path, layout: str, texts_long: str, images: list, image_dir: Path, published: Path, work: Path):
    """Every door upstream offers, on the checkpoint folder as users load it."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer

    arrays: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    model = load_upstream(ckpt)
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    tasks = list(model.text_model.task_instructions)
    with torch.inference_mode():
        tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
        arrays["text/input_ids"] = tokens["input_ids"].numpy()
        arrays["text/features"] = model.get_text_features(tokens["input_ids"]).numpy()
        long_ids = tokenizer([texts_long], return_tensors="pt")["input_ids"]
        arrays["long/input_ids"] = long_ids.numpy()
        arrays["long/features"] = model.get_text_features(long_ids).numpy()

        for task in [None, *tasks]:
            for dim in TRUNCATE_DIMS:
                key = f"encode_text/{task or 'none'}/{dim or 'full'}"
                arrays[key] = np.asarray(model.encode_text(TEXTS, task=task, truncate_dim=dim))
        arrays["encode_text_long/none/full"] = np.asarray(model.encode_text([texts_long]))
        for task in ("summarize", "retrieval.passage" if layout == "published" else "classification"):
            try:
                model.encode_text(TEXTS, task=task)
            except ValueError as error:
                errors[task] = str(error)
            else:
                raise AssertionError(f"upstream accepted task {task!r}")

        processor = AutoImageProcessor.from_pretrained(str(ckpt), trust_remote_code=True)
        opened = [Image.open(image_dir / record["file"]) for record in images]
        pixels = processor(opened)["pixel_values"]
        arrays["image/pixels"] = pixels.numpy()
        arrays["image/features"] = model.get_image_features(pixels).numpy()
        # Relative to the fixture folder (the working directory while the doors run): sentence-transformers 3
        # glues prompts onto these strings, so they must not depend on where the repository lives.
        paths = [f"{image_dir.name}/{record['file']}" for record in images]
        for dim in IMAGE_TRUNCATE_DIMS:
            arrays[f"encode_image/{dim or 'full'}"] = np.asarray(model.encode_image(paths, truncate_dim=dim))

        rgb = [i for i, record in enumerate(images) if record["mode"] == "RGB"]
        output = model(input_ids=tokens["input_ids"][:FORWARD_TEXTS], pixel_values=pixels[rgb], return_dict=True)
        arrays["forward/image_index"] = np.asarray(rgb)
        arrays["forward/logits_per_text"] = output.logits_per_text.numpy()
        arrays["forward/logits_per_image"] = output.logits_per_image.numpy()
        arrays["logit_scale"] = model.logit_scale.detach().numpy()

    arrays.update(sentence_transformers_door(ckpt, layout, texts_long, paths, published, work))
    return arrays, errors, tasks


def sentence_transformers_door(ckpt: Path, layout: str, texts_long: str, paths: list, published: Path, work: Path):
    """Upstream's `custom_st` module on a scratch copy of the checkpoint with the published ST files."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    folder = work / f"st-{layout}"
    shutil.copytree(ckpt, folder)
    for name in ("custom_st.py", "modules.json"):
        shutil.copyfile(published / name, folder / name)
    (folder / "1_Normalize").mkdir()
    st_config = json.loads((published / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    if layout == "multitask":
        st_config["prompts"] = dict(MULTI_TASK["task_instructions"])
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    check_published_text_tower(st[0].model, f"SentenceTransformer({folder.name})")
    if st[0].max_seq_length is not None:
        raise AssertionError(f"custom_st max_seq_length is {st[0].max_seq_length}, expected unset")
    arrays = {
        "st/text": st.encode(TEXTS),
        "st/long": st.encode([texts_long]),
        "st/image": st.encode(paths),
        "st/mixed": st.encode([TEXTS[0], paths[2], TEXTS[1], paths[5]]),
    }
    for name, prompt in st.prompts.items():
        if prompt:
            arrays[f"st/prompt/{name}"] = st.encode(TEXTS, prompt_name=name)
            # sentence-transformers 3 prepends the prompt to every string, image paths included; custom_st then
            # cannot open "<prompt><path>" as a file and embeds it as text. Recorded to document the quirk.
            arrays[f"st/prompt_image/{name}"] = st.encode(paths[:3], prompt_name=name)
            as_text = st.encode([prompt + path for path in paths[:3]])
            if not np.allclose(arrays[f"st/prompt_image/{name}"], as_text, atol=1e-6, rtol=0):
                raise AssertionError("expected custom_st to embed prompted image paths as text")
    return {key: np.asarray(value) for key, value in arrays.items()}


# ------------------------------------------------------------------------------------------------------- main
def save_npz(path: Path, arrays: dict) -> None:
    """`np.savez_compressed`, but byte-identical for identical arrays (fixed member timestamps), so a rerun that
    reproduces the outputs leaves the committed files untouched."""
    import io
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[key]), allow_pickle=False)
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, buffer.getvalue())


def generate(upstream: Path, out: Path, work: Path, bare: dict[str, tuple[str, list[str]]]) -> None:
    import numpy as np
    import sentence_transformers
    import torch
    import torchvision
    import transformers

    upstream, work = upstream.resolve(), work.resolve()
    published = upstream / "jina-clip-v2"
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    os.chdir(out)
    for stale in ["images", "backbone", *LAYOUTS]:
        shutil.rmtree(out / stale, ignore_errors=True)

    bind_bare_module_names(bare)
    use_published_text_tower()
    tokenizer_dir = work / "tokenizer"
    tokenizer = build_tokenizer(tokenizer_dir, published, work)
    backbone = tiny_backbone_config(
        json.loads((upstream / "jina-embeddings-v3" / "config.json").read_text(encoding="utf-8")), len(tokenizer)
    )
    # Upstream's XLMRobertaModel also loads the backbone repo's tokenizer when it is built.
    backbone_files = {name: (tokenizer_dir / name).read_text(encoding="utf-8") for name in TOKENIZER_FILES}
    backbone_files["config.json"] = json.dumps(backbone, indent=2)
    write_hub_repo(Path(os.environ["HF_HUB_CACHE"]), BACKBONE_ID, backbone_files)
    (out / "backbone" / "jina-embeddings-v3").mkdir(parents=True)
    (out / "backbone" / "jina-embeddings-v3" / "config.json").write_text(json.dumps(backbone, indent=2) + "\n")

    images = make_images(out / "images")
    text_long = long_text(tokenizer)
    published_config = json.loads((published / "config.json").read_text(encoding="utf-8"))
    manifest = {
        "texts": TEXTS,
        "long_text": text_long,
        "images": images,
        "truncate_dims": TRUNCATE_DIMS,
        "image_truncate_dims": IMAGE_TRUNCATE_DIMS,
        "forward_texts": FORWARD_TEXTS,
        "layouts": {},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "numpy": np.__version__,
        },
        "upstream_sha256": UPSTREAM_FILES,
    }
    # Every checkpoint is written before any is loaded: loading a remote-code model from a local folder registers
    # its classes for the auto API, after which save_pretrained would copy the code and point auto_map at it.
    saved = {
        layout: write_checkpoint(
            layout, out / layout, tiny_clip_config(published_config, layout), tokenizer_dir, published
        )
        for layout in LAYOUTS
    }
    pixels = None
    for layout in LAYOUTS:
        ckpt = out / layout
        check_reload(ckpt, saved[layout])
        arrays, errors, tasks = run_doors(ckpt, layout, text_long, images, out / "images", published, work)
        if pixels is None:
            pixels = arrays["image/pixels"]
        elif not np.array_equal(pixels, arrays["image/pixels"]):
            raise AssertionError("both layouts share the processor, so their pixels must agree")
        del arrays["image/pixels"]
        save_npz(out / f"{layout}.npz", arrays)
        manifest["layouts"][layout] = {
            "config_json": CONFIG_FORMS[layout],
            "tasks": tasks,
            "errors": errors,
            "arrays": sorted(arrays),
        }
    save_npz(out / "pixels.npz", {"pixels": pixels})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", nargs="?", type=Path, help="folder with the upstream files (see README.md)")
    parser.add_argument("out", nargs="?", type=Path, help="fixture folder to (re)write")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--check-environment", action="store_true", help="only check this environment")
    args = parser.parse_args(argv)
    if args.check_environment:
        check_environment()
        return 0
    if args.upstream is None or args.out is None:
        parser.error("upstream and out are required")
    verify_inputs(args.upstream)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        hub = work / "hub"
        sources = hub_sources(args.upstream)
        for repo_id, files in sources.items():
            write_hub_repo(hub, repo_id, files)
        # Before transformers / huggingface_hub are imported: they read these once.
        os.environ.update(
            HF_HUB_CACHE=str(hub),
            HF_HOME=str(work / "home"),
            HF_MODULES_CACHE=str(work / "modules"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        check_environment()
        warnings.filterwarnings("ignore", message=".*(Flash attention|xFormers).*")
        generate(args.upstream, args.out, work, bare_names_across_repos(sources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
