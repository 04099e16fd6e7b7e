"""Book payloads in the exact format of xlwings' clients, built from generated workbooks.

The format follows xlwings 0.37.8's clients: the VBA ``RunServerPython`` module (``client: "VBA"``; names
as ``Name.Name`` gives them, i.e. ``"dotprod!ratings"`` for a sheet-scoped name, relative addresses; each
sheet's values from A1 to the end of the used range, ``null`` for empty cells) and Office Scripts
(``client: "Microsoft Office Scripts"``; sheet-scoped names without the sheet prefix). Formula cells carry
what Excel would show: the caller passes those values (openpyxl files have no cached values).

Other test modules import :func:`payload_from_xlsx`; the tests here check the builder against the xlwings
remote engine itself.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")  # the remote engine is license-gated

from pathlib import Path

import numpy as np
import pytest

CLIENTS = ("VBA", "Microsoft Office Scripts")


def _xlwings_remote():
    import xlwings as xw

    if "remote" not in [e.name for e in xw.engines]:
        pytest.skip(
            "xlwings' remote engine is not available (XLWINGS_LICENSE_KEY was not set before xlwings "
            "was imported in this test session)"
        )
    return xw


def _split_ref(ref: str):
    m = re.match(r"\$?([A-Z]+)\$?(\d+)$", ref)
    col = 0
    for ch in m.group(1):
        col = col * 26 + ord(ch) - 64
    return int(m.group(2)), col


def _destinations(value: str):
    """openpyxl attr_text ("'dotprod'!$H$3:$V$17" or multi-area) -> [(sheet, "H3:V17")]."""
    out = []
    for part in value.split(","):
        m = re.match(r"^(?:'((?:[^']|'')+)'|([^!]+))!(.+)$", part.strip())
        if not m:
            return []
        sheet = (m.group(1) or m.group(2)).replace("''", "'")
        out.append((sheet, m.group(3).replace("$", "")))
    return out


def payload_from_xlsx(
    path,
    active_sheet: str,
    *,
    client: str = "VBA",
    computed: dict | None = None,
    version: str | None = None,
    selection: str = "A1",
) -> dict:
    """The JSON an xlwings client would POST for this workbook with ``active_sheet`` active.

    ``computed[(sheet, "H26")] = value`` supplies the values of formula cells (what Excel would display)."""
    import openpyxl
    import xlwings as xw

    computed = computed or {}
    wb = openpyxl.load_workbook(path, data_only=False)
    sheets = []
    for ws in wb.worksheets:
        max_row, max_col = ws.max_row, ws.max_column
        values = []
        for r in range(1, max_row + 1):
            row = []
            for c in range(1, max_col + 1):
                cell = ws.cell(r, c)
                value = cell.value
                if (isinstance(value, str) and value.startswith("=")) or hasattr(value, "text"):
                    value = computed.get((ws.title, cell.coordinate))
                if isinstance(value, float) and not np.isfinite(value):
                    value = None
                row.append(value)
            values.append(row)
        sheets.append({"name": ws.title, "values": values if values else [[]], "pictures": [], "tables": []})
    index = {ws.title: i for i, ws in enumerate(wb.worksheets)}
    names = []

    def add(name, attr_text, scope_sheet):
        dest = _destinations(attr_text)
        if not dest or dest[0][0] not in index:
            return  # constants (solver_typ=2 ...) are not ranges: clients skip them
        sheet_name, address = dest[0]
        if len(dest) > 1:
            address = ",".join(a for _, a in dest)
        if client == "VBA":
            shown = f"{scope_sheet}!{name}" if scope_sheet else name
        else:
            shown = name
        names.append(
            {
                "name": shown,
                "sheet_index": index[sheet_name],
                "address": address,
                "book_scope": scope_sheet is None,
                "scope_sheet_name": scope_sheet,
                "scope_sheet_index": index[scope_sheet] if scope_sheet else None,
            }
        )

    for name, dn in wb.defined_names.items():
        add(name, dn.attr_text, None)
    for ws in wb.worksheets:
        for name, dn in ws.defined_names.items():
            add(name, dn.attr_text, ws.title)
    return {
        "client": client,
        "version": version or xw.__version__,
        "book": {"name": Path(path).name, "active_sheet_index": index[active_sheet], "selection": selection},
        "names": names,
        "sheets": sheets,
    }


def collab_computed(path, sheet: str) -> dict:
    """What Excel shows in the formula cells the fit cares about: predictions and the RMSE cell."""
    import openpyxl

    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    refs = {
        name: _destinations(dn.attr_text)[0][1] for name, dn in ws.defined_names.items() if _destinations(dn.attr_text)
    }

    def block(name):
        a, _, b = refs[name].partition(":")
        (r1, c1), (r2, c2) = _split_ref(a), _split_ref(b or a)
        return np.array([[ws.cell(r, c).value for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)], dtype=object), (
            r1,
            c1,
        )

    ratings, _ = block("ratings")
    ratings = np.array([[np.nan if v is None else float(v) for v in row] for row in ratings])
    uf = block("user_factors")[0].astype(float)
    mf = block("movie_factors")[0].astype(float)
    pred = uf @ mf
    if "user_bias" in refs:
        pred = (
            pred
            + block("user_bias")[0].astype(float).reshape(-1, 1)
            + block("movie_bias")[0].astype(float).reshape(1, -1)
        )
    _, (pr, pc) = block("predictions")
    out = {}
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            out[(sheet, ws.cell(pr + i, pc + j).coordinate)] = float(pred[i, j])
    rated = np.isfinite(ratings)
    rmse = float(np.sqrt(np.mean((pred[rated] - ratings[rated]) ** 2)))
    rr, rc = _split_ref(refs["rmse"])
    out[(sheet, ws.cell(rr, rc).coordinate)] = rmse
    return out


@pytest.fixture(scope="module")
def collab_book(tmp_path_factory):
    from xlcf.cli import main

    folder = tmp_path_factory.mktemp("payload")
    path = folder / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("client", CLIENTS)
def test_remote_engine_reads_the_named_blocks(collab_book, client):
    xw = _xlwings_remote()
    from xlcf.excel.sheetio import named_range, read_matrix

    payload = payload_from_xlsx(collab_book, "bias", client=client, computed=collab_computed(collab_book, "bias"))
    book = xw.Book(json=payload)
    try:
        sheet = book.sheets.active
        assert sheet.name == "bias"
        ratings = read_matrix(named_range(sheet, "ratings"), "ratings")
        assert ratings.shape == (15, 15)
        # the lesson's table: every value a half-star rating, some cells unrated
        rated = ratings[np.isfinite(ratings)]
        assert np.all((rated >= 0.5) & (rated <= 5.0)) and np.isnan(ratings).any()
        # sheet-scoped names resolve on their own sheet: dotprod's ratings is another range object
        other = named_range(book.sheets["dotprod"], "ratings")
        assert other.sheet.name == "dotprod"
        assert named_range(sheet, "user_bias").shape[1] == 1
        assert named_range(sheet, "no_such_name") is None
    finally:
        book.close()


def test_payload_shape_matches_the_vba_client(collab_book):
    payload = payload_from_xlsx(collab_book, "dotprod")
    assert set(payload) == {"client", "version", "book", "names", "sheets"}
    assert set(payload["book"]) == {"name", "active_sheet_index", "selection"}
    ratings = [n for n in payload["names"] if n["name"] == "dotprod!ratings"]
    assert ratings and ratings[0]["address"] == ratings[0]["address"].replace("$", "")
    assert ratings[0]["book_scope"] is False and ratings[0]["scope_sheet_index"] == 0
    assert all(set(s) == {"name", "values", "pictures", "tables"} for s in payload["sheets"])
