"""``POST /xlcf/solve-sheet``: the task pane's "Solve this sheet" — a Solver model solved from the formulas that
Excel itself gives through Office.js.

xlwings' clients send cell values and range names, not formulas, so its routes cannot evaluate an arbitrary
sheet. The task pane reads what the evaluator needs and posts it here:

- ``sheet``: the active sheet (the one whose Solver model is solved);
- ``sheets``: every sheet's used range as ``{name, row, column, formulas, values}`` — ``row``/``column`` the
  1-based top-left cell, ``formulas`` and ``values`` the grids of ``Range.formulas`` (A1, English-locale
  formulas; a constant cell shows its value) and ``Range.values`` (what the cells show: the start values of the
  cells the variables do not reach);
- ``names``: every defined name, hidden ones included (Solver's ``solver_opt``, ``solver_adj``, ...), as
  ``{name, scope, formula}`` with ``scope`` the sheet of a sheet-scoped name or null for the workbook's.

The worker builds the evaluator's in-memory workbook (:meth:`xlcf.formula.FormulaBook.from_cells`), reads the
model (:func:`xlcf.actions.solve.read_model`) and solves it with the same checks and optimiser as ``xlcf solve``
(:func:`xlcf.actions.solve.solve_model`). The answer holds the solved variable blocks (the pane writes only
those; Excel recalculates the rest), the objective before and after, and the new value of every formula cell
downstream of the variables. A payload of the wrong shape is a :class:`~xlcf.errors.BadPayload` (400); a model
that cannot be solved is the solver's own one-line error naming ``sheet!cell`` (422); nothing is written.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from xlcf.errors import BadPayload
from xlcf.server.security import first_error

MAX_ROWS, MAX_COLUMNS = 1_048_576, 16_384  # Excel's grid
MAX_CELLS = 2_000_000  # over every sheet: what the evaluator builds in a worker's memory at once
MAX_FORMULA_CHARS = 8192  # Excel's own limit on a formula's length
MAX_NAMES = 20_000
MAX_SHEETS = 1_000

_Cell = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=32_767)] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Sheet(_Strict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=31)]
    row: Annotated[StrictInt, Field(ge=1, le=MAX_ROWS)] = 1
    column: Annotated[StrictInt, Field(ge=1, le=MAX_COLUMNS)] = 1
    formulas: list[list[_Cell]]
    values: list[list[_Cell]]


class _Name(_Strict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    scope: Annotated[StrictStr, Field(max_length=31)] | None = None
    formula: Annotated[StrictStr, Field(max_length=MAX_FORMULA_CHARS)]


class _SolvePayload(_Strict):
    sheet: Annotated[StrictStr, Field(min_length=1, max_length=31)]
    sheets: Annotated[list[_Sheet], Field(min_length=1, max_length=MAX_SHEETS)]
    names: Annotated[list[_Name], Field(max_length=MAX_NAMES)] = []
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = 0


def validate_solve_payload(payload) -> dict:
    """The task pane's payload checked all the way down (BadPayload naming the first bad place); returns a
    plain dict of the checked fields."""
    if not isinstance(payload, dict):
        raise BadPayload("the request body must be a JSON object (sheet, sheets, names)")
    _count_cells(payload.get("sheets"))
    try:
        model = _SolvePayload.model_validate(payload)
    except ValidationError as err:
        raise BadPayload(f"the solve request is malformed at {first_error(err)}") from None
    seen: set[str] = set()
    for i, sheet in enumerate(model.sheets):
        key = sheet.name.casefold()  # Excel's sheet names are unique regardless of case
        if key in seen:
            raise BadPayload(f"the solve request is malformed at sheets[{i}].name: sheet {sheet.name!r} comes twice")
        seen.add(key)
        _check_grid(i, sheet)
    names = {s.name for s in model.sheets}
    if model.sheet not in names:
        raise BadPayload(f"the solve request is malformed at sheet: {model.sheet!r} is not one of its sheets")
    for i, name in enumerate(model.names):
        if name.scope is not None and name.scope not in names:
            raise BadPayload(f"the solve request is malformed at names[{i}].scope: no sheet {name.scope!r}")
    return model.model_dump()


def _count_cells(sheets) -> None:
    """Refuse a workbook over :data:`MAX_CELLS` before the (slower) cell-by-cell checks: rows x first row's width."""
    if not isinstance(sheets, list):
        return  # the model check names what is wrong
    cells = 0
    for sheet in sheets:
        grid = sheet.get("values") if isinstance(sheet, dict) else None
        if isinstance(grid, list) and grid and isinstance(grid[0], list):
            cells += len(grid) * len(grid[0])
    if cells > MAX_CELLS:
        raise BadPayload(
            f"the workbook's used ranges hold more than {MAX_CELLS:,} cells: too large to solve from Excel on the "
            "web; save the workbook and run `xlcf solve BOOK`"
        )


