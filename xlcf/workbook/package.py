"""Zip-level editor for .xlsx/.xlsm packages that loses nothing.

Why not openpyxl: saving through openpyxl drops charts, images, pivot tables, form controls and VBA it does not
model (and some pivot caches do not even load). Here a workbook is a zip of XML parts: we parse only the parts we
edit (a worksheet, ``xl/workbook.xml``) with lxml — which keeps namespace prefixes, ``mc:Ignorable`` and unknown
extension elements intact — and copy every other member's stored record (compressed bytes, name, timestamp) as it
is, in the original order.

Typical use::

    pkg = Package.open("book.xlsx")
    names = pkg.defined_names("dotprod")            # {"ratings": "dotprod!$H$2:$V$16", ...}
    block = pkg.read_range("dotprod", "H2:V16")     # list of rows of Cell(value, formula)
    pkg.write_values("dotprod", {"B25": 0.31})      # keeps the cell's style; refuses to overwrite a formula
    pkg.set_cached_values("dotprod", {"W41": 0.39}) # cached <v> of a formula cell, formula kept
    pkg.save(backup=True)                           # atomic; flags a full recalculation on load

API (stable):
    Package.open(path) -> Package            WorkbookError: missing, not a zip, encrypted OLE/.xls, truncated
    pkg.sheet_names / pkg.has_sheet(name) / pkg.sheet_part(name)
    pkg.names() -> [DefinedName(name, value, sheet|None, hidden)]     every defined name, hidden included
    pkg.defined_names(sheet=None) -> {name: value}                      global (+ that sheet's scoped names)
    pkg.name_areas(sheet, name) -> [Area] | None                        a name's ranges, parsed
    pkg.read_cell(sheet, "H2") -> Cell(value, formula, ref, style, formula_type)
    pkg.read_range(sheet, "H2:V16") -> [[Cell]] ; pkg.read_values(sheet, ref) -> [[value]]
    pkg.used_cells(sheet) -> {ref: Cell}
    pkg.write_values(sheet, {ref: value}, overwrite_formulas=False) -> n   (value: float|int|str|bool|ErrorValue|None)
    pkg.write_block(sheet, "A1", rows)       -> n
    pkg.set_cached_values(sheet, {ref: value}) -> n                     formula kept
    pkg.set_defined_name(name, value, sheet=None, hidden=False)
    pkg.add_sheet(name) -> part ; pkg.clear_sheet(name)
    pkg.chart_parts(sheet) -> [part] ; pkg.add_chart(sheet, chart_xml, anchor=(c1, r1, c2, r2), replace=None)
    line_chart_xml(sheet, rows, title=..., x_title=..., y_title=...) -> bytes   (native line chart via XlsxWriter)
    pkg.read_member(name) / pkg.replace_member(name, data) / pkg.remove_member(name) / pkg.member_names
    pkg.drop_calc_chain()                    after replacing a sheet part raw (formula cells moved)
    pkg.check_writable()                     WorkbookError: read-only, ~$BOOK.xlsx lock ("close it in Excel first")
    pkg.save(path=None, backup=False)        atomic; sets fullCalcOnLoad when a sheet changed; backup -> BOOK.xlsx.bak
    pkg.to_bytes()                           the package as save() would write it
    helpers: shift_formula; the A1 helpers of xlcf.workbook.refs (parse_range, Area, split_ref, cell_ref,
             col_letter, col_index, split_areas, quote_sheet) are re-exported

Strings are written as inline strings (``t="inlineStr"``) rather than appended to ``sharedStrings.xml``: that part
then streams through unchanged, no other sheet's indices can be disturbed, and Excel and LibreOffice both read
inline strings (Excel converts them to shared strings on its next save).
"""

from __future__ import annotations

import bisect
import io
import math
import os
import posixpath
import re
import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from lxml import etree

from xlcf.errors import WorkbookError
from xlcf.fileio import atomic_output
from xlcf.workbook.refs import (
    MAX_COL,
    MAX_ROW,
    Area,
    cell_ref,
    col_index,
    col_letter,
    parse_range,
    quote_sheet,
    sheet_cell,
    split_areas,
    split_ref,
)

# ----------------------------------------------------------------------------------------------------------------
# Namespaces and content types
NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
NS_CT = "http://schemas.openxmlformats.org/package/2006/content-types"
NS_DRAW = "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing"
NS_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
NS_C = "http://schemas.openxmlformats.org/drawingml/2006/chart"

REL_OFFICE_DOCUMENT = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
REL_WORKSHEET = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"
REL_SHARED_STRINGS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"
REL_CALC_CHAIN = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/calcChain"
REL_DRAWING = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/drawing"
REL_CHART = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/chart"

CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_DRAWING = "application/vnd.openxmlformats-officedocument.drawing+xml"
CT_CHART = "application/vnd.openxmlformats-officedocument.drawingml.chart+xml"

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
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


def _q(tag: str, ns: str = NS_MAIN) -> str:
    return f"{{{ns}}}{tag}"


# ----------------------------------------------------------------------------------------------------------------
# Cell values


@dataclass(frozen=True)
class ErrorValue:
    """A spreadsheet error value such as ``#N/A`` or ``#DIV/0!`` (distinct from a string)."""

    code: str

    def __str__(self) -> str:
        return self.code


CellValue = Union[float, str, bool, None, ErrorValue]


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


# ----------------------------------------------------------------------------------------------------------------
# A1 references live in xlcf.workbook.refs (some are re-exported here for existing callers).


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


# ----------------------------------------------------------------------------------------------------------------
# Parts of the package


def _parse_xml(data: bytes, name: str) -> etree._ElementTree:
    parser = etree.XMLParser(remove_blank_text=False, resolve_entities=False, huge_tree=True)
    try:
        return etree.ElementTree(etree.fromstring(data, parser))
    except etree.XMLSyntaxError as err:
        raise WorkbookError(f"part {name} of the workbook is not valid XML ({err})") from None


_DEFAULT_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def _declaration(original: bytes | None) -> bytes:
    """The original part's XML declaration, byte for byte (Excel writes double quotes and CRLF; lxml would not)."""
    m = re.match(rb"\s*<\?xml[^>]*\?>\s*", original or b"")
    return m.group(0) if m else _DEFAULT_DECLARATION


