"""The lesson's "one step" button, headless: copy the values after a pass into the start cells, N times.

A file has no live engine, so the passes are computed with :mod:`xlcf.lessons.graddesc_ref` (the same rules
the sheet's formulas implement) from the values in the start cells and the data sheet. The logic is pure
(:func:`step_values`, :func:`reset_values`, :func:`history_rows`) so the Excel macros can reuse it with
xlwings; :func:`step_workbook` / :func:`reset_workbook` are the zip-level writers used by ``xlcf step``
(same rules as ``xlcf fit``: only owned cells, atomic save, formulas never overwritten).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xlcf.errors import ConfigError, DivergenceError, WorkbookError, quote
from xlcf.fileio import locked_writer
from xlcf.lessons import graddesc_ref as ref
from xlcf.ooxml.refs import cell_ref

DATA_SHEET = "data"
MAX_PASSES = 100_000


# ---------------------------------------------------------------------------------------------------------
# pure logic (shared with the Excel macros)
# ---------------------------------------------------------------------------------------------------------


def step_values(kind: str, x, y, state: dict, hyper: dict, passes: int = 1) -> tuple[dict, list[float]]:
    """Run ``passes`` passes from ``state``; return the new start state and the RMSE after each pass.

    ``state`` holds the start cells (``ref.state_names(kind)``), ``hyper`` the hyperparameter cells.
    Raises DivergenceError (nothing to write) when a value stops being finite.
    """
    if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or not 1 <= passes <= MAX_PASSES:
        raise ConfigError(f"--passes must be a whole number between 1 and {MAX_PASSES}, got {passes!r}")
    results = ref.run_passes(kind, x, y, start=state, hyper=hyper, passes=int(passes))
    for i, res in enumerate(results, 1):
        bad = [k for k, v in res.after.items() if not math.isfinite(v)]
        if bad or not math.isfinite(res.rmse):
            raise DivergenceError(
                f"{kind}: pass {i} diverged ({', '.join(bad) or 'rmse'} is not finite); "
                f"nothing written, try a smaller lr",
                epoch=i,
            )
    return dict(results[-1].after), [float(r.rmse) for r in results]


def reset_values(kind: str, initial: dict | None = None) -> dict:
    """Start values for Reset: the ``init_*`` cells when given, else the generator's defaults."""
    names = ref.state_names(kind)
    source = dict(ref.START[kind], **(initial or {}))
    return {name: float(source[name]) for name in names}


def history_rows(existing: list[tuple], new_rmse: list[float], capacity: int) -> list[tuple]:
    """Append (pass, rmse) rows after the existing ones (passes numbered on from the last), keeping the newest
    ``capacity`` rows; the result is padded with (None, None) to ``capacity`` so it can be written as a block."""
    rows = [(int(p), float(r)) for p, r in existing if p is not None and r is not None]
    last = rows[-1][0] if rows else 0
    rows += [(last + i, float(r)) for i, r in enumerate(new_rmse, 1)]
    rows = rows[-capacity:]
    return rows + [(None, None)] * (capacity - len(rows))


def leading_history(passes: list, rmses: list) -> list[tuple]:
    """The filled (pass, rmse) rows at the top of the history columns: up to the first row that is not two
    numbers."""
    rows = []
    for p, r in zip(passes, rmses):
        if isinstance(p, (int, float)) and isinstance(r, (int, float)) and not isinstance(p, bool):
            rows.append((p, r))
        else:
            break
    return rows


@dataclass
class StepPlan:
    """Everything one Step or Reset writes, computed before anything is written."""

    state: dict  # the new start values
    rmse_before: float  # RMSE of the start values before
    rmse_after: float  # ... and after
    rmses: list[float]  # RMSE after each pass done now (empty for Reset)
    history: list[tuple] | None  # rows of the history block (None when the sheet has none)
    status: str  # the status cell's line


def plan_step(
    kind: str, x, y, state: dict, hyper: dict, passes: int, existing: list[tuple], capacity: int | None
) -> StepPlan:
    """``passes`` passes from ``state``; the history continues ``existing`` (or starts at row 0 with the
    values the step started from)."""
    new_state, rmses = step_values(kind, x, y, state, hyper, passes)
    rmse_before = ref.rmse_of(state["slope"], state["const"], x, y)
    history = None if capacity is None else history_rows(existing or [(0, rmse_before)], rmses, capacity)
    status = (
        f"{passes} pass{'es' if passes != 1 else ''} of {kind}: a = {new_state['slope']:.6g}, "
        f"b = {new_state['const']:.6g}; RMSE {rmse_before:.4f} -> {rmses[-1]:.4f}"
    )
    return StepPlan(new_state, rmse_before, rmses[-1], rmses, history, status)


