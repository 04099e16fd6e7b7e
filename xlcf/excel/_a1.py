"""A1 helpers (no xlwings needed)."""

from __future__ import annotations


def column_letter(col: int) -> str:
    """1 -> 'A', 27 -> 'AA'."""
    letters = ""
    while col > 0:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def to_a1(row: int, col: int) -> str:
    return f"{column_letter(col)}{row}"