def _serialize(tree: etree._ElementTree, original: bytes | None = None) -> bytes:
    # tostring(tree) keeps processing instructions/comments around the root; UTF-8 without its own declaration.
    return _declaration(original) + etree.tostring(tree, encoding="UTF-8", xml_declaration=False)


def _rels_name(part: str) -> str:
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def _resolve_target(source_part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source_part), target))


def _relative_target(source_part: str, target_part: str) -> str:
    return posixpath.relpath(target_part, posixpath.dirname(source_part) or ".")


@dataclass
class DefinedName:
    name: str
    value: str
    sheet: str | None  # None: workbook scope
    hidden: bool = False


class _Sheet:
    """One parsed worksheet: index of rows and cells over the lxml tree (edits happen on the tree)."""

    def __init__(self, name: str, part: str, tree: etree._ElementTree, original: bytes):
        self.name, self.part, self.tree = name, part, tree
        self.declaration = _declaration(original)
        self.root = tree.getroot()
        self.sheet_data = self.root.find(_q("sheetData"))
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
        for row_el in self.sheet_data.iterchildren(_q("row")):
            r = int(row_el.get("r")) if row_el.get("r") else last_row + 1
            last_row = r
            self.rows[r] = row_el
            last_col = 0
            for c_el in row_el.iterchildren(_q("c")):
                ref = c_el.get("r")
                if ref:
                    rr, cc = split_ref(ref)
                else:
                    rr, cc = r, last_col + 1
                last_col = cc
                self.cells[(rr, cc)] = c_el
                self.row_cols.setdefault(rr, []).append(cc)
                f_el = c_el.find(_q("f"))
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
        cols = self.root.find(_q("cols"))
        if cols is not None:
            for col in cols.iterchildren(_q("col")):
                if col.get("style"):
                    self.col_styles.append((int(col.get("min")), int(col.get("max")), int(col.get("style"))))

    # -- reading
    def formula_of(self, row: int, col: int, c_el) -> tuple[str | None, str | None]:
        f_el = c_el.find(_q("f"))
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
    def ensure_cell(self, row: int, col: int) -> etree._Element:
        c_el = self.cells.get((row, col))
        if c_el is not None:
            return c_el
        row_el = self.rows.get(row)
        if row_el is None:
            row_el = etree.Element(_q("row"), nsmap=None)
            row_el.set("r", str(row))
            pos = bisect.bisect_left(self.row_order, row)
            if pos < len(self.row_order):
                self.rows[self.row_order[pos]].addprevious(row_el)
            else:
                self.sheet_data.append(row_el)
            self.row_order.insert(pos, row)
            self.rows[row] = row_el
        c_el = etree.Element(_q("c"))
        c_el.set("r", cell_ref(row, col))
        style = None
        if row_el.get("customFormat") in ("1", "true") and row_el.get("s"):
            style = row_el.get("s")
        else:
            for lo, hi, s in self.col_styles:
                if lo <= col <= hi:
                    style = str(s)
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

    def _grow_dimension(self, row: int, col: int) -> None:
        dim = self.root.find(_q("dimension"))
        if dim is None or not dim.get("ref"):
            return
        try:
            area = parse_range(dim.get("ref"))
        except WorkbookError:
            return
        new = Area(None, min(area.top, row), min(area.left, col), max(area.bottom, row), max(area.right, col))
        if new != Area(None, area.top, area.left, area.bottom, area.right):
            dim.set("ref", new.ref)

    def serialize(self) -> bytes:
        return self.declaration + etree.tostring(self.tree, encoding="UTF-8", xml_declaration=False)


def _set_value(c_el, value: CellValue, *, keep_formula: bool) -> None:
    """Set a cell's value (or cached value when it keeps its formula). Element order in <c>: f, v, is, extLst."""
    c_el.attrib.pop("vm", None)  # value metadata (rich values) belongs to the old value
    if not keep_formula:
        c_el.attrib.pop("cm", None)  # cell metadata (dynamic-array formula) belongs to the formula
    for child in list(c_el):
        tag = etree.QName(child).localname
        if tag == "is" or (tag == "v") or (tag == "f" and not keep_formula):
            c_el.remove(child)
    f_el = c_el.find(_q("f"))
    anchor_index = 0 if f_el is None else list(c_el).index(f_el) + 1

    def insert(el):
        c_el.insert(anchor_index, el)

    if value is None:
        c_el.attrib.pop("t", None)
        return
    if isinstance(value, bool):
        c_el.set("t", "b")
        v = etree.Element(_q("v"))
        v.text = "1" if value else "0"
        insert(v)
    elif isinstance(value, ErrorValue):
        c_el.set("t", "e")
        v = etree.Element(_q("v"))
        v.text = value.code
        insert(v)
    elif isinstance(value, str):
        if keep_formula:
            c_el.set("t", "str")
            v = etree.Element(_q("v"))
            v.text = value
            insert(v)
        else:
            c_el.set("t", "inlineStr")
            is_el = etree.Element(_q("is"))
            t_el = etree.SubElement(is_el, _q("t"))
            t_el.text = value
            if value != value.strip() or "\n" in value:
                t_el.set("{http://www.w3.org/XML/1998/namespace}space", "preserve")
            insert(is_el)
    else:
        c_el.attrib.pop("t", None)
        v = etree.Element(_q("v"))
        v.text = _format_number(value)
        insert(v)


