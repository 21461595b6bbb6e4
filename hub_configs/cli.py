"""`mmhub`: build, train, export and publish the Hub repos of this package.

Every family-specific command is generated from the family registry (`hub_configs/families.py`): `convert` and
`tiny` have one target per family, `train` one per family with a trainer, and `export-onnx` finds the family of the
repo folder it is given.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from .families import FAMILIES, MissingExtraError, family_of, missing_extra_message
from .hub_access import settle_hub_access


def build_parser() -> argparse.ArgumentParser:
    from . import demo
    from .factory import add_convert_parser_arguments, add_tiny_parser_arguments

    parser = argparse.ArgumentParser(prog="mmhub", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert an original checkpoint into a Hub repo folder")
    convert_targets = convert.add_subparsers(dest="target", required=True)
    tiny = commands.add_parser("tiny", help="build a tiny random-weight repo folder (offline demo and tests)")
    tiny_targets = tiny.add_subparsers(dest="target", required=True)
    train = commands.add_parser("train", help="train or fine-tune a family's model")
    train_targets = train.add_subparsers(dest="target", required=True)
    for name, family in FAMILIES.items():
        try:
            family.module()
            trainer = family.module("trainer") if family.trainer else None
        except MissingExtraError as error:
            # A family whose optional dependencies are missing still shows up, and says what to install.
            for targets in (convert_targets, tiny_targets):
                targets.add_parser(name, help=f"{family.summary} [{error}]").set_defaults(
                    handler=_report_missing(error)
                )
            continue
        target = convert_targets.add_parser(name, help=family.summary)
        add_convert_parser_arguments(target, family)
        target.set_defaults(handler=_build, kind="convert")
        target = tiny_targets.add_parser(name, help=f"tiny random {name} repo")
        add_tiny_parser_arguments(target, family)
        target.set_defaults(handler=_build, kind="tiny")
        if trainer is not None:
            target = train_targets.add_parser(name, help=(trainer.__doc__ or "").strip().splitlines()[0])
            trainer.add_arguments(target)
            target.set_defaults(handler=trainer.run_from_args)

    export = commands.add_parser(
        "export-onnx",
        help="write REPO/onnx/ (towers, joint graph, fp16/int8 variants) for ONNX Runtime, sentence-transformers "
        "and transformers.js (family found from the repo)",
    )
    from .onnx_export import add_arguments as add_export_arguments

    add_export_arguments(export)
    export.set_defaults(handler=_export_onnx)

    push = commands.add_parser("push", help="upload a built repo folder to the Hugging Face Hub")
    push.add_argument("folder", help="a folder written by `mmhub convert` or `mmhub tiny`")
    push.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    push.add_argument("--commit-message", default="Upload with mmhub")
    push.set_defaults(handler=_push)

    demo_parser = commands.add_parser(
        "demo",
        help="what LongCLIP is for: R@1 at 77 vs 248 tokens (a small model trained offline, or --model)",
        description=demo.__doc__.split("\n\n")[1].replace("\n", " "),
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.run_from_args)
    return parser


def _report_missing(error: Exception):
    def handler(args: argparse.Namespace) -> int:
        raise error

    return handler


def _build(args: argparse.Namespace) -> int:
    from .factory import build_from_args

    family = FAMILIES[args.target]
    out = build_from_args(family, args.kind, args)
    note = " (random weights)" if args.kind == "tiny" else ""
    print(f"Wrote {out}{note}")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    family = family_of(args.repo)
    if not family.onnx_exporter:
        exporters = sorted(name for name, other in FAMILIES.items() if other.onnx_exporter)
        raise ValueError(f"{args.repo!r} is a {family.name} repo; export-onnx supports {exporters} for now")
    return family.module("onnx_exporter").run_from_args(args)


def _push(args: argparse.Namespace) -> int:
    from .publish import push_folder

    push_folder(args.folder, args.repo_id, private=args.private, dry_run=args.dry_run, message=args.commit_message)
    return 0


@contextlib.contextmanager
def _hub_access(args: argparse.Namespace):
    """Offline unless the command names a Hub repo that can be reached; the environment is restored afterwards."""
    before = os.environ.get("HF_HUB_OFFLINE")
    try:
        note = settle_hub_access(args, needs_hub=args.command == "push" and not args.dry_run)
        if note:
            print(f"mmhub: {note}", file=sys.stderr)
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    if "torch" not in sys.modules:
        # Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads made 2-thread
        # training steps 2-4x slower (measured on 2 cores). Read once, when torch loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started  # commands that report their duration count the imports too
    # Only this package's loggers: a root handler would print every library's records a second time.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("hub_configs")
    if not package_logger.handlers:
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        with _hub_access(args):
            result = args.handler(args)
    except (ValueError, TypeError, OSError, MissingExtraError) as error:
        # OSError covers missing files and the loading errors of transformers and huggingface_hub, whose messages
        # go on for several lines; the first says what went wrong.
        print(f"mmhub {args.command}: error: {_first_line(error)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        print(f"mmhub {args.command}: error: {missing_extra_message(error.name)}", file=sys.stderr)
        return 2
    return int(result or 0)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
