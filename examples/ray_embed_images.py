"""Embed a folder of images with Ray Data: `map_batches` over a SentenceTransformer, one model per actor.

    python examples/ray_embed_images.py IMAGE_FOLDER --model ORG/LongCLIP-L --out embeddings.parquet

Each actor loads the model once; Ray streams file paths to the actors in batches and the sentence-transformers
module reads, decodes and preprocesses the files itself (threaded), so only paths cross process boundaries.
Add `--gpus-per-actor 1` on GPU machines; `--actors N` scales out on a Ray cluster.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageEmbedder:
    """A Ray Data callable class: loads the model once per actor, embeds a batch of file paths."""

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model, trust_remote_code=True, device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(path) for path in batch["path"]]
        batch["embedding"] = self.model.encode(paths, batch_size=self.batch_size, convert_to_numpy=True)
        return batch


def list_images(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder {folder!r} does not exist")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder!r}")
    return paths


def embed_folder(folder: str, model: str, *, batch_size: int = 32, actors: int = 1, gpus_per_actor: float = 0):
    """Return a Ray Dataset with columns `path` and `embedding` for every image under `folder`."""
    import ray

    dataset = ray.data.from_items([{"path": path} for path in list_images(folder)])
    return dataset.map_batches(
        ImageEmbedder,
        fn_constructor_kwargs={"model": model, "device": "cuda" if gpus_per_actor else None, "batch_size": batch_size},
        batch_size=batch_size,
        concurrency=actors,
        num_gpus=gpus_per_actor,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--model", required=True, help="ORG/NAME or a repo folder")
    parser.add_argument("--out", default="embeddings.parquet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--gpus-per-actor", type=float, default=0)
    args = parser.parse_args()
    embed_folder(
        args.folder, args.model, batch_size=args.batch_size, actors=args.actors, gpus_per_actor=args.gpus_per_actor
    ).write_parquet(args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except ModuleNotFoundError as error:
        # Ray is no dependency of the package (only its test extra installs it).
        if (error.name or "").split(".")[0] == "ray":
            sys.exit(f'{os.path.basename(__file__)}: error: this example needs Ray Data: pip install "ray[data]"')
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from hub_configs.families import missing_extra_message

        sys.exit(f"{os.path.basename(__file__)}: error: {missing_extra_message(error.name)}")
