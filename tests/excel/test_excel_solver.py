"""The "Fit with Python" button / `xlcf serve` on a sheet that has a Solver model.

- Desktop Excel gives xlwings each cell's value and formula and every name with what it refers to; the bridge
  turns that into the evaluator's workbook (``grid_cells``, ``scoped_names``) and solves the model. The data are
  delivered here as desktop xlwings delivers them (values with ``Range.value``, formulas with ``Range.formula``,
  names as ``Name.name`` / ``Name.refers_to``), read from corpus books with openpyxl.
- xlwings' remote clients send values and range names, no formulas: through the remote engine
  (``xw.Book(json=...)``, payload as the clients send it) the macro says so in one line, pointing to the task
  pane's "Solve this sheet", and writes nothing.
"""

from __future__ import annotations

import pytest

from tests.excel.test_excel_payload import payload_from_xlsx
from tests.helpers.solver_corpus import CF_VARIANTS, MODELS
from xlcf.actions.solve import read_model, solve_model
from xlcf.excel.solver_bridge import grid_cells, scoped_names
from xlcf.formula import FormulaBook


def desktop_view(path):
    """(cells, names) as desktop xlwings would read them: used-range values and formulas, names with refers_to
    (sheet-scoped ones as ``sheet!name``, hidden ones included)."""
    import openpyxl

    formulas_wb = openpyxl.load_workbook(path)
    values_wb = openpyxl.load_workbook(path, data_only=True)
    cells = {}
    for ws in formulas_wb.worksheets:
        vs = values_wb[ws.title]
        top, left = ws.min_row, ws.min_column
        values, formulas = [], []
        for r in range(top, ws.max_row + 1):
            values.append([vs.cell(r, c).value for c in range(left, ws.max_column + 1)])
            formulas.append(
                [ws.cell(r, c).value if ws.cell(r, c).value is not None else "" for c in range(left, ws.max_column + 1)]
            )
        cells[ws.title] = grid_cells(top, left, values, formulas)
    items = [(name, "=" + dn.attr_text) for name, dn in formulas_wb.defined_names.items()]
    for ws in formulas_wb.worksheets:
        items += [(f"{ws.title}!{name}", "=" + dn.attr_text) for name, dn in ws.defined_names.items()]
    return cells, scoped_names(items, formulas_wb.sheetnames)


@pytest.mark.parametrize("key", ["rosenbrock", "logistic", "bounds"])
def test_desktop_cells_and_names_solve_like_the_file(key, tmp_path):
    book = MODELS[key](tmp_path / f"{key}.xlsx")
    cells, names = desktop_view(book.path)
    fb = FormulaBook.from_cells(cells, names)
    model = read_model(fb, book.sheet)
    assert model.sense == book.sense and model.objective.ref == book.objective
    outcome = solve_model(fb, model)
    assert outcome.objective_after == pytest.approx(book.optimum, rel=1e-5, abs=1e-5)
    got = outcome.variable_values()[book.sheet]
    for ref, value in book.solution.items():
        assert got[ref] == pytest.approx(value, rel=1e-4, abs=1e-4)


def test_desktop_cells_of_the_lesson_reach_the_floor(tmp_path):
    import math

    import numpy as np

    from tests.helpers.solver_corpus import lesson

    book = CF_VARIANTS["if_outside"](tmp_path / "b.xlsx")
    cells, names = desktop_view(book.path)
    fb = FormulaBook.from_cells(cells, names)
    outcome = solve_model(fb, read_model(fb, "bias"))
    pred = np.array([[outcome.values["bias"][f"{chr(72 + j)}{26 + i}"] for j in range(15)] for i in range(15)])
    r, _, _ = lesson()
    mask = ~np.isnan(r)
    rmse = math.sqrt(float(((r[mask] - pred[mask]) ** 2).sum()) / mask.sum())
    assert rmse == pytest.approx(book.floor, rel=1e-3)


def test_scoped_names_as_xlwings_lists_them():
    names = scoped_names(
        [
            ("bias!solver_opt", "=bias!$V$42"),
            ("'my sheet'!x", "='my sheet'!$A$1"),
            ("global", "=bias!$A$1"),
            ("other!y", "=1"),
        ],
        ["bias", "my sheet"],
    )
    assert names == {
        "bias": {"solver_opt": "bias!$V$42"},
        "my sheet": {"x": "'my sheet'!$A$1"},
        None: {"global": "bias!$A$1", "other!y": "1"},
    }


def test_remote_clients_send_no_formulas_so_the_macro_says_so(tmp_path):
    import xlwings as xw

    from xlcf.excel import macros

    if "remote" not in [e.name for e in xw.engines]:
        pytest.skip("xlwings' remote engine is unavailable")
    book = MODELS["rosenbrock"](tmp_path / "r.xlsx")
    payload = payload_from_xlsx(book.path, "rosenbrock", computed={("rosenbrock", "D2"): 24.2})
    wb = xw.Book(json=payload)
    try:
        result = macros.main(wb)
        actions = wb.json()["actions"]
    finally:
        wb.close()
    assert not result.ok and result.action == "solve"
    assert "formulas" in result.status and "xlcf solve" in result.status
    assert '"Solve this sheet" in the xlcf task pane' in result.status and "\n" not in result.status
    assert not [a for a in actions if a["func"] in ("setValues", "setRangeValues")]
