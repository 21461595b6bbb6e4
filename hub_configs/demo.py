"""`mmhub demo`: long-caption text-to-image retrieval through SentenceTransformer and AutoModel."""

from __future__ import annotations

import argparse
import os
import tempfile

# The authors' original checkpoint; the demo converts it once with `mmhub convert longclip` when it can be downloaded.
ORIGINAL_REPO = "BeichenZhang/LongCLIP-L"
ORIGINAL_FILE = "longclip-L.pt"

# Captions far past CLIP's 77 tokens whose distinguishing words come late, where stock CLIP cannot see them.
_PREAMBLE = (
    "A carefully composed studio photograph on a plain background, evenly lit from the left with soft shadows, "
    "taken with a fixed lens at eye level on a quiet afternoon in a small workshop near the harbour, printed later "
    "on matte paper and scanned again at a high resolution for an archive of simple test pictures, "
    "with no text, no people, no reflections and nothing else in the frame "
    "apart from one simple geometric shape placed exactly in the middle of the picture, and that shape is "
)
SCENES = [
    ("a large red circle", (220, 30, 30), "ellipse"),
    ("a large green square", (30, 180, 60), "rectangle"),
    ("a large blue triangle", (40, 60, 220), "polygon"),
    ("a large yellow circle", (230, 210, 40), "ellipse"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help=(
            f"ORG/NAME of a converted repo or a local repo folder (default: {ORIGINAL_REPO}'s {ORIGINAL_FILE} "
            "converted on first use; with no Hub access, a tiny random LongCLIP built offline)"
        ),
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: what sentence-transformers picks)")


def _draw(color, shape, size=224):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    if shape == "ellipse":
        draw.ellipse(box, fill=color)
    elif shape == "rectangle":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(size // 2, size // 4), (size // 4, 3 * size // 4), (3 * size // 4, 3 * size // 4)], fill=color)
    return image


def resolve_model(model: str | None) -> tuple[str, bool]:
    """Return `(path_or_id, random_weights)` for the demo.

    An explicit `--model` must load (a folder, or a Hub id that sentence-transformers and transformers fetch).
    Without one, the original LongCLIP-L checkpoint is downloaded and converted once; when the Hub cannot be
    reached, a tiny random-weight repo is built offline through the same conversion code.
    """
    if model is not None:
        return model, False
    cache = os.path.join(os.path.expanduser("~"), ".cache", "mmhub")
    converted = os.path.join(cache, "LongCLIP-L")
    if os.path.isfile(os.path.join(converted, "modules.json")):
        return converted, False
    try:
        from huggingface_hub import hf_hub_download

        checkpoint = hf_hub_download(ORIGINAL_REPO, ORIGINAL_FILE)
    except Exception as error:  # offline, no DNS, rate limits: all mean "no real weights here"
        print(f"Could not download {ORIGINAL_REPO}/{ORIGINAL_FILE} ({type(error).__name__}).")
    else:
        from .factory import make_repo

        return make_repo("longclip", converted, checkpoint=checkpoint), False
    from .factory import make_repo

    # Rebuilt every time (a few seconds) so the folder never carries remote code from an older version.
    return make_repo("longclip", tempfile.mkdtemp(prefix="mmhub-demo-tiny-longclip-"), tiny=True), True


def run_from_args(args: argparse.Namespace) -> int:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    path, random_weights = resolve_model(args.model)
    if random_weights:
        print(
            "No LongCLIP weights could be downloaded: using a TINY RANDOM-WEIGHT LongCLIP built offline.\n"
            "The code path is the real one, but the rankings below are meaningless. Pass --model ORG/NAME or a\n"
            "folder written by `mmhub convert longclip` for real results.\n"
        )
    captions = [_PREAMBLE + name + "." for name, _, _ in SCENES]
    images = [_draw(color, shape) for _, color, shape in SCENES]

    st_model = SentenceTransformer(path, trust_remote_code=True, device=args.device)
    tokenizer = st_model[0].tokenizer
    lengths = [len(tokenizer(caption)["input_ids"]) for caption in captions]
    print(f"Model: {path}\nCaption lengths in tokens: {lengths} (CLIP reads 77, this model {st_model.max_seq_length})")
    text_embeddings = st_model.encode(captions, convert_to_tensor=True)
    image_embeddings = st_model.encode(images, convert_to_tensor=True)
    st_scores = st_model.similarity(text_embeddings, image_embeddings)

    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval().to(st_model.device)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    inputs = processor(text=captions, images=images, return_tensors="pt", padding=True).to(st_model.device)
    with torch.inference_mode():
        logits = model(**inputs).logits_per_text
    print("\nText -> image retrieval (best image per caption):")
    for row, (name, _, _) in enumerate(SCENES):
        st_best = int(st_scores[row].argmax())
        auto_best = int(logits[row].argmax())
        print(f"  ...{name!r:28} SentenceTransformer -> image {st_best}   AutoModel -> image {auto_best}")
    agreement = torch.equal(st_scores.argmax(dim=1).cpu(), logits.argmax(dim=1).cpu())
    print(f"\nBoth doors rank identically: {agreement}")
    return 0 if agreement else 1
