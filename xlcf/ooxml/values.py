"""What a cell holds: values (numbers, text, booleans, spreadsheet errors) and the number text written to XML."""

from __future__ import annotations

import math
from dataclasses import dataclass

from xlcf.errors import WorkbookError, quote

ERROR_CODES = (
    "#NULL!",
    "#DIV/0!",
    "#VALUE!",
    "#REF!",
    "#NAME?",
    "#NUM!",
    "#N/A",
    "#GETTING_DATA",
    "#SPILL!",
    "#CALC!",
    "#FIELD!",
    "#BLOCKED!",
    "#CONNECT!",
    "#UNKNOWN!",
    "#BUSY!",
)


@dataclass(frozen=True)
class ErrorValue:
    """A spreadsheet error value such as ``#N/A`` or ``#DIV/0!`` (distinct from a string)."""

    code: str

    def __str__(self) -> str:
        return self.code


CellValue = float | str | bool | ErrorValue | None


@dataclass(frozen=True)
class Cell:
    """What a cell holds: its (cached) value and, for formula cells, the formula text with a leading ``=``.

    ``formula_type`` is None for a plain formula, else ``"shared"``, ``"array"`` or ``"dataTable"``; for a cell that
    belongs to a shared formula the text is expanded (translated from the master) as Excel displays it.
    """

    value: CellValue = None
    formula: str | None = None
    ref: str = ""
    style: int | None = None
    formula_type: str | None = None

    @property
    def is_formula(self) -> bool:
        return self.formula is not None

    @property
    def is_empty(self) -> bool:
        return self.value is None and self.formula is None


def format_number(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkbookError(
            f"cannot write {quote(repr(value))} to a cell (expected a number, text, a boolean or None)"
        ) from None
    if not math.isfinite(number):
        raise WorkbookError(f"refusing to write {number} to a cell (only finite numbers are written)")
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)
