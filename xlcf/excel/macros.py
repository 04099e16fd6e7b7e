"""Macros behind the workbook's buttons: ``main(book=None)`` and the named scripts ``fit``, ``step``,
``reset``, ``train``.

The same functions run three ways:

- desktop Excel, through the template's VBA ``RunPython`` (button -> ``import <stem>; <stem>.main()``);
  with no argument they use ``xw.Book.caller()``;
- the remote interpreter: ``xlcf serve`` builds ``xw.Book(json=payload)`` and passes it in, then returns
  ``book.json()`` (the actions the client replays);
- tests, with a payload in the exact format of xlwings' clients.

Each run reads the named blocks, computes everything with the pure functions of ``xlcf.actions``
(``fit.fit_sheet``, ``step.plan_sheet``, ``train_book.train_in_book``) and only then writes.
A failure writes one line to the status cell (and shows a message box where the client has one); no
factor or bias cell is touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlcf.errors import WorkbookError, XlcfError
from xlcf.excel import sheetio, timing
from xlcf.excel.sheetio import WritePlan, XlwingsBookIO, XlwingsSheetIO, named_range
from xlcf.ooxml.refs import cell_ref, split_ref

FIT_BLOCKS = ("ratings", "user_factors", "movie_factors")
GRADDESC_MARKERS = ("slope", "const", "lastslope", "lastconst")
MOVIELENS_SHEET = "movielens"
MSGBOX_TITLE = "xlcf"
logger = logging.getLogger("xlcf.excel")


@dataclass
class MacroResult:
    """What a macro did, for callers that want more than the sheet (tests, the server's log)."""

    action: str
    sheet: str
    status: str
    ok: bool
    details: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------- entry


def _caller_book(book):
    if book is not None:
        return book
    import xlwings as xw

    return xw.Book.caller()


def sheet_kind(sheet) -> str | None:
    """'fit' | 'graddesc' | 'movielens' | None, from the sheet's names (and the movielens sheet's name)."""
    if sheet.name.casefold() == MOVIELENS_SHEET:
        return "movielens"
    if sheetio.has_names(sheet, *FIT_BLOCKS):
        return "fit"
    if sheetio.has_names(sheet, "slope", "const"):
        return "graddesc"
    from xlcf.excel.solver_bridge import has_solver_model

    if has_solver_model(sheet):
        return "solver"
    return None


def main(book=None, *, time_limit: float | None = None, started: float | None = None) -> MacroResult:
    """Do the right thing for the active sheet: fit (dotprod/bias), one step (graddesc sheets), train
    (movielens). Called by every button of the quickstart layout through ``<stem>.main()``.
    ``started``: when the press began (the server passes the request's arrival; see :mod:`xlcf.excel.timing`)."""
    started = timing.press_started(started)
    book = _caller_book(book)
    sheet = book.sheets.active
    kind = sheet_kind(sheet)
    if kind == "fit":
        return fit(book, time_limit=time_limit, started=started)
    if kind == "graddesc":
        return step(book, passes=1, started=started)
    if kind == "movielens":
        return train(book, time_limit=time_limit, started=started)
    if kind == "solver":
        return solve(book, time_limit=time_limit, started=started)
    message = (
        f"sheet {sheet.name!r} has nothing xlcf can fit: activate a sheet with a Solver model (Data > "
        "Solver), the names ratings/user_factors/movie_factors (dotprod, bias), slope/const (graddesc) or "
        "the movielens sheet"
    )
    return _fail(book, sheet, "main", message)


def _fail(book, sheet, action: str, message: str) -> MacroResult:
    """Error path: the status cell (when there is one) and a message box; nothing else is written."""
    status = f"Error: {message}"
    rng = named_range(sheet, "status")
    try:
        if rng is not None:
            rng.value = status[:32000]
    except Exception:  # pragma: no cover - a broken status cell must not hide the original error
        pass
    try:
        book.app.alert(message[:1000], title=MSGBOX_TITLE, mode="critical")
    except Exception:  # clients without a message box (or engines that do not implement alert)
        pass
    return MacroResult(action=action, sheet=sheet.name, status=status, ok=False)


def _guard(action: str, book, sheet, run: Callable[[], MacroResult]) -> MacroResult:
    try:
        return run()
    except XlcfError as err:
        return _fail(book, sheet, action, str(err))
    except Exception as err:  # an unexpected bug still must not leave the user without a message
        if _is_remote(book):  # a server's client sees no exception text (it may hold server paths): log it
            logger.exception("%s failed", action)
            return _fail(book, sheet, action, f"internal error ({type(err).__name__}); see the server log")
        return _fail(book, sheet, action, f"{type(err).__name__}: {err}")


def _is_remote(book) -> bool:
    """True for the remote/Office.js engines: their writes are replayed at the end, so no live progress."""
    try:
        return book.app.engine.name in ("remote", "officejs", "calamine")
    except Exception:
        return True


def _progress_writer(book, sheet, label: str, total: int | None, time_limit: float | None):
    """A training callback that writes progress to the status cell (desktop only, at most every 0.5 s)
    and stops the fit when ``time_limit`` seconds are spent (the server's cap)."""
    status = named_range(sheet, "status")
    live = status is not None and not _is_remote(book)
    started = time.perf_counter()
    last = [0.0]

    def callback(stats) -> bool | None:
        now = time.perf_counter()
        if live and now - last[0] > 0.5:
            last[0] = now
            rmse = getattr(stats, "train_rmse", None)
            shown = f", RMSE {rmse:.4f}" if isinstance(rmse, float) and np.isfinite(rmse) else ""
            of = f"/{total}" if total else ""
            try:
                run = getattr(stats, "run", 0)
                run_text = f"run {run + 1}, " if run else ""  # multistart restarts (see the engine)
                status.value = f"{label}: {run_text}epoch {getattr(stats, 'epoch', '?')}{of}{shown}"
            except Exception:
                pass
        if time_limit is not None and now - started > time_limit:
            return False
        return None

    return callback


# ------------------------------------------------------------------------------------------------- fit


def fit_status(sheet_fit, *, time_limit: float | None = None, requested_epochs: int | None = None) -> str:
    """One line: optimizer, epochs, seconds, device, RMSE before -> after (+ why it stopped early)."""
    before = sheet_fit.rmse_before
    before_text = "n/a" if before is None else f"{before:.4f}"
    text = (
        f"Fitted: {sheet_fit.optimizer}, {sheet_fit.epochs} epochs, {sheet_fit.fit_seconds:.2f} s on "
        f"{sheet_fit.device}; RMSE {before_text} -> {sheet_fit.rmse_after:.4f}"
    )
    reason = getattr(sheet_fit, "stopped_reason", None) or getattr(
        getattr(sheet_fit, "result", None), "stopped_reason", None
    )
    runs = [
        r for r in (getattr(getattr(sheet_fit, "result", None), "runs", None) or []) if r.get("train_rmse") is not None
    ]
    if len(runs) > 1:
        text += f" (best of {len(runs)} runs)"
    rmse_avg = getattr(sheet_fit, "rmse_avg", None)
    if rmse_avg is not None:  # gibbs: the sheet holds posterior means; the averaged predictions are the model's
        text += f" (posterior means; averaged predictions {rmse_avg:.4f}; ± per prediction under the predictions)"
    if time_limit is not None and reason == "callback":
        text += f" (stopped after {time_limit:g} s, the server's time cap for fitting; press again to continue)"
    elif reason and reason != "callback":
        text += f" ({reason})"
    return text


def fit(book=None, *, time_limit: float | None = None, started: float | None = None) -> MacroResult:
    """Fit the active dotprod/bias sheet in place (warm start from its factors, like Solver)."""
    started = timing.press_started(started)
    book = _caller_book(book)
    sheet = book.sheets.active

    def run() -> MacroResult:
        from xlcf.actions.fit import fit_sheet
        from xlcf.actions.fit_inputs import BLOCK_NAMES, read_settings

        io = XlwingsSheetIO(sheet)
        areas = {name: io.name_area(name) for name in BLOCK_NAMES}
        missing = [n for n in FIT_BLOCKS if areas[n] is None]
        if missing:
            raise WorkbookError(
                f"sheet {sheet.name!r} has no named range(s) {', '.join(missing)}: "
                "generate it with `xlcf new collab` or define the names"
            )
        epochs = read_settings(io)[0].get("epochs")  # the same settings cells `xlcf fit` reads
        requested = epochs if isinstance(epochs, int) else None
        callback = _progress_writer(book, sheet, "Fitting", requested, time_limit)
        ratings, user_factors, movie_factors = areas["ratings"], areas["user_factors"], areas["movie_factors"]
        assert ratings is not None and user_factors is not None and movie_factors is not None  # checked above
        run = fit_sheet(
            io,
            ratings,
            user_factors,
            movie_factors,
            areas["user_bias"],
            areas["movie_bias"],
            init="keep",
            callback=callback,
            time_limit=time_limit,
        )
        sheet_fit = run.fitted
        areas["status"] = io.name_area("status")
        ranges = {name: None if area is None else io.range(area) for name, area in areas.items()}
        user_bias = run.data.user_bias
        plan = WritePlan()
        plan.add(ranges["user_factors"], np.asarray(sheet_fit.user_factors))
        plan.add(ranges["movie_factors"], np.asarray(sheet_fit.movie_factors))
        if user_bias is not None:
            plan.add(ranges["user_bias"], _like(ranges["user_bias"], sheet_fit.user_bias))
            plan.add(ranges["movie_bias"], _like(ranges["movie_bias"], sheet_fit.movie_bias))
        status = fit_status(sheet_fit, time_limit=time_limit, requested_epochs=requested) + timing.press_text(started)
        if ranges["status"] is not None:
            plan.add(ranges["status"], status)
        std_block = _plan_std_block(io, sheet, sheet_fit, plan) if sheet_fit.improved else None
        plan.apply()
        if std_block is not None and std_block.new:  # after the values: the name marks the cells as the fit's
            _define_std_block(sheet, std_block)
        return MacroResult(
            "fit",
            sheet.name,
            status,
            True,
            {
                "rmse_before": None if sheet_fit.rmse_before is None else float(sheet_fit.rmse_before),
                "rmse_after": float(sheet_fit.rmse_after),
                "epochs": int(sheet_fit.epochs),
                "optimizer": str(sheet_fit.optimizer),
                "device": str(sheet_fit.device),
                "rmse_avg": sheet_fit.rmse_avg,
                "std_block": None if std_block is None else std_block.describe(sheet.name),
            },
        )

    return _guard("fit", book, sheet, run)


def _plan_std_block(io: XlwingsSheetIO, sheet, sheet_fit, plan: WritePlan):
    """Add the ± block of :mod:`xlcf.actions.fit_outputs` (the posterior predictive std after a gibbs fit, blanked
    after any other) to ``plan``: a new block in one write over its empty cells, an existing one its title and
    numbers only (its labels were written when it was placed)."""
    from xlcf.actions.fit_outputs import plan_std_block

    fitted = [io.name_area(name) for name in ("ratings", "user_factors", "movie_factors", "user_bias", "movie_bias")]
    block, _ = plan_std_block(
        io,
        io.name_area("predictions"),
        io.name_area("rmse"),
        sheet_fit.std,
        sheet_fit.optimizer,
        sheet_fit.epochs,
        fitted,
    )
    if block is None:
        return None
    area = block.area
    top, left = min(split_ref(ref)[0] for ref in block.values), min(split_ref(ref)[1] for ref in block.values)
    if block.new:
        rows = [
            [block.values.get(cell_ref(r, c)) for c in range(left, area.right + 1)] for r in range(top, area.bottom + 1)
        ]
        plan.add_at(sheet, cell_ref(top, left), rows)
    else:
        title = cell_ref(area.top - 2, max(area.left - 1, 1))
        plan.add(sheet.range(title), block.values[title])
        plan.add(sheet.range(area.ref), [[block.values[ref] for ref in row] for row in area.cells()])
    return block


def _define_std_block(sheet, block) -> None:
    """The sheet-scoped name over a new ± block's numbers and their number format (best effort: a client that
    cannot add names still shows the numbers)."""
    from xlcf.actions.fit_outputs import STD_FORMAT, STD_NAME

    rng = sheet.range(block.area.ref)
    try:
        rng.number_format = STD_FORMAT
        sheet.names.add(STD_NAME, "=" + rng.get_address(include_sheetname=True))
    except Exception:  # pragma: no cover - engines without names.add / number formats
        logger.warning("could not name the ± block %s!%s", sheet.name, block.area.ref)


def solve(book=None, *, time_limit: float | None = None, started: float | None = None) -> MacroResult:
    """Solve the active sheet's Solver model (objective, variable cells, constraints) from its own formulas, and
    write the variable cells; Excel recalculates the rest."""
    book = _caller_book(book)
    sheet = book.sheets.active

    def run() -> MacroResult:
        from xlcf.excel.solver_bridge import solve_active, solved_status

        outcome, writes = solve_active(book, sheet, time_limit=time_limit)
        plan = WritePlan()
        for sheet_name, ref, block in writes:
            plan.add(book.sheets[sheet_name].range(ref), block)
        status = solved_status(outcome, time_limit)
        status_rng = named_range(sheet, "status")
        if status_rng is not None:
            plan.add(status_rng, status)
        plan.apply()
        return MacroResult(
            "solve",
            sheet.name,
            status,
            True,
            {
                "objective_before": outcome.objective_before,
                "objective_after": outcome.objective_after,
                "variables": outcome.variables.size,
                "optimizer": outcome.optimizer,
                "device": outcome.device,
            },
        )

    return _guard("solve", book, sheet, run)


def _like(rng, vector) -> np.ndarray:
    """A 1-D vector shaped as its range: a column (n x 1) or a row (1 x n)."""
    vector = np.asarray(vector, dtype=np.float64).ravel()
    rows, cols = rng.shape
    return vector.reshape(rows, cols)


# ---------------------------------------------------------------------------------------- graddesc step


def step(book=None, passes: int = 1, *, started: float | None = None) -> MacroResult:
    """The lesson's "one step" button: run ``passes`` passes of the active graddesc sheet's optimizer and
    copy the values after the last pass into the start cells (a, b and the optimizer state)."""
    started = timing.press_started(started)
    book = _caller_book(book)
    sheet = book.sheets.active
    return _guard("step", book, sheet, lambda: _graddesc(book, sheet, "step", int(passes), started))


def step5(book=None, *, started: float | None = None) -> MacroResult:
    """Five steps (a button of its own on each graddesc sheet)."""
    return step(book, passes=5, started=started)


def reset(book=None, *, started: float | None = None) -> MacroResult:
    """Put the active graddesc sheet back to its starting parameters and zero optimizer state."""
    started = timing.press_started(started)
    book = _caller_book(book)
    sheet = book.sheets.active
    return _guard("reset", book, sheet, lambda: _graddesc(book, sheet, "reset", 0, started))


def _graddesc(book, sheet, action: str, passes: int, started: float) -> MacroResult:
    """Read, plan and write through :mod:`xlcf.actions.step`, the code ``xlcf step`` runs on a file."""
    from xlcf.actions.step import graddesc_sheets, plan_cells, plan_sheet

    if passes < 0 or passes > 1000:
        raise WorkbookError(f"passes must be between 1 and 1000, got {passes}")
    kind, io, data = graddesc_sheets(XlwingsBookIO(book), sheet.name)
    plan = plan_sheet(io, data, kind, None if action == "reset" else passes).plan
    status = plan.status + timing.press_text(started)
    io.write_values(plan_cells(io, plan, status))
    return MacroResult(action, sheet.name, status, True, {"written": sorted(plan.state)})


# ------------------------------------------------------------------------------------------ movielens


def train(
    book=None, *, time_limit: float | None = None, data_dir: str | None = None, started: float | None = None
) -> MacroResult:
    """Train on the full ratings named by the movielens sheet's settings and write every output block.
    ``data_dir`` (the server's ``--data-dir``) confines the ratings path a sheet may name."""
    started = timing.press_started(started)
    book = _caller_book(book)
    sheet = book.sheets.active
    if sheet.name.casefold() != MOVIELENS_SHEET:
        try:
            sheet = book.sheets[MOVIELENS_SHEET]
        except Exception:
            return _fail(
                book, sheet, "train", "this workbook has no 'movielens' sheet: create one with `xlcf new movielens`"
            )

    def run() -> MacroResult:
        from xlcf.actions.train_book import train_in_book, write_outputs

        target = XlwingsBookIO(book)
        training = train_in_book(  # the code `xlcf fit BOOK --sheet movielens` runs, through xlwings
            target,
            data_dir=data_dir,
            time_limit=time_limit,
            callback=_progress_writer(book, sheet, "Training", None, time_limit),
        )
        status = training.status + timing.press_text(started)
        write_outputs(target, training.outputs, status, skip_embeddings=training.relayout)
        return MacroResult("train", sheet.name, status, True, dict(training.outputs.summary))

    return _guard("train", book, sheet, run)


# Names of the scripts the server exposes (POST /xlwings/custom-scripts-call/{name}).
SCRIPTS = {"main": main, "fit": fit, "solve": solve, "step": step, "step5": step5, "reset": reset, "train": train}
