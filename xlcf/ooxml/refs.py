"""A1 references — the one place that turns column letters, cells, ranges and sheet names into text and back.

Rows and columns are 1-based everywhere (``"B26"`` <-> ``(26, 2)``), as on the sheet. Pure string logic with no
dependency beyond :mod:`xlcf.errors`, so every layer that names cells (the zip package, the generators, the fit,
the xlwings macros) shares one definition instead of its own copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xlcf.errors import WorkbookError, quote

MAX_ROW = 1_048_576
MAX_COL = 16_384

_CELL_RE = re.compile(r"^\$?([A-Za-z]{1,3})\$?([0-9]{1,7})$")
_PLAIN_SHEET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def col_index(letters: str) -> int:
    """``"A"`` -> 1, ``"AA"`` -> 27."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    return n


def col_letter(index: int) -> str:
    """1 -> ``"A"``, 27 -> ``"AA"``."""
    name = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


def split_ref(ref: str) -> tuple[int, int]:
    """``"H2"`` / ``"$H$2"`` -> (row, col). WorkbookError if it is not a cell reference inside a worksheet."""
    m = _CELL_RE.match(ref.strip())
    if not m:
        raise WorkbookError(f"{quote(ref)} is not a cell reference (expected something like H2)")
    row, col = int(m.group(2)), col_index(m.group(1))
    if not (1 <= row <= MAX_ROW and 1 <= col <= MAX_COL):
        raise WorkbookError(f"{quote(ref)} is outside a worksheet (max XFD1048576)")
    return row, col


def cell_ref(row: int, col: int, *, absolute: bool = False) -> str:
    """(26, 2) -> ``"B26"`` (``"$B$26"`` with ``absolute``)."""
    d = "$" if absolute else ""
    return f"{d}{col_letter(col)}{d}{row}"


def range_ref(top: int, left: int, bottom: int, right: int, *, absolute: bool = False) -> str:
    """``"B26:F40"``; a single cell stays ``"B26"``."""
    a, b = cell_ref(top, left, absolute=absolute), cell_ref(bottom, right, absolute=absolute)
    return a if a == b else f"{a}:{b}"


def absolute(ref: str) -> str:
    """``"B3"`` -> ``"$B$3"``, ``"B3:C4"`` -> ``"$B$3:$C$4"`` (for formulas and defined names)."""
    return ":".join(cell_ref(*split_ref(part), absolute=True) for part in ref.split(":"))


def quote_sheet(name: str, *, always: bool = False) -> str:
    """A sheet name as a formula writes it: ``dotprod``, ``'my sheet'``, ``'it''s'`` (quoted only when needed,
    unless ``always``)."""
    if not always and _PLAIN_SHEET_RE.fullmatch(name) and not _CELL_RE.match(name):
        return name
    return "'" + name.replace("'", "''") + "'"


def qualified(sheet: str, ref: str) -> str:
    """``"'my sheet'!A1:B2"``: a reference a formula or defined name can use."""
    return f"{quote_sheet(sheet)}!{ref}"


def sheet_cell(sheet: str, row: int, col: int) -> str:
    """``"dotprod!H3"`` for messages to a person (the sheet name as the tab shows it, unquoted)."""
    return f"{sheet}!{cell_ref(row, col)}"


@dataclass(frozen=True)
class Area:
    """A rectangular range on one sheet (1-based, inclusive)."""

    sheet: str | None
    top: int
    left: int
    bottom: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.bottom - self.top + 1, self.right - self.left + 1)

    @property
    def ref(self) -> str:
        return range_ref(self.top, self.left, self.bottom, self.right)

    def qualified(self) -> str:
        return qualified(self.sheet, self.ref) if self.sheet else self.ref

    def cells(self) -> list[list[str]]:
        return [[cell_ref(r, c) for c in range(self.left, self.right + 1)] for r in range(self.top, self.bottom + 1)]

    def __str__(self) -> str:
        return self.qualified()


def parse_range(ref: str, sheet: str | None = None) -> Area:
    """``"H2:V16"``, ``"$H$2"``, ``"dotprod!$H$2:$V$16"`` or ``"'my sheet'!A1:B2"`` -> Area."""
    text = ref.strip()
    if text.startswith("="):
        text = text[1:]
    if "!" in text:
        sheet_part, _, text = text.rpartition("!")
        if sheet_part.startswith("'") and sheet_part.endswith("'"):
            sheet_part = sheet_part[1:-1].replace("''", "'")
        sheet = sheet_part
    first, _, last = text.partition(":")
    try:
        r1, c1 = split_ref(first)
        r2, c2 = split_ref(last) if last else (r1, c1)
    except WorkbookError:
        raise WorkbookError(f"'{ref}' is not a cell range (expected something like H2:V16)") from None
    return Area(sheet, min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2))


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside parentheses, string literals (``"a,b"``) and quoted sheet names (``'a,b'!A1``)."""
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    depth = 0
    for ch in text:
        if quote:
            quote = None if ch == quote else quote  # a doubled quote closes and reopens: same result
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def split_areas(value: str) -> list[str]:
    """Split a defined name's value at top-level commas (``"a!$A$1,a!$B$2"``), respecting quoted sheet names."""
    return [p.strip() for p in split_top_level(value, ",") if p.strip()]


# Relative references in a formula (for expanding shared formulas). Skips string literals and quoted sheet names.
_FORMULA_REF_RE = re.compile(r"(?<![A-Za-z0-9_.])(\$?)([A-Za-z]{1,3})(\$?)([0-9]{1,7})(?![A-Za-z0-9_(.!])")


def shift_formula(formula: str, drow: int, dcol: int) -> str:
    """Translate a formula copied by (drow, dcol), as Excel does for shared formulas: relative parts move,
    ``$``-anchored parts stay."""
    if drow == 0 and dcol == 0:
        return formula

    def shift(m: re.Match) -> str:
        col_abs, col, row_abs, row = m.groups()
        c, r = col_index(col), int(row)
        if c > MAX_COL:
            return m.group(0)
        if not col_abs:
            c += dcol
        if not row_abs:
            r += drow
        if c < 1 or r < 1:
            return "#REF!"
        return f"{col_abs}{col_letter(c)}{row_abs}{r}"

    out, i = [], 0
    for m in re.finditer(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'', formula):
        out.append(_FORMULA_REF_RE.sub(shift, formula[i : m.start()]))
        out.append(m.group(0))
        i = m.end()
    out.append(_FORMULA_REF_RE.sub(shift, formula[i:]))
    return "".join(out)


__all__ = [
    "MAX_COL",
    "MAX_ROW",
    "Area",
    "absolute",
    "cell_ref",
    "col_index",
    "col_letter",
    "parse_range",
    "qualified",
    "quote_sheet",
    "range_ref",
    "sheet_cell",
    "shift_formula",
    "split_areas",
    "split_ref",
    "split_top_level",
]
