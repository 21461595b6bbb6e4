"""jina-clip-v2: convert the published `jinaai/jina-clip-v2` checkpoint into a transformers 5 / sentence-transformers 6 repo.

The upstream checkpoint keeps the text tower under `text_model.transformer.roberta.*` in jina's flash-attention
XLM-RoBERTa layout, with every Linear and Embedding weight wrapped in a LoRA parametrization
(`...parametrizations.weight.original`, `...parametrizations.weight.0.lora_A` / `lora_B`, one slice per task).
Upstream applies its `default_lora_task` adapter to every text, so the conversion merges that adapter into the weights
(`W + scale * B @ A` for Linear, `W + scale * A @ B` for Embedding, `scale = lora_alpha / lora_rank`) and stores a
plain `JinaEmbeddingsV3Model`. The vision tower (`vision_model.*`) keeps its names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from typing import Any

from .builder import RepoBuild

logger = logging.getLogger(__name__)

UPSTREAM_TEXT_PREFIX = "text_model.transformer.roberta."
UPSTREAM_LORA_TASKS = ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# sentence-transformers' default sequence cap, as upstream `encode_text(max_length=512)`; the model handles 8192.
DEFAULT_MAX_SEQ_LENGTH = 512

# Upstream `JinaCLIPVisionConfig` defaults: a missing key in an upstream config.json means these, not ours.
UPSTREAM_VISION_DEFAULTS = {
    "embed_dim": 768,
    "width": 768,
    "image_size": 224,
    "patch_size": 16,
    "layers": 12,
    "head_width": 64,
    "mlp_ratio": 4.0,
    "ls_init_value": None,
    "qkv_bias": True,
    "post_norm": False,
    "rope_embeddings": False,
    "pt_hw_seq_len": 16,
    "intp_freq": False,
    "naive_swiglu": False,
    "subln": False,
    "proj_type": None,
}
# Upstream `XLMRobertaFlashConfig` defaults (the jina-embeddings-v3 backbone) for what tensors cannot tell.
UPSTREAM_TEXT_DEFAULTS = {
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "rotary_emb_base": 20000.0,
    "max_position_embeddings": 8194,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "lora_rank": 4,
    "lora_alpha": 1,
}

# A few sentences per script, so the tiny tokenizer has real pieces for Latin, Cyrillic, CJK and Arabic text.
TINY_TOKENIZER_CORPUS = [
    "A photo of a cat sleeping on a red sofa.",
    "The quick brown fox jumps over the lazy dog near the river.",
    "Represent the query for retrieving evidence documents: where is the cat?",
    "Represent the document for retrieval: a dog runs in the park.",
    "Ein Hund läuft schnell durch den grünen Park.",
    "Le chat dort sur le canapé rouge près de la fenêtre.",
    "El perro corre por la playa al atardecer.",
    "Кошка спит на красном диване у окна.",
    "Быстрая рыжая лиса прыгает через ленивую собаку.",
    "Привет, как дела? Сегодня хорошая погода.",
    "一只猫睡在红色的沙发上。",
    "今天天气很好，我们去公园散步吧。",
    "狗在河边跑得很快。",
    "猫と犬が公園で遊んでいます。",
    "القطة تنام على الأريكة الحمراء بجانب النافذة.",
    "الكلب يركض بسرعة في الحديقة الخضراء.",
    "مرحبا، كيف حالك اليوم؟",
    "Ο γάτος κοιμάται στον καναπέ.",
    "बिल्ली लाल सोफे पर सो रही है।",
]


# ------------------------------------------------------------------------------------------------ conversion
def _load_upstream_state_dict(checkpoint_dir: str) -> dict[str, Any]:
    import torch

    safetensors_path = os.path.join(checkpoint_dir, "model.safetensors")
    if os.path.isfile(safetensors_path):
        from safetensors.torch import load_file

        return load_file(safetensors_path)
    bin_path = os.path.join(checkpoint_dir, "pytorch_model.bin")
    if os.path.isfile(bin_path):
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"No model.safetensors or pytorch_model.bin in {checkpoint_dir}")


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _unwrap(name: str, state_dict: dict[str, Any]) -> Any:
    """The base weight of `name`, whether stored plain or as a LoRA parametrization."""
    if name + ".weight" in state_dict:
        return state_dict[name + ".weight"]
    key = name + ".parametrizations.weight.original"
    if key not in state_dict:
        raise ValueError(f"Upstream checkpoint lacks {name}.weight (plain or parametrized)")
    return state_dict[key]


def _merged_weight(name: str, state_dict: dict[str, Any], lora_index: int | None, scale: float, embedding: bool):
    """Base weight plus the chosen task's LoRA delta, computed in float32 and returned in float32."""
    import torch

    weight = _unwrap(name, state_dict).float()
    a_key = name + ".parametrizations.weight.0.lora_A"
    b_key = name + ".parametrizations.weight.0.lora_B"
    if lora_index is None or a_key not in state_dict:
        return weight
    lora_a, lora_b = state_dict[a_key].float(), state_dict[b_key].float()
    if not 0 <= lora_index < lora_a.shape[0]:
        raise ValueError(f"LoRA task index {lora_index} out of range for {a_key} with {lora_a.shape[0]} tasks")
    # Embeddings store (num_embeddings, rank) @ (rank, dim); linears (out, rank) @ (rank, in).
    delta = lora_a[lora_index] @ lora_b[lora_index] if embedding else lora_b[lora_index] @ lora_a[lora_index]
    if delta.shape != weight.shape:
        raise ValueError(f"LoRA delta of {name} has shape {tuple(delta.shape)}, weight {tuple(weight.shape)}")
    return weight + scale * delta.to(torch.float32)


