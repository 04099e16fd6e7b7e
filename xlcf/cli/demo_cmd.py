"""`xlcf demo`: the whole lesson, offline, on the embedded 15x15 table.

Prints the crosstab, writes ``collab_filter.xlsx`` and ``graddesc.xlsx``, fits both collab sheets in place
with the engine (the Solver replacement) and runs one headless pass of every gradient-descent sheet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from xlcf.errors import WorkbookError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the lesson offline: crosstab, workbooks, fit, gradient descent",
        description="Write the lesson's workbooks from the embedded 15x15 table into OUT (default ./workbooks), "
        "fit the dotprod and bias sheets in place and step every gradient-descent sheet once. "
        "Existing demo workbooks are kept as .bak before they are replaced.",
    )
    parser.add_argument("-o", "--out", default="workbooks", help="folder for the workbooks (default: ./workbooks)")
    parser.add_argument("--optimizer", default=None, help="optimizer for the fits (default: the sheet's setting)")
    parser.add_argument("--device", default=None, help="auto|cpu|cuda|cuda:N|mps (default: the sheet's setting)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary instead of the report")
    parser.set_defaults(func=run)


def _fresh(path: Path) -> bool:
    """Move an earlier demo output aside (never delete a user's file); True if one was kept."""
    if not path.exists():
        return False
    shutil.copy2(path, path.with_name(path.name + ".bak"))
    return True


def run(args) -> int:
    from xlcf.actions.fit import fit_workbook
    from xlcf.actions.step import step_workbook
    from xlcf.data import lesson_crosstab, lesson_titles
    from xlcf.lessons.collab import build_collab
    from xlcf.lessons.graddesc import build_graddesc
    from xlcf.lessons.graddesc_ref import KINDS

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorkbookError(f"cannot create the output folder {out}: {err.strerror}") from None
    table = lesson_crosstab()
    titles = lesson_titles()
    report: dict = {
        "crosstab": {
            "users": len(table.index),
            "movies": len(table.columns),
            "rated_cells": int(table.notna().sum().sum()),
        }
    }

    collab_path = out / "collab_filter.xlsx"
    graddesc_path = out / "graddesc.xlsx"
    kept = [str(p) + ".bak" for p in (collab_path, graddesc_path) if _fresh(p)]
    build_collab(collab_path, table, titles, force=True)
    build_graddesc(graddesc_path, force=True)

    overrides = {"optimizer": args.optimizer, "device": args.device}
    fits = {sheet: fit_workbook(collab_path, sheet, overrides=overrides) for sheet in ("dotprod", "bias")}
    steps = {kind: step_workbook(graddesc_path, kind, passes=1).to_dict() for kind in KINDS}
    report.update({"workbooks": [str(collab_path), str(graddesc_path)], "fits": fits, "steps": steps, "backups": kept})

    if args.json:
        print(json.dumps(report, default=str))
        return 0

    print("The lesson's crosstab: 15 most active users x 15 most rated movies (MovieLens, 2016 release)\n")
    shown = table.copy()
    shown.columns = [str(c) for c in shown.columns]
    print(shown.to_string(na_rep="·", float_format=lambda v: f"{v:g}"))
    print(f"\n{report['crosstab']['rated_cells']} rated cells; '·' = not rated, predicted by the model.\n")
    print(f"Wrote {collab_path} (sheets dotprod, bias) and {graddesc_path} (data, {', '.join(KINDS)}).")
    for path in kept:
        print(f"  (the previous demo workbook was kept as {path})")
    print("\nFitted in place, like Excel's Solver but with the engine:")
    for sheet, fit in fits.items():
        print(
            f"  {sheet:8s} RMSE {fit['rmse_before']:.4f} -> {fit['rmse_after']:.4f}  "
            f"({fit['optimizer']}, {fit['epochs']} epochs, {fit['fit_seconds'] * 1000:.0f} ms on {fit['device']})"
        )
    print("\nOne pass of gradient descent per sheet (y = a*x + b, true a = 2, b = 30):")
    for kind, step in steps.items():
        print(
            f"  {kind:8s} a = {step['slope']:8.4f}  b = {step['const']:8.4f}  "
            f"RMSE {step['rmse_before']:8.3f} -> {step['rmse_after']:8.3f}"
        )
    print(f"\nOpen {collab_path} in Excel or LibreOffice: the predictions and RMSE are live formulas.")
    print(
        f"Next: `xlcf fit {collab_path} --sheet bias --optimizer lbfgs`, "
        f"`xlcf step {graddesc_path} --sheet adam --passes 5`, `xlcf train ml-latest-small`."
    )
    return 0
