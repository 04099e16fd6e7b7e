"""Helpers for the evaluator's tests: evaluate one formula over a few cells, without a file."""

from __future__ import annotations

import pytest

from xlcf.formula import FormulaBook
from xlcf.formula.book import split_cell


def book_of(cells: dict, sheet: str = "s", names: dict | None = None, more: dict | None = None) -> FormulaBook:
    """``cells`` {"A1": value or "=formula"} on ``sheet`` (``more``: {other sheet: {...}})."""
    data = {}
    for name, items in [(sheet, cells)] + list((more or {}).items()):
        data[name] = {}
        for ref, v in items.items():
            pos = split_cell(ref)
            data[name][pos] = (None, v) if isinstance(v, str) and v.startswith("=") else (v, None)
    return FormulaBook.from_cells(data, names)


def evaluate(formula: str, cells: dict | None = None, at: str = "Z100", **kw):
    """The value of ``formula`` in cell ``at`` after a full recalculation."""
    cells = dict(cells or {})
    cells[at] = formula
    return book_of(cells, **kw).recalc()[f"{kw.get('sheet', 's')}!{at}"]


@pytest.fixture
def ev():
    return evaluate