def upstream_to_config_kwargs(upstream: dict[str, Any], state_dict: dict[str, Any]) -> dict[str, Any]:
    """Map an upstream jina-clip `config.json` (+ tensor shapes) to `JinaCLIPConfig` keyword arguments."""
    if upstream.get("model_type") not in (None, "jina_clip"):
        raise ValueError(f"Expected a jina_clip config.json, got model_type={upstream.get('model_type')!r}")
    if upstream.get("add_projections"):
        raise ValueError("Upstream checkpoints with add_projections=True are not supported (jina-clip-v2 has none)")
    text_cfg = dict(upstream.get("text_config") or {})
    hf_kwargs = {**UPSTREAM_TEXT_DEFAULTS, **(text_cfg.get("hf_model_config_kwargs") or {})}
    words = _unwrap(UPSTREAM_TEXT_PREFIX + "embeddings.word_embeddings", state_dict)
    token_types = _unwrap(UPSTREAM_TEXT_PREFIX + "embeddings.token_type_embeddings", state_dict)
    fc1 = _unwrap(UPSTREAM_TEXT_PREFIX + "encoder.layers.0.mlp.fc1", state_dict)
    layer_ids = {
        int(key[len(UPSTREAM_TEXT_PREFIX + "encoder.layers.") :].split(".")[0])
        for key in state_dict
        if key.startswith(UPSTREAM_TEXT_PREFIX + "encoder.layers.")
    }
    vocab_size, hidden_size = words.shape
    text_config = {
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden_size),
        "num_hidden_layers": len(layer_ids),
        "num_attention_heads": int(hf_kwargs["num_attention_heads"]),
        "intermediate_size": int(fc1.shape[0]),
        "hidden_act": hf_kwargs["hidden_act"],
        "max_position_embeddings": int(hf_kwargs["max_position_embeddings"]),
        "type_vocab_size": int(token_types.shape[0]),
        "layer_norm_eps": float(hf_kwargs["layer_norm_eps"]),
        "pad_token_id": int(hf_kwargs["pad_token_id"]),
        "bos_token_id": int(hf_kwargs["bos_token_id"]),
        "eos_token_id": int(hf_kwargs["eos_token_id"]),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(hf_kwargs["rotary_emb_base"])},
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    embed_dim = int(text_cfg.get("embed_dim", 768))
    proj_type = text_cfg.get("proj_type")
    if proj_type not in (None, "linear"):
        raise ValueError(f"Unsupported upstream text proj_type {proj_type!r} (expected None or 'linear')")
    has_text_proj = proj_type == "linear" or hidden_size != embed_dim
    vision_config = {**UPSTREAM_VISION_DEFAULTS}
    vision_config.update({k: v for k, v in (upstream.get("vision_config") or {}).items() if k in vision_config})
    from transformers.models.jina_embeddings_v3 import JinaEmbeddingsV3Config  # noqa: F401  (fail early if missing)

    task_instructions = dict(_default_task_instructions())
    task_instructions.update(hf_kwargs.get("task_instructions") or {})
    kwargs = {
        "text_config": text_config,
        "vision_config": vision_config,
        "projection_dim": embed_dim,
        "text_projection_type": "linear" if has_text_proj else None,
        "text_projection_bias": bool(text_cfg.get("proj_bias", False)),
        "logit_scale_init_value": float(upstream.get("logit_scale_init_value", 2.6592)),
        "task_instructions": task_instructions,
    }
    if upstream.get("matryoshka_dimensions"):
        kwargs["matryoshka_dimensions"] = [int(d) for d in upstream["matryoshka_dimensions"]]
    if upstream.get("truncate_dim"):
        kwargs["truncate_dim"] = int(upstream["truncate_dim"])
    return kwargs


