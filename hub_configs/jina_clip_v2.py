"""jina-clip-v2: convert the published `jinaai/jina-clip-v2` checkpoint into a transformers 5 / sentence-transformers 6 repo.

The upstream checkpoint keeps the text tower under `text_model.transformer.roberta.*` in jina's flash-attention
XLM-RoBERTa layout, with every Linear and Embedding weight wrapped in a LoRA parametrization
(`...parametrizations.weight.original`, `...parametrizations.weight.0.lora_A` / `lora_B`, one slice per task).
Upstream applies its `default_lora_task` adapter to every text, so the conversion merges that adapter into the weights
(`W + scale * B @ A` for Linear, `W + scale * A @ B` for Embedding, `scale = lora_alpha / lora_rank`) and stores a
plain `JinaEmbeddingsV3Model`. The vision tower (`vision_model.*`) keeps its names.

Upstream builds its text tower from a second config: `text_config.hf_model_name_or_path` (the published model names
`jinaai/jina-embeddings-v3`) updated with `text_config.hf_model_config_kwargs`. The converter resolves that config the
same way (see `resolve_text_backbone_config`) and reads every backbone hyperparameter from it; a snapshot whose
settings this package cannot reproduce is refused with an error naming the setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from typing import Any

from .builder import RepoBuild, read_json

logger = logging.getLogger(__name__)

UPSTREAM_TEXT_PREFIX = "text_model.transformer.roberta."
# The published checkpoint's task (its only LoRA adapter) and instruction prefix.
PUBLISHED_TASK_INSTRUCTIONS = {"retrieval.query": "Represent the query for retrieving evidence documents: "}
# Safetensors metadata transformers 4 writes and requires when loading (`{"format": "pt"}`).
SAFETENSORS_METADATA = {"format": "pt"}

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
# Vision keys that change nothing at inference: attention kernels (xformers, apex) and training-only regularisers.
UPSTREAM_VISION_INERT = {"x_attention", "fused_layer_norm", "patch_dropout", "drop_path_rate"}
# Upstream `XLMRobertaFlashConfig` defaults (xlm-roberta-flash-implementation), for keys neither the referenced text
# config nor `hf_model_config_kwargs` sets.
UPSTREAM_TEXT_DEFAULTS = {
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "max_position_embeddings": 8194,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "rotary",
    "rotary_emb_base": 10000.0,
    "lora_adaptations": None,
    "task_instructions": None,
    "lora_rank": 4,
    "lora_alpha": 1,
}
# Text backbone keys that do not change inference outputs (dropout, init, kernels, bookkeeping).
UPSTREAM_TEXT_INERT = {
    "_name_or_path",
    "architectures",
    "attention_probs_dropout_prob",
    "auto_map",
    "classifier_dropout",
    "emb_pooler",
    "hidden_dropout_prob",
    "initializer_range",
    "load_trained_adapters",
    "lora_dropout_p",
    "lora_main_params_trainable",
    "matryoshka_dimensions",
    "model_type",
    "output_past",
    "torch_dtype",
    "transformers_version",
    "truncate_dim",
    "use_cache",
    "use_flash_attn",
    "use_reentrant",
    "fused_bias_fc",
    "fused_dropout_add_ln",
    "pad_vocab_size_multiple",
    "mlp_checkpoint_lvl",
    "tokenizer_class",
}
# Upstream's MLP: these activations run as tanh-approximated GELU, every other name as exact GELU; only the names
# below are accepted (anything else would be a misconfiguration upstream silently turns into GELU).
UPSTREAM_GELU_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_pytorch_tanh",
    "gelu_fast": "gelu_pytorch_tanh",
    "gelu_pytorch_tanh": "gelu_pytorch_tanh",
}
UPSTREAM_TEXT_KEYS = {
    "default_instruction_task",
    "default_lora_task",
    "embed_dim",
    "hf_model_config_kwargs",
    "hf_model_name_or_path",
    "model_type",
    "pooler_type",
    "proj_bias",
    "proj_type",
}
# What transformers 4's PretrainedConfig writes into each nested config when upstream's own `save_pretrained` saves
# a checkpoint (`JinaCLIPConfig.to_dict` spells the sub-configs out in full, unlike the hand-written published
# config.json): generation defaults, label maps, output switches and bookkeeping. Upstream's towers read none of them
# (token ids come from the text backbone config), so they are accepted whatever their values.
PRETRAINED_CONFIG_KEYS = {
    "_attn_implementation_autoset",
    "_name_or_path",
    "add_cross_attention",
    "architectures",
    "bad_words_ids",
    "begin_suppress_tokens",
    "bos_token_id",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "diversity_penalty",
    "do_sample",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "eos_token_id",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "id2label",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "pad_token_id",
    "prefix",
    "problem_type",
    "pruned_heads",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict",
    "return_dict_in_generate",
    "sep_token_id",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "top_k",
    "top_p",
    "torch_dtype",
    "torchscript",
    "transformers_version",
    "typical_p",
    "use_bfloat16",
}
UPSTREAM_TOP_INERT = {
    "_commit_hash",  # written by upstream's save_pretrained
    "architectures",
    "auto_map",
    "initializer_factor",
    "model_type",
    "projection_dim",  # only read by upstream when add_projections=True
    "torch_dtype",
    "transformers.js_config",
    "transformers_version",
    "use_text_flash_attn",
    "use_vision_xformers",
    "_name_or_path",
}
UPSTREAM_TOP_KEYS = {
    "add_projections",
    "logit_scale_init_value",
    "matryoshka_dimensions",
    "text_config",
    "truncate_dim",
    "vision_config",
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


def _refuse_unknown(section: str, keys, known: set[str]) -> None:
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(
            f"Upstream {section} has settings this converter cannot represent or does not know: {unknown}; "
            "refusing rather than converting them silently"
        )


def _backbone_config_path(candidate: str) -> str | None:
    if os.path.isfile(candidate):
        return candidate
    if os.path.isfile(os.path.join(candidate, "config.json")):
        return os.path.join(candidate, "config.json")
    return None


def resolve_text_backbone_config(
    checkpoint_dir: str, upstream: dict[str, Any], text_backbone: str | None = None
) -> dict[str, Any]:
    """The text backbone config upstream builds its text tower from, as one dict.

    Upstream loads `text_config.hf_model_name_or_path` with `AutoConfig` and updates it with
    `text_config.hf_model_config_kwargs`; keys neither sets take `XLMRobertaFlashConfig`'s defaults. The referenced
    config is looked up, in order, at `text_backbone` (a folder or a config.json), as a folder named
    `hf_model_name_or_path` (absolute or relative to the snapshot), and in the local Hugging Face cache.

    Raises:
        FileNotFoundError: the referenced config is nowhere to be found (nothing is fetched from the network).
    """
    text_cfg = upstream.get("text_config") or {}
    name = text_cfg.get("hf_model_name_or_path")
    candidates = [text_backbone] if text_backbone else []
    if name:
        candidates += [name, os.path.join(checkpoint_dir, name)]
    path = next((found for c in candidates if c and (found := _backbone_config_path(c))), None)
    if path is None and name and not text_backbone:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            path = cached if isinstance(cached, str) else None
        except Exception:  # an id that is not a valid repo name is simply not in the cache
            path = None
    if path is None:
        raise FileNotFoundError(
            f"The text backbone config {text_backbone or name!r} (text_config.hf_model_name_or_path) was not found "
            "locally; pass its folder or config.json as text_backbone= (for jinaai/jina-clip-v2: the config.json "
            "of jinaai/jina-embeddings-v3)"
        )
    backbone = {**UPSTREAM_TEXT_DEFAULTS, **read_json(path)}
    backbone.update(text_cfg.get("hf_model_config_kwargs") or {})
    return backbone


def lora_tasks(backbone: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The LoRA task names and their instruction prefixes, checked the way upstream's `XLMRobertaLoRA` checks them."""
    tasks = backbone.get("lora_adaptations")
    instructions = backbone.get("task_instructions")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"Upstream lora_adaptations must be a non-empty list of task names, got {tasks!r}")
    if (
        not isinstance(instructions, dict)
        or len(instructions) != len(tasks)
        or not all(key in tasks and isinstance(value, str) for key, value in instructions.items())
    ):
        raise ValueError(
            f"Upstream task_instructions must give one instruction per LoRA task {tasks}, got {instructions!r} "
            "(upstream's XLMRobertaLoRA refuses this checkpoint too)"
        )
    return list(tasks), {task: instructions[task] for task in tasks}


