"""The ``xlcf`` command line. One module per command, each exposing ``register(subparsers)``;
heavy imports (torch, openpyxl) happen inside the command functions so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from xlcf import __version__
from xlcf.errors import XlcfError

# Order here is the order in `xlcf --help`.
COMMANDS = ["demo", "crosstab", "train", "new", "fit", "step", "bench", "serve", "doctor"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xlcf",
        description="Spreadsheets as the front end of a collaborative-filtering engine (fast.ai lesson 5).",
    )
    parser.add_argument("--version", action="version", version=f"xlcf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"xlcf.cli.{name}_cmd")
        module.register(subparsers)
    return parser


def _one_line_warning(command: str):
    """Warnings as one line, ``xlcf CMD: warning: ...``, without Python's source path and line of code (which
    look like a crash to a person)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"xlcf {command}: warning: {message}", file=file or sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _one_line_warning(args.command)
    try:
        return int(args.func(args) or 0)
    except XlcfError as err:
        print(f"xlcf {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"xlcf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
