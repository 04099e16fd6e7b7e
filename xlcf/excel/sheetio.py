"""Reading named blocks and writing computed blocks through xlwings — any engine.

The same code runs against desktop Excel (COM on Windows, AppleScript on macOS) and against xlwings'
remote engine (``xw.Book(json=payload)`` in ``xlcf serve`` and in the tests). So it only uses the xlwings
API both engines implement: ``sheet.names``, ``Name.refers_to_range``, ``Range.value`` with ``ndim=2``.

Compute first, then write: callers collect every write in a :class:`WritePlan`, validate it, and only then
``apply()`` it, so an error during the computation leaves the sheet untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlcf.actions.sheetio import rectangles
from xlcf.errors import WorkbookError
from xlcf.ooxml import refs
from xlcf.ooxml.refs import Area, sheet_cell
from xlcf.ooxml.values import CellValue, ErrorValue

# Excel error literals as the clients send them (VBA/Office.js turn error cells into these strings).
EXCEL_ERRORS = {"#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#SPILL!", "#CALC!"}


def short_name(name: str) -> str:
    """'dotprod!ratings' / "'my sheet'!ratings" -> 'ratings'."""
    return name.rsplit("!", 1)[-1]


def cell_ref(rng, row: int = 0, col: int = 0) -> str:
    """'dotprod!H2' for the cell at offset (row, col) inside ``rng`` (for messages)."""
    return sheet_cell(rng.sheet.name, rng.row + row, rng.column + col)


def range_ref(rng) -> str:
    return f"{rng.sheet.name}!{rng.address.replace('$', '')}"


def named_range(sheet, name: str):
    """The range a name refers to: the sheet-scoped name of ``sheet`` first, then a workbook-scoped one.
    None when neither exists (or the name is not a single range)."""
    wanted = name.casefold()
    try:
        sheet_names = list(sheet.names)
    except Exception:  # some engines raise on sheets without names
        sheet_names = []
    for item in sheet_names:
        if short_name(item.name).casefold() == wanted:
            try:
                return item.refers_to_range
            except Exception:
                return None
    for item in sheet.book.names:
        if "!" not in item.name and item.name.casefold() == wanted:
            try:
                return item.refers_to_range
            except Exception:
                return None
    return None


def name_index(sheet) -> Callable[[str], Any]:
    """:func:`named_range` for many names of one sheet: the names are listed once (on the remote engine each
    listing snapshots every name, which made a press's dozen lookups cost more than a small fit)."""
    items: dict[str, Any] = {}
    try:
        sheet_names = list(sheet.names)
    except Exception:  # some engines raise on sheets without names
        sheet_names = []
    for item in sheet_names:  # sheet scope first, as named_range
        items.setdefault(short_name(item.name).casefold(), item)
    for item in sheet.book.names:
        if "!" not in item.name:
            items.setdefault(item.name.casefold(), item)

    def lookup(name: str):
        item = items.get(name.casefold())
        if item is None:
            return None
        try:
            return item.refers_to_range
        except Exception:
            return None

    return lookup


def has_names(sheet, *names: str) -> bool:
    return all(named_range(sheet, n) is not None for n in names)


def _rows(rng) -> list[list[Any]]:
    values = rng.options(ndim=2).value
    return [list(row) for row in values]


def is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def read_matrix(rng, what: str, *, allow_blank: bool = True) -> np.ndarray:
    """A 2-D float array of the range's values; blanks -> NaN. Text, booleans and error values raise
    WorkbookError naming the first offending cell."""
    rows = _rows(rng)
    out = np.full((len(rows), len(rows[0]) if rows else 0), np.nan, dtype=np.float64)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if is_blank(value):
                if not allow_blank:
                    raise WorkbookError(f"{what} cell is empty; expected a number", where=cell_ref(rng, i, j))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                shown = str(value)[:40]
                kind = (
                    "an error value" if shown in EXCEL_ERRORS else ("a boolean" if isinstance(value, bool) else "text")
                )
                raise WorkbookError(f"{what} holds {kind} ({shown!r}); expected a number", where=cell_ref(rng, i, j))
            if not math.isfinite(float(value)):
                raise WorkbookError(f"{what} holds a non-finite number", where=cell_ref(rng, i, j))
            out[i, j] = float(value)
    return out


def _cell_value(value: Any) -> CellValue:
    """An xlwings value as the actions see cells: '' -> None, error literals -> ErrorValue, numbers -> float."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, str) and value in EXCEL_ERRORS:
        return ErrorValue(value)
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


class XlwingsSheetIO:
    """:class:`xlcf.actions.sheetio.SheetIO` over a sheet reached through xlwings (desktop Excel or the remote
    engine): the actions read it exactly as they read a zip package."""

    def __init__(self, sheet):
        self.xl_sheet = sheet
        self._ranges: dict[Area, Any] = {}
        self._lookup: Callable[[str], Any] | None = None

    @property
    def sheet(self) -> str:
        return str(self.xl_sheet.name)

    def name_area(self, name: str) -> Area | None:
        if self._lookup is None:  # one listing of the names per press (see name_index)
            self._lookup = name_index(self.xl_sheet)
        rng = self._lookup(name)
        if rng is None:
            return None
        rows, cols = rng.shape
        area = Area(str(rng.sheet.name), rng.row, rng.column, rng.row + rows - 1, rng.column + cols - 1)
        self._ranges[area] = rng
        return area

    def range(self, area: Area):
        """The xlwings range of an area (the one a name gave, when it came from :meth:`name_area`)."""
        rng = self._ranges.get(area)
        if rng is None:
            sheet = self.xl_sheet if area.sheet in (None, self.sheet) else self.xl_sheet.book.sheets[area.sheet]
            rng = sheet.range(area.ref)
        return rng

    def read_values(self, area: Area) -> list[list[CellValue]]:
        return [[_cell_value(v) for v in row] for row in _rows(self.range(area))]

    def read_formulas(self, area: Area) -> list[list[str | None]]:
        rows, cols = area.shape
        try:
            formulas = self.range(area).formula
        except NotImplementedError:  # the remote engine's payload carries values only
            return [[None] * cols for _ in range(rows)]
        if not isinstance(formulas, (list, tuple)):
            formulas = [[formulas]]
        elif formulas and not isinstance(formulas[0], (list, tuple)):
            formulas = [formulas] if rows == 1 else [[f] for f in formulas]
        return [[f if isinstance(f, str) and f.startswith("=") else None for f in row] for row in formulas]

    def write_values(self, values: Mapping[str, CellValue]) -> None:
        """Every value is checked first (no NaN reaches a cell); then each filled rectangle of the cells is one
        range write (one COM call, one action of the remote engine)."""
        cells = {
            refs.split_ref(ref): to_cell(value.code if isinstance(value, ErrorValue) else value)
            for ref, value in values.items()
        }
        for top, left, rows in rectangles(cells):
            rng = self.xl_sheet.range(refs.cell_ref(top, left)).resize(len(rows), len(rows[0]))
            rng.value = rows if (len(rows) > 1 or len(rows[0]) > 1) else rows[0][0]


class XlwingsBookIO:
    """:class:`xlcf.actions.sheetio.BookIO` over a book reached through xlwings."""

    def __init__(self, book):
        self.xl_book = book
        self._sheets: dict[str, XlwingsSheetIO] = {}

    @property
    def path(self) -> Path | None:
        try:
            return Path(str(self.xl_book.fullname))
        except Exception:  # an engine without a file name
            return None

    def sheet_io(self, name: str) -> XlwingsSheetIO | None:
        key = name.casefold()
        if key not in self._sheets:
            for candidate in self.xl_book.sheets:
                if candidate.name.casefold() == key:
                    self._sheets[key] = XlwingsSheetIO(candidate)
                    break
            else:
                return None
        return self._sheets[key]


def to_cell(value):
    """A value safe for any client: finite float / int / str / bool / None. NaN and inf never reach a cell."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        raise WorkbookError("refusing to write a NaN or infinite number into a cell")
    return number


def as_rows(values) -> list[list[Any]]:
    """Any scalar / 1-D / 2-D input as a list of rows of cell-safe values."""
    arr = values
    if isinstance(values, np.ndarray):
        arr = values.tolist() if values.ndim else values.item()
    if not isinstance(arr, (list, tuple)):
        return [[to_cell(arr)]]
    if arr and not isinstance(arr[0], (list, tuple)):
        return [[to_cell(v) for v in arr]]
    return [[to_cell(v) for v in row] for row in arr]


@dataclass
class WritePlan:
    """Every cell write of one macro run, collected before anything is written."""

    writes: list[tuple[Any, list[list[Any]]]] = field(default_factory=list)

    def add(self, rng, values, *, shape_of=None) -> None:
        rows = as_rows(values)
        expected = rng.shape if shape_of is None else shape_of
        got = (len(rows), len(rows[0]) if rows else 0)
        if tuple(expected) != got:
            raise WorkbookError(
                f"computed block is {got[0]}x{got[1]}, the range is {expected[0]}x{expected[1]}", where=range_ref(rng)
            )
        self.writes.append((rng, rows))

    def add_at(self, sheet, top_left: str, rows: list[list[Any]]) -> None:
        """Write a block whose size is given by the data, anchored at ``top_left`` (e.g. 'B5')."""
        rows = as_rows(rows)
        if not rows or not rows[0]:
            return
        width = max(len(r) for r in rows)
        rows = [list(r) + [None] * (width - len(r)) for r in rows]
        self.writes.append((sheet.range(top_left).resize(len(rows), width), rows))

    def apply(self) -> None:
        for rng, rows in self.writes:
            rng.value = rows if (len(rows) > 1 or len(rows[0]) > 1) else rows[0][0]
