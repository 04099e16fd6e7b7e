"""The Excel formula evaluator: parse a workbook's formulas and compute them with numpy (check, recalc) or torch
(solve, with gradients), block by block."""

from xlcf.formula.api import FormulaBook

__all__ = ["FormulaBook"]
