"""A read-only view of a workbook for the evaluator: per sheet the cached values and the parsed formulas
(shared formulas expanded, array formulas with their ranges), and the defined names with their scopes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from xlcf.errors import FormulaError, WorkbookError
from xlcf.formula import _pkg
from xlcf.formula.nodes import Binary, Call, Name, Node, Percent, Unary
from xlcf.formula.parser import Parsed, parse, render


@lru_cache(maxsize=20_000)  # named again for every cell of every block written back
def col_letters(index: int) -> str:
    name = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


def cell_name(sheet: str, row: int, col: int) -> str:
    """``dotprod!H3`` — a cell as messages and result dictionaries name it (the sheet name unquoted)."""
    return f"{sheet}!{col_letters(col)}{row}"


def split_cell(ref: str) -> tuple[int, int]:
    """``"H3"``/``"$H$3"`` -> (3, 8)."""
    text = ref.replace("$", "").strip().upper()
    i = 0
    while i < len(text) and text[i].isalpha():
        i += 1
    if not (0 < i < len(text)) or not text[i:].isdigit():
        raise WorkbookError(f"'{ref}' is not a cell reference (expected something like H2)")
    col = 0
    for ch in text[:i]:
        col = col * 26 + ord(ch) - 64
    return int(text[i:]), col


@dataclass
class FormulaCell:
    """A formula cell: its text (with ``=``), kind (None, "shared", "array", "dataTable"), for an array formula its
    range (top, left, bottom, right), and the parse result or the error that parsing raised."""

    sheet: str
    row: int
    col: int
    text: str
    kind: str | None = None
    area: tuple[int, int, int, int] | None = None
    parsed: Parsed | None = None
    error: FormulaError | None = None

    @property
    def where(self) -> str:
        return cell_name(self.sheet, self.row, self.col)


@dataclass
class SheetView:
    name: str
    values: dict[tuple[int, int], object]
    formulas: dict[tuple[int, int], FormulaCell]
    nrows: int = 1
    ncols: int = 1
    array_members: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # cell -> array anchor


class BookView:
    """Cached values, formulas and names of a workbook, read once (see :meth:`from_package`)."""

    def __init__(self, sheets: dict[str, SheetView], names: list, path: str | None = None):
        self.sheets = sheets
        self.path = path
        self._names: dict[str | None, dict[str, str]] = {}
        for n in names:
            self._names.setdefault(n.sheet, {})[n.name.upper()] = n.value
        self._bound: dict[tuple, tuple] = {}

    # -- loading ----------------------------------------------------------------------------------------------
    @classmethod
    def from_package(cls, pkg) -> BookView:
        strings = _pkg.shared_strings(pkg)
        sheets = {}
        for name in pkg.sheet_names:
            values, raw = _pkg.read_sheet(pkg, name, strings)
            sheets[name] = _sheet_view(name, values, raw)
        return cls(sheets, pkg.names(), str(pkg.path))

    @classmethod
    def from_cells(cls, cells: dict, names: dict | None = None, path: str | None = None) -> BookView:
        """From plain data (what xlwings gives): ``cells`` {sheet: {(row, col): (value, formula or None)}} in sheet
        order, ``names`` {scope: {name: formula text}} with scope a sheet name or None (the workbook)."""
        sheets = {}
        for name, sheet_cells in cells.items():
            values, raw = {}, {}
            for pos, (value, formula) in sheet_cells.items():
                if (value is not None and value != "") or formula:
                    values[pos] = value
                if formula:
                    raw[pos] = _pkg.RawFormula(formula.removeprefix("="))
            sheets[name] = _sheet_view(name, {k: v for k, v in values.items() if v is not None}, raw)
        defined = [_pkg.DefinedName(n, v, scope) for scope, items in (names or {}).items() for n, v in items.items()]
        return cls(sheets, defined, path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> BookView:
        return cls.from_package(_pkg.Package.open(path))

    # -- access -----------------------------------------------------------------------------------------------
    @property
    def sheet_names(self) -> list[str]:
        return list(self.sheets)

    def sheet(self, name: str) -> SheetView:
        view = self.sheets.get(name)
        if view is None:
            raise WorkbookError(f"the workbook has no sheet '{name}' (sheets: {', '.join(self.sheets)})")
        return view

    def value(self, sheet: str, ref: str):
        """The cached value of a cell (None when empty)."""
        return self.sheet(sheet).values.get(split_cell(ref))

    def formula(self, sheet: str, ref: str) -> str | None:
        fc = self.sheet(sheet).formulas.get(split_cell(ref))
        return None if fc is None else fc.text

    def is_formula(self, sheet: str, ref: str) -> bool:
        pos = split_cell(ref)
        view = self.sheet(sheet)
        return pos in view.formulas or pos in view.array_members

    def formula_cells(self, sheet: str | None = None):
        """Every formula cell (of one sheet or of all), in sheet and reading order."""
        for name in [sheet] if sheet else self.sheets:
            view = self.sheet(name)
            for pos in sorted(view.formulas):
                yield view.formulas[pos]

    # -- names ------------------------------------------------------------------------------------------------
    def name_value(self, name: str, sheet: str | None) -> str | None:
        """A defined name's formula text as Excel resolves it on ``sheet``: that sheet's own name first, then the
        workbook's."""
        key = name.upper()
        if sheet is not None and key in self._names.get(sheet, {}):
            return self._names[sheet][key]
        return self._names.get(None, {}).get(key)

    @property
    def names(self) -> dict[str | None, dict[str, str]]:
        """scope (a sheet name, or None for the workbook) -> {NAME: formula text}."""
        return self._names

    def bind(self, tree: Node, sheet: str, depth: int = 0) -> Node:
        """``tree`` with every defined name replaced by the tree of its formula (as seen from ``sheet``)."""
        key = (sheet, id(tree))
        hit = self._bound.get(key)
        if hit is not None and hit[0] is tree:
            return hit[1]
        out = self._bind(tree, sheet, depth)
        self._bound[key] = (tree, out)
        return out

    def _bind(self, node: Node, sheet: str, depth: int) -> Node:
        if isinstance(node, Name):
            scope = node.sheet or sheet
            text = self.name_value(node.name, scope)
            if text is None or depth > 20:
                return node
            try:
                tree = parse(text if text.startswith("=") else "=" + text, 1, 1).tree
            except FormulaError:
                return node
            return self._bind(tree, scope, depth + 1)
        if isinstance(node, Binary):
            a, b = self._bind(node.left, sheet, depth), self._bind(node.right, sheet, depth)
            return node if (a is node.left and b is node.right) else Binary(node.op, a, b)
        if isinstance(node, Unary):
            a = self._bind(node.operand, sheet, depth)
            return node if a is node.operand else Unary(node.op, a)
        if isinstance(node, Percent):
            a = self._bind(node.operand, sheet, depth)
            return node if a is node.operand else Percent(a)
        if isinstance(node, Call):
            args = tuple(self._bind(a, sheet, depth) for a in node.args)
            return node if all(x is y for x, y in zip(args, node.args)) else Call(node.name, args)
        return node


