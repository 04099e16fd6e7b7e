"""One worksheet part, parsed: an index of its rows and cells over the lxml tree, reading cells (shared formulas
expanded) and the checked writes of values and cached values (edits happen on the tree)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping

from lxml import etree

from xlcf.errors import WorkbookError, quote
from xlcf.ooxml.parts import NS_MAIN, NS_REL, declaration, q, whole_number
from xlcf.ooxml.refs import (
    MAX_COL,
    MAX_ROW,
    Area,
    cell_ref,
    col_index,
    parse_range,
    sheet_cell,
    shift_formula,
    split_ref,
)
from xlcf.ooxml.values import Cell, CellValue, ErrorValue, format_number


class Worksheet:
    """One parsed worksheet: index of rows and cells over the lxml tree (edits happen on the tree)."""

    def __init__(self, name: str, part: str, tree: etree._ElementTree, original: bytes):
        self.name, self.part, self.tree = name, part, tree
        self.declaration = declaration(original)
        self.root = tree.getroot()
        self.sheet_data = self.root.find(q("sheetData"))
        if self.sheet_data is None:
            raise WorkbookError(f"sheet '{name}' ({part}) has no <sheetData>")
        self.rows: dict[int, etree._Element] = {}
        self.cells: dict[tuple[int, int], etree._Element] = {}
        # sorted row numbers and, per row, sorted column numbers: inserting keeps document order in O(log n)
        self.row_order: list[int] = []
        self.row_cols: dict[int, list[int]] = {}
        self.shared_masters: dict[str, tuple[int, int, str]] = {}
        self.array_areas: list[Area] = []  # multi-cell array formulas / data tables: their cells are not writable
        self.changed = False
        self.formulas_removed = False
        last_row = 0
        for row_el in self.sheet_data.iterchildren(q("row")):
            r = (
                whole_number(row_el.get("r"), 1, MAX_ROW, f"sheet '{name}' ({part}): <row r=...>", "a row number")
                if row_el.get("r")
                else last_row + 1
            )
            last_row = r
            self.rows[r] = row_el
            last_col = 0
            for c_el in row_el.iterchildren(q("c")):
                ref = c_el.get("r")
                if ref:
                    try:
                        rr, cc = split_ref(ref)
                    except WorkbookError as err:
                        raise WorkbookError(
                            f"sheet '{name}' ({part}): <c r=...>: {err}; the file is damaged — "
                            f"open and save it in Excel or LibreOffice to repair it"
                        ) from None
                else:
                    rr, cc = r, last_col + 1
                last_col = cc
                self.cells[(rr, cc)] = c_el
                self.row_cols.setdefault(rr, []).append(cc)
                f_el = c_el.find(q("f"))
                if f_el is not None and f_el.get("t") == "shared" and f_el.text and f_el.get("si") is not None:
                    self.shared_masters[f_el.get("si")] = (rr, cc, f_el.text)
                if f_el is not None and f_el.get("t") in ("array", "dataTable") and f_el.get("ref"):
                    try:
                        self.array_areas.append(parse_range(f_el.get("ref")))
                    except WorkbookError:
                        pass
        self.row_order = sorted(self.rows)
        for cols_of_row in self.row_cols.values():
            cols_of_row.sort()
        # Column default styles, so a new cell in a styled column looks like its neighbours.
        self.col_styles: list[tuple[int, int, int]] = []
        cols = self.root.find(q("cols"))
        if cols is not None:
            for col in cols.iterchildren(q("col")):
                if col.get("style"):
                    where = f"sheet '{name}' ({part}): <col>"
                    self.col_styles.append(
                        (
                            whole_number(col.get("min"), 1, MAX_COL, where, "a column number"),
                            whole_number(col.get("max"), 1, MAX_COL, where, "a column number"),
                            whole_number(col.get("style"), 0, 1 << 31, where, "a style number"),
                        )
                    )

    # -- reading
    def formula_of(self, row: int, col: int, c_el) -> tuple[str | None, str | None]:
        f_el = c_el.find(q("f"))
        if f_el is None:
            return None, None
        kind = f_el.get("t")
        text = f_el.text
        if kind == "shared" and not text:
            master = self.shared_masters.get(f_el.get("si"))
            if master is None:
                return "=", kind
            mr, mc, mtext = master
            text = shift_formula(mtext, row - mr, col - mc)
        return "=" + (text or ""), kind if kind in ("shared", "array", "dataTable") else None

    # -- writing
    def default_style(self, row: int, col: int) -> str | None:
        """The style a cell that does not exist yet shows: its row's (when the row has one), else its column's."""
        row_el = self.rows.get(row)
        if row_el is not None and row_el.get("customFormat") in ("1", "true") and row_el.get("s"):
            return row_el.get("s")
        style = None
        for lo, hi, s in self.col_styles:
            if lo <= col <= hi:
                style = str(s)
        return style

    def ensure_cell(self, row: int, col: int) -> etree._Element:
        c_el = self.cells.get((row, col))
        if c_el is not None:
            return c_el
        row_el = self.rows.get(row)
        if row_el is None:
            row_el = etree.Element(q("row"), nsmap=None)
            row_el.set("r", str(row))
            pos = bisect.bisect_left(self.row_order, row)
            if pos < len(self.row_order):
                self.rows[self.row_order[pos]].addprevious(row_el)
            else:
                self.sheet_data.append(row_el)
            self.row_order.insert(pos, row)
            self.rows[row] = row_el
        c_el = etree.Element(q("c"))
        c_el.set("r", cell_ref(row, col))
        style = self.default_style(row, col)
        if style and style != "0":
            c_el.set("s", style)
        cols_of_row = self.row_cols.setdefault(row, [])
        pos = bisect.bisect_left(cols_of_row, col)
        if pos < len(cols_of_row):
            self.cells[(row, cols_of_row[pos])].addprevious(c_el)
        else:
            row_el.append(c_el)
        cols_of_row.insert(pos, col)
        self.cells[(row, col)] = c_el
        spans = row_el.get("spans")
        if spans and ":" in spans:
            lo, _, hi = spans.partition(":")
            if lo.isdigit() and hi.isdigit():
                row_el.set("spans", f"{min(int(lo), col)}:{max(int(hi), col)}")
        self._grow_dimension(row, col)
        self.changed = True
        return c_el

    def set_styles(self, styles: Mapping[tuple[int, int], int | None]) -> None:
        for (row, col), style in styles.items():
            c_el = self.ensure_cell(row, col)
            if style:
                c_el.set("s", str(style))
            else:
                c_el.attrib.pop("s", None)
            self.changed = True

    def _grow_dimension(self, row: int, col: int) -> None:
        dim = self.root.find(q("dimension"))
        if dim is None or not dim.get("ref"):
            return
        try:
            area = parse_range(dim.get("ref"))
        except WorkbookError:
            return
        new = Area(None, min(area.top, row), min(area.left, col), max(area.bottom, row), max(area.right, col))
        if new != Area(None, area.top, area.left, area.bottom, area.right):
            dim.set("ref", new.ref)

    def value_of(self, c_el, strings: Callable[[], list[str]]) -> CellValue:
        """A cell element's (cached) value; ``strings`` gives the shared-string table when one is needed."""
        kind = c_el.get("t", "n")
        if kind == "inlineStr":
            is_el = c_el.find(q("is"))
            if is_el is None:
                return ""
            return "".join(t.text or "" for t in is_el.iter(q("t")) if etree.QName(t.getparent()).localname != "rPh")
        v_el = c_el.find(q("v"))
        if v_el is None or v_el.text is None:
            return "" if kind == "str" and c_el.find(q("f")) is not None and v_el is not None else None
        text = v_el.text
        if kind == "s":
            try:
                return strings()[int(text)]
            except (ValueError, IndexError):
                raise WorkbookError(
                    f"shared string {text} does not exist", where=f"{self.name}!{c_el.get('r')}"
                ) from None
        if kind == "b":
            return text.strip() in ("1", "true")
        if kind == "e":
            return ErrorValue(text.strip())
        if kind in ("str", "d"):
            return text
        try:
            return float(text)
        except ValueError:
            raise WorkbookError(f"{quote(text)} is not a number", where=f"{self.name}!{c_el.get('r')}") from None

    def read_cell(self, row: int, col: int, strings: Callable[[], list[str]]) -> Cell:
        c_el = self.cells.get((row, col))
        r = cell_ref(row, col)
        if c_el is None:
            return Cell(None, None, r)
        formula, ftype = self.formula_of(row, col, c_el)
        s = c_el.get("s")
        return Cell(self.value_of(c_el, strings), formula, r, int(s) if s and s.isdigit() else None, ftype)

    # -- checked writes: every cell is checked before any is changed
    def write_values(self, values: Mapping[str, CellValue], *, overwrite_formulas: bool = False) -> int:
        sheet = self.name
        plan = []
        for ref, value in values.items():
            row, col = split_ref(ref)
            if isinstance(value, float) and not math.isfinite(value):
                raise WorkbookError(
                    f"refusing to write {value} (not a finite number)", where=sheet_cell(sheet, row, col)
                )
            if not isinstance(value, (str, bool, ErrorValue, type(None))):
                format_number(value)  # validates
            c_el = self.cells.get((row, col))
            if c_el is not None and c_el.find(q("f")) is not None:
                f_el = c_el.find(q("f"))
                if not overwrite_formulas:
                    formula, _ = self.formula_of(row, col, c_el)
                    raise WorkbookError(
                        f"{sheet_cell(sheet, row, col)} holds a formula ({formula}); xlcf will not overwrite it"
                    )
                if f_el.get("t") == "shared" and f_el.text:
                    raise WorkbookError(
                        f"{sheet_cell(sheet, row, col)} is the master of a shared formula; "
                        f"it cannot be overwritten without breaking the cells that share it"
                    )
                if f_el.get("t") == "array" and f_el.get("ref") and ":" in f_el.get("ref"):
                    raise WorkbookError(
                        f"{sheet_cell(sheet, row, col)} holds a multi-cell array formula; "
                        f"it cannot be overwritten cell by cell"
                    )
            for area in self.array_areas:
                if area.shape != (1, 1) and area.top <= row <= area.bottom and area.left <= col <= area.right:
                    raise WorkbookError(
                        f"{sheet_cell(sheet, row, col)} is part of the array formula {area.ref}; "
                        f"xlcf will not overwrite it"
                    )
            plan.append((row, col, value))
        for row, col, value in plan:
            c_el = self.ensure_cell(row, col)
            had_formula = c_el.find(q("f")) is not None
            set_value(c_el, value, keep_formula=False)
            self.formulas_removed |= had_formula
            self.changed = True
        return len(plan)

    def set_cached_values(self, values: Mapping[str, CellValue]) -> int:
        plan = []
        for ref, value in values.items():
            row, col = split_ref(ref)
            c_el = self.cells.get((row, col))
            # the other cells of a multi-cell array formula hold its results without a formula of their own
            in_array = any(
                a.shape != (1, 1) and a.top <= row <= a.bottom and a.left <= col <= a.right for a in self.array_areas
            )
            if (c_el is None or c_el.find(q("f")) is None) and not in_array:
                raise WorkbookError(f"{sheet_cell(self.name, row, col)} holds no formula; cannot set a cached value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                format_number(value)
            plan.append((row, col, value))
        for row, col, value in plan:
            set_value(self.ensure_cell(row, col), value, keep_formula=True)
            self.changed = True
        return len(plan)

    def clear(self) -> None:
        for row_el in list(self.sheet_data):
            self.sheet_data.remove(row_el)
        self.formulas_removed |= any(c.find(q("f")) is not None for c in self.cells.values())
        self.rows.clear()
        self.cells.clear()
        self.row_order.clear()
        self.row_cols.clear()
        self.shared_masters.clear()
        dim = self.root.find(q("dimension"))
        if dim is not None:
            dim.set("ref", "A1")
        self.changed = True

    def insert_drawing(self, rid: str) -> None:
        """Add ``<drawing r:id=...>`` after the page set-up elements, before legacyDrawing/tableParts/extLst."""
        d_el = etree.Element(q("drawing"))
        d_el.set(q("id", NS_REL), rid)
        after = [
            "legacyDrawing",
            "legacyDrawingHF",
            "drawingHF",
            "picture",
            "oleObjects",
            "controls",
            "webPublishItems",
            "tableParts",
            "extLst",
        ]
        for child in self.root:
            if isinstance(child.tag, str) and etree.QName(child).localname in after:
                child.addprevious(d_el)
                break
        else:
            self.root.append(d_el)
        self.changed = True

    def serialize(self) -> bytes:
        return self.declaration + etree.tostring(self.tree, encoding="UTF-8", xml_declaration=False)


def set_value(c_el, value: CellValue, *, keep_formula: bool) -> None:
    """Set a cell's value (or cached value when it keeps its formula). Element order in <c>: f, v, is, extLst."""
    c_el.attrib.pop("vm", None)  # value metadata (rich values) belongs to the old value
    if not keep_formula:
        c_el.attrib.pop("cm", None)  # cell metadata (dynamic-array formula) belongs to the formula
    for child in list(c_el):
        tag = etree.QName(child).localname
        if tag == "is" or (tag == "v") or (tag == "f" and not keep_formula):
            c_el.remove(child)
    f_el = c_el.find(q("f"))
    anchor_index = 0 if f_el is None else list(c_el).index(f_el) + 1

    def insert(el):
        c_el.insert(anchor_index, el)

    if value is None:
        c_el.attrib.pop("t", None)
        return
    if isinstance(value, bool):
        c_el.set("t", "b")
        v = etree.Element(q("v"))
        v.text = "1" if value else "0"
        insert(v)
    elif isinstance(value, ErrorValue):
        c_el.set("t", "e")
        v = etree.Element(q("v"))
        v.text = value.code
        insert(v)
    elif isinstance(value, str):
        if keep_formula:
            c_el.set("t", "str")
            v = etree.Element(q("v"))
            v.text = value
            insert(v)
        else:
            c_el.set("t", "inlineStr")
            is_el = etree.Element(q("is"))
            t_el = etree.SubElement(is_el, q("t"))
            t_el.text = value
            if value != value.strip() or "\n" in value:
                t_el.set("{http://www.w3.org/XML/1998/namespace}space", "preserve")
            insert(is_el)
    else:
        c_el.attrib.pop("t", None)
        v = etree.Element(q("v"))
        v.text = format_number(value)
        insert(v)


def new_sheet_xml(column_widths: dict[str, float] | None = None) -> bytes:
    """An empty worksheet part set up to print landscape, one page wide; ``column_widths`` maps letters to widths."""
    cols = "".join(
        f'<col min="{col_index(c)}" max="{col_index(c)}" width="{w:g}" customWidth="1"/>'
        for c, w in sorted((column_widths or {}).items(), key=lambda cw: col_index(cw[0]))
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_REL}"><sheetPr><pageSetUpPr fitToPage="1"/></sheetPr>'
        f'<dimension ref="A1"/>'
        f'<sheetViews><sheetView workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/>'
        + (f"<cols>{cols}</cols>" if cols else "")
        + '<sheetData/><pageMargins left="0.3" right="0.3" top="0.6" bottom="0.6" header="0.2" '
        'footer="0.2"/><pageSetup orientation="landscape" fitToWidth="1" fitToHeight="0"/></worksheet>'
    ).encode()
