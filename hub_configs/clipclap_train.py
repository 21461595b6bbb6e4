"""Train the audio-to-CLIP projection of CLIPCLAP as the seed did (`mmhub train clipclap`).

Frozen CLAP audio embeddings and frozen CLIP caption embeddings (both L2-normalised) are computed once; an
identity-initialised `Linear(512, 512, bias=False)` is trained with a symmetric InfoNCE loss at a fixed temperature
(0.07), Adam (lr 1e-3), 20 epochs, batch 256, on a 90/10 split, keeping the weights of the best validation loss.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from .builder import read_pairs_lines, resolve_media_path, source_label, write_json
from .clipclap import METADATA_FILE

logger = logging.getLogger(__name__)

DEFAULTS = {
    "temperature": 0.07,
    "learning_rate": 1e-3,
    "epochs": 20,
    "batch_size": 256,
    "validation_fraction": 0.1,
    "seed": 0,
}
RECALL_KS = (1, 5, 10)


def read_pairs(path: str) -> list[dict[str, Any]]:
    """Read a JSON-lines pairs file.

    Each line is either `{"audio": PATH, "caption": TEXT}` (paths relative to the file's folder) or precomputed
    `{"audio_embedding": [...], "text_embedding": [...]}` (CLAP audio and CLIP text embeddings); all lines must use
    the same form.
    """
    rows = []
    for number, row in read_pairs_lines(path):
        if {"audio_embedding", "text_embedding"} <= row.keys():
            rows.append({"audio_embedding": row["audio_embedding"], "text_embedding": row["text_embedding"]})
        elif {"audio", "caption"} <= row.keys():
            if not isinstance(row["caption"], str) or not isinstance(row["audio"], str):
                raise ValueError(f"{path}:{number}: 'audio' and 'caption' must be strings")
            rows.append({"audio": resolve_media_path(row["audio"], path), "caption": row["caption"]})
        else:
            raise ValueError(
                f"{path}:{number} needs 'audio' and 'caption' keys (or 'audio_embedding' and 'text_embedding'), "
                f"got {sorted(row)}"
            )
    if len(rows) < 2:
        raise ValueError(f"Pairs file {path!r} has {len(rows)} pairs; training needs at least 2")
    kinds = {"audio_embedding" in row for row in rows}
    if len(kinds) > 1:
        raise ValueError(f"Pairs file {path!r} mixes audio/caption rows with precomputed embedding rows")
    return rows


def embed_pairs(
    rows: list[dict[str, Any]], clip: str, clap: str, batch_size: int = 32, device: str | None = None
) -> tuple[Any, Any]:
    """Frozen, L2-normalised CLAP audio embeddings and CLIP caption embeddings for `rows`, computed once."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm
    from transformers import AutoProcessor, ClapModel, CLIPModel

    from st_modules.processing_clipclap import ClipClapFeatureExtractor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    clip_model = CLIPModel.from_pretrained(clip).eval().to(device)
    clap_model = ClapModel.from_pretrained(clap).eval().to(device)
    tokenizer = AutoProcessor.from_pretrained(clip).tokenizer
    extractor = ClipClapFeatureExtractor.from_dict(AutoProcessor.from_pretrained(clap).feature_extractor.to_dict())
    audio_parts, text_parts = [], []
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc="embedding pairs", unit="batch"):
            batch = rows[start : start + batch_size]
            features = extractor([row["audio"] for row in batch], return_tensors="pt")
            audio = clap_model.get_audio_features(
                input_features=features["input_features"].to(device), is_longer=features["is_longer"].to(device)
            ).pooler_output
            tokens = tokenizer(
                [row["caption"] for row in batch], padding=True, truncation=True, return_tensors="pt"
            ).to(device)
            text = clip_model.get_text_features(**tokens).pooler_output
            audio_parts.append(F.normalize(audio.float(), dim=-1).cpu())
            text_parts.append(F.normalize(text.float(), dim=-1).cpu())
    return torch.cat(audio_parts), torch.cat(text_parts)


