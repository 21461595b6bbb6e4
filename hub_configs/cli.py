"""`mmhub`: build, check and publish the Hub repos of this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

# Each target module builds one family of repos. It provides `add_convert_arguments(parser)`,
# `convert_from_args(args)`, `add_tiny_arguments(parser)`, `tiny_from_args(args)` and may provide
# `register_commands(subparsers)` for commands of its own (training, export).
TARGETS = {
    "longclip": "hub_configs.longclip",
    "longclip-sdxl": "hub_configs.longclip_sdxl",
    "clipclap": "hub_configs.clipclap",
    "jina-clip-v2": "hub_configs.jina_clip_v2",
}


def _available_targets() -> dict[str, ModuleType]:
    targets = {}
    for name, module_path in TARGETS.items():
        try:
            targets[name] = importlib.import_module(module_path)
        except ModuleNotFoundError as error:
            # A target whose module is not part of this checkout yet is simply not offered.
            if error.name != module_path:
                raise
    return targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmhub", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    targets = _available_targets()

    convert = commands.add_parser("convert", help="convert an original checkpoint into a Hub repo folder")
    convert_targets = convert.add_subparsers(dest="target", required=True)
    tiny = commands.add_parser("tiny", help="build a tiny random-weight repo folder (offline demo and tests)")
    tiny_targets = tiny.add_subparsers(dest="target", required=True)
    for name, module in targets.items():
        convert_parser = convert_targets.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_convert_arguments(convert_parser)
        convert_parser.set_defaults(handler=module.convert_from_args)
        tiny_parser = tiny_targets.add_parser(name, help=f"tiny random {name} repo")
        module.add_tiny_arguments(tiny_parser)
        tiny_parser.set_defaults(handler=module.tiny_from_args)

    push = commands.add_parser("push", help="upload a built repo folder to the Hugging Face Hub")
    push.add_argument("folder", help="a folder written by `mmhub convert` or `mmhub tiny`")
    push.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    push.add_argument("--commit-message", default="Upload with mmhub")
    push.set_defaults(handler=_push)

    from . import demo

    demo_parser = commands.add_parser("demo", help="long-caption text-to-image retrieval, offline on a tiny model")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.run_from_args)

    for module in targets.values():
        if hasattr(module, "register_commands"):
            module.register_commands(commands)
    return parser


def _push(args: argparse.Namespace) -> int:
    from .publish import push_folder

    push_folder(args.folder, args.repo_id, private=args.private, dry_run=args.dry_run, message=args.commit_message)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        result = args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"mmhub {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