def plan_reset(kind: str, x, y, state: dict, initial: dict | None, capacity: int | None) -> StepPlan:
    """Start values back to ``initial`` (the ``init_*`` cells; defaults for those missing); history row 0 only."""
    new_state = reset_values(kind, initial)
    rmse_after = ref.rmse_of(new_state["slope"], new_state["const"], x, y)
    history = None if capacity is None else history_rows([(0, rmse_after)], [], capacity)
    status = f"Reset: a = {new_state['slope']:.6g}, b = {new_state['const']:.6g}; RMSE {rmse_after:.4f}"
    return StepPlan(new_state, ref.rmse_of(state["slope"], state["const"], x, y), rmse_after, [], history, status)


# ---------------------------------------------------------------------------------------------------------
# the file path (zip-level via Package)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    sheet: str
    passes: int
    before: dict
    after: dict
    rmse_before: float  # RMSE over the data with the start values before the step
    rmse_after: float  # ... with the start values after it
    history: list[float] = field(default_factory=list)  # RMSE after each pass done now
    cells_written: int = 0

    def to_dict(self) -> dict:
        return {
            "sheet": self.sheet,
            "passes": self.passes,
            "slope": self.after.get("slope"),
            "const": self.after.get("const"),
            "rmse_before": self.rmse_before,
            "rmse_after": self.rmse_after,
            "state": self.after,
            "history": self.history,
            "cells_written": self.cells_written,
        }


def _area(pkg, sheet: str, name: str):
    areas = pkg.name_areas(sheet, name)
    if not areas:
        raise WorkbookError(
            f"sheet '{sheet}' has no defined name '{name}' (not a sheet made by `xlcf new graddesc`?)",
            where=pkg.path.name,
        )
    return areas[0]


def _number(pkg, sheet: str, name: str) -> float:
    area = _area(pkg, sheet, name)
    cell = pkg.read_cell(area.sheet or sheet, area.ref.split(":")[0])
    value = cell.value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorkbookError(f"{name} must be a number, found {quote(value)}", where=f"{area.sheet or sheet}!{cell.ref}")
    return float(value)


