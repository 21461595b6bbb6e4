"""`mmhub demo`: long-caption text-to-image retrieval through SentenceTransformer and AutoModel."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="ORG/NAME or a local repo folder (default: tiny random LongCLIP)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    raise NotImplementedError("the demo lands with the LongCLIP work")
