"""Options shared by the commands that edit a workbook in place (``fit``, ``step``): one definition so their
``--backup``/``--dry-run``/``--json`` mean the same thing everywhere."""

from __future__ import annotations


def add_in_place_options(parser, *, dry_run_help: str) -> None:
    """``--backup`` (Package.save keeps BOOK.xlsx.bak), ``--dry-run``, ``--json`` and ``--wait``."""
    parser.add_argument(
        "--backup", action="store_true", help="keep a copy of the original beside it (BOOK.xlsx -> BOOK.xlsx.bak)"
    )
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_wait_option(parser)
    add_force_option(parser)


def add_force_option(parser) -> None:
    """``--force``: write into locked cells of a protected sheet."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="write even into locked cells of a protected sheet (without it xlcf refuses, naming the cells)",
    )


def add_wait_option(parser) -> None:
    """``--wait SECONDS``: how long to wait while another xlcf command writes the same workbook."""
    from xlcf.fileio import DEFAULT_LOCK_WAIT

    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_LOCK_WAIT,
        metavar="SECONDS",
        help=f"when another xlcf command is writing the same workbook, wait this long for it "
        f"before giving up without computing anything (default {DEFAULT_LOCK_WAIT:g}; 0: "
        f"do not wait)",
    )


DEFAULT_TIME_LIMIT = 3600.0  # seconds; generous for anything a command line fits, and a bound on a typo'd --epochs


def _seconds(text: str) -> float | None:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0; got {text[:40]!r}")
    return None if value == 0 else value


def add_time_limit_option(parser) -> None:
    """``--time-limit SECONDS``: training stops (keeping the best parameters so far) when this time is spent."""
    parser.add_argument(
        "--time-limit",
        type=_seconds,
        default=DEFAULT_TIME_LIMIT,
        metavar="SECONDS",
        help=f"stop training after this many seconds and keep what it reached, saying so "
        f"(default {DEFAULT_TIME_LIMIT:g}; 0: no limit)",
    )


def time_cap_note(limit: float | None, epochs: int | None) -> str:
    """The line printed when a fit stopped at the time cap."""
    done = f" after {epochs} epochs" if epochs is not None else ""
    return (
        f"note: training stopped at the time cap of {limit:g} s{done}; what it reached was kept "
        f"(raise it with --time-limit SECONDS, 0 for none)"
    )
