"""Recalculate a workbook headless and write every supported formula cell's cached value (``xlcf recalc``), and
check a workbook's cached values against the evaluator (``xlcf check``). Neither imports torch."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import cast

from xlcf.formula import FormulaBook
from xlcf.formula.book import split_cell
from xlcf.formula.calc import CheckReport, jsonable, same_value
from xlcf.ooxml import ErrorValue, Package
from xlcf.ooxml.values import CellValue


@dataclass
class RecalcSummary:
    """What ``xlcf recalc`` did: formula cells evaluated, cached values written (and how many changed), the
    formulas it could not evaluate (their cached values are kept) and the volatile cells."""

    book: str
    sheet: str | None
    cells_evaluated: int
    cells_written: int
    cells_changed: int
    unsupported: list[dict] = field(default_factory=list)
    volatile: list[str] = field(default_factory=list)
    dry_run: bool = False
    backup: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "book": self.book,
            "sheet": self.sheet,
            "cells_evaluated": self.cells_evaluated,
            "cells_written": self.cells_written,
            "cells_changed": self.cells_changed,
            "unsupported": self.unsupported,
            "volatile": self.volatile,
            "dry_run": self.dry_run,
            "backup": self.backup,
            "seconds": round(self.seconds, 4),
        }


def _writable(value: object) -> CellValue:
    """A value the package can store: a non-finite number (never produced, but never written either) is #NUM!."""
    if isinstance(value, float) and not math.isfinite(value):
        return ErrorValue("#NUM!")
    return cast(CellValue, value)  # the evaluator's values are cell values (float, str, bool, ErrorValue, None)


def recalc_workbook(
    path: str | os.PathLike,
    sheet: str | None = None,
    *,
    dry_run: bool = False,
    backup: bool = False,
    seed: int | None = None,
) -> RecalcSummary:
    """Recalculate every supported formula cell (of ``sheet``, or of the whole workbook) and write the results as
    the cells' cached values; every other part of the file stays byte-identical and the save is atomic. Formula
    errors (a circular reference...) raise before anything is written."""
    start = time.perf_counter()
    pkg = Package.open(path)
    if sheet is not None:
        pkg.sheet_part(sheet)
    book = FormulaBook.from_package(pkg)
    result = book.recalc_full(sheet, seed=seed)
    by_sheet: dict[str, dict[str, CellValue]] = {}
    changed = 0
    for name, value in result.values.items():
        s, _, ref = name.rpartition("!")
        value = _writable(value)
        if not same_value(book.view.sheets[s].values.get(split_cell(ref)), value, rel=0.0, abs_tol=0.0):
            changed += 1
        by_sheet.setdefault(s, {})[ref] = value
    if not dry_run:
        pkg.check_writable()
    written = sum(pkg.set_cached_values(s, vals) for s, vals in by_sheet.items())
    saved_backup = None
    if not dry_run and written:
        pkg.save(backup=backup)
        saved_backup = str(pkg.backup_path) if pkg.backup_path else None
    unsupported = [
        {"cell": fc.where, "formula": fc.text, "function": err.field, "error": err.message}
        for fc, err in result.problems
    ]
    return RecalcSummary(
        str(path),
        sheet,
        result.cells_evaluated,
        written,
        changed,
        unsupported,
        result.volatile,
        dry_run,
        saved_backup,
        time.perf_counter() - start,
    )


def check_workbook(path: str | os.PathLike, sheet: str | None = None) -> CheckReport:
    """Evaluate every supported formula cell once from the cached values of its inputs and compare with its own
    cached value (see :func:`xlcf.formula.calc.check`)."""
    return FormulaBook.open(path).check(sheet)


__all__ = ["CheckReport", "RecalcSummary", "check_workbook", "jsonable", "recalc_workbook"]