def _format_number(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkbookError(f"cannot write {value!r} to a cell (expected a number, text, a boolean or None)") from None
    if not math.isfinite(number):
        raise WorkbookError(f"refusing to write {number} to a cell (only finite numbers are written)")
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


# ----------------------------------------------------------------------------------------------------------------
# The package


class Package:
    """An open .xlsx/.xlsm package. Edits are held in memory until :meth:`save`."""

    def __init__(self, path: Path, data: bytes):
        self.path = path
        self._original_bytes = data
        self._stat = os.stat(path)
        self._infos: list[zipfile.ZipInfo] = []
        self._content: dict[str, bytes] = {}
        self._comment = b""
        self._open_zip(data)
        self._replaced: dict[str, bytes] = {}
        self._added: list[str] = []
        self._removed: set[str] = set()
        self._sheets: dict[str, _Sheet] = {}
        self._workbook_changed = False
        self.backup_path: Path | None = None  # set by save(backup=True)
        self._load_workbook()

    # -- opening -----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> Package:
        """Open a workbook package. WorkbookError (naming the file) when it is missing, not a zip, an encrypted
        or legacy OLE file, truncated, or a zip that is not an Excel workbook."""
        p = Path(path)
        if not p.exists():
            raise WorkbookError(f"{p}: no such file")
        if p.is_dir():
            raise WorkbookError(f"{p}: is a folder, not a workbook")
        try:
            data = p.read_bytes()
        except PermissionError:
            raise WorkbookError(f"{p}: cannot read the file (permission denied)") from None
        if data[:8] == OLE_MAGIC:
            raise WorkbookError(
                f"{p}: is an OLE container, i.e. a password-protected or legacy .xls workbook "
                f"(Excel encrypts .xlsx files inside one); remove the password or save as .xlsx "
                f"in Excel first"
            )
        if not data:
            raise WorkbookError(f"{p}: is empty, not a workbook")
        return cls(p, data)

    def _open_zip(self, data: bytes) -> None:
        p = self.path
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            if data[:4] == b"PK\x03\x04":
                raise WorkbookError(
                    f"{p}: the zip is truncated or damaged (no central directory); restore it from a backup"
                ) from None
            raise WorkbookError(f"{p}: is not a workbook (.xlsx/.xlsm are zip packages; this is not a zip)") from None
        with zf:
            self._comment = zf.comment
            for info in zf.infolist():
                try:
                    self._content[info.filename] = zf.read(info)
                except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
                    raise WorkbookError(f"{p}: member {info.filename} is truncated or damaged ({err})") from None
                except Exception as err:  # zlib.error and friends
                    raise WorkbookError(f"{p}: member {info.filename} cannot be read ({err})") from None
                self._infos.append(info)
        self._raw = _raw_records(data, self._infos)
        self._info_by_name = {i.filename: i for i in self._infos}
        if "[Content_Types].xml" not in self._content:
            raise WorkbookError(f"{p}: is a zip but not an Office package (no [Content_Types].xml)")

    def _load_workbook(self) -> None:
        workbook_part = None
        if "_rels/.rels" in self._content:
            for rel in _parse_xml(self._content["_rels/.rels"], "_rels/.rels").getroot():
                if rel.get("Type") == REL_OFFICE_DOCUMENT:
                    workbook_part = _resolve_target("", rel.get("Target"))
        if workbook_part is None and "xl/workbook.xml" in self._content:
            workbook_part = "xl/workbook.xml"
        if workbook_part is None or workbook_part not in self._content:
            raise WorkbookError(f"{self.path}: is a zip but not an Excel workbook (no workbook part)")
        root = _parse_xml(self._content[workbook_part], workbook_part).getroot()
        if etree.QName(root).localname != "workbook":
            raise WorkbookError(f"{self.path}: is an Office package but not an Excel workbook")
        if etree.QName(root).namespace != NS_MAIN:
            raise WorkbookError(
                f"{self.path}: is a Strict Open XML workbook ({etree.QName(root).namespace}); save it "
                f"as 'Excel Workbook (.xlsx)' (transitional), which xlcf reads and writes"
            )
        self.workbook_part = workbook_part
        self._workbook_tree = root.getroottree()
        self._workbook_rels_part = _rels_name(workbook_part)
        self._workbook_rels = self._read_rels(workbook_part)
        self._sheet_parts: dict[str, str] = {}
        self._sheet_order: list[str] = []
        sheets_el = root.find(_q("sheets"))
        for sheet_el in sheets_el if sheets_el is not None else []:
            name = sheet_el.get("name")
            rid = sheet_el.get(_q("id", NS_REL))
            rel = self._workbook_rels.get(rid)
            self._sheet_order.append(name)
            if rel is not None and rel[0] == REL_WORKSHEET:
                self._sheet_parts[name] = rel[1]
        self._shared_strings: list[str] | None = None

    def _read_rels(self, part: str) -> dict[str, tuple[str, str]]:
        """rId -> (type, target part) of a part's relationships (external targets kept as given)."""
        rels_part = _rels_name(part)
        out = {}
        if rels_part in self._members_now():
            for rel in _parse_xml(self.read_member(rels_part), rels_part).getroot():
                target = rel.get("Target")
                if rel.get("TargetMode") != "External":
                    target = _resolve_target(part, target)
                out[rel.get("Id")] = (rel.get("Type"), target)
        return out

    # -- members -----------------------------------------------------------------------------------------------
    def _members_now(self) -> list[str]:
        names = [i.filename for i in self._infos if i.filename not in self._removed]
        return names + [n for n in self._added if n not in self._removed]

    @property
    def member_names(self) -> list[str]:
        """Zip member names in the order they will be saved."""
        return self._members_now()

    def read_member(self, name: str) -> bytes:
        """Current content of a zip member (edited sheets and workbook.xml are serialized first)."""
        for sheet in self._sheets.values():
            if sheet.part == name and sheet.changed:
                return sheet.serialize()
        if name == self.workbook_part and self._workbook_changed:
            return _serialize(self._workbook_tree, self._content[self.workbook_part])
        if name in self._removed:
            raise WorkbookError(f"{self.path}: member {name} was removed")
        if name in self._replaced:
            return self._replaced[name]
        if name in self._content:
            return self._content[name]
        raise WorkbookError(f"{self.path}: has no member {name}")

    def replace_member(self, name: str, data: bytes) -> None:
        """Replace (or add, appended at the end) a raw zip member. Parsed sheets/workbook.xml edited through this
        Package must not also be replaced raw."""
        if any(s.part == name for s in self._sheets.values()) or name == self.workbook_part:
            raise WorkbookError(f"{name} is edited through the Package API; do not replace it raw")
        self._replaced[name] = bytes(data)
        self._removed.discard(name)
        if name not in self._content and name not in self._added:
            self._added.append(name)

    def remove_member(self, name: str) -> None:
        self._removed.add(name)
        self._replaced.pop(name, None)

    # -- workbook structure ------------------------------------------------------------------------------------
    @property
    def sheet_names(self) -> list[str]:
        """Names of the worksheets in workbook order (chart sheets and dialog sheets are not included)."""
        return [n for n in self._sheet_order if n in self._sheet_parts]

    def sheet_part(self, sheet: str) -> str:
        part = self._sheet_parts.get(sheet)
        if part is None:
            raise WorkbookError(f"{self.path.name} has no sheet '{sheet}' (sheets: {', '.join(self.sheet_names)})")
        return part

    def has_sheet(self, sheet: str) -> bool:
        return sheet in self._sheet_parts

    def names(self) -> list[DefinedName]:
        """Every defined name of the workbook (hidden ones included), with its scope."""
        out = []
        dn = self._workbook_tree.getroot().find(_q("definedNames"))
        if dn is None:
            return out
        for el in dn.iterchildren(_q("definedName")):
            scope = None
            if el.get("localSheetId") is not None:
                idx = int(el.get("localSheetId"))
                scope = self._sheet_order[idx] if 0 <= idx < len(self._sheet_order) else None
                if scope is None:
                    continue
            out.append(DefinedName(el.get("name"), el.text or "", scope, el.get("hidden") in ("1", "true")))
        return out

    def defined_names(self, sheet: str | None = None) -> dict[str, str]:
        """name -> value. With ``sheet``: global names overlaid by that sheet's sheet-scoped names (as Excel
        resolves a name used on that sheet); without: global names only. Names are returned as written
        (``_xlnm.`` built-ins included)."""
        if sheet is not None:
            self.sheet_part(sheet)
        out: dict[str, str] = {}
        all_names = self.names()
        for n in all_names:
            if n.sheet is None:
                out[n.name] = n.value
        if sheet is not None:
            for n in all_names:
                if n.sheet == sheet:
                    out[n.name] = n.value
        return out

    def name_areas(self, sheet: str | None, name: str) -> list[Area] | None:
        """The ranges a defined name refers to (case-insensitive lookup, sheet scope first), or None when the name
        is absent or is not a plain list of ranges (a formula or constant). Unqualified ranges get ``sheet``."""
        names = {k.lower(): v for k, v in self.defined_names(sheet).items()}
        value = names.get(name.lower())
        if value is None:
            return None
        try:
            return [parse_range(part, sheet) for part in split_areas(value)]
        except WorkbookError:
            return None

    def set_defined_name(self, name: str, value: str, *, sheet: str | None = None, hidden: bool = False) -> None:
        """Add or replace a defined name (sheet-scoped when ``sheet`` is given)."""
        root = self._workbook_tree.getroot()
        dn = root.find(_q("definedNames"))
        if dn is None:
            dn = etree.Element(_q("definedNames"))
            self._insert_workbook_child(dn, "definedNames")
        local = None if sheet is None else str(self._sheet_order.index(sheet))
        for el in dn.iterchildren(_q("definedName")):
            if el.get("name").lower() == name.lower() and el.get("localSheetId") == local:
                el.text = value
                break
        else:
            el = etree.SubElement(dn, _q("definedName"))
            el.set("name", name)
            if local is not None:
                el.set("localSheetId", local)
            if hidden:
                el.set("hidden", "1")
            el.text = value
        self._workbook_changed = True

    _WORKBOOK_ORDER = [
        "fileVersion",
        "fileSharing",
        "workbookPr",
        "workbookProtection",
        "bookViews",
        "sheets",
        "functionGroups",
        "externalReferences",
        "definedNames",
        "calcPr",
        "oleSize",
        "customWorkbookViews",
        "pivotCaches",
        "smartTagPr",
        "smartTagTypes",
        "webPublishing",
        "fileRecoveryPr",
        "webPublishObjects",
        "extLst",
    ]

    def _insert_workbook_child(self, el, localname: str) -> None:
        root = self._workbook_tree.getroot()
        rank = self._WORKBOOK_ORDER.index(localname)
        for child in root:
            if not isinstance(child.tag, str):
                continue
            name = etree.QName(child).localname
            if name in self._WORKBOOK_ORDER and self._WORKBOOK_ORDER.index(name) > rank:
                child.addprevious(el)
                return
        root.append(el)

    def mark_full_calc_on_load(self) -> None:
        """Set ``<calcPr fullCalcOnLoad="1"/>`` (creating calcPr if missing, other attributes kept)."""
        root = self._workbook_tree.getroot()
        calc = root.find(_q("calcPr"))
        if calc is None:
            calc = etree.Element(_q("calcPr"))
            self._insert_workbook_child(calc, "calcPr")
        if calc.get("fullCalcOnLoad") not in ("1", "true"):
            calc.set("fullCalcOnLoad", "1")
            self._workbook_changed = True

    # -- cells -------------------------------------------------------------------------------------------------
    def _sheet(self, sheet: str) -> _Sheet:
        parsed = self._sheets.get(sheet)
        if parsed is None:
            part = self.sheet_part(sheet)
            original = self.read_member(part)
            parsed = _Sheet(sheet, part, _parse_xml(original, part), original)
            self._sheets[sheet] = parsed
        return parsed

    def _strings(self) -> list[str]:
        if self._shared_strings is None:
            self._shared_strings = []
            part = next((t for (typ, t) in self._workbook_rels.values() if typ == REL_SHARED_STRINGS), None)
            if part and part in self._content:
                root = _parse_xml(self._content[part], part).getroot()
                for si in root.iterchildren(_q("si")):
                    # rich text: concatenate the runs; skip phonetic (rPh) runs
                    texts = [t.text or "" for t in si.iter(_q("t")) if etree.QName(t.getparent()).localname != "rPh"]
                    self._shared_strings.append("".join(texts))
        return self._shared_strings

    def _cell_value(self, sheet: _Sheet, c_el) -> CellValue:
        kind = c_el.get("t", "n")
        if kind == "inlineStr":
            is_el = c_el.find(_q("is"))
            if is_el is None:
                return ""
            return "".join(t.text or "" for t in is_el.iter(_q("t")) if etree.QName(t.getparent()).localname != "rPh")
        v_el = c_el.find(_q("v"))
        if v_el is None or v_el.text is None:
            return "" if kind == "str" and c_el.find(_q("f")) is not None and v_el is not None else None
        text = v_el.text
        if kind == "s":
            strings = self._strings()
            try:
                return strings[int(text)]
            except (ValueError, IndexError):
                raise WorkbookError(f"{sheet.name}!{c_el.get('r')}: shared string {text} does not exist") from None
        if kind == "b":
            return text.strip() in ("1", "true")
        if kind == "e":
            return ErrorValue(text.strip())
        if kind in ("str", "d"):
            return text
        try:
            return float(text)
        except ValueError:
            raise WorkbookError(f"{sheet.name}!{c_el.get('r')}: '{text}' is not a number") from None

    def read_cell(self, sheet: str, ref: str) -> Cell:
        row, col = split_ref(ref)
        parsed = self._sheet(sheet)
        c_el = parsed.cells.get((row, col))
        r = cell_ref(row, col)
        if c_el is None:
            return Cell(None, None, r)
        formula, ftype = parsed.formula_of(row, col, c_el)
        s = c_el.get("s")
        return Cell(self._cell_value(parsed, c_el), formula, r, int(s) if s and s.isdigit() else None, ftype)

    def read_range(self, sheet: str, ref: str | Area) -> list[list[Cell]]:
        """Rows of Cells of a rectangular range (empty cells are ``Cell(None)``)."""
        area = ref if isinstance(ref, Area) else parse_range(ref, sheet)
        return [
            [self.read_cell(sheet, cell_ref(r, c)) for c in range(area.left, area.right + 1)]
            for r in range(area.top, area.bottom + 1)
        ]

    def read_values(self, sheet: str, ref: str | Area) -> list[list[CellValue]]:
        return [[c.value for c in row] for row in self.read_range(sheet, ref)]

    def used_cells(self, sheet: str) -> dict[str, Cell]:
        """Every non-empty cell of a sheet: ref -> Cell."""
        parsed = self._sheet(sheet)
        return {cell_ref(r, c): self.read_cell(sheet, cell_ref(r, c)) for (r, c) in sorted(parsed.cells)}

    def write_values(self, sheet: str, values: Mapping[str, CellValue], *, overwrite_formulas: bool = False) -> int:
        """Write values (finite numbers, text, booleans, ErrorValue, None to clear) into cells, creating cells and
        rows as needed and keeping each cell's style. A cell holding a formula is refused (WorkbookError naming
        sheet!cell) unless ``overwrite_formulas``. All cells are checked before any is changed. Returns the count."""
        parsed = self._sheet(sheet)
        plan = []
        for ref, value in values.items():
            row, col = split_ref(ref)
            if isinstance(value, float) and not math.isfinite(value):
                raise WorkbookError(f"{sheet_cell(sheet, row, col)}: refusing to write {value} (not a finite number)")
            if not isinstance(value, (str, bool, ErrorValue, type(None))):
                _format_number(value)  # validates
            c_el = parsed.cells.get((row, col))
            if c_el is not None and c_el.find(_q("f")) is not None:
                f_el = c_el.find(_q("f"))
                if not overwrite_formulas:
                    formula, _ = parsed.formula_of(row, col, c_el)
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
            for area in parsed.array_areas:
                if area.shape != (1, 1) and area.top <= row <= area.bottom and area.left <= col <= area.right:
                    raise WorkbookError(
                        f"{sheet_cell(sheet, row, col)} is part of the array formula {area.ref}; "
                        f"xlcf will not overwrite it"
                    )
            plan.append((row, col, value))
        for row, col, value in plan:
            c_el = parsed.ensure_cell(row, col)
            had_formula = c_el.find(_q("f")) is not None
            _set_value(c_el, value, keep_formula=False)
            parsed.formulas_removed |= had_formula
            parsed.changed = True
        return len(plan)

    def write_block(self, sheet: str, top_left: str, rows: Iterable[Iterable[CellValue]], **kw) -> int:
        """Write a 2-D block of values with its top-left corner at ``top_left``."""
        r0, c0 = split_ref(top_left)
        values = {}
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                values[cell_ref(r0 + i, c0 + j)] = value
        return self.write_values(sheet, values, **kw)

    def set_cached_values(self, sheet: str, values: Mapping[str, CellValue]) -> int:
        """Update the cached value (``<v>``) of formula cells, keeping their formulas. A cell without a formula is an
        error (WorkbookError naming sheet!cell); NaN/inf are refused. Returns the count."""
        parsed = self._sheet(sheet)
        plan = []
        for ref, value in values.items():
            row, col = split_ref(ref)
            c_el = parsed.cells.get((row, col))
            if c_el is None or c_el.find(_q("f")) is None:
                raise WorkbookError(f"{sheet_cell(sheet, row, col)} holds no formula; cannot set a cached value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                _format_number(value)
            plan.append((c_el, value))
        for c_el, value in plan:
            _set_value(c_el, value, keep_formula=True)
            parsed.changed = True
        return len(plan)

    def clear_sheet(self, sheet: str) -> None:
        """Remove every cell of a sheet (rows included). For sheets that xlcf owns entirely (``fit_log``)."""
        parsed = self._sheet(sheet)
        for row_el in list(parsed.sheet_data):
            parsed.sheet_data.remove(row_el)
        parsed.formulas_removed |= any(c.find(_q("f")) is not None for c in parsed.cells.values())
        parsed.rows.clear()
        parsed.cells.clear()
        parsed.row_order.clear()
        parsed.row_cols.clear()
        parsed.shared_masters.clear()
        dim = parsed.root.find(_q("dimension"))
        if dim is not None:
            dim.set("ref", "A1")
        parsed.changed = True

    @property
    def changed_sheets(self) -> list[str]:
        return [name for name, s in self._sheets.items() if s.changed]

    # -- new sheets and charts ---------------------------------------------------------------------------------
    def _content_types(self) -> etree._ElementTree:
        return _parse_xml(self.read_member("[Content_Types].xml"), "[Content_Types].xml")

    def _put_xml(self, name: str, tree: etree._ElementTree) -> None:
        original = self.read_member(name) if name in self._members_now() else None
        self.replace_member(name, _serialize(tree, original))

    def _add_override(self, ct_tree, part: str, content_type: str) -> None:
        root = ct_tree.getroot()
        for el in root.iterchildren(_q("Override", NS_CT)):
            if el.get("PartName") == "/" + part:
                el.set("ContentType", content_type)
                return
        el = etree.SubElement(root, _q("Override", NS_CT))
        el.set("PartName", "/" + part)
        el.set("ContentType", content_type)

    def _free_part(self, pattern: str) -> str:
        existing = set(self._members_now())
        i = 1
        while pattern.format(i) in existing:
            i += 1
        return pattern.format(i)

    def _add_relationship(self, source_part: str, rel_type: str, target_part: str) -> str:
        rels_part = _rels_name(source_part)
        if rels_part in self._members_now():
            tree = _parse_xml(self.read_member(rels_part), rels_part)
        else:
            tree = etree.ElementTree(etree.Element(_q("Relationships", NS_PKG_REL), nsmap={None: NS_PKG_REL}))
        root = tree.getroot()
        ids = {el.get("Id") for el in root}
        n = 1
        while f"rId{n}" in ids:
            n += 1
        rid = f"rId{n}"
        el = etree.SubElement(root, _q("Relationship", NS_PKG_REL))
        el.set("Id", rid)
        el.set("Type", rel_type)
        el.set("Target", _relative_target(source_part, target_part))
        self._put_xml(rels_part, tree)
        return rid

    def add_sheet(self, name: str) -> str:
        """Append a new, empty worksheet named ``name`` (at the end, so sheet-scoped names keep their indices).
        Returns its part name. WorkbookError if the name exists or is not a valid sheet name."""
        if name.lower() in (n.lower() for n in self._sheet_order):
            raise WorkbookError(f"{self.path.name} already has a sheet named '{name}'")
        if not name or len(name) > 31 or re.search(r"[\[\]:*?/\\]", name) or name.startswith("'"):
            raise WorkbookError(f"'{name}' is not a valid sheet name (1-31 characters, none of []:*?/\\)")
        part = self._free_part("xl/worksheets/sheet{}.xml")
        xml = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_REL}"><dimension ref="A1"/>'
            f'<sheetViews><sheetView workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/>'
            f'<sheetData/><pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" '
            f'footer="0.3"/></worksheet>'
        ).encode()
        self.replace_member(part, xml)
        rid = self._add_relationship(self.workbook_part, REL_WORKSHEET, part)
        self._workbook_rels = self._read_rels(self.workbook_part)
        ct = self._content_types()
        self._add_override(ct, part, CT_WORKSHEET)
        self._put_xml("[Content_Types].xml", ct)
        root = self._workbook_tree.getroot()
        sheets_el = root.find(_q("sheets"))
        ids = [int(el.get("sheetId")) for el in sheets_el.iterchildren(_q("sheet")) if el.get("sheetId", "").isdigit()]
        el = etree.SubElement(sheets_el, _q("sheet"))
        el.set("name", name)
        el.set("sheetId", str(max(ids, default=0) + 1))
        el.set(_q("id", NS_REL), rid)
        self._sheet_order.append(name)
        self._sheet_parts[name] = part
        self._workbook_changed = True
        return part

    def chart_parts(self, sheet: str) -> list[str]:
        """Chart parts drawn on a sheet (through its drawing), in drawing order."""
        part = self.sheet_part(sheet)
        charts = []
        for typ, target in self._read_rels(part).values():
            if typ == REL_DRAWING and target in self._members_now():
                for ctyp, ctarget in self._read_rels(target).values():
                    if ctyp == REL_CHART:
                        charts.append(ctarget)
        return charts

    def add_chart(
        self,
        sheet: str,
        chart_xml: bytes,
        *,
        anchor: tuple[int, int, int, int] = (4, 1, 12, 16),
        replace: str | None = None,
    ) -> str:
        """Put a chart (a complete ``c:chartSpace`` part, e.g. produced by XlsxWriter in a scratch workbook) on a
        sheet. ``anchor`` = (first col, first row, last col, last row), 0-based as in DrawingML. With ``replace`` =
        an existing chart part of this sheet, that part's XML is replaced instead. Returns the chart part name."""
        if replace is not None:
            if replace not in self.chart_parts(sheet):
                raise WorkbookError(f"{replace} is not a chart on sheet '{sheet}'")
            self.replace_member(replace, chart_xml)
            return replace
        sheet_part = self.sheet_part(sheet)
        chart_part = self._free_part("xl/charts/chart{}.xml")
        self.replace_member(chart_part, chart_xml)
        ct = self._content_types()
        self._add_override(ct, chart_part, CT_CHART)
        drawing_part = next((t for typ, t in self._read_rels(sheet_part).values() if typ == REL_DRAWING), None)
        if drawing_part is None:
            drawing_part = self._free_part("xl/drawings/drawing{}.xml")
            drawing = etree.Element(_q("wsDr", NS_DRAW), nsmap={"xdr": NS_DRAW, "a": NS_A})
            self.replace_member(drawing_part, _serialize(etree.ElementTree(drawing)))
            self._add_override(ct, drawing_part, CT_DRAWING)
            rid = self._add_relationship(sheet_part, REL_DRAWING, drawing_part)
            parsed = self._sheet(sheet)
            d_el = etree.Element(_q("drawing"))
            d_el.set(_q("id", NS_REL), rid)
            # <drawing> goes after the page set-up elements and before legacyDrawing/tableParts/extLst.
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
            for child in parsed.root:
                if isinstance(child.tag, str) and etree.QName(child).localname in after:
                    child.addprevious(d_el)
                    break
            else:
                parsed.root.append(d_el)
            parsed.changed = True
        self._put_xml("[Content_Types].xml", ct)
        chart_rid = self._add_relationship(drawing_part, REL_CHART, chart_part)
        tree = _parse_xml(self.read_member(drawing_part), drawing_part)
        root = tree.getroot()
        ids = [int(el.get("id")) for el in root.iter(_q("cNvPr", NS_DRAW)) if (el.get("id") or "").isdigit()]
        c1, r1, c2, r2 = anchor
        anchor_xml = f"""<xdr:twoCellAnchor xmlns:xdr="{NS_DRAW}" xmlns:a="{NS_A}" xmlns:c="{NS_C}" xmlns:r="{NS_REL}">
<xdr:from><xdr:col>{c1}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{r1}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:from>
<xdr:to><xdr:col>{c2}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{r2}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:to>
<xdr:graphicFrame macro=""><xdr:nvGraphicFramePr><xdr:cNvPr id="{max(ids, default=1) + 1}" name="Chart {len(ids) + 1}"/>
<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr><xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/></xdr:xfrm>
<a:graphic><a:graphicData uri="{NS_C}"><c:chart r:id="{chart_rid}"/></a:graphicData></a:graphic></xdr:graphicFrame>
<xdr:clientData/></xdr:twoCellAnchor>"""
        root.append(etree.fromstring(anchor_xml))
        self._put_xml(drawing_part, tree)
        return chart_part

    # -- saving ------------------------------------------------------------------------------------------------
    @property
    def modified(self) -> bool:
        return bool(self.changed_sheets or self._workbook_changed or self._replaced or self._removed)

    def check_writable(self, path: str | os.PathLike | None = None) -> None:
        """WorkbookError when the workbook cannot be replaced now: read-only file or folder, or open in Excel or
        LibreOffice (their lock files ``~$BOOK.xlsx`` / ``.~lock.BOOK.xlsx#`` beside it)."""
        target = Path(path) if path is not None else self.path
        folder = target.parent
        for lock in (folder / ("~$" + target.name), folder / (".~lock." + target.name + "#")):
            if lock.exists():
                raise WorkbookError(
                    f"{target}: is open in Excel or LibreOffice ({lock.name} exists); close it in Excel first"
                )
        if target.exists():
            mode = os.stat(target).st_mode
            if not os.access(target, os.W_OK) or not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
                raise WorkbookError(f"{target}: the file is read-only; make it writable (or close it in Excel first)")
        if not os.access(folder, os.W_OK):
            raise WorkbookError(
                f"{target}: its folder {folder} is not writable (xlcf writes a temporary file "
                f"beside the workbook and then replaces it)"
            )

    def to_bytes(self) -> bytes:
        """The package as it would be saved (calc flag and calcChain handled as in :meth:`save`)."""
        if self.changed_sheets:
            self.mark_full_calc_on_load()
            if any(s.formulas_removed for s in self._sheets.values()):
                self.drop_calc_chain()
        names = self._members_now()
        if self._raw is not None:
            raw = _write_raw_zip(
                [
                    (
                        n,
                        self._raw.get(n) if self._unchanged(n) else None,
                        None if self._unchanged(n) else self.read_member(n),
                        self._info_of(n),
                    )
                    for n in names
                ],
                self._comment,
            )
            if raw is not None:
                return raw
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", allowZip64=True) as out:
            out.comment = self._comment
            seen = set()
            for info in self._infos:
                name = info.filename
                if name in self._removed:
                    continue
                seen.add(name)
                out.writestr(_copy_info(info), self.read_member(name))
            for name in self._added:
                if name in self._removed or name in seen:
                    continue
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, self.read_member(name))
        return buf.getvalue()

    def _unchanged(self, name: str) -> bool:
        """True when a member's content is the original one (its compressed bytes can be copied as they are)."""
        if name not in self._content or name in self._replaced or name in self._removed:
            return False
        if name == self.workbook_part and self._workbook_changed:
            return False
        return not any(sh.part == name and sh.changed for sh in self._sheets.values())

    def _info_of(self, name: str) -> zipfile.ZipInfo | None:
        return self._info_by_name.get(name)

    def drop_calc_chain(self) -> None:
        """Remove the calculation chain (Excel rebuilds it); needed when formula cells were removed or moved,
        since Excel reports a damaged file when calcChain names a cell that no longer holds a formula. Saving
        does it by itself for sheets edited through this API; call it after replacing a sheet part raw
        (:meth:`replace_member`)."""
        chain = [(rid, t) for rid, (typ, t) in self._workbook_rels.items() if typ == REL_CALC_CHAIN]
        if not chain:
            return
        rels_tree = _parse_xml(self.read_member(self._workbook_rels_part), self._workbook_rels_part)
        for rid, target in chain:
            for el in list(rels_tree.getroot()):
                if el.get("Id") == rid:
                    rels_tree.getroot().remove(el)
            self.remove_member(target)
            ct = self._content_types()
            for el in list(ct.getroot()):
                if el.get("PartName") == "/" + target:
                    ct.getroot().remove(el)
            self._put_xml("[Content_Types].xml", ct)
            del self._workbook_rels[rid]
        self._put_xml(self._workbook_rels_part, rels_tree)

    def save(self, path: str | os.PathLike | None = None, *, backup: bool = False) -> Path:
        """Write the package atomically (:func:`xlcf.fileio.atomic_output`: temp file in the same folder, flush +
        fsync, ``os.replace``; the file keeps its mode). With
        ``backup``, the original file is first copied to ``BOOK.bak`` (e.g. ``b.xlsx.bak``). On any error the
        target is left as it was. Refuses when the file changed on disk since it was opened."""
        target = Path(path) if path is not None else self.path
        self.check_writable(target)
        if target.resolve() == self.path.resolve():
            now = os.stat(self.path)
            if (now.st_mtime_ns, now.st_size) != (self._stat.st_mtime_ns, self._stat.st_size):
                raise WorkbookError(
                    f"{self.path}: the file changed on disk since xlcf read it; nothing written, run the command again"
                )
        data = self.to_bytes()
        target = Path(os.path.realpath(target))  # through a symlink: replace the file, not the link
        with atomic_output(target) as tmp:  # an existing book keeps its mode; a new one gets 0o666 & ~umask
            tmp.write_bytes(data)
            if backup and target.exists():
                bak = target.with_name(target.name + ".bak")
                shutil.copy2(target, bak)
                self.backup_path = bak
        if target.resolve() == self.path.resolve():
            self._stat = os.stat(target)
        return target


