"""The evaluator's public face: :class:`FormulaBook`."""

from __future__ import annotations

import os

from xlcf.formula import _pkg
from xlcf.formula.book import BookView
from xlcf.formula.calc import CheckReport, Recalc, check, recalculate
from xlcf.formula.model import Model, Recalculator


class FormulaBook:
    """A workbook's formulas, ready to evaluate.

    ``FormulaBook.open(path)`` or ``FormulaBook.from_package(pkg)``; then :meth:`recalc`, :meth:`check`, or
    :meth:`compile` for the solver."""

    def __init__(self, view: BookView):
        self.view = view

    @classmethod
    def from_package(cls, pkg) -> FormulaBook:
        return cls(BookView.from_package(pkg))

    @classmethod
    def open(cls, path: str | os.PathLike) -> FormulaBook:
        return cls.from_package(_pkg.Package.open(path))

    @classmethod
    def from_cells(cls, cells: dict, names: dict | None = None) -> FormulaBook:
        """From plain data: {sheet: {(row, col): (value, formula or None)}}, names {scope: {name: text}}."""
        return cls(BookView.from_cells(cells, names))

    def is_formula(self, sheet: str, ref: str) -> bool:
        return self.view.is_formula(sheet, ref)

    @property
    def sheet_names(self) -> list[str]:
        return self.view.sheet_names

    @property
    def names(self) -> dict:
        return self.view.names

    def value(self, sheet: str, ref: str):
        return self.view.value(sheet, ref)

    def formula(self, sheet: str, ref: str) -> str | None:
        return self.view.formula(sheet, ref)

    def recalc_full(self, sheet: str | None = None, **kw) -> Recalc:
        return recalculate(self.view, sheet, **kw)

    def recalc(self, sheet: str | None = None, **kw) -> dict[str, object]:
        """{"Sheet!A1": value} of every supported formula cell, fully recalculated."""
        return recalculate(self.view, sheet, **kw).values

    def check(self, sheet: str | None = None) -> CheckReport:
        return check(self.view, sheet)

    def compile(
        self,
        objective: str,
        variables: list[str],
        *,
        sheet: str | None = None,
        backend: str = "numpy",
        device=None,
        dtype=None,
    ) -> Model:
        """The objective cell as a function of the variable cells (see FORMULA_API / docs/formula.md)."""
        return Model(self.view, objective, variables, sheet=sheet, backend=backend, device=device, dtype=dtype)

    def recalculator(self) -> Recalculator:
        """A compiled full recalculation: ``set({"S!B4": 1.0})``, ``recalc()``, ``value("S!B8")``."""
        return Recalculator(self.view)