def recalls(audio: Any, text: Any, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Audio-to-text and text-to-audio R@k for paired rows (row i of each is a match)."""
    import torch

    similarity = audio @ text.T
    target = torch.arange(similarity.shape[0])
    result = {}
    for direction, matrix in (("audio_to_text", similarity), ("text_to_audio", similarity.T)):
        # Rank of the true match = number of candidates scoring strictly higher.
        rank = (matrix > matrix[target, target][:, None]).sum(dim=1)
        for k in ks:
            result[f"{direction}_r@{k}"] = float((rank < k).float().mean())
    return result


def symmetric_info_nce(audio: Any, text: Any, temperature: float) -> Any:
    """Mean of audio-to-text and text-to-audio cross-entropy over cosine logits / temperature."""
    import torch
    import torch.nn.functional as F

    logits = audio @ text.T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_projection(
    audio_embeddings: Any,
    text_embeddings: Any,
    *,
    temperature: float = DEFAULTS["temperature"],
    learning_rate: float = DEFAULTS["learning_rate"],
    epochs: int = DEFAULTS["epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    validation_fraction: float = DEFAULTS["validation_fraction"],
    seed: int = DEFAULTS["seed"],
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Train the identity-initialised map from CLAP audio space to CLIP text space.

    Args:
        audio_embeddings: `(n, d)` L2-normalised CLAP audio embeddings.
        text_embeddings: `(n, d)` L2-normalised CLIP text embeddings of the matching captions.

    Returns:
        `(weight, metadata)`: the best-validation-loss `(d, d)` weight (`nn.Linear` layout) and a JSON-ready dict
        with the settings, per-epoch losses, and validation losses and recalls at the identity start and the best
        epoch. Validation loss and recalls are computed over the whole validation split at once.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    audio = F.normalize(torch.as_tensor(audio_embeddings, dtype=torch.float32), dim=-1)
    text = F.normalize(torch.as_tensor(text_embeddings, dtype=torch.float32), dim=-1)
    if audio.dim() != 2 or audio.shape != text.shape:
        raise ValueError(
            f"audio and text embeddings must both be (n, d) with equal shapes, got {tuple(audio.shape)} and "
            f"{tuple(text.shape)}"
        )
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    count, dim = audio.shape
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator)
    num_validation = min(max(1, round(count * validation_fraction)), count - 1)
    validation, training = order[:num_validation], order[num_validation:]

    projection = torch.nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.eye(dim))
    optimizer = torch.optim.Adam(projection.parameters(), lr=learning_rate)

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            mapped = F.normalize(projection(audio[validation]), dim=-1)
            loss = float(symmetric_info_nce(mapped, text[validation], temperature))
            return {"loss": loss, **recalls(mapped, text[validation])}

    start = evaluate()
    best = {"epoch": 0, **start}
    best_weight = projection.weight.detach().clone()
    # The matmuls are at most 256 x 512 x 512: thread hand-offs cost more than they save (10x slower on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = []
        bar = tqdm(range(1, epochs + 1), desc="training projection", unit="epoch", disable=not progress)
        for epoch in bar:
            permutation = training[torch.randperm(len(training), generator=generator)]
            total, batches = 0.0, 0
            for begin in range(0, len(permutation), batch_size):
                rows = permutation[begin : begin + batch_size]
                if len(rows) < 2:
                    continue  # a one-pair batch has no negatives
                mapped = F.normalize(projection(audio[rows]), dim=-1)
                loss = symmetric_info_nce(mapped, text[rows], temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, batches = total + loss.item(), batches + 1
            current = evaluate()
            history.append({"epoch": epoch, "train_loss": total / max(batches, 1), "val_loss": current["loss"]})
            if current["loss"] < best["loss"]:
                best = {"epoch": epoch, **current}
                best_weight = projection.weight.detach().clone()
            bar.set_postfix(val_loss=f"{current['loss']:.4f}", r1=f"{current['audio_to_text_r@1']:.3f}")
    finally:
        torch.set_num_threads(threads)

    metadata = {
        "architecture": f"Linear({dim}, {dim}, bias=False), identity initialisation",
        "objective": "symmetric InfoNCE over L2-normalised embeddings, fixed temperature",
        "settings": {
            "temperature": temperature,
            "learning_rate": learning_rate,
            "optimizer": "Adam",
            "epochs": epochs,
            "batch_size": batch_size,
            "validation_fraction": validation_fraction,
            "seed": seed,
            "selection": "best validation loss",
        },
        "num_pairs": count,
        "num_train": len(training),
        "num_validation": num_validation,
        "embedding_dim": dim,
        "identity_start": start,
        "history": history,
        "final": {"best": best, "last": {"epoch": epochs, **current}},
    }
    return best_weight, metadata


def save_projection(weight: Any, path: str) -> None:
    """Save the weight as `{"weight": tensor}` in `.safetensors` (default) or `.pt`."""
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith((".pt", ".pth", ".bin")):
        torch.save({"weight": weight.contiguous()}, path)
    else:
        from safetensors.torch import save_file

        save_file({"weight": weight.contiguous()}, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="JSON lines: {'audio': PATH, 'caption': TEXT} per line")
    parser.add_argument("--clip", default="openai/clip-vit-base-patch32", help="CLIP folder or Hub id")
    parser.add_argument("--clap", default="laion/larger_clap_music_and_speech", help="CLAP folder or Hub id")
    parser.add_argument("--out", required=True, help="output weight file (.safetensors or .pt)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--temperature", type=float, default=DEFAULTS["temperature"])
    parser.add_argument("--validation-fraction", type=float, default=DEFAULTS["validation_fraction"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--embed-batch-size", type=int, default=32, help="batch size of the frozen encoders")
    parser.add_argument("--cache", default=None, help="reuse/save the frozen embeddings in this .pt file")
    parser.add_argument("--device", default=None, help="device of the frozen encoders (default: cuda if available)")


def run_from_args(args: argparse.Namespace) -> int:
    import torch

    rows = read_pairs(args.pairs)
    if "audio_embedding" in rows[0]:
        audio = torch.tensor([row["audio_embedding"] for row in rows], dtype=torch.float32)
        text = torch.tensor([row["text_embedding"] for row in rows], dtype=torch.float32)
    elif args.cache and os.path.isfile(args.cache):
        cached = torch.load(args.cache, map_location="cpu", weights_only=True)
        audio, text = cached["audio"], cached["text"]
        if len(audio) != len(rows):
            raise ValueError(f"Cache {args.cache!r} holds {len(audio)} pairs but {args.pairs!r} has {len(rows)}")
    else:
        audio, text = embed_pairs(rows, args.clip, args.clap, batch_size=args.embed_batch_size, device=args.device)
        if args.cache:
            torch.save({"audio": audio, "text": text}, args.cache)
    weight, metadata = train_projection(
        audio,
        text,
        temperature=args.temperature,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
    metadata["sources"] = {
        "clip": source_label(args.clip),
        "clap": source_label(args.clap),
        "pairs": os.path.basename(args.pairs),
        "embeddings": "precomputed" if "audio_embedding" in rows[0] else "frozen encoders",
    }
    save_projection(weight, args.out)
    metadata_path = os.path.join(os.path.dirname(os.path.abspath(args.out)), METADATA_FILE)
    write_json(metadata_path, metadata)
    best, start = metadata["final"]["best"], metadata["identity_start"]
    print(
        f"validation R@1 audio->text {start['audio_to_text_r@1']:.3f} -> {best['audio_to_text_r@1']:.3f} "
        f"(best epoch {best['epoch']}); wrote {args.out} and {metadata_path}"
    )
    return 0
