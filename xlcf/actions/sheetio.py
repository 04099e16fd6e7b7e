"""How an action sees one sheet of an open book, whatever holds it: the zip :class:`~xlcf.ooxml.Package` of the
CLI (:class:`ZipSheetIO`, here) or a live workbook through xlwings (``xlcf.excel.sheetio.XlwingsSheetIO``).

Actions read the named blocks and settings cells through this interface and hand back the blocks to write, so
``xlcf fit``, the Excel buttons and the server read one settings schema and validate cells with one set of rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def block_cells(area: Area, rows: Sequence[Sequence[CellValue]]) -> dict[str, CellValue]:
    """``{ref: value}`` of rows laid over ``area`` from its top-left corner."""
    return {cell_ref(area.top + i, area.left + j): value for i, row in enumerate(rows) for j, value in enumerate(row)}
