"""`xlcf solve BOOK --sheet S`: optimise a sheet's Solver model from its own formulas (autodiff, CPU or GPU)."""

from __future__ import annotations

import json
import sys

from xlcf.cli._options import add_in_place_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "solve",
        help="optimise any sheet's Solver model from its own formulas, in place (autodiff, CPU or GPU)",
        description="Read the Solver model stored in the sheet (objective cell, variable cells, max/min/value of, "
        "constraints) or take it from the flags, evaluate the sheet's formulas between the variables "
        "and the objective as a differentiable function, optimise it, and write the variable cells and "
        "the cached value of every formula cell downstream of them. Everything else in the file stays "
        "byte-for-byte; nothing is written on any error.",
    )
    p.add_argument("book", help="workbook (.xlsx or .xlsm)")
    p.add_argument("--sheet", required=True, help="sheet holding the Solver model")
    p.add_argument("--objective", metavar="CELL", help="objective cell (instead of the stored model), e.g. V42")
    p.add_argument("--vars", metavar="RANGES", help="variable cells, e.g. B26:F40,H20:V24 (with --objective)")
    sense = p.add_mutually_exclusive_group()
    sense.add_argument("--min", dest="sense", action="store_const", const="min", help="minimise (default)")
    sense.add_argument("--max", dest="sense", action="store_const", const="max", help="maximise")
    sense.add_argument("--value", type=float, metavar="X", help="make the objective equal X")
    p.add_argument(
        "--bound",
        action="append",
        default=[],
        metavar="'RANGE>=X'",
        help="bound on variable cells: 'B26:F40>=0', 'A2<=1.5', 'A2=3' (repeatable; adds to the stored constraints)",
    )
    p.add_argument(
        "--optimizer", default="lbfgs", help="lbfgs (default, L-BFGS-B), sgd, momentum, rmsprop, adam, adamw"
    )
    p.add_argument("--epochs", type=int, help="iterations (lbfgs) or steps (the others) per run")
    p.add_argument("--lr", type=float, help="learning rate (not used by lbfgs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random restarts (default 0)")
    p.add_argument(
        "--restarts",
        type=int,
        help="extra runs from random starts, the best kept, like Solver's multistart (default 3; they "
        "stop once two runs agree)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    add_in_place_options(p, dry_run_help="solve and report, write nothing")
    p.set_defaults(func=run, sense=None)


def run(args) -> int:
    from xlcf.actions.solve import solve_workbook

    sense = "value" if args.value is not None else (args.sense or None)
    summary = solve_workbook(
        args.book,
        args.sheet,
        objective=args.objective,
        variables=args.vars,
        sense=sense,
        target=args.value,
        bounds=args.bound,
        optimizer=args.optimizer,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        restarts=args.restarts,
        device=args.device,
        backup=args.backup,
        dry_run=args.dry_run,
        lock_timeout=args.wait,
        force=args.force,
    )
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    verb = "would write" if summary["dry_run"] else "wrote"
    print(
        f"{args.book} [{summary['sheet']}]: {summary['sense']} {summary['objective']}: "
        f"{summary['objective_before']:.6g} -> {summary['objective_after']:.6g} "
        f"({summary['optimizer']} on {summary['device']}, {summary['seconds']:.3f}s, "
        f"{len(summary['runs'])} run(s))"
    )
    print(
        f"{verb} {summary['variables']} variable cells and {summary['formulas_evaluated']} cached values "
        f"({summary['cells_written']} cells in all)"
    )
    for note in summary.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if summary.get("backup"):
        print(f"backup: {summary['backup']}")
    return 0
