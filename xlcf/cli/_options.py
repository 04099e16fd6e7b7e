"""Options shared by the commands that edit a workbook in place (``fit``, ``step``): one definition so their
``--backup``/``--dry-run``/``--json`` mean the same thing everywhere."""

from __future__ import annotations


def add_in_place_options(parser, *, dry_run_help: str) -> None:
    """``--backup`` (Package.save keeps BOOK.xlsx.bak), ``--dry-run`` and ``--json``."""
    parser.add_argument(
        "--backup", action="store_true", help="keep a copy of the original beside it (BOOK.xlsx -> BOOK.xlsx.bak)"
    )
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