def sentence_transformers_prompts(task_instructions: dict[str, str]) -> dict[str, str]:
    """sentence-transformers prompts of the converted repo: one per LoRA task the checkpoint carries."""
    return dict(task_instructions)


def sentence_transformers_max_seq_length(tokenizer) -> int:
    """Token limit of the sentence-transformers door.

    Upstream's `custom_st.Transformer` leaves `max_seq_length` unset and falls back to the tokenizer's
    `model_max_length` (8194 for the published tokenizer), since `JinaCLIPConfig` has no `max_position_embeddings`.
    `encode_text` keeps its own default of 512 (`JinaCLIPConfig.max_text_length`).
    """
    return int(tokenizer.model_max_length)


def _text_activation(backbone: dict[str, Any]) -> str:
    act = backbone.get("hidden_act")
    if act not in UPSTREAM_GELU_ACTIVATIONS:
        raise ValueError(
            f"Upstream hidden_act {act!r} is not supported; jina's MLP is GELU, expected one of "
            f"{sorted(UPSTREAM_GELU_ACTIVATIONS)}"
        )
    return UPSTREAM_GELU_ACTIVATIONS[act]


def _check_text_backbone(backbone: dict[str, Any], head_dim: int) -> None:
    """Refuse backbone settings `JinaEmbeddingsV3Model` cannot reproduce."""
    known = (
        set(UPSTREAM_TEXT_DEFAULTS)
        | UPSTREAM_TEXT_INERT
        | {
            "rotary_emb_dim",
            "rotary_emb_scale_base",
            "rotary_emb_interleaved",
            "last_layer_subset",
            "fused_mlp",
        }
    )
    _refuse_unknown("text backbone config", backbone, known)
    if backbone["position_embedding_type"] != "rotary":
        raise ValueError(
            f"Upstream position_embedding_type {backbone['position_embedding_type']!r} is not supported "
            "(only 'rotary')"
        )
    if backbone.get("rotary_emb_dim") not in (None, head_dim, float(head_dim)):
        raise ValueError(f"Partial rotary (rotary_emb_dim={backbone['rotary_emb_dim']}) is not supported")
    if backbone.get("rotary_emb_scale_base") is not None:
        raise ValueError("Upstream rotary_emb_scale_base (xPos) is not supported")
    if backbone.get("rotary_emb_interleaved"):
        raise ValueError("Upstream rotary_emb_interleaved=True is not supported")
    if backbone.get("last_layer_subset"):
        raise ValueError("Upstream last_layer_subset=True is not supported")
    if backbone["type_vocab_size"] < 1:
        raise ValueError(f"Upstream type_vocab_size must be positive, got {backbone['type_vocab_size']}")


