"""One factory for every family: `make_repo("longclip", out, checkpoint=...)` = `mmhub convert longclip ...`.

The argument parsers of `mmhub convert <family>` and `mmhub tiny <family>` are built here from the registry, so the
command line and the Python API take the same options with the same defaults.
"""

from __future__ import annotations

import argparse
from typing import Any

from .builder import DTYPE_CHOICES, write_repo
from .families import Family, get_family


def add_convert_parser_arguments(parser: argparse.ArgumentParser, family: Family) -> None:
    """The options of `mmhub convert <family>`: the family's own plus `--out` and `--dtype`."""
    family.module().add_convert_arguments(parser)
    parser.add_argument("--out", required=True, help="output repo folder")
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=family.default_dtype,
        help="weight dtype to save (auto: the source's)",
    )


def add_tiny_parser_arguments(parser: argparse.ArgumentParser, family: Family) -> None:
    """The options of `mmhub tiny <family>`: `--out`, `--seed` and the family's own, if any."""
    parser.add_argument("--out", required=True, help="output repo folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    converter = family.module()
    if hasattr(converter, "add_tiny_arguments"):
        converter.add_tiny_arguments(parser)


def _namespace(family: Family, kind: str, out: str, options: dict[str, Any]) -> argparse.Namespace:
    """Parse `options` exactly as the command line would: `{"checkpoint": "x.pt", "fused": True}` is
    `--checkpoint x.pt --fused`."""
    parser = argparse.ArgumentParser(prog=f"mmhub {kind} {family.name}", add_help=False)
    (add_tiny_parser_arguments if kind == "tiny" else add_convert_parser_arguments)(parser, family)
    argv = ["--out", out]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as error:  # argparse reports bad or missing options by exiting
        raise TypeError(f"mmhub {kind} {family.name}: invalid options {options}") from error
    if unknown:
        raise TypeError(f"mmhub {kind} {family.name} does not take {unknown}")
    return args


def build_from_args(family: Family, kind: str, args: argparse.Namespace) -> str:
    """Run the family's converter (`kind` "convert" or "tiny") on parsed arguments and write the repo."""
    from .builder import torch_dtype

    converter = family.module()
    if kind == "tiny":
        build = converter.tiny(args.seed, args)
    else:
        build = converter.convert(args)
        if args.dtype != "auto" and build.dtype is None:
            build.dtype = torch_dtype(args.dtype)
    return write_repo(family, build, args.out)


def make_repo(name: str, out: str, *, tiny: bool = False, **options: Any) -> str:
    """Build a repo of family `name` into `out` with `mmhub convert` (or, with `tiny`, `mmhub tiny`) options.

    Example: `make_repo("longclip", "out/LongCLIP-L", checkpoint="longclip-L.pt", dtype="fp16")`.
    """
    family = get_family(name)
    kind = "tiny" if tiny else "convert"
    return build_from_args(family, kind, _namespace(family, kind, out, options))
