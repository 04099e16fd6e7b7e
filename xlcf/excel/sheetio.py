"""Reading named blocks and writing computed blocks through xlwings — any engine.

The same code runs against desktop Excel (COM on Windows, AppleScript on macOS) and against xlwings'
remote engine (``xw.Book(json=payload)`` in ``xlcf serve`` and in the tests). So it only uses the xlwings
API both engines implement: ``sheet.names``, ``Name.refers_to_range``, ``Range.value`` with ``ndim=2``.

Compute first, then write: callers collect every write in a :class:`WritePlan`, validate it, and only then
``apply()`` it, so an error during the computation leaves the sheet untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlcf.errors import WorkbookError
from xlcf.ooxml import refs
from xlcf.ooxml.refs import sheet_cell

# Settings cells the fitting sheets carry (sheet-scoped names), read in this order.
SETTING_NAMES = ("optimizer", "lr", "epochs", "seed", "device")
# Excel error literals as the clients send them (VBA/Office.js turn error cells into these strings).
EXCEL_ERRORS = {"#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#SPILL!", "#CALC!"}


def short_name(name: str) -> str:
    """'dotprod!ratings' / "'my sheet'!ratings" -> 'ratings'."""
    return name.rsplit("!", 1)[-1]


def cell_ref(rng, row: int = 0, col: int = 0) -> str:
    """'dotprod!H2' for the cell at offset (row, col) inside ``rng`` (for messages)."""
    return sheet_cell(rng.sheet.name, rng.row + row, rng.column + col)


def origin(rng) -> tuple[str, str]:
    """(sheet name, top-left cell) of ``rng``, e.g. ('bias', 'H3'): how the pure functions name cells."""
    return rng.sheet.name, refs.cell_ref(rng.row, rng.column)


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
                    raise WorkbookError(f"{cell_ref(rng, i, j)}: {what} cell is empty; expected a number")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                shown = str(value)[:40]
                kind = (
                    "an error value" if shown in EXCEL_ERRORS else ("a boolean" if isinstance(value, bool) else "text")
                )
                raise WorkbookError(f"{cell_ref(rng, i, j)}: {what} holds {kind} ({shown!r}); expected a number")
            if not math.isfinite(float(value)):
                raise WorkbookError(f"{cell_ref(rng, i, j)}: {what} holds a non-finite number")
            out[i, j] = float(value)
    return out


def read_scalar(rng):
    """Top-left value of a range; '' -> None."""
    value = rng.options(ndim=2).value[0][0]
    return None if is_blank(value) else value


def read_settings(sheet, names: tuple[str, ...] = SETTING_NAMES) -> dict[str, Any]:
    """Settings present on the sheet (blank cells left out so the engine's defaults apply)."""
    settings: dict[str, Any] = {}
    for name in names:
        rng = named_range(sheet, name)
        if rng is None:
            continue
        value = read_scalar(rng)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer() and name in ("epochs", "seed"):
            value = int(value)
        settings[name] = value
    return settings


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
                f"{range_ref(rng)}: computed block is {got[0]}x{got[1]}, the range is {expected[0]}x{expected[1]}"
            )
        self.writes.append((rng, rows))

    def add_at(self, sheet, top_left: str, rows: list[list[Any]]) -> None:
        """Write a block whose size is given by the data, anchored at ``top_left`` (e.g. 'B5')."""
        rows = as_rows(rows)
        if not rows or not rows[0]:
            return
        width = max(len(r) for r in rows)
        rows = [list(r) + [None] * (width - len(r)) for r in rows]
        rng = sheet.range(top_left).resize(len(rows), width)
        self.writes.append((rng, rows))

    def apply(self) -> None:
        for rng, rows in self.writes:
            rng.value = rows if (len(rows) > 1 or len(rows[0]) > 1) else rows[0][0]
