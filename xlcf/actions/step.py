"""The lesson's "one step" button: copy the values after a pass into the start cells, N times.

Neither a file nor xlwings' remote engine recalculates, so the passes are computed with
:mod:`xlcf.lessons.graddesc_ref` (the same rules the sheet's formulas implement) from the values in the start
cells and the data sheet. The logic is pure (:func:`step_values`, :func:`reset_values`, :func:`history_rows`,
:func:`plan_step`); :func:`plan_sheet` reads a graddesc sheet and :func:`plan_cells` gives the cells to write,
both through a :class:`~xlcf.actions.sheetio.SheetIO`, so ``xlcf step`` (the zip ``Package``:
:func:`step_workbook` / :func:`reset_workbook`, same rules as ``xlcf fit``: only owned cells, atomic save,
formulas never overwritten) and the Step/Reset buttons (``xlcf.excel.macros``) read and write the same cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xlcf.actions.sheetio import BookIO, SheetIO, ZipBookIO
from xlcf.errors import ConfigError, DivergenceError, WorkbookError, quote
from xlcf.fileio import locked_writer
from xlcf.lessons import graddesc_ref as ref
from xlcf.ooxml.refs import Area, cell_ref
from xlcf.ooxml.values import CellValue

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
# reading and writing a graddesc sheet through a SheetIO (the CLI's zip Package, the buttons' xlwings)
# ---------------------------------------------------------------------------------------------------------


def _area(io: SheetIO, name: str, *, required: bool = True) -> Area | None:
    area = io.name_area(name)
    if area is None and required:
        raise WorkbookError(
            f"sheet {quote(io.sheet)} has no defined name {quote(name)} (not a sheet made by `xlcf new graddesc`?)"
        )
    return area


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(io: SheetIO, name: str) -> float:
    area = _area(io, name)
    assert area is not None  # required
    corner = Area(area.sheet or io.sheet, area.top, area.left, area.top, area.left)
    value = io.read_values(corner)[0][0]
    if not _is_number(value):
        raise WorkbookError(f"{name} must be a number, found {quote(value)}", where=f"{corner.sheet}!{corner.ref}")
    return float(value)  # type: ignore[arg-type]  # checked above


def _column(io: SheetIO, area: Area) -> list[CellValue]:
    return [row[0] for row in io.read_values(area)]


def read_data(data: SheetIO) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the data sheet. y cells are formulas (=a*x+b): a blank y (a file saved without calculation, a
    payload of uncalculated cells) is computed from the true a and b cells as its formula does."""
    xa, ya = _area(data, "data_x"), _area(data, "data_y")
    assert xa is not None and ya is not None  # required
    slope: float | None = None
    const: float | None = None
    x, y = [], []
    x_sheet, y_sheet = xa.sheet or data.sheet, ya.sheet or data.sheet
    for i, (xv, yv) in enumerate(zip(_column(data, xa), _column(data, ya))):
        if not _is_number(xv):
            raise WorkbookError(
                f"x must be a number, found {quote(xv)}", where=f"{x_sheet}!{cell_ref(xa.top + i, xa.left)}"
            )
        if _is_number(yv):
            y_value = float(yv)  # type: ignore[arg-type]  # checked above
        elif yv is None:
            if slope is None or const is None:
                slope, const = _number(data, "true_slope"), _number(data, "true_const")
            y_value = slope * float(xv) + const  # type: ignore[arg-type]  # checked above
        else:
            raise WorkbookError(
                f"y must be a number, found {quote(yv)}", where=f"{y_sheet}!{cell_ref(ya.top + i, ya.left)}"
            )
        x.append(float(xv))  # type: ignore[arg-type]  # checked above
        y.append(y_value)
    return np.array(x), np.array(y)