def read_data(pkg) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the data sheet. y cells are formulas (=a*x+b); a file saved by openpyxl has no cached value,
    so an uncached y is computed from the true a and b cells as the formula does."""
    if not pkg.has_sheet(DATA_SHEET):
        raise WorkbookError(f"{pkg.path.name} has no '{DATA_SHEET}' sheet (not made by `xlcf new graddesc`?)")
    xa, ya = _area(pkg, DATA_SHEET, "data_x"), _area(pkg, DATA_SHEET, "data_y")
    xs = [row[0] for row in pkg.read_range(DATA_SHEET, xa)]
    ys = [row[0] for row in pkg.read_range(DATA_SHEET, ya)]
    slope: float | None = None
    const: float | None = None
    x, y = [], []
    for cx, cy in zip(xs, ys):
        if isinstance(cx.value, bool) or not isinstance(cx.value, (int, float)) or not math.isfinite(cx.value):
            raise WorkbookError(f"x must be a number, found {quote(cx.value)}", where=f"{DATA_SHEET}!{cx.ref}")
        if isinstance(cy.value, (int, float)) and not isinstance(cy.value, bool) and math.isfinite(cy.value):
            yv = float(cy.value)
        elif cy.value is None and cy.formula:
            if slope is None or const is None:
                slope, const = _number(pkg, DATA_SHEET, "true_slope"), _number(pkg, DATA_SHEET, "true_const")
            yv = slope * float(cx.value) + const
        else:
            raise WorkbookError(f"y must be a number, found {quote(cy.value)}", where=f"{DATA_SHEET}!{cy.ref}")
        x.append(float(cx.value))
        y.append(yv)
    return np.array(x), np.array(y)


def _check_sheet(pkg, sheet: str) -> str:
    if sheet not in ref.KINDS:
        raise WorkbookError(f"--sheet {quote(sheet)}: choose one of {', '.join(ref.KINDS)}")
    pkg.sheet_part(sheet)  # WorkbookError naming the sheets when absent
    return sheet


def _read_state(pkg, sheet: str) -> tuple[dict, dict]:
    state = {name: _number(pkg, sheet, name) for name in ref.state_names(sheet)}
    hyper = {name: _number(pkg, sheet, name) for name in ref.hyper_names(sheet)}
    return state, hyper


def _history_cells(pkg, sheet: str, rows: list[tuple]) -> dict:
    """Only the history cells whose value changes (appending touches two cells per pass)."""
    pa, ra = _area(pkg, sheet, "history_pass"), _area(pkg, sheet, "history_rmse")
    old_p = [row[0].value for row in pkg.read_range(sheet, pa)]
    old_r = [row[0].value for row in pkg.read_range(sheet, ra)]
    out = {}
    for i, (p, r) in enumerate(rows):
        if old_p[i] != p:
            out[cell_ref(pa.top + i, pa.left)] = p
        if old_r[i] != r:
            out[cell_ref(ra.top + i, ra.left)] = r
    return out


def _existing_history(pkg, sheet: str) -> tuple[list[tuple], int]:
    pa, ra = _area(pkg, sheet, "history_pass"), _area(pkg, sheet, "history_rmse")
    passes = [row[0].value for row in pkg.read_range(sheet, pa)]
    rmses = [row[0].value for row in pkg.read_range(sheet, ra)]
    return leading_history(passes, rmses), len(passes)


def _plan_cells(pkg, sheet: str, plan: StepPlan) -> dict:
    """Cell -> value for a plan: the start cells, the history cells that change and the status cell when the
    sheet has one (workbooks generated before it existed simply lack it)."""
    values: dict[str, float | str] = {_area(pkg, sheet, name).ref: float(v) for name, v in plan.state.items()}
    if plan.history is not None:
        values.update(_history_cells(pkg, sheet, plan.history))
    areas = pkg.name_areas(sheet, "status")
    if areas:
        values[areas[0].ref.split(":")[0]] = plan.status
    return values


def step_workbook(
    path,
    sheet: str,
    passes: int = 1,
    *,
    backup: bool = False,
    dry_run: bool = False,
    lock_timeout: float | None = None,
    force: bool = False,
) -> StepResult:
    """``xlcf step``: N passes headless, new start values + RMSE history written in place (zip-level)."""
    return _step_or_reset(path, sheet, passes, backup=backup, dry_run=dry_run, lock_timeout=lock_timeout, force=force)


def reset_workbook(
    path,
    sheet: str,
    *,
    backup: bool = False,
    dry_run: bool = False,
    lock_timeout: float | None = None,
    force: bool = False,
) -> StepResult:
    """Reset: start cells back to the ``init_*`` cells; history back to row 0 only."""
    return _step_or_reset(path, sheet, None, backup=backup, dry_run=dry_run, lock_timeout=lock_timeout, force=force)


@locked_writer
def _step_or_reset(
    path, sheet: str, passes: int | None, *, backup: bool, dry_run: bool, force: bool = False
) -> StepResult:
    """``passes`` passes, or Reset when ``passes`` is None; nothing is written on any error or with ``dry_run``."""
    from xlcf.ooxml.package import Package

    pkg = Package.open(path)
    pkg.allow_protected = force  # --force: locked cells of a protected sheet may change
    _check_sheet(pkg, sheet)
    x, y = read_data(pkg)
    state, hyper = _read_state(pkg, sheet)
    if passes is None:
        initial = {name: _number(pkg, sheet, ref.init_name(name)) for name in ref.state_names(sheet)}
        _existing, capacity = _existing_history(pkg, sheet)
        plan = plan_reset(sheet, x, y, state, initial, capacity)
    else:
        existing, capacity = _existing_history(pkg, sheet)
        plan = plan_step(sheet, x, y, state, hyper, passes, existing, capacity)
    result = StepResult(
        sheet=sheet,
        passes=0 if passes is None else int(passes),
        before=state,
        after=plan.state,
        rmse_before=plan.rmse_before,
        rmse_after=plan.rmse_after,
        history=plan.rmses,
    )
    if not dry_run:
        values = _plan_cells(pkg, sheet, plan)
        pkg.check_writable()
        result.cells_written = pkg.write_values(sheet, values)
        pkg.save(backup=backup)
    return result
