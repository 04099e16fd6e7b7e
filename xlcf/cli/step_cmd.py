"""`xlcf step BOOK --sheet NAME [--passes N]`: the gradient-descent workbook's "one step" button, headless."""

from __future__ import annotations

import json

from xlcf.cli._options import add_in_place_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "step",
        help="copy after-pass values into the start cells of a graddesc sheet (N passes)",
        description="Run N passes of a graddesc optimizer sheet headless: the values after each pass become the "
        "next start values (a, b and the optimizer state); the RMSE per pass is appended to the "
        "sheet's history table. Only those cells change; the file is replaced atomically.",
    )
    parser.add_argument("book", help="workbook made by `xlcf new graddesc` (.xlsx or .xlsm)")
    parser.add_argument("--sheet", required=True, help="basic, momentum, rmsprop, adam or adam_ann")
    parser.add_argument("--passes", type=int, default=1, help="passes to run (default 1)")
    parser.add_argument("--reset", action="store_true", help="put the initial start values back (and clear history)")
    add_in_place_options(parser, dry_run_help="compute and report, write nothing")
    parser.set_defaults(func=run)


def run(args) -> int:
    from xlcf.actions.step import reset_workbook, step_workbook

    if args.reset:
        result = reset_workbook(
            args.book, args.sheet, backup=args.backup, dry_run=args.dry_run, lock_timeout=args.wait, force=args.force
        )
    else:
        result = step_workbook(
            args.book,
            args.sheet,
            args.passes,
            backup=args.backup,
            dry_run=args.dry_run,
            lock_timeout=args.wait,
            force=args.force,
        )
    if args.json:
        print(json.dumps(result.to_dict()))
    elif args.reset:
        print(
            f"{args.sheet}: {'would reset' if args.dry_run else 'reset'} to slope={result.after['slope']:g}, "
            f"const={result.after['const']:g} "
            f"(RMSE {result.rmse_after:.4f})"
        )
    else:
        verb = "would set" if args.dry_run else "set"
        print(
            f"{args.sheet}: {result.passes} pass(es); RMSE {result.rmse_before:.4f} -> {result.rmse_after:.4f}; "
            f"{verb} slope={result.after['slope']:.6g}, const={result.after['const']:.6g}"
        )
    return 0