def _default_task_instructions() -> dict[str, str]:
    from st_modules.configuration_jina_clip import DEFAULT_TASK_INSTRUCTIONS

    return DEFAULT_TASK_INSTRUCTIONS


def default_lora_index(upstream: dict[str, Any], state_dict: dict[str, Any]) -> tuple[int | None, str | None]:
    """Which LoRA slice upstream applies to every text: (index, task name), or (None, None) when it applies none."""
    text_cfg = upstream.get("text_config") or {}
    task = text_cfg.get("default_lora_task")
    probe = UPSTREAM_TEXT_PREFIX + "embeddings.word_embeddings.parametrizations.weight.0.lora_A"
    if task is None or probe not in state_dict:
        return None, None
    tasks = (text_cfg.get("hf_model_config_kwargs") or {}).get("lora_adaptations")
    num_slices = state_dict[probe].shape[0]
    if tasks is None:
        if num_slices != 1:
            raise ValueError("Upstream config has no lora_adaptations list to locate default_lora_task in")
        return 0, task
    if task not in tasks:
        raise ValueError(f"default_lora_task {task!r} is not one of lora_adaptations {tasks}")
    if len(tasks) != num_slices:
        raise ValueError(f"lora_adaptations lists {len(tasks)} tasks but the checkpoint holds {num_slices} adapters")
    return tasks.index(task), task


