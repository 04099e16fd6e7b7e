"""`xlcf check BOOK`: does the evaluator agree with the cached values Excel stored in the file?"""

from __future__ import annotations

import json

SHOWN = 20  # mismatches listed in the text output (all of them with --json)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="evaluate every formula and compare with the values cached in the file",
        description="Evaluate every formula cell the evaluator supports, each from the cached values of its inputs "
        "(so one difference does not cascade), and compare with the value the file caches (what Excel "
        "showed when it last saved the book). Lists mismatches, unsupported functions, volatile cells "
        "and cells whose value differs between Excel and LibreOffice. Exit 0: no mismatch; 1: "
        "mismatches; 2: the book cannot be read.",
    )
    parser.add_argument("book", help="workbook (.xlsx or .xlsm)")
    parser.add_argument("--sheet", help="check only this sheet")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args) -> int:
    from xlcf.actions.recalc import check_workbook

    report = check_workbook(args.book, args.sheet)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 1 if report.mismatches else 0
    print(
        f"{args.book}: {report.cells_checked} formula cells checked, {len(report.mismatches)} mismatches "
        f"({len(report.volatile)} volatile, {len(report.unsupported)} unsupported, {len(report.not_cached)} "
        f"without a cached value, {len(report.excel_vs_libreoffice)} differ in LibreOffice)"
    )
    for m in report.mismatches[:SHOWN]:
        print(f"mismatch {m['cell']}: {m['formula']}: cached {m['cached']!r}, evaluated {m['evaluated']!r}")
    if len(report.mismatches) > SHOWN:
        print(f"... and {len(report.mismatches) - SHOWN} more (--json lists them all)")
    for u in report.unsupported[:SHOWN]:
        print(f"unsupported {u['cell']}: {u['error']}")
    for d in report.excel_vs_libreoffice[:SHOWN]:
        print(
            f"excel-vs-libreoffice {d['cell']}: {d['formula']}: Excel {d['excel']!r}, LibreOffice {d['libreoffice']!r}"
        )
    return 1 if report.mismatches else 0
