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

The API is listed in :mod:`xlcf.ooxml`.

Strings are written as inline strings (``t="inlineStr"``) rather than appended to ``sharedStrings.xml``: that part
then streams through unchanged, no other sheet's indices can be disturbed, and Excel and LibreOffice both read
inline strings (Excel converts them to shared strings on its next save).
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

from lxml import etree

from xlcf.errors import WorkbookError, quote
from xlcf.fileio import atomic_output, book_lock, is_disk_full
from xlcf.ooxml.charts import chart_anchor
from xlcf.ooxml.parts import (
    CT_CHART,
    CT_DRAWING,
    CT_WORKSHEET,
    NS_A,
    NS_DRAW,
    NS_MAIN,
    NS_REL,
    ODS_MESSAGE,
    REL_CALC_CHAIN,
    REL_CHART,
    REL_DRAWING,
    REL_OFFICE_DOCUMENT,
    REL_SHARED_STRINGS,
    REL_WORKSHEET,
    DefinedName,
    add_override,
    add_relationship,
    free_part,
    parse_xml,
    q,
    rels_name,
    resolve_target,
    serialize,
    whole_number,
)
from xlcf.ooxml.protection import REL_STYLES, locked_refs, protection_error, unlocked_styles
from xlcf.ooxml.refs import (
    Area,
    cell_ref,
    parse_range,
    split_areas,
    split_ref,
)
from xlcf.ooxml.sheet import Worksheet, new_sheet_xml
from xlcf.ooxml.values import Cell, CellValue
from xlcf.ooxml.zipio import OLE_MAGIC, check_writable, read_zip, write_plain_zip, write_raw_zip