def convert_state_dict(upstream: dict[str, Any], state_dict: dict[str, Any]) -> dict[str, Any]:
    """Upstream jina-clip state dict -> `JinaCLIPModel` state dict (float32, default LoRA adapter merged)."""
    import torch

    hf_kwargs = {**UPSTREAM_TEXT_DEFAULTS, **((upstream.get("text_config") or {}).get("hf_model_config_kwargs") or {})}
    lora_index, _ = default_lora_index(upstream, state_dict)
    scale = float(hf_kwargs["lora_alpha"]) / float(hf_kwargs["lora_rank"])
    out: dict[str, Any] = {}
    p = UPSTREAM_TEXT_PREFIX
    for name in ("word_embeddings", "token_type_embeddings"):
        out[f"text_model.embeddings.{name}.weight"] = _merged_weight(
            p + "embeddings." + name, state_dict, lora_index, scale, embedding=True
        )
    out["text_model.embeddings.LayerNorm.weight"] = state_dict[p + "emb_ln.weight"].float()
    out["text_model.embeddings.LayerNorm.bias"] = state_dict[p + "emb_ln.bias"].float()
    layer_ids = sorted(
        {int(k[len(p + "encoder.layers.") :].split(".")[0]) for k in state_dict if k.startswith(p + "encoder.layers.")}
    )
    for i in layer_ids:
        src, dst = f"{p}encoder.layers.{i}.", f"text_model.layers.{i}."
        qkv = _merged_weight(src + "mixer.Wqkv", state_dict, lora_index, scale, embedding=False)
        qkv_bias = state_dict[src + "mixer.Wqkv.bias"].float()
        for part, weight, bias in zip(("q", "k", "v"), qkv.chunk(3, dim=0), qkv_bias.chunk(3, dim=0)):
            out[f"{dst}self_attn.{part}_proj.weight"] = weight.contiguous()
            out[f"{dst}self_attn.{part}_proj.bias"] = bias.contiguous()
        renames = {"mixer.out_proj": "self_attn.o_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for old, new in renames.items():
            out[f"{dst}{new}.weight"] = _merged_weight(src + old, state_dict, lora_index, scale, embedding=False)
            out[f"{dst}{new}.bias"] = state_dict[src + old + ".bias"].float()
        for old, new in {"norm1": "post_attention_layernorm", "norm2": "post_mlp_layernorm"}.items():
            out[f"{dst}{new}.weight"] = state_dict[src + old + ".weight"].float()
            out[f"{dst}{new}.bias"] = state_dict[src + old + ".bias"].float()
    for key in ("text_model.proj.weight", "text_model.proj.bias"):
        if key in state_dict:
            out[key.replace("text_model.proj", "text_projection")] = state_dict[key].float()
    for key, value in state_dict.items():
        if key.startswith("vision_model.") or key == "logit_scale":
            if key.startswith("vision_model.rope."):
                continue  # derived tables, recomputed from the config
            out[key] = value.float() if torch.is_floating_point(value) else value
    unknown = [
        key
        for key in state_dict
        if not (key.startswith(p) or key.startswith("vision_model.") or key.startswith("text_model.proj."))
        and key != "logit_scale"
        and not key.startswith(("visual_projection.", "text_projection."))
    ]
    if unknown:
        raise ValueError(f"Unexpected keys in the upstream checkpoint: {unknown[:8]}")
    return out


def _source_dtype(state_dict: dict[str, Any]):
    import torch

    for value in state_dict.values():
        if torch.is_floating_point(value):
            return value.dtype
    return torch.float32


def _build_tokenizer_from_dir(checkpoint_dir: str, model_max_length: int):
    from transformers import XLMRobertaTokenizer

    tokenizer_json = os.path.join(checkpoint_dir, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        tokenizer = XLMRobertaTokenizer(tokenizer_file=tokenizer_json)
    elif os.path.isfile(os.path.join(checkpoint_dir, "sentencepiece.bpe.model")):
        tokenizer = XLMRobertaTokenizer.from_pretrained(checkpoint_dir)
    else:
        raise FileNotFoundError(f"No tokenizer.json or sentencepiece.bpe.model in {checkpoint_dir}")
    tokenizer.model_max_length = model_max_length
    return tokenizer


def _build_image_processor(checkpoint_dir: str, image_size: int):
    from transformers import CLIPImageProcessor

    path = os.path.join(checkpoint_dir, "preprocessor_config.json")
    upstream = _read_json(path) if os.path.isfile(path) else {}
    size = upstream.get("size", image_size)
    if isinstance(size, (list, tuple)):
        size = size[0]
    if upstream.get("resize_mode", "shortest") != "shortest":
        raise ValueError(f"Unsupported upstream resize_mode {upstream.get('resize_mode')!r} (expected 'shortest')")
    resample = {"bicubic": 3, "bilinear": 2}.get(upstream.get("interpolation", "bicubic"))
    if resample is None:
        raise ValueError(f"Unsupported upstream interpolation {upstream.get('interpolation')!r}")
    return CLIPImageProcessor(
        size={"shortest_edge": int(size)},
        crop_size={"height": int(size), "width": int(size)},
        resample=resample,
        image_mean=list(upstream.get("mean", OPENAI_CLIP_MEAN)),
        image_std=list(upstream.get("std", OPENAI_CLIP_STD)),
        do_convert_rgb=True,
    )


def build_from_snapshot(
    checkpoint_dir: str,
    *,
    dtype: str = "auto",
    repo_id: str = "ORG/jina-clip-v2-hf",
    provenance: str | None = None,
) -> RepoBuild:
    """A `RepoBuild` (weights, processor, prompts, ST settings, card) from an upstream jina-clip-v2 snapshot.

    Args:
        checkpoint_dir: a local snapshot of `jinaai/jina-clip-v2` (`config.json`, `model.safetensors`, tokenizer
            files, `preprocessor_config.json`).
        dtype: `"auto"` (the checkpoint's dtype), `"fp32"`, `"fp16"` or `"bf16"`.
        repo_id: the Hub id used in the model card snippets.
        provenance: a sentence for the model card about where the weights come from.
    """
    from hub_configs.builder import torch_dtype
    from st_modules.configuration_jina_clip import JinaCLIPConfig
    from st_modules.modeling_jina_clip import JinaCLIPModel
    from st_modules.processing_jina_clip import JinaCLIPProcessor

    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"Checkpoint folder not found: {checkpoint_dir}")
    upstream = _read_json(os.path.join(checkpoint_dir, "config.json"))
    state_dict = _load_upstream_state_dict(checkpoint_dir)
    target_dtype = _source_dtype(state_dict) if dtype == "auto" else torch_dtype(dtype)
    _, lora_task = default_lora_index(upstream, state_dict)

    config = JinaCLIPConfig(**upstream_to_config_kwargs(upstream, state_dict))
    model = JinaCLIPModel(config)
    model.load_state_dict(convert_state_dict(upstream, state_dict), strict=True)
    model.to(target_dtype)
    tokenizer = _build_tokenizer_from_dir(
        checkpoint_dir, model_max_length=config.text_config.max_position_embeddings - 2
    )
    processor = JinaCLIPProcessor(
        image_processor=_build_image_processor(checkpoint_dir, config.vision_config.image_size), tokenizer=tokenizer
    )
    prompts = dict(config.task_instructions)
    card = {
        "title": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "license": "cc-by-nc-4.0",
        "lora_task": lora_task or "none",
        "provenance": provenance or "Converted from the original `jinaai/jina-clip-v2` weights with `mmhub convert`.",
        "prompts": ", ".join(f"`{name}`" for name, text in prompts.items() if text),
        "matryoshka_dims": ", ".join(str(d) for d in config.matryoshka_dimensions),
    }
    # sentence-transformers reads texts up to the tokenizer's limit, as upstream's custom_st leaves it.
    module_config = {"matryoshka_dims": list(config.matryoshka_dimensions), "max_seq_length": None}
    return RepoBuild(model=model, processor=processor, card=card, prompts=prompts, module_config=module_config)


# ------------------------------------------------------------------------------------------------ tiny
def build_tiny_tokenizer(vocab_size: int = 400):
    """A small XLM-RoBERTa-style Unigram tokenizer trained offline on `TINY_TOKENIZER_CORPUS` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizer

    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
        show_progress=False,
    )
    backend.train_from_iterator(TINY_TOKENIZER_CORPUS, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        backend.save(path)
        tokenizer = XLMRobertaTokenizer(tokenizer_file=path)
    tokenizer.model_max_length = 8192
    return tokenizer


TINY_SIZES = {
    "text_hidden": 32,
    "text_layers": 2,
    "text_heads": 2,
    "text_intermediate": 64,
    "vision_width": 32,
    "vision_layers": 2,
    "vision_head_width": 16,
    "image_size": 64,
    "patch_size": 14,
    "pt_hw_seq_len": 2,
    "lora_rank": 2,
    "lora_alpha": 4,
}


def write_tiny_upstream_checkpoint(out_dir: str, *, seed: int = 0, default_lora_task: str = "retrieval.query") -> str:
    """Write a random-weight checkpoint in the exact upstream `jinaai/jina-clip-v2` layout (keys, config.json).

    Every LoRA factor is random (upstream initialises `lora_B` to zero, which would hide merge errors).
    """
    import torch
    from safetensors.torch import save_file

    s = TINY_SIZES
    os.makedirs(out_dir, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(out_dir)
    vocab = len(tokenizer)
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def norm(prefix: str, dim: int, into: dict) -> None:
        into[prefix + ".weight"] = 1.0 + rand(dim, std=0.1)
        into[prefix + ".bias"] = rand(dim, std=0.1)

    tasks = list(UPSTREAM_LORA_TASKS)
    rank, n_tasks = s["lora_rank"], len(tasks)
    sd: dict[str, torch.Tensor] = {}

    def lora_linear(prefix: str, fan_out: int, fan_in: int) -> None:
        sd[prefix + ".parametrizations.weight.original"] = rand(fan_out, fan_in)
        sd[prefix + ".parametrizations.weight.0.lora_A"] = rand(n_tasks, rank, fan_in)
        sd[prefix + ".parametrizations.weight.0.lora_B"] = rand(n_tasks, fan_out, rank)
        sd[prefix + ".bias"] = rand(fan_out, std=0.1)

    def lora_embedding(prefix: str, rows: int, dim: int) -> None:
        sd[prefix + ".parametrizations.weight.original"] = rand(rows, dim, std=0.5)
        sd[prefix + ".parametrizations.weight.0.lora_A"] = rand(n_tasks, rows, rank)
        sd[prefix + ".parametrizations.weight.0.lora_B"] = rand(n_tasks, rank, dim)

    h, p = s["text_hidden"], UPSTREAM_TEXT_PREFIX
    lora_embedding(p + "embeddings.word_embeddings", vocab, h)
    lora_embedding(p + "embeddings.token_type_embeddings", 1, h)
    norm(p + "emb_ln", h, sd)
    for i in range(s["text_layers"]):
        layer = f"{p}encoder.layers.{i}."
        lora_linear(layer + "mixer.Wqkv", 3 * h, h)
        lora_linear(layer + "mixer.out_proj", h, h)
        norm(layer + "norm1", h, sd)
        lora_linear(layer + "mlp.fc1", s["text_intermediate"], h)
        lora_linear(layer + "mlp.fc2", h, s["text_intermediate"])
        norm(layer + "norm2", h, sd)

    w, v = s["vision_width"], "vision_model."
    grid = s["image_size"] // s["patch_size"]
    hidden = int(w * 2.6667)
    sd[v + "cls_token"] = rand(1, 1, w)
    sd[v + "pos_embed"] = rand(1, grid * grid + 1, w)
    sd[v + "patch_embed.proj.weight"] = rand(w, 3, s["patch_size"], s["patch_size"], std=0.05)
    sd[v + "patch_embed.proj.bias"] = rand(w, std=0.1)
    for i in range(s["vision_layers"]):
        block = f"{v}blocks.{i}."
        norm(block + "norm1", w, sd)
        for name in ("q_proj", "k_proj", "v_proj"):
            sd[block + f"attn.{name}.weight"] = rand(w, w)
        sd[block + "attn.q_bias"] = rand(w, std=0.1)
        sd[block + "attn.v_bias"] = rand(w, std=0.1)
        norm(block + "attn.inner_attn_ln", w, sd)
        sd[block + "attn.proj.weight"] = rand(w, w)
        sd[block + "attn.proj.bias"] = rand(w, std=0.1)
        norm(block + "norm2", w, sd)
        for name in ("w1", "w2"):
            sd[block + f"mlp.{name}.weight"] = rand(hidden, w)
            sd[block + f"mlp.{name}.bias"] = rand(hidden, std=0.1)
        norm(block + "mlp.ffn_ln", hidden, sd)
        sd[block + "mlp.w3.weight"] = rand(w, hidden)
        sd[block + "mlp.w3.bias"] = rand(w, std=0.1)
    norm(v + "norm", w, sd)
    sd["logit_scale"] = torch.tensor(2.6592)
    save_file({k: t.contiguous() for k, t in sd.items()}, os.path.join(out_dir, "model.safetensors"))

    config = {
        "add_projections": False,
        "architectures": ["JinaCLIPModel"],
        "logit_scale_init_value": 2.6592,
        "matryoshka_dimensions": [8, 16, 32],
        "model_type": "jina_clip",
        "projection_dim": h,
        "text_config": {
            "default_instruction_task": None,
            "default_lora_task": default_lora_task,
            "embed_dim": h,
            "hf_model_config_kwargs": {
                "load_trained_adapters": False,
                "lora_adaptations": tasks,
                "lora_alpha": s["lora_alpha"],
                "lora_dropout_p": 0.0,
                "lora_main_params_trainable": False,
                "lora_rank": rank,
                "num_attention_heads": s["text_heads"],
                "task_instructions": {"retrieval.query": "Represent the query for retrieving evidence documents: "},
                "use_flash_attn": False,
            },
            "hf_model_name_or_path": "jinaai/jina-embeddings-v3",
            "model_type": "jina_clip_text",
            "pooler_type": "mean_pooler",
            "proj_bias": False,
            "proj_type": None,
        },
        "torch_dtype": "float32",
        "truncate_dim": None,
        "vision_config": {
            "embed_dim": w,
            "fused_layer_norm": False,
            "head_width": s["vision_head_width"],
            "image_size": s["image_size"],
            "intp_freq": True,
            "layers": s["vision_layers"],
            "ls_init_value": None,
            "mlp_ratio": 2.6667,
            "model_type": "jina_clip_vision",
            "naive_swiglu": True,
            "patch_dropout": 0.1,
            "patch_size": s["patch_size"],
            "post_norm": False,
            "proj_type": None,
            "pt_hw_seq_len": s["pt_hw_seq_len"],
            "qkv_bias": True,
            "rope_embeddings": True,
            "subln": True,
            "width": w,
            "x_attention": False,
        },
    }
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {
                "fill_color": 0,
                "image_processor_type": "JinaCLIPImageProcessor",
                "interpolation": "bicubic",
                "mean": OPENAI_CLIP_MEAN,
                "std": OPENAI_CLIP_STD,
                "resize_mode": "shortest",
                "size": s["image_size"],
            },
            handle,
            indent=2,
        )
    return out_dir


# ------------------------------------------------------------------------------------------- registry hooks
def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="local snapshot folder of jinaai/jina-clip-v2")
    parser.add_argument("--repo-id", default="ORG/jina-clip-v2-hf", help="Hub id shown in the model card")


def convert(args: argparse.Namespace) -> RepoBuild:
    """`mmhub convert jina-clip-v2`: upstream snapshot -> repo."""
    return build_from_snapshot(args.checkpoint, dtype=args.dtype, repo_id=args.repo_id)


def tiny(seed: int, args: argparse.Namespace | None = None) -> RepoBuild:
    """`mmhub tiny jina-clip-v2`: a random tiny upstream-layout checkpoint pushed through the real converter."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_upstream_checkpoint(tmp, seed=seed)
        return build_from_snapshot(
            tmp,
            dtype="fp32",
            repo_id="ORG/tiny-random-jina-clip-v2",
            provenance="Tiny random weights for tests and offline demos; embeddings are meaningless.",
        )