def _layer_ids(state_dict: dict[str, Any]) -> list[int]:
    prefix = UPSTREAM_TEXT_PREFIX + "encoder.layers."
    return sorted({int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)})


def _check_shape(name: str, actual, expected: tuple[int, ...]) -> None:
    if tuple(actual.shape) != tuple(expected):
        raise ValueError(
            f"Upstream checkpoint tensor {name} has shape {tuple(actual.shape)}, but its config implies {expected}"
        )


def upstream_to_config_kwargs(
    upstream: dict[str, Any], state_dict: dict[str, Any], backbone: dict[str, Any]
) -> dict[str, Any]:
    """Map an upstream jina-clip `config.json` and its resolved text backbone config to `JinaCLIPConfig` kwargs.

    Every hyperparameter comes from the configs; the tensors are only checked against them.
    """
    if upstream.get("model_type") not in (None, "jina_clip"):
        raise ValueError(f"Expected a jina_clip config.json, got model_type={upstream.get('model_type')!r}")
    _refuse_unknown("config.json", upstream, UPSTREAM_TOP_KEYS | UPSTREAM_TOP_INERT)
    if upstream.get("add_projections"):
        raise ValueError("Upstream checkpoints with add_projections=True are not supported (jina-clip-v2 has none)")
    text_cfg = dict(upstream.get("text_config") or {})
    _refuse_unknown("text_config", text_cfg, UPSTREAM_TEXT_KEYS | PRETRAINED_CONFIG_KEYS)
    if text_cfg.get("pooler_type") not in (None, "mean_pooler"):
        raise ValueError(f"Upstream text pooler_type {text_cfg.get('pooler_type')!r} is not supported (mean only)")

    hidden, heads = int(backbone["hidden_size"]), int(backbone["num_attention_heads"])
    if hidden % heads:
        raise ValueError(f"Upstream hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    _check_text_backbone(backbone, hidden // heads)
    layers = _layer_ids(state_dict)
    if layers != list(range(int(backbone["num_hidden_layers"]))):
        raise ValueError(
            f"Upstream config says {backbone['num_hidden_layers']} text layers, the checkpoint holds layers {layers}"
        )
    p = UPSTREAM_TEXT_PREFIX
    words = _unwrap(p + "embeddings.word_embeddings", state_dict)
    if words.shape[1] != hidden or words.shape[0] < int(backbone["vocab_size"]):
        raise ValueError(
            f"Upstream word embeddings have shape {tuple(words.shape)}, config vocab_size {backbone['vocab_size']} "
            f"and hidden_size {hidden}"
        )
    _check_shape(
        p + "embeddings.token_type_embeddings",
        _unwrap(p + "embeddings.token_type_embeddings", state_dict),
        (int(backbone["type_vocab_size"]), hidden),
    )
    _check_shape(
        p + "encoder.layers.0.mlp.fc1",
        _unwrap(p + "encoder.layers.0.mlp.fc1", state_dict),
        (int(backbone["intermediate_size"]), hidden),
    )
    text_config = {
        # The table may be padded past vocab_size (pad_vocab_size_multiple); the tensor is what gets loaded.
        "vocab_size": int(words.shape[0]),
        "hidden_size": hidden,
        "num_hidden_layers": int(backbone["num_hidden_layers"]),
        "num_attention_heads": heads,
        "intermediate_size": int(backbone["intermediate_size"]),
        "hidden_act": _text_activation(backbone),
        "max_position_embeddings": int(backbone["max_position_embeddings"]),
        "type_vocab_size": int(backbone["type_vocab_size"]),
        "layer_norm_eps": float(backbone["layer_norm_eps"]),
        "pad_token_id": int(backbone["pad_token_id"]),
        "bos_token_id": int(backbone["bos_token_id"]),
        "eos_token_id": int(backbone["eos_token_id"]),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(backbone["rotary_emb_base"])},
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }

    vision_cfg = dict(upstream.get("vision_config") or {})
    _refuse_unknown(
        "vision_config",
        vision_cfg,
        set(UPSTREAM_VISION_DEFAULTS) | UPSTREAM_VISION_INERT | PRETRAINED_CONFIG_KEYS | {"model_type"},
    )
    vision_config = {
        **UPSTREAM_VISION_DEFAULTS,
        **{k: v for k, v in vision_cfg.items() if k in UPSTREAM_VISION_DEFAULTS},
    }
    embed_dim = int(vision_config["embed_dim"])
    text_embed_dim = int(text_cfg.get("embed_dim", 768))
    if text_embed_dim != embed_dim:
        raise ValueError(
            f"Upstream text embed_dim {text_embed_dim} != vision embed_dim {embed_dim} without projections "
            "(upstream refuses this too)"
        )
    proj_type = text_cfg.get("proj_type")
    if proj_type not in (None, "linear", "mlp"):
        raise ValueError(f"Unsupported upstream text proj_type {proj_type!r}")
    # Upstream's HFTextEncoder: identity when widths match and no proj_type, else a linear layer ("mlp" only when
    # the widths already match).
    has_text_proj = hidden != embed_dim or proj_type == "linear"
    if proj_type == "mlp" and not has_text_proj:
        raise ValueError("Upstream text proj_type 'mlp' is not supported")

    _, task_instructions = lora_tasks(backbone)
    default_instruction_task = text_cfg.get("default_instruction_task")
    if default_instruction_task is not None and default_instruction_task not in task_instructions:
        raise ValueError(
            f"Upstream default_instruction_task {default_instruction_task!r} is not one of {list(task_instructions)}"
        )
    kwargs = {
        "text_config": text_config,
        "vision_config": vision_config,
        "projection_dim": embed_dim,
        "text_projection_type": "linear" if has_text_proj else None,
        "text_projection_bias": bool(text_cfg.get("proj_bias", False)),
        "logit_scale_init_value": float(upstream.get("logit_scale_init_value", 2.6592)),
        "task_instructions": task_instructions,
        "default_instruction_task": default_instruction_task,
    }
    if upstream.get("matryoshka_dimensions"):
        kwargs["matryoshka_dimensions"] = [int(d) for d in upstream["matryoshka_dimensions"]]
    if upstream.get("truncate_dim"):
        kwargs["truncate_dim"] = int(upstream["truncate_dim"])
    return kwargs


