"""What ``xlcf fit`` takes from the formula evaluator.

- :func:`fit_through_solver`: a sheet whose layout the fast path (:mod:`xlcf.actions.blocks`) does not recognise,
  but which has a Solver model (or xlcf's names), is solved through the evaluator — the sheet's own formulas —
  instead of being refused.
- :func:`evaluated_cached_values`: after a fast-path fit, the cached value of every formula cell downstream of the
  factor blocks and the value of the sheet's own RMSE cell, computed by the evaluator's numpy pass (so the RMSE
  ``fit`` reports is the one the sheet shows in Excel).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from xlcf.actions.solver_model import SolverModel, has_model, model_from_flags
from xlcf.errors import FormulaError, SolverModelError, WorkbookError
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area
from xlcf.ooxml.values import CellValue

# The fast path's TrainConfig overrides that mean something to the solver path.
SOLVER_OVERRIDES = ("optimizer", "epochs", "lr", "seed", "device", "restarts")


def solver_model_for_fit(book, sheet: str) -> SolverModel | None:
    """The Solver model stored in ``sheet``, else one made from xlcf's names (objective ``rmse``, variables the
    factor and bias blocks), else None."""
    from xlcf.actions.solve import names_seen_from, read_model

    names = names_seen_from(book, sheet)
    if has_model(names):
        return read_model(book, sheet)
    lower = {k.lower(): v for k, v in names.items()}
    blocks = [lower.get(n) for n in ("user_factors", "movie_factors", "user_bias", "movie_bias")]
    if lower.get("rmse") and blocks[0] and blocks[1]:
        return model_from_flags(sheet, lower["rmse"], ",".join(b for b in blocks if b))
    return None


def fit_through_solver(
    path,
    sheet: str,
    *,
    reason: str,
    overrides: dict,
    backup: bool,
    dry_run: bool,
    callback=None,
    time_limit: float | None = None,
    force: bool = False,
) -> dict | None:
    """Solve ``sheet`` through the evaluator; None when the sheet has no Solver model (nor names) to solve.
    ``force``: write even into locked cells of a protected sheet (refused before solving otherwise)."""
    from xlcf.actions.solve import check_variables_unprotected, solve_model, summary, write_outcome
    from xlcf.formula import FormulaBook

    pkg = Package.open(path)
    book = FormulaBook.from_package(pkg)
    model = solver_model_for_fit(book, sheet)
    if model is None:
        return None
    pkg.allow_protected = force
    if not dry_run:
        pkg.check_writable()
    check_variables_unprotected(pkg, book, model)
    settings = {k: overrides[k] for k in SOLVER_OVERRIDES if overrides.get(k) is not None}
    settings.setdefault("optimizer", "lbfgs")
    settings.setdefault("seed", 0)
    outcome = solve_model(book, model, callback=_epoch_callback(callback), time_limit=time_limit, **settings)
    n_vars, n_cached = write_outcome(pkg, outcome)
    saved = backup_path = None
    if not dry_run:
        saved = str(pkg.save(backup=backup))
        backup_path = None if pkg.backup_path is None else str(pkg.backup_path)
    out = summary(
        outcome, path=str(path), n_vars=n_vars, n_cached=n_cached, dry_run=dry_run, saved=saved, backup=backup_path
    )
    status = (
        f"solved {model.objective_ref} ({model.sense}) with {outcome.optimizer} on {outcome.device} in "
        f"{outcome.seconds:.2f}s: {outcome.objective_before:.6g} -> {outcome.objective_after:.6g}"
    )
    out.update(
        {
            "source": "solver",
            "model": "formulas",
            "fit_path": "evaluator",
            "epochs": outcome.iterations,
            "fit_seconds": outcome.seconds,
            "rmse_before": None,
            "rmse_after": None,
            "rmse_cell": model.objective_ref,
            "time_capped": outcome.stopped_reason == "time limit",
            "time_limit": time_limit,
            "cached_values_updated": n_cached,
            "status": status,
            "notes": [
                f"the fast path does not know this layout ({reason}); solved the sheet's Solver model through "
                f"its formulas instead"
            ]
            + out["notes"],
        }
    )
    return out


def _epoch_callback(callback):
    """The fit's callbacks take epoch statistics; the solver reports dicts. None passes through."""
    if callback is None:
        return None

    class _Stats:
        def __init__(self, info):
            self.epoch = info["iteration"]
            self.run = info["run"]
            self.train_loss = info["loss"]
            self.train_rmse = None

    return lambda info: callback(_Stats(info))


def evaluated_cached_values(
    pkg: Package, sheet: str, variables: list[Area], new_values: dict[str, float], objective: Area | None
) -> tuple[dict[str, dict[str, CellValue]], float | None, float | None] | None:
    """(cached values per sheet of every formula cell downstream of ``variables``, the objective cell's value
    before, after) for the variables set to ``new_values`` ({"B26": value} on ``sheet``); None when the evaluator
    cannot compute the sheet (an unsupported function, ...), and the caller keeps its own values."""
    from xlcf.formula import FormulaBook

    try:
        if objective is None:
            return None
        book = FormulaBook.from_package(pkg)
        refs = [f"{a.sheet or sheet}!{a.ref}" for a in variables]
        compiled = book.compile(f"{objective.sheet or sheet}!{objective.ref}", refs, backend="numpy")
        x = np.array([new_values[name.rpartition("!")[2]] for name in compiled.variable_cells], dtype=np.float64)
        flat = compiled.downstream_values(x)
        before = compiled.f0
    except (FormulaError, SolverModelError, WorkbookError, KeyError):
        return None
    out: dict[str, dict[str, CellValue]] = {}
    for name, value in flat.items():
        s, _, ref = name.rpartition("!")
        if isinstance(value, float) and not math.isfinite(value):
            return None
        out.setdefault(s, {})[ref] = cast(CellValue, value)  # the evaluator's values are cell values
    after = flat.get(compiled.objective_cell)
    after = after if isinstance(after, float) and not isinstance(after, bool) else None
    return out, (before if math.isfinite(before) else None), after
