"""Blocks of copied formulas run as one array operation and agree with cell-by-cell evaluation; dependency order
across blocks (also when two blocks feed each other row by row); circular references; shared and array formulas
as Excel stores them."""

from __future__ import annotations

import numpy as np
import openpyxl
import pytest
from openpyxl.utils import get_column_letter as letter
from openpyxl.worksheet.formula import ArrayFormula

from tests.formula.conftest import book_of
from tests.helpers.fit_books import excel_like
from tests.helpers.solver_corpus import build_all
from xlcf.errors import FormulaError
from xlcf.formula import FormulaBook
from xlcf.formula.calc import recalculate, same_value
from xlcf.formula.graph import Graph, build_blocks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("corpus"))


def _agree(a: dict, b: dict):
    assert a.keys() == b.keys()
    bad = [k for k in a if not same_value(a[k], b[k], rel=1e-12, abs_tol=1e-12)]
    assert not bad, [(k, a[k], b[k]) for k in bad[:5]]


@pytest.mark.parametrize("key", ["if_outside", "sumsq_diff", "transposed", "named", "expanded", "logistic", "graddesc"])
def test_blocks_equal_cell_by_cell(corpus, key):
    view = FormulaBook.open(corpus[key].path).view
    blocks, _ = build_blocks(view)
    assert len(blocks) < sum(b.n for b in blocks)  # copied formulas were grouped
    _agree(recalculate(view).values, recalculate(view, vectorised=False).values)


def test_a_copied_block_is_one_block(corpus):
    view = FormulaBook.open(corpus["if_outside"].path).view
    blocks, _ = build_blocks(view)
    sizes = sorted(b.n for b in blocks)
    assert sizes[-1] == 225  # the 15x15 prediction grid


def test_large_block_is_one_operation(tmp_path, monkeypatch):
    # 200 users x 200 movies x 10 factors: 40,000 copies of one MMULT formula
    n, k = 200, 10
    rng = np.random.default_rng(0)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "big"
    uf, mf = rng.random((n, k)), rng.random((k, n))
    for i in range(n):
        for j in range(k):
            ws.cell(300 + i, 2 + j, uf[i, j])
            ws.cell(280 + j, 13 + i, mf[j, i])
    for i in range(n):
        for j in range(n):
            ws.cell(300 + i, 13 + j, f"=MMULT($B{300 + i}:$K{300 + i},{letter(13 + j)}$280:{letter(13 + j)}$289)")
    ws["A1"] = f"=SUM(M300:{letter(12 + n)}{299 + n})"
    path = tmp_path / "big.xlsx"
    wb.save(path)
    view = FormulaBook.open(path).view
    blocks, _ = build_blocks(view)
    assert sorted(b.n for b in blocks) == [1, n * n]
    import xlcf.formula.calc as calc

    runs = []
    original = calc.evaluate_block
    monkeypatch.setattr(calc, "evaluate_block", lambda block, ctx: runs.append(block.n) or original(block, ctx))
    values = recalculate(view).values
    assert sorted(runs) == [1, n * n]  # the 40,000 cells in one evaluation
    assert values["big!A1"] == pytest.approx((uf @ mf).sum(), rel=1e-12)
    assert values[f"big!{letter(13 + 7)}{300 + 5}"] == pytest.approx(uf[5] @ mf[:, 7], rel=1e-12)


def test_blocks_that_feed_each_other_row_by_row_are_ordered_cell_by_cell():
    # a running total and two columns that read each other's previous row (as the gradient-descent sheets do)
    cells = {"A1": 1.0, "B1": "=A1", "C1": "=B1*2"}
    for r in range(2, 30):
        cells[f"A{r}"] = float(r)
        cells[f"B{r}"] = f"=C{r - 1}+A{r}"
        cells[f"C{r}"] = f"=B{r}*2"
        cells[f"D{r}"] = f"=D{r - 1}+A{r}" if r > 2 else "=A2"
    values = book_of(cells).recalc()
    b, c = 1.0, 2.0
    for r in range(2, 30):
        b = c + r
        c = 2 * b
    assert values["s!C29"] == c and values["s!D29"] == sum(range(2, 30))