def default_lora_index(
    upstream: dict[str, Any], state_dict: dict[str, Any], backbone: dict[str, Any]
) -> tuple[int | None, str | None]:
    """Which LoRA slice upstream applies to every text: (index, task name), or (None, None) when it applies none."""
    tasks, _ = lora_tasks(backbone)
    probe = UPSTREAM_TEXT_PREFIX + "embeddings.word_embeddings.parametrizations.weight.0.lora_A"
    if probe not in state_dict:
        raise ValueError("Upstream checkpoint has no LoRA adapters, but its config declares LoRA tasks")
    num_slices = state_dict[probe].shape[0]
    if len(tasks) != num_slices:
        raise ValueError(f"lora_adaptations lists {len(tasks)} tasks but the checkpoint holds {num_slices} adapters")
    task = (upstream.get("text_config") or {}).get("default_lora_task")
    if task is None:
        return None, None
    if task not in tasks:
        raise ValueError(f"default_lora_task {task!r} is not one of lora_adaptations {tasks}")
    return tasks.index(task), task


def convert_state_dict(
    upstream: dict[str, Any], state_dict: dict[str, Any], backbone: dict[str, Any]
) -> dict[str, Any]:
    """Upstream jina-clip state dict -> `JinaCLIPModel` state dict (float32, default LoRA adapter merged)."""
    import torch

    lora_index, _ = default_lora_index(upstream, state_dict, backbone)
    scale = float(backbone["lora_alpha"]) / float(backbone["lora_rank"])
    probe = state_dict[UPSTREAM_TEXT_PREFIX + "embeddings.word_embeddings.parametrizations.weight.0.lora_A"]
    if probe.shape[-1] != int(backbone["lora_rank"]):
        raise ValueError(f"Upstream lora_rank {backbone['lora_rank']} but the adapters have rank {probe.shape[-1]}")
    out: dict[str, Any] = {}
    p = UPSTREAM_TEXT_PREFIX
    for name in ("word_embeddings", "token_type_embeddings"):
        out[f"text_model.embeddings.{name}.weight"] = _merged_weight(
            p + "embeddings." + name, state_dict, lora_index, scale, embedding=True
        )
    out["text_model.embeddings.LayerNorm.weight"] = state_dict[p + "emb_ln.weight"].float()
    out["text_model.embeddings.LayerNorm.bias"] = state_dict[p + "emb_ln.bias"].float()
    for i in _layer_ids(state_dict):
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