def graddesc_sheets(book: BookIO, sheet: str) -> tuple[str, SheetIO, SheetIO]:
    """(optimizer kind, the sheet, the data sheet) of a graddesc workbook's sheet; WorkbookError otherwise."""
    io = book.sheet_io(sheet)
    if io is None:
        raise WorkbookError(f"the workbook has no sheet {quote(sheet)}")
    kind = io.sheet.lower()
    if kind not in ref.KINDS:
        raise WorkbookError(f"sheet {quote(io.sheet)} is not one of the graddesc sheets ({', '.join(ref.KINDS)})")
    data = book.sheet_io(DATA_SHEET)
    if data is None:
        raise WorkbookError(f"the workbook has no {quote(DATA_SHEET)} sheet (not made by `xlcf new graddesc`?)")
    return kind, io, data


def _history(io: SheetIO) -> tuple[Area, Area] | None:
    pa, ra = _area(io, "history_pass", required=False), _area(io, "history_rmse", required=False)
    return None if pa is None or ra is None else (pa, ra)


@dataclass
class SheetStep:
    """A step or reset planned from a sheet's cells: what it started from and what it writes."""

    kind: str
    before: dict  # the start values read
    plan: StepPlan


def plan_sheet(io: SheetIO, data: SheetIO, kind: str, passes: int | None) -> SheetStep:
    """Read a graddesc sheet and plan ``passes`` passes, or Reset when ``passes`` is None (start cells back to the
    ``init_*`` cells, defaults for those missing). Raises before anything is written."""
    x, y = read_data(data)
    state = {name: _number(io, name) for name in ref.state_names(kind)}
    history = _history(io)
    existing: list[tuple] = []
    capacity = None
    if history is not None:
        existing = leading_history(_column(io, history[0]), _column(io, history[1]))
        capacity = history[0].shape[0]
    if passes is None:
        initial = {
            name: _number(io, ref.init_name(name))
            for name in ref.state_names(kind)
            if io.name_area(ref.init_name(name)) is not None
        }
        plan = plan_reset(kind, x, y, state, initial, capacity)
    else:
        hyper = {name: _number(io, name) for name in ref.hyper_names(kind)}
        plan = plan_step(kind, x, y, state, hyper, passes, existing, capacity)
    return SheetStep(kind, state, plan)


def plan_cells(io: SheetIO, plan: StepPlan, status: str | None = None) -> dict[str, CellValue]:
    """Cell -> value of a plan: the start cells, the history cells whose value changes (appending touches two
    cells per pass) and the status cell when the sheet has one (books generated before it existed lack it).
    ``status`` replaces the plan's status line (a front end may add to it)."""
    values: dict[str, CellValue] = {}
    for name, value in plan.state.items():
        area = _area(io, name)
        assert area is not None  # required
        values[cell_ref(area.top, area.left)] = float(value)
    history = _history(io)
    if plan.history is not None and history is not None:
        pa, ra = history
        old_p, old_r = _column(io, pa), _column(io, ra)
        for i, (p, r) in enumerate(plan.history):
            if old_p[i] != p:
                values[cell_ref(pa.top + i, pa.left)] = p
            if old_r[i] != r:
                values[cell_ref(ra.top + i, ra.left)] = r
    status_area = io.name_area("status")
    if status_area is not None:
        values[cell_ref(status_area.top, status_area.left)] = plan.status if status is None else status
    return values


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

    if sheet not in ref.KINDS:
        raise WorkbookError(f"--sheet {quote(sheet)}: choose one of {', '.join(ref.KINDS)}")
    pkg = Package.open(path)
    pkg.allow_protected = force  # --force: locked cells of a protected sheet may change
    pkg.sheet_part(sheet)  # WorkbookError naming the sheets when absent
    kind, io, data = graddesc_sheets(ZipBookIO(pkg), sheet)
    step = plan_sheet(io, data, kind, passes)
    plan = step.plan
    result = StepResult(
        sheet=sheet,
        passes=0 if passes is None else int(passes),
        before=step.before,
        after=plan.state,
        rmse_before=plan.rmse_before,
        rmse_after=plan.rmse_after,
        history=plan.rmses,
    )
    if not dry_run:
        values = plan_cells(io, plan)
        pkg.check_writable()
        io.write_values(values)
        result.cells_written = len(values)
        pkg.save(backup=backup)
    return result
