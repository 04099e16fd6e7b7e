"""`xlcf fit BOOK --sheet NAME`: fit a workbook's factor blocks in place (the Solver replacement)."""

from __future__ import annotations

import argparse
import json
import sys

from xlcf import catalog
from xlcf.cli._options import add_in_place_options, add_time_limit_option, time_cap_note


def _scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale expects two numbers LOW HIGH (e.g. '0.5 5'); got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"--scale LOW must be smaller than HIGH; got {text!r}")
    return lo, hi


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a sheet's factor blocks in place (.xlsx/.xlsm), keeping everything else byte-for-byte",
        description="Fit the factor (and bias) blocks of a collaborative-filtering sheet to its ratings, like "
        "Excel's Solver, and write them back in place. Blocks are found through the sheet's names "
        "(xlcf new collab), else the Solver model stored in the sheet (solver_opt/solver_adj and the "
        "prediction formulas), or the explicit ranges below. Only factor and bias cells are written. "
        "Settings come from the sheet's settings cells; flags override them.",
    )
    p.add_argument("book", help="workbook (.xlsx or .xlsm)")
    p.add_argument("--sheet", required=True, help="sheet to fit (e.g. dotprod, bias)")
    p.add_argument("--optimizer", help=f"{', '.join(catalog.optimizer_names())} (default: the sheet's)")
    p.add_argument("--epochs", type=int, help="epochs (full-batch steps)")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--wd", type=float, dest="weight_decay", help="weight decay (L2)")
    p.add_argument("--seed", type=int, help="seed (used by --init random)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--restarts",
        type=int,
        help="extra runs from fresh random starts, the best kept, like Solver's multistart "
        "(default 3; 0 = only the warm start)",
    )
    p.add_argument(
        "--init",
        choices=["keep", "random"],
        default="keep",
        help="keep: warm start from the sheet's factors, like Solver (default); random: re-initialise",
    )
    p.add_argument(
        "--scale", type=_scale, default=(0.5, 5.0), metavar="'LOW HIGH'", help="allowed rating range (default '0.5 5')"
    )
    p.add_argument(
        "--history",
        action="store_true",
        help="write RMSE per epoch to a fit_log sheet with a line chart (replaced on every fit)",
    )
    add_in_place_options(p, dry_run_help="fit and report, write nothing")
    add_time_limit_option(p)
    g = p.add_argument_group("explicit ranges (for sheets without xlcf names or a Solver model; when given they win)")
    g.add_argument("--ratings", metavar="RANGE", help="ratings block, e.g. H2:V16")
    g.add_argument("--user-factors", metavar="RANGE", help="users x k block, e.g. B25:F39")
    g.add_argument("--movie-factors", metavar="RANGE", help="k x movies block, e.g. H19:V23")
    g.add_argument("--user-bias", metavar="RANGE", help="one column, e.g. A25:A39")
    g.add_argument("--movie-bias", metavar="RANGE", help="one row, e.g. H18:V18")
    g.add_argument("--rmse", metavar="CELL", help="RMSE formula cell, e.g. V41 (its cached value is updated)")
    p.set_defaults(func=run)


def run(args) -> int:
    from xlcf.actions.fit import BlockRefs, FitOptions, fit_workbook

    overrides = {
        "optimizer": args.optimizer,
        "epochs": args.epochs,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "device": args.device,
        "restarts": args.restarts,
    }
    blocks = BlockRefs(
        ratings=args.ratings,
        user_factors=args.user_factors,
        movie_factors=args.movie_factors,
        user_bias=args.user_bias,
        movie_bias=args.movie_bias,
        rmse=args.rmse,
    )
    options = FitOptions(
        overrides=overrides,
        init=args.init,
        backup=args.backup,
        dry_run=args.dry_run,
        history=args.history,
        blocks=blocks,
        scale=args.scale,
        progress=not args.json and sys.stderr.isatty(),
        time_limit=args.time_limit,
        lock_timeout=args.wait,
        force=args.force,
    )
    summary = fit_workbook(args.book, args.sheet, options)
    if summary.get("time_capped"):
        print(time_cap_note(args.time_limit, summary.get("epochs")), file=sys.stderr)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    if summary.get("fit_path") == "evaluator":  # a layout the fast path does not know, solved through its formulas
        verb = "would write" if summary["dry_run"] else "wrote"
        print(
            f"{args.book} [{summary['sheet']}] (Solver model, through the sheet's formulas): {summary['sense']} "
            f"{summary['objective']}: {summary['objective_before']:.6g} -> {summary['objective_after']:.6g} "
            f"({summary['optimizer']} on {summary['device']}, {summary['fit_seconds']:.2f}s)"
        )
        print(f"{verb} {summary['variables']} variable cells and {summary['cached_values_updated']} cached values")
        for note in summary["notes"]:
            print(f"note: {note}", file=sys.stderr)
        return 0
    if "rmse_after" not in summary:  # the movielens sheet: the same result line as `xlcf train` (--json has all)
        print(movielens_line(summary, args.book))
        return 0
    before = "n/a" if summary["rmse_before"] is None else f"{summary['rmse_before']:.4f}"
    verb = "would write" if summary["dry_run"] else "wrote"
    print(
        f"{args.book} [{summary['sheet']}] ({summary['source']}): {summary['model']} model, "
        f"{summary['optimizer']} x {summary['epochs']} epochs on {summary['device']} in "
        f"{summary['fit_seconds']:.2f}s"
        + (f" (best of {len(summary['runs'])} runs)" if len(summary.get("runs") or []) > 1 else "")
    )
    print(
        f"RMSE over {summary['n_rated']} rated cells: {before} -> {summary['rmse_after']:.4f}; {verb} "
        f"{summary['cells_written']} cells, {summary['cached_values_updated']} cached values"
    )
    if summary.get("rmse_avg") is not None:  # gibbs: the sheet holds posterior means; the model averages sweeps
        block = summary.get("std_block")
        print(
            f"(posterior means; averaged predictions {summary['rmse_avg']:.4f})"
            + (f"; ± std of each prediction in {block['range']} ({block['name']})" if block else "")
        )
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if summary["backup"]:
        print(f"backup: {summary['backup']}")
    return 0


def movielens_line(summary: dict, book) -> str:
    """``xlcf train``'s result line for a training run from a movielens sheet."""
    valid = summary.get("valid_rmse")
    valid_text = "n/a" if valid is None else f"{valid:.4f}"
    return (
        f"{summary.get('model_used')}/{summary.get('optimizer_used')} on {summary.get('device_used')}: "
        f"{summary.get('n_ratings')} ratings ({summary.get('n_users')} users x {summary.get('n_movies')} movies), "
        f"{summary.get('epochs_run')} epochs, train RMSE {summary.get('train_rmse', float('nan')):.4f}, "
        f"valid RMSE {valid_text}, fit {summary.get('fit_seconds', 0.0):.2f} s; wrote {book}"
    )