def line_chart_xml(
    sheet: str,
    rows: list[list],
    *,
    top_left: str = "A1",
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    size: tuple[int, int] = (640, 320),
) -> bytes:
    """A native line chart part (``xl/charts/chartN.xml`` content) over a table on ``sheet`` whose header row is
    ``rows[0]``, first column the categories (x) and each further column one series. Built by XlsxWriter in a
    scratch workbook holding the same table, so the chart's cached values match; put it on a sheet with
    :meth:`Package.add_chart`."""
    import xlsxwriter  # only needed for charts

    r0, c0 = split_ref(top_left)
    r0, c0 = r0 - 1, c0 - 1
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "nan_inf_to_errors": True})
    ws = wb.add_worksheet(sheet)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            ws.write(r0 + i, c0 + j, value)
    chart = wb.add_chart({"type": "line"})
    last = r0 + len(rows) - 1
    for j in range(1, len(rows[0])):
        chart.add_series(
            {
                "name": [sheet, r0, c0 + j],
                "categories": [sheet, r0 + 1, c0, last, c0],
                "values": [sheet, r0 + 1, c0 + j, last, c0 + j],
                "marker": {"type": "none"},
            }
        )
    if title:
        chart.set_title({"name": title})
    if x_title:
        chart.set_x_axis({"name": x_title})
    if y_title:
        chart.set_y_axis({"name": y_title})
    chart.set_size({"width": size[0], "height": size[1]})
    ws.insert_chart(r0, c0 + len(rows[0]) + 1, chart)
    wb.close()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return zf.read("xl/charts/chart1.xml")


