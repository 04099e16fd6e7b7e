"""Graddesc sheets through xlwings: read the start/hyper cells and the data sheet, compute with the pure
functions of :mod:`xlcf.workbook.step` (the same rules the sheet's formulas implement, verified against
LibreOffice), return the cells to write. The remote engine has no recalculation, so N passes are computed
here rather than by letting Excel recalc between copies."""

from __future__ import annotations

import math

import numpy as np

from xlcf.errors import WorkbookError
from xlcf.excel.sheetio import is_blank, named_range, read_scalar


def _number(sheet, name: str) -> float:
    rng = named_range(sheet, name)
    if rng is None:
        raise WorkbookError(f"sheet {sheet.name!r} has no named cell {name!r} (not made by `xlcf new graddesc`?)")
    value = read_scalar(rng)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise WorkbookError(f"{sheet.name}!{rng.address.replace('$', '')}: {name} must be a number, "
                            f"found {value!r}")
    return float(value)


def read_data(book) -> tuple[np.ndarray, np.ndarray]:
    from xlcf.workbook.step import DATA_SHEET

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
            raise WorkbookError(f"{DATA_SHEET}!{xr[i, 0].address.replace('$', '')}: x must be a number, found {xv!r}")
        if is_blank(yv):  # an uncalculated formula: y = true_slope*x + true_const, as the cell computes it
            if line is None:
                line = (_number(data, "true_slope"), _number(data, "true_const"))
            yv = line[0] * float(xv) + line[1]
        elif isinstance(yv, bool) or not isinstance(yv, (int, float)):
            raise WorkbookError(f"{DATA_SHEET}!{yr[i, 0].address.replace('$', '')}: y must be a number, found {yv!r}")
        x.append(float(xv))
        y.append(float(yv))
    return np.array(x), np.array(y)


def _history(sheet):
    pass_rng, rmse_rng = named_range(sheet, "history_pass"), named_range(sheet, "history_rmse")
    if pass_rng is None or rmse_rng is None:
        return None, None, []
    passes = [row[0] for row in pass_rng.options(ndim=2).value]
    rmses = [row[0] for row in rmse_rng.options(ndim=2).value]
    rows = []
    for p, r in zip(passes, rmses):
        if isinstance(p, (int, float)) and isinstance(r, (int, float)) and not isinstance(p, bool):
            rows.append((p, r))
        else:
            break
    return pass_rng, rmse_rng, rows


def compute(book, sheet, action: str, passes: int) -> tuple[dict, str]:
    """``{name: value or column block}`` to write on ``sheet`` and the status line."""
    from xlcf.workbook import graddesc_ref as ref
    from xlcf.workbook.step import history_rows, reset_values, step_values

    kind = sheet.name.lower()
    if kind not in ref.KINDS:
        raise WorkbookError(f"sheet {sheet.name!r} is not one of the graddesc sheets ({', '.join(ref.KINDS)})")
    x, y = read_data(book)
    state = {name: _number(sheet, name) for name in ref.state_names(kind)}
    rmse_before = ref.rmse_of(state["slope"], state["const"], x, y)
    pass_rng, rmse_rng, existing = _history(sheet)
    if action == "reset":
        initial = {}
        for name in ref.state_names(kind):
            if named_range(sheet, ref.init_name(name)) is not None:
                initial[name] = _number(sheet, ref.init_name(name))
        new_state = reset_values(kind, initial)
        rmse_after = ref.rmse_of(new_state["slope"], new_state["const"], x, y)
        history = history_rows([(0, rmse_after)], [], pass_rng.shape[0]) if pass_rng is not None else None
        status = (f"Reset: a = {new_state['slope']:.6g}, b = {new_state['const']:.6g}; "
                  f"RMSE {rmse_after:.4f}")
    else:
        hyper = {name: _number(sheet, name) for name in ref.hyper_names(kind)}
        new_state, rmses = step_values(kind, x, y, state, hyper, passes)
        rmse_after = rmses[-1]
        if pass_rng is not None:
            start = existing or [(0, rmse_before)]
            history = history_rows(start, rmses, pass_rng.shape[0])
        else:
            history = None
        status = (f"{passes} pass{'es' if passes != 1 else ''} of {kind}: a = {new_state['slope']:.6g}, "
                  f"b = {new_state['const']:.6g}; RMSE {rmse_before:.4f} -> {rmse_after:.4f}")
    writes: dict = {name: float(value) for name, value in new_state.items()}
    if history is not None:
        writes["history_pass"] = [[p] for p, _ in history]
        writes["history_rmse"] = [[r] for _, r in history]
    return writes, status
