"""Contrastive fine-tuning with sentence-transformers' trainer on (caption, image or audio) pairs (`mmhub train`).

The training path is sentence-transformers' own: `SentenceTransformerTrainer` with
`MultipleNegativesRankingLoss` (in-batch negatives, caption -> media and media -> caption) on a `datasets.Dataset`
whose first column holds the captions and second the media (paths, PIL images, `datasets.Image` values, waveforms).
For LongCLIP the first `keep_positions` text position rows stay frozen, as in the paper (see
`LongCLIPModel.freeze_kept_positions`).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from typing import Any

logger = logging.getLogger(__name__)

MEDIA_COLUMNS = ("image", "audio")


def read_pairs(path: str) -> list[dict[str, Any]]:
    """Read JSON lines `{"caption": TEXT, "image": PATH}` (or `"audio"`); relative paths are taken from the file's folder."""
    from .builder import read_pairs_lines, resolve_media_path

    rows = []
    for number, row in read_pairs_lines(path):
        media = [key for key in MEDIA_COLUMNS if key in row]
        if "caption" not in row or len(media) != 1:
            raise ValueError(f"{path}:{number} needs a 'caption' and exactly one of {MEDIA_COLUMNS}, got {row!r}")
        rows.append({"caption": row["caption"], media[0]: resolve_media_path(row[media[0]], path)})
    if not rows:
        raise ValueError(f"Pairs file {path!r} holds no pairs")
    if len({next(key for key in MEDIA_COLUMNS if key in row) for row in rows}) != 1:
        raise ValueError(f"Pairs file {path!r} mixes image and audio pairs; use one kind per file")
    return rows


def pairs_dataset(rows):
    """A `datasets.Dataset` with the caption column first (the anchor of the loss) and the media column second."""
    from datasets import Dataset

    if not isinstance(rows, list):
        return rows
    media = next(key for key in MEDIA_COLUMNS if key in rows[0])
    return Dataset.from_dict({"caption": [row["caption"] for row in rows], media: [row[media] for row in rows]})


def finetune(
    model,
    train_dataset,
    *,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 16,
    learning_rate: float = 1e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.0,
    seed: int = 0,
    show_progress_bar: bool = True,
    output_dir: str | None = None,
) -> list[float]:
    """Fine-tune a `SentenceTransformer` in place with the trainer and `MultipleNegativesRankingLoss`.

    Args:
        model: A `SentenceTransformer` loaded from a repo of this package.
        train_dataset: A `datasets.Dataset` (caption column first) or rows as `read_pairs` returns them.
        epochs, max_steps, batch_size, learning_rate, weight_decay, warmup_ratio, seed: Trainer settings
            (`max_steps` > 0 overrides `epochs`).
        show_progress_bar: Show the trainer's progress bar.
        output_dir: Trainer scratch folder (default: a temporary folder, removed afterwards; no checkpoints are
            kept, save the model with `model.save`).

    Returns:
        The training loss logged at every step.
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback, TrainerCallback

    dataset = pairs_dataset(train_dataset)
    if len(dataset.column_names) != 2:
        raise ValueError(f"train_dataset needs two columns (caption, media), got {dataset.column_names}")
    losses: list[float] = []

    class RecordLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class LossProgressBar(TrainerCallback):
        # The trainer's own bar writes every step's log dict to stdout (logs are kept at every step, for `losses`).
        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="Fine-tuning", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    with tempfile.TemporaryDirectory(prefix="mmhub-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=output_dir or scratch,
            num_train_epochs=epochs,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            # transformers 5 reads a float below 1 as a ratio (sentence-transformers warns about `warmup_ratio`).
            warmup_steps=warmup_ratio,
            seed=seed,
            data_seed=seed,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            # Pinned memory only helps copies to a GPU; on CPU the DataLoader warns about it.
            dataloader_pin_memory=model.device.type == "cuda",
        )
        loss = MultipleNegativesRankingLoss(model, directions=("query_to_doc", "doc_to_query"))
        callbacks = [RecordLoss(), *([LossProgressBar()] if show_progress_bar else [])]
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=dataset, loss=loss, callbacks=callbacks
        )
        # With `disable_tqdm` the trainer prints every step's log dict instead of a bar.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    model.eval()
    return losses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="repo folder or Hub id of a model of this family")
    parser.add_argument("--pairs", required=True, help="JSON lines: {'caption': TEXT, 'image' or 'audio': PATH}")
    parser.add_argument("--out", required=True, help="folder to save the fine-tuned model to")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: what sentence-transformers picks)")


def run_from_args(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    rows = read_pairs(args.pairs)
    model = SentenceTransformer(args.model, trust_remote_code=True, device=args.device)
    losses = finetune(
        model,
        rows,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    model.save(args.out)
    print(f"{len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}; wrote {args.out}")
    return 0
