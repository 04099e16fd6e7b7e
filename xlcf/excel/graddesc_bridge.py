"""Graddesc sheets through xlwings: read the start/hyper cells and the data sheet, compute with the pure
functions of :mod:`xlcf.actions.step` (the same rules the sheet's formulas implement, verified against
LibreOffice), return the cells to write. The remote engine has no recalculation, so N passes are computed
here rather than by letting Excel recalc between copies."""

from __future__ import annotations

import math

import numpy as np

from xlcf.errors import WorkbookError
from xlcf.excel.sheetio import is_blank, named_range, range_ref, read_scalar


def _number(sheet, name: str) -> float:
    rng = named_range(sheet, name)
    if rng is None:
        raise WorkbookError(f"sheet {sheet.name!r} has no named cell {name!r} (not made by `xlcf new graddesc`?)")
    value = read_scalar(rng)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise WorkbookError(f"{name} must be a number, found {value!r}", where=range_ref(rng))
    return float(value)


def read_data(book) -> tuple[np.ndarray, np.ndarray]:
    from xlcf.actions.step import DATA_SHEET

    data = None
    for candidate in book.sheets:
        if candidate.name.casefold() == DATA_SHEET:
            data = candidate
    if data is None:
        raise WorkbookError(f"the workbook has no {DATA_SHEET!r} sheet (not made by `xlcf new graddesc`?)")
    xr, yr = named_range(data, "data_x"), named_range(data, "data_y")
    if xr is None or yr is None:
        raise WorkbookError(f"sheet {DATA_SHEET!r} has no names data_x / data_y")
    xs = [row[0] for row in xr.options(ndim=2).value]
    ys = [row[0] for row in yr.options(ndim=2).value]
    x, y = [], []
    line = None
    for i, (xv, yv) in enumerate(zip(xs, ys)):
        if isinstance(xv, bool) or not isinstance(xv, (int, float)):
            raise WorkbookError(f"x must be a number, found {xv!r}", where=range_ref(xr[i, 0]))
        if is_blank(yv):  # an uncalculated formula: y = true_slope*x + true_const, as the cell computes it
            if line is None:
                line = (_number(data, "true_slope"), _number(data, "true_const"))
            yv = line[0] * float(xv) + line[1]
        elif isinstance(yv, bool) or not isinstance(yv, (int, float)):
            raise WorkbookError(f"y must be a number, found {yv!r}", where=range_ref(yr[i, 0]))
        x.append(float(xv))
        y.append(float(yv))
    return np.array(x), np.array(y)


def _history(sheet):
    pass_rng, rmse_rng = named_range(sheet, "history_pass"), named_range(sheet, "history_rmse")
    if pass_rng is None or rmse_rng is None:
        return None, None, []
    from xlcf.actions.step import leading_history

    passes = [row[0] for row in pass_rng.options(ndim=2).value]
    rmses = [row[0] for row in rmse_rng.options(ndim=2).value]
    return pass_rng, rmse_rng, leading_history(passes, rmses)


def compute(book, sheet, action: str, passes: int) -> tuple[dict, str]:
    """``{name: value or column block}`` to write on ``sheet`` and the status line."""
    from xlcf.actions.step import plan_reset, plan_step
    from xlcf.lessons import graddesc_ref as ref

    kind = sheet.name.lower()
    if kind not in ref.KINDS:
        raise WorkbookError(f"sheet {sheet.name!r} is not one of the graddesc sheets ({', '.join(ref.KINDS)})")
    x, y = read_data(book)
    state = {name: _number(sheet, name) for name in ref.state_names(kind)}
    pass_rng, _rmse_rng, existing = _history(sheet)
    capacity = None if pass_rng is None else pass_rng.shape[0]
    if action == "reset":
        initial = {}
        for name in ref.state_names(kind):
            if named_range(sheet, ref.init_name(name)) is not None:
                initial[name] = _number(sheet, ref.init_name(name))
        plan = plan_reset(kind, x, y, state, initial, capacity)
    else:
        hyper = {name: _number(sheet, name) for name in ref.hyper_names(kind)}
        plan = plan_step(kind, x, y, state, hyper, passes, existing, capacity)
    writes: dict = {name: float(value) for name, value in plan.state.items()}
    if plan.history is not None:
        writes["history_pass"] = [[p] for p, _ in plan.history]
        writes["history_rmse"] = [[r] for _, r in plan.history]
    return writes, plan.status
