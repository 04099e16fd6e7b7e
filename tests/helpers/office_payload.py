"""What the xlcf task pane's "Solve this sheet" reads through Office.js, made from a saved workbook.

Office.js gives, per sheet, the used range's ``Range.formulas`` (a formula cell as ``=...`` in A1 English-locale
form, a constant cell as its value, an empty cell as ``""``) and ``Range.values`` (what each cell shows: error
values as text like ``#DIV/0!``), and every defined name (hidden ones too) with its ``formula`` (``=...``) and
whether it is scoped to a sheet. Here formulas come from openpyxl, shown values from the cached values the file
stores (what Excel would show).

:func:`solve_payload` returns the body the pane POSTs to ``/xlcf/solve-sheet``; :func:`stub_book` the same
workbook in the shape ``tests/helpers/office_stub.js`` serves to the pane in a browser.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any


def _shown(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (datetime.date, datetime.datetime)):
        from openpyxl.utils.datetime import to_excel

        return to_excel(value)
    return value


def _formula_text(value: Any) -> Any:
    text = getattr(value, "text", None)  # an array formula: Office shows its text in the anchor cell
    if isinstance(text, str):
        return text if text.startswith("=") else "=" + text
    return _shown(value)


def solve_payload(path: str | Path, sheet: str) -> dict:
    """``{"sheet", "sheets": [{name, row, column, formulas, values}], "names": [{name, scope, formula}]}``."""
    import openpyxl

    formulas_wb = openpyxl.load_workbook(path)
    values_wb = openpyxl.load_workbook(path, data_only=True)
    sheets = []
    for ws in formulas_wb.worksheets:
        vs = values_wb[ws.title]
        top, left, bottom, right = ws.min_row, ws.min_column, ws.max_row, ws.max_column
        rows, columns = range(top, bottom + 1), range(left, right + 1)
        sheets.append(
            {
                "name": ws.title,
                "row": top,
                "column": left,
                "formulas": [[_formula_text(ws.cell(r, c).value) for c in columns] for r in rows],
                "values": [[_shown(vs.cell(r, c).value) for c in columns] for r in rows],
            }
        )
    names = [{"name": n, "scope": None, "formula": "=" + dn.attr_text} for n, dn in formulas_wb.defined_names.items()]
    for ws in formulas_wb.worksheets:
        names += [{"name": n, "scope": ws.title, "formula": "=" + dn.attr_text} for n, dn in ws.defined_names.items()]
    return {"sheet": sheet, "sheets": sheets, "names": names}


def stub_book(payload: dict, name: str = "book.xlsx") -> dict:
    """The workbook as ``office_stub.js`` serves it: sheets as grids from A1 (``values`` shown, ``formulas`` as
    ``Range.formulas`` gives them) and names with their formula and scope."""
    sheets = []
    for s in payload["sheets"]:
        pad_rows, pad_cols = s["row"] - 1, s["column"] - 1

        def grid(rows, pad_rows=pad_rows, pad_cols=pad_cols):
            width = pad_cols + (len(rows[0]) if rows else 0)
            return [[""] * width for _ in range(pad_rows)] + [[""] * pad_cols + list(row) for row in rows]

        sheets.append({"name": s["name"], "values": grid(s["values"]), "formulas": grid(s["formulas"])})
    active = [s["name"] for s in payload["sheets"]].index(payload["sheet"])
    return {
        "name": name,
        "active": active,
        "selection": "A1",
        "sheets": sheets,
        "names": [{"name": n["name"], "scope": n["scope"], "formula": n["formula"]} for n in payload["names"]],
    }
