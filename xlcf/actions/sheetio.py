"""How an action sees an open book, whatever holds it: the zip :class:`~xlcf.ooxml.Package` of the CLI
(:class:`ZipSheetIO` and :class:`ZipBookIO`, here) or a live workbook through xlwings
(``xlcf.excel.sheetio.XlwingsSheetIO`` and ``XlwingsBookIO``).

Actions read the named blocks and settings cells through these interfaces and write the cells they computed
through them, so ``xlcf fit``/``step``/``train``, the Excel buttons and the server read one settings schema,
validate cells with one set of rules and write the same cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area, cell_ref
from xlcf.ooxml.values import CellValue


class SheetIO(Protocol):
    """One sheet as the actions see it. Values: float, str, bool, :class:`~xlcf.ooxml.ErrorValue` or None."""

    @property
    def sheet(self) -> str:
        """The sheet's name."""
        ...

    def name_area(self, name: str) -> Area | None:
        """The single range a defined name refers to (the sheet's scoped name first, then a global one), or None
        when the name is absent or is not one plain range."""
        ...

    def read_values(self, area: Area) -> list[list[CellValue]]:
        """Rows of (cached) values of a range of this sheet (blank cells are None)."""
        ...

    def read_formulas(self, area: Area) -> list[list[str | None]]:
        """Rows of formulas (``"=..."``, None for a constant) of a range; all None where the front end cannot
        see formulas."""
        ...

    def write_values(self, values: Mapping[str, CellValue]) -> None:
        """Write ``{ref: value}`` cells of this sheet (checked before anything is written)."""
        ...


class BookIO(Protocol):
    """A whole book as the actions see it: its sheets by name, and where it lives."""

    @property
    def path(self) -> Path | None:
        """The workbook's file (relative ratings paths are relative to its folder); None when unknown."""
        ...

    def sheet_io(self, name: str) -> SheetIO | None:
        """The sheet called ``name`` (compared case-insensitively, as Excel does), or None when there is none."""
        ...


class ZipSheetIO:
    """A sheet of a zip :class:`~xlcf.ooxml.Package` (writes stay in memory until the package is saved)."""

    def __init__(self, pkg: Package, sheet: str):
        pkg.sheet_part(sheet)  # WorkbookError naming the sheets when it does not exist
        self.pkg = pkg
        self._sheet = sheet

    @property
    def sheet(self) -> str:
        return self._sheet

    def name_area(self, name: str) -> Area | None:
        areas = self.pkg.name_areas(self._sheet, name)
        if not areas or len(areas) != 1:
            return None
        return areas[0]

    def read_values(self, area: Area) -> list[list[CellValue]]:
        return self.pkg.read_values(area.sheet or self._sheet, area)

    def read_formulas(self, area: Area) -> list[list[str | None]]:
        return [[c.formula for c in row] for row in self.pkg.read_range(area.sheet or self._sheet, area)]

    def write_values(self, values: Mapping[str, CellValue]) -> None:
        self.pkg.write_values(self._sheet, values)


class ZipBookIO:
    """The sheets of a zip :class:`~xlcf.ooxml.Package` (writes stay in memory until the package is saved)."""

    def __init__(self, pkg: Package):
        self.pkg = pkg

    @property
    def path(self) -> Path | None:
        return self.pkg.path

    def sheet_io(self, name: str) -> ZipSheetIO | None:
        for sheet in self.pkg.sheet_names:
            if sheet.casefold() == name.casefold():
                return ZipSheetIO(self.pkg, sheet)
        return None


def block_cells(area: Area, rows: Sequence[Sequence[CellValue]]) -> dict[str, CellValue]:
    """``{ref: value}`` of rows laid over ``area`` from its top-left corner."""
    return {cell_ref(area.top + i, area.left + j): value for i, row in enumerate(rows) for j, value in enumerate(row)}


def rectangles(cells: Mapping[tuple[int, int], CellValue]) -> list[tuple[int, int, list[list[CellValue]]]]:
    """``{(row, col): value}`` as few filled rectangles ``(top, left, rows)``: runs of adjacent cells of a row,
    then equal runs of consecutive rows merged. A front end that pays per range written (a COM call, an action
    of the remote engine) writes a block as one range however the cells were collected."""
    runs: list[tuple[int, int, list[CellValue]]] = []
    for row, col in sorted(cells):
        if runs and runs[-1][0] == row and runs[-1][1] + len(runs[-1][2]) == col:
            runs[-1][2].append(cells[(row, col)])
        else:
            runs.append((row, col, [cells[(row, col)]]))
    open_rects: dict[tuple[int, int], tuple[int, list[list[CellValue]]]] = {}
    out: list[tuple[int, int, list[list[CellValue]]]] = []
    for row, col, values in runs:
        key = (col, len(values))
        rect = open_rects.get(key)
        if rect is not None and rect[0] + len(rect[1]) == row:
            rect[1].append(values)
            continue
        rect = (row, [values])
        open_rects[key] = rect
        out.append((row, col, rect[1]))
    return out