def _check_grid(i: int, sheet: _Sheet) -> None:
    rows = len(sheet.values)
    widths = {len(row) for row in sheet.values}
    if len(sheet.formulas) != rows or {len(row) for row in sheet.formulas} - widths:
        raise BadPayload(f"the solve request is malformed at sheets[{i}].formulas: not the shape of its values")
    if len(widths) > 1:
        raise BadPayload(f"the solve request is malformed at sheets[{i}].values: rows of different lengths")
    width = widths.pop() if widths else 0
    if sheet.row + rows - 1 > MAX_ROWS or sheet.column + width - 1 > MAX_COLUMNS:
        raise BadPayload(f"the solve request is malformed at sheets[{i}]: the block runs past Excel's last cell")
    for grid_name, grid in (("values", sheet.values), ("formulas", sheet.formulas)):
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                if isinstance(value, float) and not math.isfinite(value):
                    raise BadPayload(f"the solve request is malformed at sheets[{i}].{grid_name}[{r}][{c}]: not finite")
                if grid_name == "formulas" and isinstance(value, str) and len(value) > MAX_FORMULA_CHARS:
                    raise BadPayload(
                        f"the solve request is malformed at sheets[{i}].formulas[{r}][{c}]: longer than a formula "
                        f"may be ({MAX_FORMULA_CHARS} characters)"
                    )


def formula_book(data: dict):
    """The evaluator's workbook of a checked payload: each sheet's cells (value, formula) and the names by scope."""
    from xlcf.excel.solver_bridge import grid_cells
    from xlcf.formula import FormulaBook

    cells = {
        s["name"]: grid_cells(s["row"], s["column"], s["values"], _formula_grid(s["formulas"])) for s in data["sheets"]
    }
    names: dict[str | None, dict[str, str]] = {}
    for item in data["names"]:
        names.setdefault(item["scope"], {})[item["name"]] = item["formula"].removeprefix("=")
    return FormulaBook.from_cells(cells, names)


def _formula_grid(formulas: list[list[Any]]) -> list[list[Any]]:
    """``Range.formulas`` -> formula text or None per cell: a constant cell shows its value there (a number, or
    text; text that starts with ``=`` comes as ``'=...``, never as a formula)."""
    return [[f if isinstance(f, str) and f.startswith("=") and len(f) > 1 else None for f in row] for row in formulas]


def solve_sheet(data: dict, *, time_limit: float | None = None) -> dict:
    """Solve the payload's active sheet; a JSON-ready answer. Raises the solver's XlcfError (one line naming
    ``sheet!cell``) when the model cannot be solved."""
    from xlcf.actions.solve import read_model, solve_model
    from xlcf.excel.solver_bridge import solved_status, variable_blocks

    book = formula_book(data)
    model = read_model(book, data["sheet"])
    outcome = solve_model(book, model, seed=data.get("seed", 0), time_limit=time_limit)
    return {
        "sheet": model.sheet,
        "objective": model.objective_ref,
        "sense": model.sense,
        "target": model.target if model.sense == "value" else None,
        "objective_before": outcome.objective_before,
        "objective_after": outcome.objective_after,
        "optimizer": outcome.optimizer,
        "device": outcome.device,
        "seconds": outcome.seconds,
        "runs": len(outcome.runs),
        "stopped_reason": outcome.stopped_reason,
        "status": solved_status(outcome, time_limit),
        "variables": [
            {"sheet": sheet, "address": address, "values": block.tolist()}
            for sheet, address, block in variable_blocks(outcome)
        ],
        "downstream": {
            sheet: {ref: _json_value(v) for ref, v in cells.items()} for sheet, cells in outcome.values.items()
        },
        "notes": list(outcome.notes),
    }


def _json_value(value):
    """A computed cell value as JSON: numbers, text and booleans as they are, errors as their code (``#DIV/0!``),
    a non-finite number as ``#NUM!`` (never NaN in a cell)."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else "#NUM!"
    code = getattr(value, "code", None)
    return code if isinstance(code, str) else str(value)


def warm_up() -> None:
    """One tiny solve (imports, the first torch operations, the objective's recording) so a press pays none."""
    solve_sheet(
        {
            "sheet": "s",
            "sheets": [{"name": "s", "row": 1, "column": 1, "formulas": [[0.5, "=(A1-3)^2"]], "values": [[0.5, 6.25]]}],
            "names": [
                {"name": "solver_opt", "scope": "s", "formula": "=s!$B$1"},
                {"name": "solver_adj", "scope": "s", "formula": "=s!$A$1"},
            ],
        }
    )
