"""Options shared by the commands that edit a workbook in place (``fit``, ``step``): one definition so their
``--backup``/``--dry-run``/``--json`` mean the same thing everywhere."""

from __future__ import annotations


def add_in_place_options(parser, *, dry_run_help: str) -> None:
    """``--backup`` (Package.save keeps BOOK.xlsx.bak), ``--dry-run``, ``--json`` and ``--wait``."""
    parser.add_argument("--backup", action="store_true",
                        help="keep a copy of the original beside it (BOOK.xlsx -> BOOK.xlsx.bak)")
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_wait_option(parser)


def add_wait_option(parser) -> None:
    """``--wait SECONDS``: how long to wait while another xlcf command writes the same workbook."""
    from xlcf.fileio import DEFAULT_LOCK_WAIT  # noqa: PLC0415

    parser.add_argument("--wait", type=float, default=DEFAULT_LOCK_WAIT, metavar="SECONDS",
                        help=f"when another xlcf command is writing the same workbook, wait this long for it "
                             f"before giving up without computing anything (default {DEFAULT_LOCK_WAIT:g}; 0: "
                             f"do not wait)")