_LOCAL_SIG, _CENTRAL_SIG, _END_SIG, _DESCRIPTOR_SIG = 0x04034B50, 0x02014B50, 0x06054B50, 0x08074B50
_LIMIT32 = 0xFFFFFFFF


def _has_zip64_extra(extra: bytes) -> bool:
    i = 0
    while i + 4 <= len(extra):
        xid, size = struct.unpack("<HH", extra[i : i + 4])
        if xid == 1:
            return True
        i += 4 + size
    return False


def _raw_records(data: bytes, infos: list[zipfile.ZipInfo]) -> dict[str, bytes] | None:
    """Each member's complete local record (header, name, extra, compressed data, data descriptor) as stored, so
    unchanged members are copied without recompression. None when the archive uses anything this simple writer
    does not reproduce (zip64, encryption, duplicate names): saving then re-compresses with zipfile instead."""
    records: dict[str, bytes] = {}
    if len(infos) >= 0xFFFF or len(data) >= _LIMIT32:
        return None
    for info in infos:
        off = info.header_offset
        if info.filename in records or info.flag_bits & 0x1 or _has_zip64_extra(info.extra):
            return None
        if data[off : off + 4] != struct.pack("<I", _LOCAL_SIG):
            return None
        name_len, extra_len = struct.unpack("<HH", data[off + 26 : off + 30])
        if _has_zip64_extra(data[off + 30 + name_len : off + 30 + name_len + extra_len]):
            return None
        end = off + 30 + name_len + extra_len + info.compress_size
        if info.flag_bits & 0x8:  # data descriptor after the data, with or without its signature
            end += 16 if data[end : end + 4] == struct.pack("<I", _DESCRIPTOR_SIG) else 12
        if end > len(data):
            return None
        records[info.filename] = data[off:end]
    return records


