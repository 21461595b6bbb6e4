"""`mmhub demo`: what LongCLIP is for, shown offline in about a minute on 2 CPU cores.

CLIP reads the first 77 tokens of a caption; LongCLIP reads 248. The demo builds a small CLIP, turns it into a
LongCLIP with the package's knowledge-preserved stretching (`LongCLIPModel.from_clip`), writes it as a LongCLIP repo
with the family's repo writer, loads it with `SentenceTransformer(repo, trust_remote_code=True)` and fine-tunes it
with the package's sentence-transformers training path (`hub_configs.finetune.finetune`) on synthetic scenes whose
captions only differ after token 77 (`hub_configs.demo_scenes`). It then measures text-to-image R@1 on held-out
scenes with the same model read at 77 and at 248 tokens, through SentenceTransformer and through AutoModel +
AutoProcessor, and draws a few queries beside the pictures they retrieve.

With `--model` (a Hub id, a repo folder or an original Long-CLIP `.pt`), the same measurements run with those
weights, on the generated scenes and, with `--images DIR`, on the user's own captioned pictures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from .demo_scenes import Scene, first_detail_token, generate_scenes
from .hub_access import looks_like_hub_id, offline_requested

# CLIP's text length, which the demo compares with the LongCLIP model's own (248).
SHORT_CONTEXT = 77
# Fixed folder name: transformers caches a local repo's remote code under the folder's name, so a random name would
# leave a new cache entry behind on every run.
DEMO_REPO_NAME = "LongCLIP-demo"
# The small CLIP that the demo stretches and fine-tunes: big enough to learn the scenes, small enough to train in
# well under a minute on 2 CPU cores. The 49408 x 32 token embedding (the real CLIP vocabulary) is most of it.
SMALL_CLIP = {
    "text": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 1},
    "vision": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 8},
    "image_size": 32,  # scenes for --model are drawn at that model's input size instead
    "projection_dim": 64,
}
EXAMPLE_QUERIES = 4
PNG_CELL = 96
DEFAULT_PNG = "mmhub-demo.png"
# Scores of the two doors may differ by float rounding (different batch shapes), never by more than this.
DOOR_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo's numbers (the same settings give the same numbers on the same machine)."""

    seed: int = 0
    train_pairs: int = 3000
    held_out: int = 100
    epochs: float = 4.0
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    threads: int = 2
    device: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoSettings()
    parser.add_argument(
        "--model",
        default=None,
        help=(
            "real weights to measure instead of training a small model: a Hub id (ORG/NAME), a repo folder "
            "(`mmhub convert longclip`) or an original Long-CLIP .pt checkpoint"
        ),
    )
    parser.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="with --model: also measure on your pictures in DIR, each captioned by a same-named .txt file",
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    parser.add_argument(
        "--png",
        default=DEFAULT_PNG,
        help=f"where to draw example queries and their matches (default {DEFAULT_PNG}; empty: no picture)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of scenes, weights and training")
    parser.add_argument("--epochs", type=float, default=defaults.epochs, help="fine-tuning epochs")
    parser.add_argument("--train-pairs", type=int, default=defaults.train_pairs, help="generated training pairs")
    parser.add_argument("--held-out", type=int, default=defaults.held_out, help="generated scenes to measure on")
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="torch CPU threads (results depend on it slightly)"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, ... (default: cpu for the small model, which keeps its numbers reproducible; for --model, "
        "what sentence-transformers picks)",
    )


# ------------------------------------------------------------------------------------------------------ the model


def small_clip(seed: int):
    """A randomly initialised small `transformers.CLIPModel` with CLIP's 77 text positions and vocabulary."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    text, vision = SMALL_CLIP["text"], SMALL_CLIP["vision"]
    config = CLIPConfig(
        text_config={
            **text,
            "intermediate_size": 4 * text["hidden_size"],
            "vocab_size": 49408,
            "max_position_embeddings": SHORT_CONTEXT,
            "hidden_act": "quick_gelu",
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            **vision,
            "intermediate_size": 4 * vision["hidden_size"],
            "image_size": SMALL_CLIP["image_size"],
            "hidden_act": "quick_gelu",
        },
        projection_dim=SMALL_CLIP["projection_dim"],
    )
    torch.manual_seed(seed)
    return CLIPModel(config)


def write_demo_repo(out_dir: str, seed: int) -> str:
    """Small CLIP -> `LongCLIPModel.from_clip` -> a LongCLIP repo written by the family's repo writer."""
    from st_modules.modeling_longclip import LongCLIPModel

    from .builder import write_repo
    from .families import get_family
    from .longclip import longclip_build

    stretched = LongCLIPModel.from_clip(small_clip(seed))
    build = longclip_build(
        stretched.config,
        stretched.state_dict(),
        model_name="LongCLIP-demo",
        source="a small random CLIP stretched with LongCLIPModel.from_clip",
        random_weights=True,
    )
    return write_repo(get_family("longclip"), build, out_dir)


