"""Solve a sheet's Solver model in place: Excel's Solver, on the sheet's own formulas, with autodiff.

Steps (nothing is written until every one has succeeded; the save is atomic):

1. the model — the hidden ``solver_*`` names of the sheet (:func:`xlcf.actions.solver_model.model_from_names`)
   or the flags (:func:`~xlcf.actions.solver_model.model_from_flags`);
2. checks — variable cells hold numbers (or are blank), never formulas; constraints are bounds on variable cells
   (anything else is refused with the constraint named); the objective depends on the variables and is a finite
   number at the start;
3. the differentiable objective — the formula evaluator's torch pass over the formulas between the variables
   and the objective (:meth:`xlcf.formula.FormulaBook.compile`), recorded once as a numpy tape for L-BFGS on the
   CPU (:func:`numpy_tape`), or with ``torch.jit.trace`` (:func:`fast_objective`);
4. optimisation (:func:`xlcf.actions.optimize.minimize`): L-BFGS by default, multistart, bounds;
5. writing back — the variable cells (float64) and the cached value of every formula cell downstream of them,
   computed by the evaluator's numpy pass, so readers of cached values see what Excel will show.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from xlcf.actions.optimize import Problem, check_optimizer, minimize
from xlcf.actions.solver_model import (
    Constraint,
    SolverModel,
    model_from_flags,
    model_from_names,
    parse_bound,
)
from xlcf.errors import DivergenceError, SolverModelError, WorkbookError, quote
from xlcf.fileio import locked_writer
from xlcf.formula import FormulaBook
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area, cell_ref, sheet_cell
from xlcf.ooxml.values import ErrorValue


@dataclass
class Variables:
    """The variable cells in optimisation order: area by area, row-major within an area."""

    areas: tuple[Area, ...]
    cells: list[tuple[str, int, int]]  # (sheet, row, col), one per variable
    x0: np.ndarray  # their values (blank = 0)

    @property
    def size(self) -> int:
        return len(self.cells)

    def index(self) -> dict[tuple[str, int, int], int]:
        return {c: i for i, c in enumerate(self.cells)}


@dataclass
class SolveOutcome:
    """A solved model, before anything is written: what the writer (zip or xlwings) needs."""

    model: SolverModel
    variables: Variables
    x: np.ndarray
    objective_before: float
    objective_after: float
    values: dict[str, dict[str, object]]  # sheet -> ref -> new cached value of each downstream formula cell
    optimizer: str
    device: str
    seconds: float
    runs: list[dict]
    best_run: int
    iterations: int
    evaluations: int
    stopped_reason: str | None
    notes: list[str]
    formulas_per_evaluation: int = 0
    cpu_seconds: float = 0.0  # processor time of the optimisation
    engine: str = "torch"  # what evaluated the objective: "numpy tape" or torch

    def variable_values(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (sheet, row, col), value in zip(self.variables.cells, self.x):
            out.setdefault(sheet, {})[cell_ref(row, col)] = float(value)
        return out


# ----------------------------------------------------------------------------------------------------------------
# Cells of the formula book, by (sheet, row, col)


def _check_sheet(book: FormulaBook, sheet: str) -> None:
    if sheet not in book.sheet_names:
        raise WorkbookError(
            f"the workbook has no sheet {quote(sheet)} (sheets: {', '.join(book.sheet_names)})", field="sheet"
        )


def _formula(book: FormulaBook, sheet: str, row: int, col: int) -> str | None:
    return book.formula(sheet, cell_ref(row, col))


def _value(book: FormulaBook, sheet: str, row: int, col: int):
    return book.value(sheet, cell_ref(row, col))


def names_seen_from(book: FormulaBook, sheet: str) -> dict[str, str]:
    """The defined names as Excel resolves them on ``sheet``: the workbook's, overlaid by the sheet's own."""
    names = dict(book.names.get(None, {}))
    names.update(book.names.get(sheet, {}))
    return names


# ----------------------------------------------------------------------------------------------------------------
# The model


def read_model(
    book: FormulaBook,
    sheet: str,
    *,
    objective: str | None = None,
    variables: str | None = None,
    sense: str | None = None,
    target: float | None = None,
    bounds=(),
) -> SolverModel:
    """The stored model, or the one the flags describe; ``sense``/``target``/``bounds`` amend a stored model."""
    if (objective is None) != (variables is None):
        raise SolverModelError(
            "--objective and --vars go together (or give neither to use the sheet's Solver model)",
            field="--objective" if objective is None else "--vars",
        )
    if objective is not None and variables is not None:  # both or neither (checked above)
        return model_from_flags(
            sheet, objective, variables, sense=sense or "min", target=target or 0.0, bounds=list(bounds)
        )
    model = model_from_names(sheet, names_seen_from(book, sheet))
    changes: dict[str, Any] = {}
    if sense is not None:
        changes["sense"] = sense
        changes["target"] = float(target or 0.0) if sense == "value" else model.target
    if bounds:
        changes["constraints"] = model.constraints + tuple(parse_bound(b, sheet) for b in bounds)
    if changes:
        from dataclasses import replace

        model = replace(model, **changes)
    return model


def variable_cells(book: FormulaBook, model: SolverModel) -> Variables:
    """Every variable cell, checked: on an existing sheet, not a formula, a number or blank (blank = 0)."""
    cells, values, seen = [], [], set()
    for area in model.variables:
        sheet = area.sheet or model.sheet
        _check_sheet(book, sheet)
        for row in range(area.top, area.bottom + 1):
            for col in range(area.left, area.right + 1):
                key = (sheet, row, col)
                if key in seen:
                    continue
                seen.add(key)
                formula = _formula(book, sheet, row, col)
                if formula is not None:
                    raise SolverModelError(
                        f"this variable cell holds a formula ({formula}); Solver's variable "
                        f"cells must hold values (the solve would overwrite the formula)",
                        where=sheet_cell(sheet, row, col),
                        field="solver_adj",
                    )
                value = _value(book, sheet, row, col)
                if value is None or value == "":
                    value = 0.0
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    shown = value.code if isinstance(value, ErrorValue) else quote(value)
                    raise SolverModelError(
                        f"this variable cell holds {shown}; expected a number (or a blank cell)",
                        where=sheet_cell(sheet, row, col),
                        field="solver_adj",
                    )
                cells.append(key)
                values.append(float(value))
    if not cells:
        raise SolverModelError("the Solver model has no variable cells", where=f"{model.sheet}!solver_adj")
    return Variables(model.variables, cells, np.asarray(values, dtype=np.float64))


def bounds_of(
    book: FormulaBook, model: SolverModel, variables: Variables, compiled=None
) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper bound of every variable from the constraints (and solver_neg). A constraint that is not a
    bound on variable cells is refused with a SolverModelError naming it. ``compiled`` (the compiled objective)
    tells whether a right-hand-side cell changes with the variables."""
    n = variables.size
    lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
    has_lower = np.zeros(n, dtype=bool)
    index = variables.index()
    for c in model.constraints:
        idx, rhs = _bound_cells(book, model, c, index, compiled)
        if c.rel in (">=", "="):
            lower[idx] = np.maximum(lower[idx], rhs)
            has_lower[idx] = True
        if c.rel in ("<=", "="):
            upper[idx] = np.minimum(upper[idx], rhs)
    if model.nonnegative:  # Excel: variables without a lower bound of their own become >= 0
        lower = np.where(has_lower, lower, np.maximum(lower, 0.0))
    bad = np.nonzero(lower > upper)[0]
    if bad.size:
        sheet, row, col = variables.cells[int(bad[0])]
        raise SolverModelError(
            f"the constraints leave no value for this variable (>= {lower[bad[0]]:g} and <= {upper[bad[0]]:g})",
            where=sheet_cell(sheet, row, col),
            field="constraints",
        )
    return lower, upper


