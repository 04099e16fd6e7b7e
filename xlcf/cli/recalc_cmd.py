"""`xlcf recalc BOOK`: recalculate every formula headless and store the results as the cells' cached values."""

from __future__ import annotations

import json
import sys

from xlcf.cli._options import add_in_place_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "recalc",
        help="recalculate every formula and write the cached values, without Excel",
        description="Recalculate every formula cell the evaluator supports, in dependency order, and write each "
        "result as the cell's cached value (what pandas, a file preview or the next xlcf run reads). "
        "Formulas are kept; every other part of the file stays byte-identical; the file is replaced "
        "atomically. Cells with unsupported functions keep their cached values and are listed.",
    )
    parser.add_argument("book", help="workbook (.xlsx or .xlsm)")
    parser.add_argument("--sheet", help="recalculate only the formulas of this sheet (and read the others)")
    parser.add_argument("--seed", type=int, help="seed for RAND and RANDBETWEEN")
    add_in_place_options(parser, dry_run_help="recalculate and report, write nothing")
    parser.set_defaults(func=run)


def run(args) -> int:
    from xlcf.actions.recalc import recalc_workbook

    summary = recalc_workbook(args.book, args.sheet, dry_run=args.dry_run, backup=args.backup, seed=args.seed)
    if args.json:
        print(json.dumps(summary.to_dict()))
        return 0
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"{args.book}: recalculated {summary.cells_evaluated} formula cells in {summary.seconds:.2f}s; {verb} "
        f"{summary.cells_written} cached values ({summary.cells_changed} changed)"
    )
    for u in summary.unsupported:
        print(f"note: {u['cell']} kept its cached value: {u['error']}", file=sys.stderr)
    if summary.volatile:
        print(f"note: {len(summary.volatile)} volatile cells (RAND, NOW, ...) got new values", file=sys.stderr)
    if summary.backup:
        print(f"backup: {summary.backup}")
    return 0