# ------------------------------------------------------------------------------------------------- measurements


def sentence_transformer_scores(model, captions: list[str], images: list, max_length: int):
    """Cosine scores `(captions, images)` from `SentenceTransformer.encode`, texts read up to `max_length` tokens."""
    full = model.max_seq_length
    model.max_seq_length = max_length
    try:
        texts = model.encode(captions, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    finally:
        model.max_seq_length = full
    pictures = model.encode(images, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    return (texts @ pictures.T).float().cpu()


def automodel_scores(model, processor, captions: list[str], images: list, max_length: int, batch_size: int = 32):
    """The same scores from `AutoModel.get_*_features` on `AutoProcessor` inputs."""
    import torch

    def embed(chunks):
        with torch.inference_mode():
            parts = [torch.nn.functional.normalize(chunk().float(), dim=-1) for chunk in chunks]
        return torch.cat(parts)

    def text_chunk(batch):
        inputs = processor(text=batch, return_tensors="pt", padding=True, max_length=max_length).to(model.device)
        return lambda: model.get_text_features(**inputs)

    def image_chunk(batch):
        inputs = processor(images=batch, return_tensors="pt").to(model.device)
        return lambda: model.get_image_features(pixel_values=inputs["pixel_values"].to(model.dtype))

    texts = embed(text_chunk(captions[i : i + batch_size]) for i in range(0, len(captions), batch_size))
    pictures = embed(image_chunk(images[i : i + batch_size]) for i in range(0, len(images), batch_size))
    return (texts @ pictures.T).cpu()


def recall_at_1(scores) -> float:
    """Share of captions (rows) whose best-scoring image is their own (same index)."""
    import torch

    return float((scores.argmax(dim=1) == torch.arange(scores.shape[0])).float().mean())


def rankings_agree(first, second, tolerance: float = DOOR_TOLERANCE) -> bool:
    """True when both score matrices rank every caption's images in the same order.

    Images whose scores lie within `tolerance` of each other may swap places (float rounding between batch shapes).
    """
    if first.shape != second.shape or float((first - second).abs().max()) > tolerance:
        return False
    order = first.argsort(dim=1, descending=True)
    reordered = second.gather(1, order)
    return bool((reordered[:, :-1] - reordered[:, 1:] >= -tolerance).all())


@contextlib.contextmanager
def _quiet_truncation():
    """Silence the one-time "texts were truncated" warnings while reading at 77 tokens on purpose.

    The demo states the truncation itself, with the token positions that explain the result.
    """
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@dataclass
class Doors:
    """One model loaded through both doors: `SentenceTransformer` and `AutoModel` + `AutoProcessor`."""

    sentence_transformer: Any
    model: Any
    processor: Any

    @classmethod
    def load(cls, folder: str, device: str | None) -> Doors:
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModel, AutoProcessor

        # Offline, say so to every loader: sentence-transformers otherwise asks the Hub for the revision and warns
        # that it could not.
        hub = {"trust_remote_code": True, "local_files_only": offline_requested()}
        st_model = SentenceTransformer(folder, device=device, **hub)
        model = AutoModel.from_pretrained(folder, **hub).to(st_model.device).eval()
        return cls(st_model, model, AutoProcessor.from_pretrained(folder, **hub))

    @property
    def full_length(self) -> int:
        return int(self.sentence_transformer.max_seq_length)

    @property
    def image_size(self) -> int:
        crop = getattr(self.processor.image_processor, "crop_size", None) or {}
        return int(crop.get("height") or SMALL_CLIP["image_size"])


def measure(doors: Doors, captions: list[str], images: list, progress=None) -> dict[str, Any]:
    """R@1 at 77 tokens and at the model's full length, through both doors."""
    scores: dict[str, dict[int, Any]] = {"sentence_transformers": {}, "automodel": {}}
    for length in (SHORT_CONTEXT, doors.full_length):
        with _quiet_truncation() if length == SHORT_CONTEXT else contextlib.nullcontext():
            scores["sentence_transformers"][length] = sentence_transformer_scores(
                doors.sentence_transformer, captions, images, length
            )
            if progress is not None:
                progress.update(1)
            scores["automodel"][length] = automodel_scores(doors.model, doors.processor, captions, images, length)
            if progress is not None:
                progress.update(1)
    lengths = [len(ids) for ids in doors.processor.tokenizer(captions)["input_ids"]]
    first, second = scores["sentence_transformers"], scores["automodel"]
    return {
        "full_length": doors.full_length,
        "scores": scores,
        "r_at_1": {
            door: {length: recall_at_1(value) for length, value in by_length.items()}
            for door, by_length in scores.items()
        },
        "doors_agree": all(rankings_agree(first[length], second[length]) for length in first),
        "max_score_difference": max(float((first[length] - second[length]).abs().max()) for length in first),
        "caption_tokens": (min(lengths), max(lengths)),
        "captions_over_77": sum(length > SHORT_CONTEXT for length in lengths),
    }


# ------------------------------------------------------------------------------------------------ the two modes


def run_trained(settings: DemoSettings, scratch: str, png: str | None) -> dict[str, Any]:
    """Build, fine-tune and measure the small LongCLIP; every file it writes lies under `scratch`."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    from .finetune import finetune

    scenes = generate_scenes(settings.train_pairs + settings.held_out, settings.seed)
    train, held_out = scenes[: settings.train_pairs], scenes[settings.train_pairs :]
    size = SMALL_CLIP["image_size"]
    repo = write_demo_repo(os.path.join(scratch, DEMO_REPO_NAME), settings.seed)
    model = SentenceTransformer(repo, trust_remote_code=True, device=settings.device)
    captions = [scene.caption() for scene in held_out]
    images = [scene.render(size) for scene in held_out]
    with _quiet_truncation():
        before = {
            length: recall_at_1(sentence_transformer_scores(model, captions, images, length))
            for length in (SHORT_CONTEXT, int(model.max_seq_length))
        }
    dataset = Dataset.from_dict(
        {"caption": [scene.caption() for scene in train], "image": [scene.render(size) for scene in train]}
    )
    started = time.perf_counter()
    losses = finetune(
        model,
        dataset,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_ratio=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        seed=settings.seed,
    )
    training_seconds = time.perf_counter() - started
    # Saved and loaded again, so both doors read the fine-tuned weights the way a user of the repo would.
    model.save(repo, create_model_card=False)
    del model
    doors = Doors.load(repo, settings.device)
    with tqdm(total=4, desc="Measuring", unit="pass", leave=False) as progress:
        result = measure(doors, captions, images, progress)
    result.update(
        model=f"{DEMO_REPO_NAME} (a small CLIP stretched to 248 tokens and fine-tuned in this run)",
        trained=True,
        before_finetuning=before,
        training={
            "pairs": len(train),
            "epochs": settings.epochs,
            "steps": len(losses),
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "seconds": round(training_seconds, 1),
            "small_clip": SMALL_CLIP,
        },
    )
    result["generated"] = _scene_summary(held_out, images, doors, result)
    result["png"] = _draw_examples(png, held_out, images, result) if png else None
    return result


def resolve_model(reference: str, scratch: str) -> str:
    """A loadable folder or Hub id for `--model`; an original `.pt` checkpoint is converted into `scratch`."""
    from .factory import make_repo

    if os.path.isfile(reference):
        if not reference.endswith(".pt"):
            raise ValueError(f"--model {reference!r} is a file but not an original Long-CLIP .pt checkpoint")
        return make_repo("longclip", os.path.join(scratch, "LongCLIP-converted"), checkpoint=reference)
    if os.path.isdir(reference):
        if not os.path.isfile(os.path.join(reference, "config.json")):
            raise ValueError(f"--model {reference!r} is a folder without config.json, not a model repo folder")
        return reference
    if not looks_like_hub_id(reference):
        raise ValueError(
            f"--model {reference!r} does not exist; expected a repo folder, an original .pt checkpoint or a Hub id "
            "(ORG/NAME)"
        )
    return reference


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _loading_context(hub_id: bool) -> str:
    return " (offline: only the local Hub cache is searched)" if hub_id and offline_requested() else ""


def _loading_reason(error: Exception) -> str:
    """One line on why loading failed (library messages run over several lines)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        return "the repo is gated: accept its terms on the Hub and log in (hf auth login)"
    if isinstance(error, RepositoryNotFoundError):
        return "no such repo on the Hub (or it is private: log in with hf auth login)"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def run_pretrained(
    reference: str, images_dir: str | None, settings: DemoSettings, scratch: str, png: str | None, verbose: bool
):
    """Measure real weights on the generated scenes and, with `images_dir`, on the user's captioned pictures."""
    from tqdm.auto import tqdm

    user_pairs = read_captioned_images(images_dir) if images_dir else None
    folder = resolve_model(reference, scratch)
    hub_id = not os.path.exists(folder)
    if hub_id and offline_requested() and not _in_hub_cache(reference):
        raise ValueError(f"--model {reference!r} is not in the local Hub cache, and the Hub is not used (offline)")
    try:
        doors = Doors.load(folder, settings.device)
    except Exception as error:  # each library involved has its own loading errors: one line naming the input
        raise ValueError(
            f"--model {reference!r} could not be loaded{_loading_context(hub_id)}: {_loading_reason(error)}"
        ) from error
    if doors.full_length <= SHORT_CONTEXT:
        raise ValueError(
            f"--model {reference!r} reads {doors.full_length} tokens; the demo compares 77 tokens with a longer "
            "context (LongCLIP reads 248)"
        )
    if verbose:
        _print_plan(settings, trained=False, reference=reference)
    scenes = generate_scenes(settings.held_out, settings.seed)
    captions = [scene.caption() for scene in scenes]
    images = [scene.render(doors.image_size) for scene in scenes]
    with tqdm(total=4 + 4 * bool(user_pairs), desc="Measuring", unit="pass", leave=False) as progress:
        result = measure(doors, captions, images, progress)
        user = measure(doors, user_pairs[1], user_pairs[2], progress) if user_pairs else None
    result.update(model=reference, trained=False)
    result["generated"] = _scene_summary(scenes, images, doors, result)
    if user is not None:
        result["user_images"] = {
            "folder": images_dir,
            "pairs": len(user_pairs[0]),
            "r_at_1": user["r_at_1"],
            "doors_agree": user["doors_agree"],
            "captions_over_77": user["captions_over_77"],
        }
        result["doors_agree"] = result["doors_agree"] and user["doors_agree"]
    result["png"] = _draw_examples(png, scenes, images, result) if png else None
    return result


def read_captioned_images(folder: str) -> tuple[list[str], list[str], list]:
    """`(paths, captions, images)` for every picture in `folder` that has a same-named `.txt` caption."""
    from st_modules.media_inputs import IMAGE_EXTENSIONS, load_image

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--images {folder!r} is not a folder")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))
    paths, captions, missing = [], [], []
    for name in names:
        caption_file = os.path.join(folder, os.path.splitext(name)[0] + ".txt")
        if not os.path.isfile(caption_file):
            missing.append(name)
            continue
        with open(caption_file, encoding="utf-8") as handle:
            caption = " ".join(handle.read().split())
        if caption:
            paths.append(os.path.join(folder, name))
            captions.append(caption)
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"--images {folder!r}: no caption (.txt beside the picture, same name) for {shown}")
    if len(paths) < 2:
        raise ValueError(f"--images {folder!r} needs at least 2 pictures, each with a same-named .txt caption")
    return paths, captions, [load_image(path, None) for path in paths]


# --------------------------------------------------------------------------------------------------- reporting


def _scene_summary(scenes: list[Scene], images: list, doors: Doors, result: dict[str, Any]) -> dict:
    return {
        "held_out": len(scenes),
        "chance": 1 / len(scenes),
        "first_detail_token": first_detail_token(doors.processor.tokenizer),
        "caption_tokens": list(result["caption_tokens"]),
        "image_size": images[0].size[0],
    }


def _draw_examples(path: str, scenes: list[Scene], images: list, result: dict[str, Any]) -> str:
    """A PNG of the first held-out captions: their details, their picture and the best match at 77 and 248."""
    from PIL import Image, ImageDraw, ImageFont

    scores = result["scores"]["sentence_transformers"]
    lengths = sorted(scores)
    count = min(EXAMPLE_QUERIES, len(scenes))
    text_width, cell, pad = 300, PNG_CELL, 8
    columns = ["caption, after the shared preamble", "its picture", *(f"best at {n} tokens" for n in lengths)]
    width = text_width + (len(columns) - 1) * (cell + pad) + pad
    header, footer = 24, 22
    canvas = Image.new("RGB", (width, header + count * (cell + pad) + pad + footer), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    x_positions = [pad, *(text_width + i * (cell + pad) for i in range(len(columns) - 1))]
    for x, title in zip(x_positions, columns):
        draw.text((x, 6), title, fill="black", font=font)
    for row in range(count):
        top = header + row * (cell + pad)
        draw.multiline_text((pad, top), _wrap(scenes[row].details(), 44), fill="black", font=font, spacing=2)
        tiles = [row, *(int(scores[n][row].argmax()) for n in lengths)]
        for column, index in enumerate(tiles):
            left = text_width + column * (cell + pad)
            tile = images[index].resize((cell, cell), Image.NEAREST if images[index].size[0] < cell else Image.LANCZOS)
            canvas.paste(tile, (left, top))
            if column:
                colour = (40, 160, 40) if index == row else (210, 40, 40)
                draw.rectangle((left - 3, top - 3, left + cell + 2, top + cell + 2), outline=colour, width=3)
    legend = "green frame: the caption's own picture; red frame: another picture"
    draw.text((pad, header + count * (cell + pad) + 4), legend, fill="black", font=font)
    canvas.save(path)
    return os.path.abspath(path)


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def json_summary(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The results as plain JSON values: `r_at_1` holds the SentenceTransformer figures per token length."""

    def by_length(values: dict[int, float]) -> dict[str, float]:
        return {str(length): round(value, 4) for length, value in values.items()}

    summary = {
        "r_at_1": by_length(result["r_at_1"]["sentence_transformers"]),
        "r_at_1_automodel": by_length(result["r_at_1"]["automodel"]),
        "doors_agree": result["doors_agree"],
        "max_score_difference": result["max_score_difference"],
        "seconds": round(seconds, 1),
        "model": result["model"],
        "trained_in_this_run": result["trained"],
        **result["generated"],
    }
    if result["trained"]:
        summary["r_at_1_before_finetuning"] = by_length(result["before_finetuning"])
        summary["training"] = result["training"]
    if "user_images" in result:
        user = dict(result["user_images"])
        user["r_at_1"] = by_length(user["r_at_1"]["sentence_transformers"])
        summary["user_images"] = user
    summary["png"] = result["png"]
    return summary


def print_report(result: dict[str, Any], seconds: float) -> None:
    generated = result["generated"]
    full = result["full_length"]
    n = generated["held_out"]
    r = result["r_at_1"]
    rows = []
    if result["trained"]:
        rows.append(("before fine-tuning", result["before_finetuning"]))
    rows += [("SentenceTransformer", r["sentence_transformers"]), ("AutoModel + AutoProcessor", r["automodel"])]
    print(f"\nText -> image retrieval on {n} held-out scenes (R@1; chance {generated['chance']:.2f}):\n")
    print(f"  {'':28}{'77 tokens':>12}{f'{full} tokens':>13}")
    for label, values in rows:
        print(f"  {label:28}{values[SHORT_CONTEXT]:>12.2f}{values[full]:>13.2f}")
    detail = generated["first_detail_token"]
    hits = round(r["sentence_transformers"][full] * n)
    if detail >= SHORT_CONTEXT - 1:  # a 77-token reading keeps tokens 0-75 and the end token
        print(
            f"\nRead at 77 tokens, every caption is cut before its first detail (token {detail}): all {n} captions "
            "read\nthe same, so the model can only guess."
        )
    else:
        print(f"\nWith this model's tokenizer the details start at token {detail}, within the first 77.")
    print(f"Read at {full} tokens, it finds the right picture for {hits} of {n}.")
    if "user_images" in result:
        user = result["user_images"]
        values = user["r_at_1"]["sentence_transformers"]
        print(
            f"\nYour pictures ({user['pairs']} in {user['folder']}, {user['captions_over_77']} captions longer than "
            f"77 tokens): R@1 {values[SHORT_CONTEXT]:.2f} at 77 tokens, {values[full]:.2f} at {full} tokens."
        )
    if result["doors_agree"]:
        print(
            "SentenceTransformer and AutoModel rank the pictures in the same order for every caption "
            f"(scores agree within {result['max_score_difference']:.0e})."
        )
    else:
        print(
            "SentenceTransformer and AutoModel DISAGREE on some rankings "
            f"(largest score difference {result['max_score_difference']:.2e}): please report this."
        )
    if result["png"]:
        print(
            f"\nExamples (held-out captions, their picture, the best match at 77 and {full} tokens): {result['png']}"
        )
    print(f"Done in {seconds:.0f} s; nothing was left in temporary folders.")


def _print_plan(settings: DemoSettings, trained: bool, reference: str | None) -> None:
    if not trained:
        print(f"Measuring {reference} on {settings.held_out} generated scenes: captions longer than 77 tokens whose")
        print("distinguishing details all come after token 77 (a long shared description first).", flush=True)
        return
    text, vision = SMALL_CLIP["text"], SMALL_CLIP["vision"]
    print("CLIP reads the first 77 tokens of a caption; LongCLIP reads 248. This demo shows the difference:")
    print(
        f"1. {settings.train_pairs + settings.held_out} generated scenes (up to 4 coloured shapes in the quarters of a "
        f"{SMALL_CLIP['image_size']} px picture),\n   each with a long caption: a description shared by all, then "
        "what each quarter holds."
    )
    print(
        f"2. A small random CLIP (text {text['hidden_size']} wide x {text['num_hidden_layers']} layers, vision "
        f"{vision['hidden_size']} x {vision['num_hidden_layers']}, 77 positions), stretched to 248 positions with\n"
        "   LongCLIPModel.from_clip (rows 0-19 kept and frozen, the rest interpolated) and written as a LongCLIP repo."
    )
    print(
        f"3. Fine-tuned on {settings.train_pairs} pairs with sentence-transformers (MultipleNegativesRankingLoss, "
        f"{settings.epochs:g} epochs)."
    )
    print(
        f"4. Text -> image R@1 on the {settings.held_out} held-out scenes, read at 77 and at 248 tokens.\n", flush=True
    )


def run_from_args(args: argparse.Namespace) -> int:
    started = getattr(args, "started", None) or time.perf_counter()
    settings = DemoSettings(
        seed=args.seed,
        train_pairs=args.train_pairs,
        held_out=args.held_out,
        epochs=args.epochs,
        threads=args.threads,
        # The small model trains in seconds on a CPU, where the same seed gives the same numbers every run.
        device=args.device or ("cpu" if args.model is None else None),
    )
    _check_settings(settings, args)
    import torch
    from transformers.utils import logging as transformers_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(settings.threads, os.cpu_count() or 1)))
    # transformers' own bars (weights loading, shard writing) would outnumber the demo's lines.
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    png = args.png or None
    try:
        # Everything the run writes (repo, converted checkpoint, trainer scratch) goes here and is removed after.
        with tempfile.TemporaryDirectory(prefix="mmhub-demo-") as scratch:
            if args.model is None:
                if not args.json:
                    _print_plan(settings, trained=True, reference=None)
                result = run_trained(settings, scratch, png)
            else:
                result = run_pretrained(args.model, args.images, settings, scratch, png, verbose=not args.json)
    finally:
        torch.set_num_threads(threads)
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps(json_summary(result, seconds)))
    else:
        print_report(result, seconds)
    return 0 if result["doors_agree"] else 1


def _check_settings(settings: DemoSettings, args: argparse.Namespace) -> None:
    if args.images and not args.model:
        raise ValueError("--images needs --model: the small demo model only knows the generated scenes")
    if settings.held_out < 2 or settings.train_pairs < settings.batch_size:
        raise ValueError(
            f"--held-out must be at least 2 and --train-pairs at least {settings.batch_size}, "
            f"got {settings.held_out} and {settings.train_pairs}"
        )
    if settings.epochs <= 0 or settings.threads < 1:
        raise ValueError(f"--epochs and --threads must be positive, got {settings.epochs} and {settings.threads}")
    if args.png and not os.path.isdir(os.path.dirname(os.path.abspath(args.png))):
        raise FileNotFoundError(f"--png {args.png!r}: its folder does not exist")