def _where(model: SolverModel, c: Constraint) -> str:
    return f"{c.lhs.sheet or model.sheet}!{c.lhs.ref}"


def _bound_cells(book, model: SolverModel, c: Constraint, index, compiled) -> tuple[np.ndarray, np.ndarray]:
    where = _where(model, c)
    name = f"constraint {c.index} ({c.describe()})" if c.index else f"--bound {c.describe()}"
    if c.rel in ("int", "bin", "dif"):
        kind = {"int": "integer", "bin": "binary", "dif": "all-different (AllDifferent)"}[c.rel]
        raise SolverModelError(
            f"{name}: {kind} constraints are not supported (xlcf solve optimises continuous "
            f"variables with gradients); remove it or use Excel's Solver",
            where=where,
            field=f"solver_rel{c.index}" if c.index else "--bound",
        )
    sheet = c.lhs.sheet or model.sheet
    cells = [(sheet, r, k) for r in range(c.lhs.top, c.lhs.bottom + 1) for k in range(c.lhs.left, c.lhs.right + 1)]
    missing = [cell for cell in cells if cell not in index]
    if missing:
        s, r, k = missing[0]
        what = "a formula cell" if _formula(book, s, r, k) is not None else "a cell that is not a variable"
        kind = "non-linear equality" if c.rel == "=" else "constraint"
        raise SolverModelError(
            f"{name} is on {what} ({sheet_cell(s, r, k)}): a general {kind} is not supported; "
            f"only bounds on variable cells (>=, <=, = a number or a constant cell)",
            where=where,
            field=f"solver_lhs{c.index}" if c.index else "--bound",
        )
    idx = np.asarray([index[cell] for cell in cells], dtype=np.int64)
    if isinstance(c.rhs, Area):
        rhs = _constant_rhs(book, model, c, index, name, compiled)
        if rhs.size == 1:
            rhs = np.full(len(cells), float(rhs[0]))
        elif rhs.size != len(cells):
            raise SolverModelError(
                f"{name}: the right-hand side has {rhs.size} cells, the left {len(cells)}",
                where=where,
                field=f"solver_rhs{c.index}",
            )
    else:
        rhs = np.full(len(cells), float(cast(float, c.rhs)))  # a number: <=, = and >= always have a right-hand side
    return idx, rhs


