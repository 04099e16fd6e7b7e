"""The Solver model of the active sheet, solved from Excel: the workbook's values and formulas read through
xlwings, the same checks and optimisation as ``xlcf solve`` (:func:`xlcf.actions.solve.solve_model`), and only the
variable cells written back (Excel recalculates the formulas itself).

Formulas come from ``Range.formula``, which desktop Excel (Windows COM, macOS AppleScript) implements. xlwings'
remote clients (VBA ``RunServerPython``, Office Scripts, Office.js) send cell values and the names that refer to
ranges, not formulas: there a Solver model cannot be evaluated, and the macro says so, pointing to the xlcf task
pane's "Solve this sheet" (which reads the formulas through Office.js: :mod:`xlcf.server.sheet_solve`) and to
``xlcf solve BOOK``, which does the same job on the saved file.
"""

from __future__ import annotations

import math
import re
from typing import Any

from xlcf.errors import WorkbookError
from xlcf.excel.sheetio import EXCEL_ERRORS
from xlcf.ooxml.values import ErrorValue

NO_FORMULAS = (
    "this Excel client sends cell values without their formulas (xlwings' remote clients: RunServerPython, "
    "Office Scripts, Office.js), so the sheet's Solver model cannot be evaluated from them: press \"Solve this "
    'sheet" in the xlcf task pane (it sends the formulas), run the macro with RunPython in desktop Excel, or save '
    "the workbook and run `xlcf solve BOOK --sheet {sheet}`"
)
_SCOPED = re.compile(r"^(?:'((?:[^']|'')+)'|([^!]+))!(.+)$")


def cell_value(value: Any):
    """A value as xlwings returns it -> what the evaluator expects (errors as ErrorValue, whole floats kept)."""
    if isinstance(value, str) and value in EXCEL_ERRORS:
        return ErrorValue(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ErrorValue("#NUM!")
    return value


def grid_cells(top: int, left: int, values: list[list[Any]], formulas: list[list[Any]] | None) -> dict:
    """{(row, col): (value, formula or None)} of a block read at (top, left); empty cells are left out."""
    out = {}
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            formula = formulas[i][j] if formulas is not None else None
            if not (isinstance(formula, str) and formula.startswith("=") and len(formula) > 1):
                formula = None
            if formula is None and (value is None or value == ""):
                continue
            out[(top + i, left + j)] = (cell_value(value), formula)
    return out


def scoped_names(items: list[tuple[str, str]], sheet_names: list[str]) -> dict[str | None, dict[str, str]]:
    """[(name as xlwings gives it, refers_to)] -> {scope: {name: text}}: ``"bias!solver_opt"`` and
    ``"'my sheet'!x"`` are sheet-scoped, plain names are the workbook's."""
    out: dict[str | None, dict[str, str]] = {}
    for raw, refers_to in items:
        m = _SCOPED.match(raw)
        scope, name = None, raw
        if m:
            scope = (m.group(1) or "").replace("''", "'") if m.group(1) is not None else m.group(2)
            name = m.group(3)
            if scope not in sheet_names:
                scope, name = None, raw
        text = (refers_to or "").lstrip("=")
        out.setdefault(scope, {})[name] = text
    return out


def formula_book(book):
    """The workbook as the evaluator sees it: every sheet's used range (values and formulas) and the names."""
    from xlcf.formula import FormulaBook

    cells, sheet_names = {}, []
    for sheet in book.sheets:
        sheet_names.append(sheet.name)
        rng = sheet.used_range
        values = rng.options(ndim=2).value
        try:
            formulas = rng.formula
        except NotImplementedError:
            raise WorkbookError(NO_FORMULAS.format(sheet=sheet.name), where=sheet.name) from None
        if isinstance(formulas, str):  # a one-cell used range
            formulas = ((formulas,),)
        cells[sheet.name] = grid_cells(rng.row, rng.column, [list(r) for r in values], [list(r) for r in formulas])
    items = []
    for item in book.names:
        try:
            items.append((item.name, item.refers_to))
        except Exception:  # a name some engine cannot describe: not one Solver writes
            continue
    return FormulaBook.from_cells(cells, scoped_names(items, sheet_names))


def has_solver_model(sheet) -> bool:
    """Whether the sheet carries a Solver model: its ``solver_opt`` name (a range name, so every client sends it)."""
    for item in sheet.book.names:
        name = item.name
        if name.rsplit("!", 1)[-1].casefold() == "solver_opt":
            scope = _SCOPED.match(name)
            if scope is None or (scope.group(1) or scope.group(2) or "").replace("''", "'") == sheet.name:
                return True
    return False


def variable_blocks(outcome) -> list[tuple[str, str, Any]]:
    """[(sheet name, "B26:F40", float64 block)] of the solved variable cells, one per area of the model."""
    import numpy as np

    from xlcf.ooxml.refs import cell_ref

    model = outcome.model
    values = outcome.variable_values()
    blocks = []
    for area in model.variables:
        s = area.sheet or model.sheet
        block = np.array(
            [
                [values[s][cell_ref(r, c)] for c in range(area.left, area.right + 1)]
                for r in range(area.top, area.bottom + 1)
            ],
            dtype=np.float64,
        )
        blocks.append((s, area.ref, block))
    return blocks


def solved_status(outcome, time_limit: float | None = None) -> str:
    """The one-line status of a solve: objective before -> after, optimizer, device, seconds, runs."""
    model = outcome.model
    status = (
        f"Solved: {model.objective_ref} ({model.sense}) {outcome.objective_before:.6g} -> "
        f"{outcome.objective_after:.6g}; {outcome.optimizer} on {outcome.device}, {outcome.seconds:.2f} s, "
        f"{len(outcome.runs)} run(s)"
    )
    if outcome.stopped_reason == "time limit" and time_limit is not None:
        status += f" (stopped at the {time_limit:g} s time cap; press again to continue)"
    return status


def solve_active(book, sheet, *, time_limit: float | None = None, callback=None):
    """Solve the sheet's model; returns (outcome, writes) with writes = [(sheet name, "B26:F40", rows)], nothing
    written yet."""
    from xlcf.actions.solve import read_model, solve_model

    fb = formula_book(book)
    model = read_model(fb, sheet.name)
    outcome = solve_model(fb, model, time_limit=time_limit, callback=callback)
    return outcome, variable_blocks(outcome)