def _dos_time(date_time) -> tuple[int, int]:
    y, mo, d, h, mi, sec = date_time
    return (h << 11) | (mi << 5) | (sec // 2), (max(y, 1980) - 1980) << 9 | (mo << 5) | d


def _write_raw_zip(entries, comment: bytes) -> bytes | None:
    """Write a zip from (name, raw local record | None, new content | None, original ZipInfo | None) in order:
    raw records are copied byte for byte; new content is deflated (or stored, like the original member)."""
    out = bytearray()
    central = bytearray()
    for name, record, content, info in entries:
        offset = len(out)
        flags_utf8 = 0x800 if not name.isascii() else 0
        if record is not None and info is not None:
            out += record
            flags, method, crc = info.flag_bits, info.compress_type, info.CRC
            csize, usize = info.compress_size, info.file_size
            version_needed, extra = info.extract_version, info.extra
            made_by = (info.create_system << 8) | info.create_version
            date_time, int_attr, ext_attr, file_comment = (
                info.date_time,
                info.internal_attr,
                info.external_attr,
                info.comment,
            )
            name_bytes = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        else:
            method = (
                info.compress_type
                if info is not None and info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
                else zipfile.ZIP_DEFLATED
            )
            if method == zipfile.ZIP_DEFLATED:
                packer = zlib.compressobj(6, zlib.DEFLATED, -15)
                data = packer.compress(content) + packer.flush()
            else:
                data = content
            crc, csize, usize = zlib.crc32(content) & _LIMIT32, len(data), len(content)
            flags = flags_utf8
            version_needed = 20 if method == zipfile.ZIP_DEFLATED else 10
            date_time = info.date_time if info is not None else (1980, 1, 1, 0, 0, 0)
            made_by = ((info.create_system << 8) | info.create_version) if info is not None else 20
            int_attr = info.internal_attr if info is not None else 0
            ext_attr = info.external_attr if info is not None else 0
            file_comment = info.comment if info is not None else b""
            extra = b""
            name_bytes = name.encode("utf-8")
            dos_t, dos_d = _dos_time(date_time)
            out += (
                struct.pack(
                    "<IHHHHHIIIHH",
                    _LOCAL_SIG,
                    version_needed,
                    flags,
                    method,
                    dos_t,
                    dos_d,
                    crc,
                    csize,
                    usize,
                    len(name_bytes),
                    0,
                )
                + name_bytes
                + data
            )
        if len(out) >= _LIMIT32:
            return None
        dos_t, dos_d = _dos_time(date_time)
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                _CENTRAL_SIG,
                made_by,
                version_needed,
                flags,
                method,
                dos_t,
                dos_d,
                crc,
                csize,
                usize,
                len(name_bytes),
                len(extra),
                len(file_comment),
                0,
                int_attr,
                ext_attr,
                offset,
            )
            + name_bytes
            + extra
            + file_comment
        )
    cd_offset = len(out)
    out += central
    out += (
        struct.pack("<IHHHHIIH", _END_SIG, 0, 0, len(entries), len(entries), len(central), cd_offset, len(comment))
        + comment
    )
    return bytes(out)


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A ZipInfo with the same name, timestamp, method and attributes (zip64 extra stripped; zipfile re-adds it)."""
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = info.compress_type
    new.comment = info.comment
    new.external_attr = info.external_attr
    new.internal_attr = info.internal_attr
    new.create_system = info.create_system
    extra, out = info.extra, b""
    i = 0
    while i + 4 <= len(extra):
        xid = int.from_bytes(extra[i : i + 2], "little")
        size = int.from_bytes(extra[i + 2 : i + 4], "little")
        if xid != 1:
            out += extra[i : i + 4 + size]
        i += 4 + size
    new.extra = out
    return new


def open_package(path: str | os.PathLike) -> Package:
    return Package.open(path)


__all__ = [
    "ERROR_CODES",
    "MAX_COL",
    "MAX_ROW",
    "Area",
    "Cell",
    "CellValue",
    "DefinedName",
    "ErrorValue",
    "Package",
    "cell_ref",
    "col_index",
    "col_letter",
    "line_chart_xml",
    "open_package",
    "parse_range",
    "quote_sheet",
    "shift_formula",
    "split_areas",
    "split_ref",
]