def _constant_rhs(book, model: SolverModel, c: Constraint, index, name: str, compiled) -> np.ndarray:
    area = c.rhs
    assert isinstance(area, Area)  # the caller checked
    sheet = area.sheet or model.sheet
    out = []
    for r in range(area.top, area.bottom + 1):
        for k in range(area.left, area.right + 1):
            where = sheet_cell(sheet, r, k)
            if (sheet, r, k) in index or (compiled is not None and compiled.depends_on_variables(where)):
                raise SolverModelError(
                    f"{name}: the right-hand side {where} changes with the variables: a general "
                    f"constraint is not supported; only bounds on variable cells",
                    where=where,
                    field=f"solver_rhs{c.index}",
                )
            v = _value(book, sheet, r, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SolverModelError(
                    f"{name}: the right-hand side {where} holds {quote(v)}; expected a number",
                    where=where,
                    field=f"solver_rhs{c.index}",
                )
            out.append(float(v))
    return np.asarray(out)


# ----------------------------------------------------------------------------------------------------------------
# Solving (front-end neutral)


def solve_model(
    book: FormulaBook,
    model: SolverModel,
    *,
    optimizer: str = "lbfgs",
    epochs: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    restarts: int | None = None,
    device: str = "auto",
    callback=None,
    time_limit: float | None = None,
) -> SolveOutcome:
    """Check, build, optimise and recompute; no writes. Raises SolverModelError / FormulaError naming cells."""
    from xlcf.train.devices import resolve_device

    optimizer = check_optimizer(optimizer)
    dev = resolve_device(device)
    _check_sheet(book, model.sheet)
    osheet = model.objective.sheet or model.sheet
    _check_sheet(book, osheet)
    obj_where = sheet_cell(osheet, model.objective.top, model.objective.left)
    if _formula(book, osheet, model.objective.top, model.objective.left) is None:
        raise SolverModelError(
            "the objective cell holds no formula, so no variable can change it", where=obj_where, field="solver_opt"
        )
    variables = variable_cells(book, model)
    compiled = book.compile(
        obj_where, [f"{a.sheet or model.sheet}!{a.ref}" for a in model.variables], backend="torch", device=dev
    )  # FormulaError / SolverModelError naming cells
    lower, upper = bounds_of(book, model, variables, compiled)
    x_start = np.clip(variables.x0, lower, upper)
    if np.array_equal(x_start, variables.x0):
        start = compiled.check_start()
    else:  # a start outside the bounds: Solver moves it inside first
        start = float(compiled._objective_numpy(x_start))
        if not math.isfinite(start):
            raise SolverModelError(
                "the objective is not a finite number at the start (inside the bounds)",
                where=obj_where,
                field="solver_opt",
            )
    tape = numpy_tape(compiled, x_start) if optimizer == "lbfgs" and dev.type == "cpu" else None
    problem = Problem(
        x0=variables.x0,
        objective=compiled.objective if tape is not None else fast_objective(compiled, x_start, dev),
        tape=tape,
        lower=lower,
        upper=upper,
        sense=model.sense,
        target=model.target,
    )
    try:
        result = minimize(
            problem,
            optimizer=optimizer,
            epochs=epochs,
            lr=lr,
            seed=seed,
            restarts=restarts,
            device=str(dev),
            callback=callback,
            time_limit=time_limit,
        )
    except DivergenceError as err:
        raise SolverModelError(err.message, where=obj_where, field="solver_opt") from None
    flat = compiled.downstream_values(result.x)
    values: dict[str, dict[str, object]] = {}
    for name, value in flat.items():
        sheet, _, ref = name.rpartition("!")
        values.setdefault(sheet, {})[ref] = value
    after = flat.get(obj_where)
    if isinstance(after, bool) or not isinstance(after, float) or not math.isfinite(after):
        shown = after.code if isinstance(after, ErrorValue) else quote(after)
        raise SolverModelError(
            f"the objective became {shown} after optimising; nothing was written", where=obj_where, field="solver_opt"
        )
    return SolveOutcome(
        model,
        variables,
        result.x,
        start,
        after,
        values,
        result.optimizer,
        result.device,
        result.seconds,
        result.runs,
        result.best_run,
        result.iterations,
        result.evaluations,
        result.stopped_reason,
        list(model.notes),
        compiled.cells_evaluated,
        result.cpu_seconds,
        "numpy tape" if tape is not None else "torch",
    )


TRACE_RTOL = 1e-9


def _probes(x_start: np.ndarray, count: int = 2) -> list[np.ndarray]:
    """Points around the start at which a recorded objective is checked against the evaluator."""
    rng = np.random.default_rng(0)
    return [x_start + rng.uniform(-0.5, 0.5, x_start.shape) * np.maximum(1.0, np.abs(x_start)) for _ in range(count)]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TRACE_RTOL * max(1.0, abs(a))


def numpy_tape(compiled, x_start: np.ndarray):
    """The compiled objective recorded as a numpy tape (:mod:`xlcf.formula.tape`) for L-BFGS-B on the CPU: the
    evaluator's Python work and torch's per-operation overhead happen once, and each evaluation replays a short
    list of numpy operations forward and backward. The tape checks itself against torch (values and gradient) at
    the start; here it is also compared with the evaluator's numpy pass (Excel's semantics) at two other points.
    None when it cannot be recorded or differs anywhere: the caller keeps torch."""
    from xlcf.formula.tape import NotTaped, record_tape

    try:
        tape = record_tape(compiled.objective, x_start)
        for x in _probes(x_start):
            if not _same(float(compiled._objective_numpy(x)), tape.value(x)):
                return None
    except NotTaped:
        return None
    return tape


def fast_objective(compiled, x_start: np.ndarray, dev):
    """The compiled objective recorded once with ``torch.jit.trace``: the evaluator's Python work (gathers,
    kinds, block bookkeeping) happens once, and each later call replays only the tensor operations — several
    times faster on sheet-sized problems, where that work dominates. The recording is checked against the
    evaluator at the start and at two other points; any difference (or a failure to record) keeps the evaluator
    itself, which is always correct."""
    import warnings

    import torch

    eager = compiled.objective
    x0 = torch.as_tensor(x_start, dtype=torch.float64, device=dev)
    probes = [x0] + [torch.as_tensor(p, dtype=torch.float64, device=dev) for p in _probes(x_start)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(eager, (x0,), check_trace=False)
        with torch.no_grad():
            for x in probes:
                if not _same(float(eager(x)), float(traced(x))):
                    return eager
    except Exception:  # any recording problem: the evaluator itself is the fallback
        return eager
    return traced


# ----------------------------------------------------------------------------------------------------------------
# The file


def write_outcome(pkg: Package, outcome: SolveOutcome) -> tuple[int, int]:
    """Variable values and cached values into the package (not saved). Returns (variables, cached values)."""
    n_vars = n_cached = 0
    for sheet, cells in outcome.variable_values().items():
        n_vars += pkg.write_values(sheet, cells)
    for sheet, computed in outcome.values.items():
        clean = {ref: _cell_value(v) for ref, v in computed.items()}
        if clean:
            n_cached += pkg.set_cached_values(sheet, clean)
    return n_vars, n_cached


def _cell_value(v):
    """What a cached value may hold: a finite float, text, a boolean or an error (never NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return ErrorValue("#NUM!")
    return v


def check_variables_unprotected(pkg: Package, book: FormulaBook, model: SolverModel) -> None:
    """WorkbookError naming the variable cells that a protected sheet locks (unless ``pkg.allow_protected``),
    raised before the solve rather than after it."""
    for area in model.variables:
        sheet = area.sheet or model.sheet
        if sheet in book.sheet_names:  # a missing sheet is reported by variable_cells
            refs = [cell_ref(r, c) for r in range(area.top, area.bottom + 1) for c in range(area.left, area.right + 1)]
            pkg.check_unprotected(sheet, refs)


@locked_writer
def solve_workbook(
    path,
    sheet: str,
    *,
    objective: str | None = None,
    variables: str | None = None,
    sense: str | None = None,
    target: float | None = None,
    bounds=(),
    optimizer: str = "lbfgs",
    epochs: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    restarts: int | None = None,
    device: str = "auto",
    backup: bool = False,
    dry_run: bool = False,
    callback=None,
    time_limit: float | None = None,
    force: bool = False,
) -> dict:
    """Solve ``sheet`` of the workbook at ``path`` in place; a JSON-ready summary. Nothing is written on any error
    or with ``dry_run``. The workbook's lock is held from the read to the save (keyword ``lock_timeout``: see
    :func:`xlcf.fileio.locked_writer`); locked cells of a protected sheet are refused before solving unless
    ``force``."""
    started = time.perf_counter()
    book_path = Path(path)
    pkg = Package.open(book_path)
    pkg.sheet_part(sheet)
    pkg.allow_protected = force
    if not dry_run:
        pkg.check_writable()
    book = FormulaBook.from_package(pkg)
    model = read_model(book, sheet, objective=objective, variables=variables, sense=sense, target=target, bounds=bounds)
    check_variables_unprotected(pkg, book, model)
    outcome = solve_model(
        book,
        model,
        optimizer=optimizer,
        epochs=epochs,
        lr=lr,
        seed=seed,
        restarts=restarts,
        device=device,
        callback=callback,
        time_limit=time_limit,
    )
    n_vars, n_cached = write_outcome(pkg, outcome)
    saved = backup_path = None
    if not dry_run:
        saved = str(pkg.save(backup=backup))
        backup_path = None if pkg.backup_path is None else str(pkg.backup_path)
    return summary(
        outcome,
        path=str(book_path),
        n_vars=n_vars,
        n_cached=n_cached,
        dry_run=dry_run,
        saved=saved,
        backup=backup_path,
        total_seconds=time.perf_counter() - started,
    )


def summary(
    outcome: SolveOutcome,
    *,
    path: str | None,
    n_vars: int,
    n_cached: int,
    dry_run: bool,
    saved: str | None,
    backup: str | None,
    total_seconds: float | None = None,
) -> dict:
    m = outcome.model
    return {
        "path": path,
        "sheet": m.sheet,
        "objective": m.objective_ref,
        "sense": m.sense,
        "target": m.target if m.sense == "value" else None,
        "objective_before": outcome.objective_before,
        "objective_after": outcome.objective_after,
        "variables": outcome.variables.size,
        "variable_ranges": [a.qualified() for a in m.variables],
        "constraints": [c.describe() for c in m.constraints],
        "nonnegative": m.nonnegative,
        "model_source": m.source,
        "optimizer": outcome.optimizer,
        "device": outcome.device,
        "seconds": outcome.seconds,
        "total_seconds": total_seconds,
        "iterations": outcome.iterations,
        "evaluations": outcome.evaluations,
        "runs": outcome.runs,
        "best_run": outcome.best_run,
        "stopped_reason": outcome.stopped_reason,
        "cells_written": n_vars + n_cached,
        "formulas_evaluated": n_cached,
        "formulas_per_evaluation": outcome.formulas_per_evaluation,
        "engine": outcome.engine,
        "dry_run": dry_run,
        "saved": saved,
        "backup": backup,
        "notes": outcome.notes,
    }