class Package:
    """An open .xlsx/.xlsm package. Edits are held in memory until :meth:`save`."""

    def __init__(self, path: Path, data: bytes, stat_before: os.stat_result | None = None):
        self.path = path
        self._original_bytes = data
        # Taken before the read: a file replaced while it was read then fails the check in save().
        self._stat = stat_before if stat_before is not None else os.stat(path)
        self._infos: list[zipfile.ZipInfo] = []
        self._content: dict[str, bytes] = {}
        self._comment = b""
        self._open_zip(data)
        self._replaced: dict[str, bytes] = {}
        self._added: list[str] = []
        self._removed: set[str] = set()
        self._sheets: dict[str, Worksheet] = {}
        self._workbook_changed = False
        self.backup_path: Path | None = None  # set by save(backup=True)
        self.allow_protected = False  # True: write_values may change locked cells of protected sheets (--force)
        self._unlocked: frozenset[int] | None = None
        self._load_workbook()

    # -- opening -----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> Package:
        """Open a workbook package. WorkbookError (naming the file) when it is missing, not a zip, an encrypted
        or legacy OLE file, truncated, or a zip that is not an Excel workbook."""
        p = Path(path)
        if not p.exists():
            raise WorkbookError("no such file", where=str(p))
        if p.is_dir():
            raise WorkbookError("is a folder, not a workbook", where=str(p))
        try:
            before = os.stat(p)
            data = p.read_bytes()
        except PermissionError:
            raise WorkbookError("cannot read the file (permission denied)", where=str(p)) from None
        if data[:8] == OLE_MAGIC:
            raise WorkbookError(
                "is an OLE container, i.e. a password-protected or legacy .xls workbook "
                "(Excel encrypts .xlsx files inside one); remove the password or save as .xlsx "
                "in Excel first",
                where=str(p),
            )
        if not data:
            raise WorkbookError("is empty, not a workbook", where=str(p))
        return cls(p, data, before)

    def _open_zip(self, data: bytes) -> None:
        contents = read_zip(self.path, data)
        self._infos, self._content, self._comment, self._raw = (
            contents.infos,
            contents.content,
            contents.comment,
            contents.raw,
        )
        self._info_by_name = {i.filename: i for i in self._infos}
        if "[Content_Types].xml" not in self._content:
            if self._content.get("mimetype", b"").startswith(b"application/vnd.oasis.opendocument"):
                raise WorkbookError(ODS_MESSAGE, where=str(self.path))
            raise WorkbookError("is a zip but not an Office package (no [Content_Types].xml)", where=str(self.path))

    def _load_workbook(self) -> None:
        workbook_part = None
        if "_rels/.rels" in self._content:
            for rel in parse_xml(self._content["_rels/.rels"], "_rels/.rels").getroot():
                if rel.get("Type") == REL_OFFICE_DOCUMENT:
                    workbook_part = resolve_target("", rel.get("Target"))
        if workbook_part is None and "xl/workbook.xml" in self._content:
            workbook_part = "xl/workbook.xml"
        if workbook_part is None or workbook_part not in self._content:
            raise WorkbookError("is a zip but not an Excel workbook (no workbook part)", where=str(self.path))
        root = parse_xml(self._content[workbook_part], workbook_part).getroot()
        if etree.QName(root).localname != "workbook":
            raise WorkbookError("is an Office package but not an Excel workbook", where=str(self.path))
        if etree.QName(root).namespace != NS_MAIN:
            raise WorkbookError(
                f"is a Strict Open XML workbook ({etree.QName(root).namespace}); save it "
                f"as 'Excel Workbook (.xlsx)' (transitional), which xlcf reads and writes",
                where=str(self.path),
            )
        self.workbook_part = workbook_part
        self._workbook_tree = root.getroottree()
        self._workbook_rels_part = rels_name(workbook_part)
        self._workbook_rels = self._read_rels(workbook_part)
        self._sheet_parts: dict[str, str] = {}
        self._sheet_order: list[str] = []
        sheets_el = root.find(q("sheets"))
        for sheet_el in sheets_el if sheets_el is not None else []:
            name = sheet_el.get("name")
            rid = sheet_el.get(q("id", NS_REL))
            rel = self._workbook_rels.get(rid)
            self._sheet_order.append(name)
            if rel is not None and rel[0] == REL_WORKSHEET:
                self._sheet_parts[name] = rel[1]
        self._shared_strings: list[str] | None = None

    def _read_rels(self, part: str) -> dict[str, tuple[str, str]]:
        """rId -> (type, target part) of a part's relationships (external targets kept as given)."""
        rels_part = rels_name(part)
        out = {}
        if rels_part in self._members_now():
            for rel in parse_xml(self.read_member(rels_part), rels_part).getroot():
                target = rel.get("Target")
                if rel.get("TargetMode") != "External":
                    target = resolve_target(part, target)
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
            return serialize(self._workbook_tree, self._content[self.workbook_part])
        if name in self._removed:
            raise WorkbookError(f"member {name} was removed", where=str(self.path))
        if name in self._replaced:
            return self._replaced[name]
        if name in self._content:
            return self._content[name]
        raise WorkbookError(f"has no member {name}", where=str(self.path))

    def replace_member(self, name: str, data: bytes) -> None:
        """Replace (or add, appended at the end) a raw zip member. Parsed sheets/workbook.xml edited through this
        Package must not also be replaced raw; a sheet that was only read may be (later reads see the new part)."""
        if any(s.part == name and s.changed for s in self._sheets.values()) or name == self.workbook_part:
            raise WorkbookError(f"{name} is edited through the Package API; do not replace it raw")
        self._sheets = {sheet: parsed for sheet, parsed in self._sheets.items() if parsed.part != name}
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
            raise WorkbookError(
                f"{self.path.name} has no sheet {quote(sheet)} (sheets: "
                f"{quote(', '.join(self.sheet_names), 200)[1:-1]})"
            )
        return part

    def has_sheet(self, sheet: str) -> bool:
        return sheet in self._sheet_parts

    def names(self) -> list[DefinedName]:
        """Every defined name of the workbook (hidden ones included), with its scope."""
        out: list[DefinedName] = []
        dn = self._workbook_tree.getroot().find(q("definedNames"))
        if dn is None:
            return out
        for el in dn.iterchildren(q("definedName")):
            scope = None
            if el.get("localSheetId") is not None:
                idx = whole_number(
                    el.get("localSheetId"),
                    0,
                    1 << 31,
                    f"{self.path}: the defined name {quote(el.get('name'))}: localSheetId",
                    "a sheet index",
                )
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
        dn = root.find(q("definedNames"))
        if dn is None:
            dn = etree.Element(q("definedNames"))
            self._insert_workbook_child(dn, "definedNames")
        local = None if sheet is None else str(self._sheet_order.index(sheet))
        for el in dn.iterchildren(q("definedName")):
            if el.get("name").lower() == name.lower() and el.get("localSheetId") == local:
                el.text = value
                break
        else:
            el = etree.SubElement(dn, q("definedName"))
            el.set("name", name)
            if local is not None:
                el.set("localSheetId", local)
            if hidden:
                el.set("hidden", "1")
            el.text = value
        self._workbook_changed = True

    _WORKBOOK_ORDER: ClassVar[list[str]] = [
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
        calc = root.find(q("calcPr"))
        if calc is None:
            calc = etree.Element(q("calcPr"))
            self._insert_workbook_child(calc, "calcPr")
        if calc.get("fullCalcOnLoad") not in ("1", "true"):
            calc.set("fullCalcOnLoad", "1")
            self._workbook_changed = True

    # -- cells -------------------------------------------------------------------------------------------------
    def _sheet(self, sheet: str) -> Worksheet:
        parsed = self._sheets.get(sheet)
        if parsed is None:
            part = self.sheet_part(sheet)
            original = self.read_member(part)
            parsed = Worksheet(sheet, part, parse_xml(original, part), original)
            self._sheets[sheet] = parsed
        return parsed

    def _strings(self) -> list[str]:
        if self._shared_strings is None:
            self._shared_strings = []
            part = next((t for (typ, t) in self._workbook_rels.values() if typ == REL_SHARED_STRINGS), None)
            if part and part in self._content:
                root = parse_xml(self._content[part], part).getroot()
                for si in root.iterchildren(q("si")):
                    # rich text: concatenate the runs; skip phonetic (rPh) runs
                    texts = [t.text or "" for t in si.iter(q("t")) if etree.QName(t.getparent()).localname != "rPh"]
                    self._shared_strings.append("".join(texts))
        return self._shared_strings

    def read_cell(self, sheet: str, ref: str) -> Cell:
        row, col = split_ref(ref)
        return self._sheet(sheet).read_cell(row, col, self._strings)

    def read_range(self, sheet: str, ref: str | Area) -> list[list[Cell]]:
        """Rows of Cells of a rectangular range (empty cells are ``Cell(None)``)."""
        area = ref if isinstance(ref, Area) else parse_range(ref, sheet)
        parsed = self._sheet(sheet)
        return [
            [parsed.read_cell(r, c, self._strings) for c in range(area.left, area.right + 1)]
            for r in range(area.top, area.bottom + 1)
        ]

    def read_values(self, sheet: str, ref: str | Area) -> list[list[CellValue]]:
        return [[c.value for c in row] for row in self.read_range(sheet, ref)]

    def used_cells(self, sheet: str) -> dict[str, Cell]:
        """Every non-empty cell of a sheet: ref -> Cell."""
        parsed = self._sheet(sheet)
        return {cell_ref(r, c): parsed.read_cell(r, c, self._strings) for (r, c) in sorted(parsed.cells)}

    def write_values(self, sheet: str, values: Mapping[str, CellValue], *, overwrite_formulas: bool = False) -> int:
        """Write values (finite numbers, text, booleans, ErrorValue, None to clear) into cells, creating cells and
        rows as needed and keeping each cell's style. A cell holding a formula is refused (WorkbookError naming
        sheet!cell) unless ``overwrite_formulas``; so are locked cells of a protected sheet unless
        ``allow_protected``. All cells are checked before any is changed. Returns the count."""
        self.check_unprotected(sheet, values)
        return self._sheet(sheet).write_values(values, overwrite_formulas=overwrite_formulas)

    def set_styles(self, sheet: str, styles: Mapping[str, int | None]) -> None:
        """Give cells a style (an index into styles.xml's cellXfs, as :class:`Cell` reports it; None: the default)."""
        self._sheet(sheet).set_styles({split_ref(ref): style for ref, style in styles.items()})

    def locked_cells(self, sheet: str, refs: Iterable[str]) -> list[str]:
        """The cells among ``refs`` that the sheet's protection locks (see :mod:`xlcf.ooxml.protection`)."""
        if self._unlocked is None:
            part = next((t for (typ, t) in self._workbook_rels.values() if typ == REL_STYLES), None)
            self._unlocked = unlocked_styles(self._content.get(part) if part else None, part or "")
        return locked_refs(self._sheet(sheet), refs, self._unlocked)

    def check_unprotected(self, sheet: str, refs: Iterable[str]) -> None:
        """WorkbookError naming the locked cells of a protected sheet among ``refs`` (unless
        ``allow_protected``); callers check before a long computation, write_values checks again."""
        if self.allow_protected:
            return
        locked = self.locked_cells(sheet, refs)
        if locked:
            raise protection_error(sheet, locked)

    def write_block(
        self, sheet: str, top_left: str, rows: Iterable[Iterable[CellValue]], *, overwrite_formulas: bool = False
    ) -> int:
        """Write a 2-D block of values with its top-left corner at ``top_left``."""
        r0, c0 = split_ref(top_left)
        values = {}
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                values[cell_ref(r0 + i, c0 + j)] = value
        return self.write_values(sheet, values, overwrite_formulas=overwrite_formulas)

    def set_cached_values(self, sheet: str, values: Mapping[str, CellValue]) -> int:
        """Update the cached value (``<v>``) of formula cells, keeping their formulas. A cell without a formula is an
        error (WorkbookError naming sheet!cell); NaN/inf are refused. Returns the count."""
        return self._sheet(sheet).set_cached_values(values)

    def clear_sheet(self, sheet: str) -> None:
        """Remove every cell of a sheet (rows included). For sheets that xlcf owns entirely (``fit_log``)."""
        self._sheet(sheet).clear()

    @property
    def changed_sheets(self) -> list[str]:
        return [name for name, s in self._sheets.items() if s.changed]

    # -- new sheets and charts ---------------------------------------------------------------------------------
    def _content_types(self) -> etree._ElementTree:
        return parse_xml(self.read_member("[Content_Types].xml"), "[Content_Types].xml")

    def _put_xml(self, name: str, tree: etree._ElementTree) -> None:
        original = self.read_member(name) if name in self._members_now() else None
        self.replace_member(name, serialize(tree, original))

    def _add_override(self, ct_tree, part: str, content_type: str) -> None:
        add_override(ct_tree, part, content_type)

    def _free_part(self, pattern: str) -> str:
        return free_part(pattern, set(self._members_now()))

    def _add_relationship(self, source_part: str, rel_type: str, target_part: str) -> str:
        rels_part = rels_name(source_part)
        tree = parse_xml(self.read_member(rels_part), rels_part) if rels_part in self._members_now() else None
        tree, rid = add_relationship(tree, source_part, rel_type, target_part)
        self._put_xml(rels_part, tree)
        return rid

    def add_sheet(self, name: str, *, column_widths: dict[str, float] | None = None) -> str:
        """Append a new, empty worksheet named ``name`` (at the end, so sheet-scoped names keep their indices),
        set up to print landscape and one page wide; ``column_widths`` maps column letters to widths.
        Returns its part name. WorkbookError if the name exists or is not a valid sheet name."""
        if name.lower() in (n.lower() for n in self._sheet_order):
            raise WorkbookError(f"{self.path.name} already has a sheet named '{name}'")
        if not name or len(name) > 31 or re.search(r"[\[\]:*?/\\]", name) or name.startswith("'"):
            raise WorkbookError(f"'{name}' is not a valid sheet name (1-31 characters, none of []:*?/\\)")
        part = self._free_part("xl/worksheets/sheet{}.xml")
        xml = new_sheet_xml(column_widths)
        self.replace_member(part, xml)
        rid = self._add_relationship(self.workbook_part, REL_WORKSHEET, part)
        self._workbook_rels = self._read_rels(self.workbook_part)
        ct = self._content_types()
        self._add_override(ct, part, CT_WORKSHEET)
        self._put_xml("[Content_Types].xml", ct)
        root = self._workbook_tree.getroot()
        sheets_el = root.find(q("sheets"))
        ids = [int(el.get("sheetId")) for el in sheets_el.iterchildren(q("sheet")) if el.get("sheetId", "").isdigit()]
        el = etree.SubElement(sheets_el, q("sheet"))
        el.set("name", name)
        el.set("sheetId", str(max(ids, default=0) + 1))
        el.set(q("id", NS_REL), rid)
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
            drawing = etree.Element(q("wsDr", NS_DRAW), nsmap={"xdr": NS_DRAW, "a": NS_A})
            self.replace_member(drawing_part, serialize(etree.ElementTree(drawing)))
            self._add_override(ct, drawing_part, CT_DRAWING)
            rid = self._add_relationship(sheet_part, REL_DRAWING, drawing_part)
            self._sheet(sheet).insert_drawing(rid)
        self._put_xml("[Content_Types].xml", ct)
        chart_rid = self._add_relationship(drawing_part, REL_CHART, chart_part)
        tree = parse_xml(self.read_member(drawing_part), drawing_part)
        tree.getroot().append(chart_anchor(tree.getroot(), chart_rid, anchor))
        self._put_xml(drawing_part, tree)
        return chart_part

    # -- saving ------------------------------------------------------------------------------------------------
    @property
    def modified(self) -> bool:
        return bool(self.changed_sheets or self._workbook_changed or self._replaced or self._removed)

    def check_writable(self, path: str | os.PathLike | None = None) -> None:
        """WorkbookError when the workbook cannot be replaced now: read-only file or folder, or open in Excel or
        LibreOffice (their lock files ``~$BOOK.xlsx`` / ``.~lock.BOOK.xlsx#`` beside it)."""
        check_writable(Path(path) if path is not None else self.path)

    def to_bytes(self) -> bytes:
        """The package as it would be saved (calc flag and calcChain handled as in :meth:`save`)."""
        if self.changed_sheets:
            self.mark_full_calc_on_load()
            if any(s.formulas_removed for s in self._sheets.values()):
                self.drop_calc_chain()
        names = self._members_now()
        if self._raw is not None:
            raw = write_raw_zip(
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
        return write_plain_zip(self._infos, self._removed, self._added, self.read_member, self._comment)

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
        rels_tree = parse_xml(self.read_member(self._workbook_rels_part), self._workbook_rels_part)
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

    def save(
        self, path: str | os.PathLike | None = None, *, backup: bool = False, lock_timeout: float | None = None
    ) -> Path:
        """Write the package atomically (:func:`xlcf.fileio.atomic_output`: temp file in the same folder, flush +
        fsync, ``os.replace``; the file keeps its mode), holding the workbook's lock (:func:`xlcf.fileio.book_lock`;
        callers that read the book hold it from the read). With ``backup``, the original file is also copied to
        ``BOOK.bak`` (e.g. ``b.xlsx.bak``) — through a temporary file too, so an older backup survives any
        failure. On any error the target (and its backup) are left as they were. Refuses when the file changed on
        disk since it was opened (another program saved it); a full disk is a WorkbookError saying so."""
        target = Path(path) if path is not None else self.path
        self.check_writable(target)
        with book_lock(target, timeout=lock_timeout):
            if target.resolve() == self.path.resolve() and _identity(os.stat(self.path)) != _identity(self._stat):
                raise WorkbookError(
                    "the file changed on disk since xlcf read it; nothing written, run the command again",
                    where=str(self.path),
                )
            data = self.to_bytes()
            real = Path(os.path.realpath(target))  # through a symlink: replace the file, not the link
            try:
                with atomic_output(real) as tmp:  # an existing book keeps its mode; a new one gets 0o666 & ~umask
                    with open(tmp, "wb") as fh:  # on disk before the backup is touched
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    if backup and real.exists():
                        bak = real.with_name(real.name + ".bak")
                        with atomic_output(bak, mode_from=real) as bak_tmp:
                            shutil.copyfile(real, bak_tmp)
                            shutil.copystat(real, bak_tmp)
                        self.backup_path = bak
            except OSError as err:
                kept = "the workbook and its backup are unchanged" if backup else "the workbook is unchanged"
                if is_disk_full(err):
                    raise WorkbookError(f"disk full; nothing was written ({kept})", where=str(target)) from None
                raise WorkbookError(
                    f"cannot save ({err.strerror or err}); nothing was written ({kept})", where=str(target)
                ) from None
            if target.resolve() == self.path.resolve():
                self._stat = os.stat(real)
        return real


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells that a file was replaced or rewritten: inode, device, modification time and size."""
    return st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size


def open_package(path: str | os.PathLike) -> Package:
    return Package.open(path)


__all__ = ["DefinedName", "Package", "open_package"]
