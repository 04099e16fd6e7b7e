"""The ``xlcf`` command line. One module per command, each exposing ``register(subparsers)``;
heavy imports (torch, openpyxl) happen inside the command functions so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from xlcf import __version__
from xlcf.errors import XlcfError, quote

# Order here is the order in `xlcf --help`.
COMMANDS = [
    "demo",
    "crosstab",
    "train",
    "recommend",
    "new",
    "fit",
    "solve",
    "step",
    "check",
    "recalc",
    "bench",
    "serve",
    "doctor",
]


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
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except XlcfError as err:
        print(f"xlcf {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"xlcf {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `xlcf fit ... --json | head`: the reader went away. The work is done; say so once and stop quietly.
        _silence_stdout()
        print(
            f"xlcf {args.command}: error: standard output was closed before everything was printed "
            f"(the command itself completed)",
            file=sys.stderr,
        )
        return 2
    except OSError as err:  # the file system's refusal (disk full, I/O error...), as one line
        from xlcf.fileio import is_disk_full

        what = "disk full" if is_disk_full(err) else (err.strerror or str(err))
        name = f" ({quote(err.filename)})" if getattr(err, "filename", None) else ""
        print(f"xlcf {args.command}: error: {what}{name}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at the null device so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