def _area(ref: str | None, row: int, col: int) -> tuple[int, int, int, int]:
    if not ref:
        return (row, col, row, col)
    first, _, last = ref.partition(":")
    r1, c1 = split_cell(first)
    r2, c2 = split_cell(last) if last else (r1, c1)
    return (min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2))


def _sheet_view(name: str, values: dict, raw: dict) -> SheetView:
    """Parse every formula of a sheet. A cell whose text is its left or upper formula neighbour's template rendered
    at the cell (a copied formula) reuses that parse; a shared formula's followers reuse their master's."""
    formulas: dict[tuple[int, int], FormulaCell] = {}
    array_members: dict[tuple[int, int], tuple[int, int]] = {}
    last_in_row: dict[int, Parsed] = {}
    last_in_col: dict[int, Parsed] = {}
    nrows = max([r for r, _ in values] + [1])
    ncols = max([c for _, c in values] + [1])
    for r, c in sorted(raw):
        rf = raw[(r, c)]
        fc = FormulaCell(name, r, c, "=" + (rf.text or ""), rf.kind)
        nrows, ncols = max(nrows, r), max(ncols, c)
        if rf.kind == "array":
            fc.area = _area(rf.ref, r, c)
            nrows, ncols = max(nrows, fc.area[2]), max(ncols, fc.area[3])
            for rr in range(fc.area[0], fc.area[2] + 1):
                for cc in range(fc.area[1], fc.area[3] + 1):
                    array_members[(rr, cc)] = (r, c)
        if rf.kind == "dataTable":
            fc.error = FormulaError(
                f"{fc.text}: data tables (What-If Analysis) are not supported", where=fc.where, field="data table"
            )
            formulas[(r, c)] = fc
            continue
        parsed = None
        if rf.kind == "shared" and rf.master is not None and rf.master != (r, c):
            master = formulas.get(rf.master)
            if master is not None and master.parsed is not None:
                text = render(master.parsed.template, r, c)
                if text is not None:
                    fc.text = text
                    parsed = master.parsed
            if parsed is None:
                fc.error = FormulaError(
                    f"cannot expand the shared formula of {cell_name(name, *rf.master)} here",
                    where=fc.where,
                    field="shared formula",
                )
                formulas[(r, c)] = fc
                continue
        if parsed is None:
            for cand in (last_in_row.get(r), last_in_col.get(c)):
                if cand is not None and render(cand.template, r, c) == fc.text:
                    parsed = cand
                    break
        if parsed is None:
            try:
                parsed = parse(fc.text, r, c, fc.where)
            except FormulaError as err:
                fc.error = err
        fc.parsed = parsed
        if parsed is not None:
            last_in_row[r] = parsed
            last_in_col[c] = parsed
        formulas[(r, c)] = fc
    return SheetView(name, values, formulas, nrows, ncols, array_members)


__all__ = ["BookView", "FormulaCell", "SheetView", "cell_name", "col_letters", "split_cell"]