def build_tokenizer(checkpoint_dir: str, backbone: dict[str, Any]):
    """The snapshot's XLM-RoBERTa tokenizer, keeping its `model_max_length` (8194 in the published tokenizer)."""
    from transformers import XLMRobertaTokenizer

    tokenizer_json = os.path.join(checkpoint_dir, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        tokenizer = XLMRobertaTokenizer(tokenizer_file=tokenizer_json)
    elif os.path.isfile(os.path.join(checkpoint_dir, "sentencepiece.bpe.model")):
        tokenizer = XLMRobertaTokenizer.from_pretrained(checkpoint_dir)
    else:
        raise FileNotFoundError(f"No tokenizer.json or sentencepiece.bpe.model in {checkpoint_dir}")
    config_path = os.path.join(checkpoint_dir, "tokenizer_config.json")
    limit = read_json(config_path).get("model_max_length") if os.path.isfile(config_path) else None
    tokenizer.model_max_length = int(limit if limit is not None else backbone["max_position_embeddings"])
    return tokenizer


def build_image_processor(checkpoint_dir: str, image_size: int):
    """`JinaCLIPImageProcessor` with the snapshot's `preprocessor_config.json` settings (same key names)."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from st_modules.image_processing_jina_clip import JinaCLIPImageProcessor

    path = os.path.join(checkpoint_dir, "preprocessor_config.json")
    upstream = read_json(path) if os.path.isfile(path) else {}
    size = upstream.get("size", image_size)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"Upstream preprocessor size {size!r} is not square; only square sizes are supported")
        size = size[0]
    if int(size) != int(image_size):
        raise ValueError(f"Upstream preprocessor size {size} differs from the vision tower's image_size {image_size}")
    return JinaCLIPImageProcessor(
        size=int(size),
        mean=list(upstream.get("mean", OPENAI_CLIP_MEAN)),
        std=list(upstream.get("std", OPENAI_CLIP_STD)),
        resize_mode=upstream.get("resize_mode", "shortest"),
        interpolation=upstream.get("interpolation", "bicubic"),
        fill_color=upstream.get("fill_color", 0),
    )


def build_from_snapshot(
    checkpoint_dir: str,
    *,
    dtype: str = "auto",
    repo_id: str = "ORG/jina-clip-v2-hf",
    provenance: str | None = None,
    text_backbone: str | None = None,
) -> RepoBuild:
    """A `RepoBuild` (weights, processor, prompts, ST settings, card) from an upstream jina-clip-v2 snapshot.

    Args:
        checkpoint_dir: a local snapshot of `jinaai/jina-clip-v2` (`config.json`, `model.safetensors`, tokenizer
            files, `preprocessor_config.json`).
        dtype: `"auto"` (the checkpoint's dtype), `"fp32"`, `"fp16"` or `"bf16"`.
        repo_id: the Hub id used in the model card snippets.
        provenance: a sentence for the model card about where the weights come from.
        text_backbone: folder or config.json of the text backbone the snapshot references
            (`text_config.hf_model_name_or_path`, `jinaai/jina-embeddings-v3` for the published model); found
            next to the snapshot or in the Hugging Face cache when omitted.
    """
    from hub_configs.builder import torch_dtype
    from st_modules.configuration_jina_clip import JinaCLIPConfig
    from st_modules.modeling_jina_clip import JinaCLIPModel
    from st_modules.processing_jina_clip import JinaCLIPProcessor

    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"Checkpoint folder not found: {checkpoint_dir}")
    upstream = read_json(os.path.join(checkpoint_dir, "config.json"))
    state_dict = _load_upstream_state_dict(checkpoint_dir)
    target_dtype = _source_dtype(state_dict) if dtype == "auto" else torch_dtype(dtype)
    backbone = resolve_text_backbone_config(checkpoint_dir, upstream, text_backbone)
    _, lora_task = default_lora_index(upstream, state_dict, backbone)

    config = JinaCLIPConfig(**upstream_to_config_kwargs(upstream, state_dict, backbone))
    model = JinaCLIPModel(config)
    model.load_state_dict(convert_state_dict(upstream, state_dict, backbone), strict=True)
    tokenizer = build_tokenizer(checkpoint_dir, backbone)
    processor = JinaCLIPProcessor(
        image_processor=build_image_processor(checkpoint_dir, config.vision_config.image_size), tokenizer=tokenizer
    )
    prompts = sentence_transformers_prompts(config.task_instructions)
    card = {
        "title": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "license": "cc-by-nc-4.0",
        "lora_task": lora_task or "none",
        "provenance": provenance or "Converted from the original `jinaai/jina-clip-v2` weights with `mmhub convert`.",
        "prompts": ", ".join(f"`{name}`" for name, text in prompts.items() if text),
        "matryoshka_dims": ", ".join(str(d) for d in config.matryoshka_dimensions),
    }
    module_config = {
        "matryoshka_dims": list(config.matryoshka_dimensions),
        "max_seq_length": sentence_transformers_max_seq_length(tokenizer),
    }
    # write_repo casts once, to the snapshot's own dtype for "auto".
    return RepoBuild(
        model=model, processor=processor, card=card, prompts=prompts, module_config=module_config, dtype=target_dtype
    )


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
    tokenizer.model_max_length = 8194
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
}
# The text backbone the published config references; the tiny writer puts a tiny config of that name next to the
# snapshot (`<snapshot>/jinaai/jina-embeddings-v3/config.json`), where upstream's `AutoConfig` and this converter
# both find it without a network.
PUBLISHED_TEXT_BACKBONE = "jinaai/jina-embeddings-v3"
# A second layout for tests: several LoRA tasks (jina-embeddings-v3's names) and a rank/alpha ratio other than 1.
MULTI_TASK_INSTRUCTIONS = {
    "retrieval.query": "Represent the query for retrieving evidence documents: ",
    "retrieval.passage": "Represent the document for retrieval: ",
    "text-matching": "",
}


def tiny_text_backbone_config(vocab_size: int) -> dict[str, Any]:
    """A jina-embeddings-v3-style `config.json` (same keys as the published one) with tiny sizes."""
    s = TINY_SIZES
    return {
        "architectures": ["XLMRobertaModel"],
        "attention_probs_dropout_prob": 0.1,
        "auto_map": {
            "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_lora.XLMRobertaLoRA",
        },
        "bos_token_id": 0,
        "classifier_dropout": None,
        "emb_pooler": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": s["text_hidden"],
        "initializer_range": 0.02,
        "intermediate_size": s["text_intermediate"],
        "layer_norm_eps": 1e-05,
        "load_trained_adapters": True,
        "lora_adaptations": ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"],
        "lora_alpha": 1,
        "lora_dropout_p": 0.0,
        "lora_main_params_trainable": False,
        "lora_rank": 4,
        "matryoshka_dimensions": [8, 16, 32],
        "max_position_embeddings": 8194,
        "model_type": "xlm-roberta",
        "num_attention_heads": s["text_heads"],
        "num_hidden_layers": s["text_layers"],
        "output_past": True,
        "pad_token_id": 1,
        "position_embedding_type": "rotary",
        "rotary_emb_base": 20000.0,
        "task_instructions": {
            "retrieval.query": "Represent the query for retrieving evidence documents: ",
            "retrieval.passage": "Represent the document for retrieval: ",
            "separation": "",
            "classification": "",
            "text-matching": "",
        },
        "torch_dtype": "float32",
        "truncate_dim": None,
        "type_vocab_size": 1,
        "use_cache": True,
        "use_flash_attn": True,
        "use_reentrant": False,
        "vocab_size": vocab_size,
    }


def write_tiny_upstream_checkpoint(
    out_dir: str,
    *,
    seed: int = 0,
    task_instructions: dict[str, str] | None = None,
    default_lora_task: str | None = "retrieval.query",
    lora_rank: int = 4,
    lora_alpha: float = 4,
) -> str:
    """Write a random-weight snapshot laid out exactly as the published `jinaai/jina-clip-v2`, at tiny sizes.

    `config.json`, `preprocessor_config.json` and the tokenizer files carry the published keys; only sizes (and, when
    asked, the LoRA tasks) differ. `model.safetensors` holds the upstream state dict names with one LoRA slice per
    task of `task_instructions` (default: the published single `retrieval.query` task) and the `{"format": "pt"}`
    metadata transformers 4 requires. The referenced text backbone config goes to
    `<out_dir>/jinaai/jina-embeddings-v3/config.json`. Every LoRA factor is random (upstream initialises `lora_B` to
    zero, which would hide merge errors).

    Returns:
        `out_dir`.
    """
    import torch
    from safetensors.torch import save_file
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from st_modules.jina_eva_vision import EvaRotaryEmbedding2D

    s = TINY_SIZES
    instructions = dict(PUBLISHED_TASK_INSTRUCTIONS if task_instructions is None else task_instructions)
    tasks = list(instructions)
    if default_lora_task is not None and default_lora_task not in tasks:
        raise ValueError(f"default_lora_task {default_lora_task!r} is not one of the tasks {tasks}")
    os.makedirs(out_dir, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(out_dir)
    vocab = len(tokenizer)
    backbone_dir = os.path.join(out_dir, *PUBLISHED_TEXT_BACKBONE.split("/"))
    os.makedirs(backbone_dir, exist_ok=True)
    with open(os.path.join(backbone_dir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(tiny_text_backbone_config(vocab), handle, indent=2)
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def norm(prefix: str, dim: int, into: dict) -> None:
        into[prefix + ".weight"] = 1.0 + rand(dim, std=0.1)
        into[prefix + ".bias"] = rand(dim, std=0.1)

    n_tasks = len(tasks)
    sd: dict[str, torch.Tensor] = {}

    def lora_linear(prefix: str, fan_out: int, fan_in: int) -> None:
        sd[prefix + ".parametrizations.weight.original"] = rand(fan_out, fan_in)
        sd[prefix + ".parametrizations.weight.0.lora_A"] = rand(n_tasks, lora_rank, fan_in)
        sd[prefix + ".parametrizations.weight.0.lora_B"] = rand(n_tasks, fan_out, lora_rank)
        sd[prefix + ".bias"] = rand(fan_out, std=0.1)

    def lora_embedding(prefix: str, rows: int, dim: int) -> None:
        sd[prefix + ".parametrizations.weight.original"] = rand(rows, dim, std=0.5)
        sd[prefix + ".parametrizations.weight.0.lora_A"] = rand(n_tasks, rows, lora_rank)
        sd[prefix + ".parametrizations.weight.0.lora_B"] = rand(n_tasks, lora_rank, dim)

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
    # Upstream's rotary tables are persistent buffers, so its state dict (and the published file) carries them.
    rope = EvaRotaryEmbedding2D(s["vision_head_width"], grid, s["pt_hw_seq_len"], interpolate=True)
    sd[v + "rope.freqs_cos"], sd[v + "rope.freqs_sin"] = rope.compute_table()
    sd["logit_scale"] = torch.tensor(2.6592)
    save_file(
        {k: t.contiguous() for k, t in sd.items()},
        os.path.join(out_dir, "model.safetensors"),
        metadata=dict(SAFETENSORS_METADATA),
    )

    config = {
        "add_projections": False,
        "architectures": ["JinaCLIPModel"],
        "auto_map": {
            "AutoConfig": "jinaai/jina-clip-implementation--configuration_clip.JinaCLIPConfig",
            "AutoModel": "jinaai/jina-clip-implementation--modeling_clip.JinaCLIPModel",
        },
        "initializer_factor": 1.0,
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
                "lora_alpha": lora_alpha,
                "lora_dropout_p": 0.0,
                "lora_main_params_trainable": False,
                "lora_rank": lora_rank,
                "task_instructions": instructions,
                "use_flash_attn": True,
            },
            "hf_model_name_or_path": PUBLISHED_TEXT_BACKBONE,
            "model_type": "jina_clip_text",
            "pooler_type": "mean_pooler",
            "proj_bias": False,
            "proj_type": None,
        },
        "torch_dtype": "float32",
        "transformers.js_config": {"use_external_data_format": {"model.onnx": True}},
        "truncate_dim": None,
        "use_text_flash_attn": None,
        "use_vision_xformers": None,
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
            "x_attention": True,
        },
    }
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=4)
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {
                "auto_map": {
                    "AutoImageProcessor": "jinaai/jina-clip-implementation--processing_clip.JinaCLIPImageProcessor",
                    "AutoProcessor": "jinaai/jina-clip-implementation--processing_clip.JinaCLIPProcessor",
                },
                "fill_color": 0,
                "image_processor_type": "JinaCLIPImageProcessor",
                "interpolation": "bicubic",
                "mean": OPENAI_CLIP_MEAN,
                "processor_class": "JinaCLIPProcessor",
                "resize_mode": "shortest",
                "size": s["image_size"],
                "std": OPENAI_CLIP_STD,
            },
            handle,
            indent=4,
        )
    # The published tokenizer_config.json: XLM-R special tokens and an 8194-token limit.
    tokenizer_config_path = os.path.join(out_dir, "tokenizer_config.json")
    tokenizer_config = read_json(tokenizer_config_path)
    tokenizer_config.update({"model_max_length": 8194, "tokenizer_class": "XLMRobertaTokenizer"})
    with open(tokenizer_config_path, "w", encoding="utf-8") as handle:
        json.dump(tokenizer_config, handle, indent=2)
    return out_dir


# ------------------------------------------------------------------------------------------- registry hooks
def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="local snapshot folder of jinaai/jina-clip-v2")
    parser.add_argument("--repo-id", default="ORG/jina-clip-v2-hf", help="Hub id shown in the model card")
    parser.add_argument(
        "--text-backbone",
        default=None,
        help="folder or config.json of the referenced text backbone (default: beside the snapshot or in the HF cache)",
    )


def convert(args: argparse.Namespace) -> RepoBuild:
    """`mmhub convert jina-clip-v2`: upstream snapshot -> repo."""
    return build_from_snapshot(
        args.checkpoint, dtype=args.dtype, repo_id=args.repo_id, text_backbone=args.text_backbone
    )


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