@pytest.mark.parametrize(
    "cells, on_cycle",
    [
        ({"A1": "=B1+1", "B1": "=C1", "C1": "=A1*2"}, {"s!A1", "s!B1", "s!C1"}),
        ({"A1": "=A1+1"}, {"s!A1"}),
        ({"A1": "=SUM(A1:A3)", "A2": 1.0}, {"s!A1"}),
        ({**{f"A{r}": f"=A{r + 1}" for r in range(1, 10)}, "A10": "=A1"}, {f"s!A{r}" for r in range(1, 11)}),
    ],
)
def test_circular_reference_names_a_cell_on_the_cycle(cells, on_cycle):
    with pytest.raises(FormulaError) as err:
        book_of({**cells, "Z9": 5.0}).recalc()
    assert err.value.field == "circular reference"
    assert err.value.where in on_cycle
    assert "circular reference" in str(err.value) and err.value.where in str(err.value)


def test_shared_formulas_as_excel_stores_them(corpus):
    shared = FormulaBook.open(corpus["shared"].path)
    plain = FormulaBook.open(corpus["if_outside"].path)
    cells = shared.view.sheets["bias"].formulas
    kinds = {fc.kind for fc in cells.values()}
    assert "shared" in kinds
    assert shared.formula("bias", "V40") == plain.formula("bias", "V40")  # expanded like Excel shows it
    _agree(shared.recalc(), plain.recalc())
    blocks, _ = build_blocks(shared.view)
    assert max(b.n for b in blocks) == 225


def test_shared_formula_read_from_xml(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in range(1, 6):
        ws.cell(r, 1, float(r))
    for r in range(25, 40):  # excel_like turns H25:V39 into one shared formula: the master, copied
        for c in range(8, 23):
            ws.cell(r, c, f"=$A{r - 24}*8+{letter(c)}$1")
    path = tmp_path / "shared.xlsx"
    wb.save(path)
    excel_like(path)
    book = FormulaBook.open(path)
    assert book.view.sheets["Sheet"].formulas[(30, 9)].kind == "shared"
    assert book.formula("Sheet", "I30") == "=$A6*8+I$1"  # the master H25's formula moved to I30
    values = book.recalc()
    assert values["Sheet!I30"] == 0.0  # A6 is blank
    assert values["Sheet!J26"] == 2.0 * 8


def test_array_formulas_from_openpyxl_and_their_dependants(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "a"
    for r in range(1, 4):
        ws.cell(r, 1, float(r))
        ws.cell(r, 2, float(10 * r))
    ws["D1"] = ArrayFormula("D1:D3", "=A1:A3*B1:B3")
    ws["E1"] = "=SUM(D1:D3)"
    ws["F1"] = ArrayFormula("F1", "=SUM(A1:A3*B1:B3)")
    path = tmp_path / "array.xlsx"
    wb.save(path)
    values = FormulaBook.open(path).recalc()
    assert [values[f"a!D{r}"] for r in (1, 2, 3)] == [10.0, 40.0, 90.0]
    assert values["a!E1"] == 140.0 and values["a!F1"] == 140.0


def test_graph_splits_only_cyclic_components(corpus):
    view = FormulaBook.open(corpus["graddesc"].path).view
    blocks, _ = build_blocks(view)
    order = Graph(view, blocks).order()
    assert sum(b.n for b in order) == sum(b.n for b in blocks)  # every cell once
    view2 = FormulaBook.open(corpus["if_outside"].path).view
    blocks2, _ = build_blocks(view2)
    assert len(Graph(view2, blocks2).order()) == len(blocks2)  # acyclic: blocks stay whole
