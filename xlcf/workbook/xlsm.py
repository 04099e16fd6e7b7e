"""Macro workbooks in the xlwings quickstart layout: ``BOOK.xlsm`` + ``BOOK.py`` beside it.

``make_macro_workbook(xlsx, out.xlsm, kind)`` turns a workbook the generators made (openpyxl) into what
``xlwings quickstart --standalone`` would give a user:

- the VBA project (``xl/vbaProject.bin``) is the one the *installed* xlwings ships in
  ``quickstart_standalone.xlsm`` (module ``xlwings`` with ``RunPython``, ``Module1.SampleCall``, which runs
  ``import <stem>; <stem>.main()``), copied byte for byte at run time — never stored in this repo;
- an ``xlwings.conf`` sheet (``UDF Modules = xlcf.udfs``, ``Interpreter_Win``, ``Interpreter_Mac``,
  ``PYTHONPATH``, ...) that RunPython and the UDF import read;
- form-control buttons (legacy VML, ``x:FmlaMacro``) on every fitting sheet;
- ``<stem>.py`` beside the workbook, with ``main()`` (and ``fit``/``step``/``step5``/``reset``/``train``)
  calling :mod:`xlcf.excel.macros`.

Mechanism: zip-level injection into the openpyxl-made package (openpyxl cannot write form controls, and
re-building the sheets with XlsxWriter would duplicate the generators). Only new parts are added
(vbaProject.bin, xlwings.conf sheet, VML drawings) and four small XML parts are edited (content types,
workbook.xml, workbook rels, the button sheets + their rels).

How buttons reach Python (the template's VBA cannot be changed — it must stay identical to xlwings'):

- "Fit with Python", "One step" and "Train" use ``[0]!SampleCall`` — the template's own macro, exactly as
  in xlwings' quickstart: ``<stem>.main()`` looks at the *active* sheet (the one the button sits on) and
  fits / steps once / trains;
- "Five steps" and "Reset" need an argument, so their ``OnAction`` calls the template's public
  ``RunPython`` with the command string (Excel's ``'Macro "argument"'`` form, stored verbatim in
  ``x:FmlaMacro``): ``'RunPython "import graddesc; graddesc.step5()"'``.

This module sits in the workbook layer and does not import xlwings: the template is located with
``importlib.util.find_spec("xlwings")``.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from xlcf.errors import WorkbookError
from xlcf.fileio import atomic_output
from xlcf.workbook.refs import split_ref

TEMPLATE_NAME = "quickstart_standalone.xlsm"
VBA_PART = "xl/vbaProject.bin"
CONF_SHEET = "xlwings.conf"

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
NS_CT = "http://schemas.openxmlformats.org/package/2006/content-types"
REL_WORKSHEET = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"
REL_VBA = "http://schemas.microsoft.com/office/2006/relationships/vbaProject"
REL_VML = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/vmlDrawing"
CT_MAIN_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
CT_MAIN_XLSM = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
CT_VBA = "application/vnd.ms-office.vbaProject"
CT_VML = "application/vnd.openxmlformats-officedocument.vmlDrawing"
CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
NS_V = "urn:schemas-microsoft-com:vml"
NS_O = "urn:schemas-microsoft-com:office:office"
NS_X = "urn:schemas-microsoft-com:office:excel"

KINDS = ("collab", "graddesc", "movielens")
SAMPLE_CALL = "[0]!SampleCall"

# Keys of the xlwings.conf sheet, in the order RunPython reads them (A1 downwards, no gaps). Values left
# blank fall back to xlwings' defaults (interpreter "python", the workbook's folder on PYTHONPATH).
CONF_ROWS = (
    (
        "Interpreter_Win",
        "",
        "Full path of python.exe on Windows (blank: python on PATH), e.g. "
        r"C:\Users\me\venv\Scripts\python.exe",
    ),
    ("Interpreter_Mac", "", "Full path of python on macOS (blank: python on PATH), e.g. /Users/me/venv/bin/python"),
    ("PYTHONPATH", "", "Extra folders to import from (the .py beside this workbook is found without it)"),
    ("Conda Path", "", "Conda installation folder, if Python comes from conda (with Conda Env)"),
    ("Conda Env", "", "Conda environment name"),
    (
        "UDF Modules",
        "xlcf.udfs",
        "Worksheet functions CF_FIT, CF_PREDICT, CF_RMSE, CF_RECOMMEND (Windows: xlwings add-in > Import Functions)",
    ),
    ("Debug UDFs", False, "Windows only: run UDFs in a visible console"),
    ("Use UDF Server", False, "Windows only: keep one Python process for RunPython and UDFs (faster)"),
    ("Show Console", False, "Windows only: show the console window while Python runs"),
    ("AUTH", "", "Token of `xlcf serve --token` when buttons call a server (RunServerPython)"),
)


@dataclass(frozen=True)
class Button:
    caption: str
    macro: str  # the x:FmlaMacro text
    python: str  # what it runs in Python (documentation, tests)


@dataclass(frozen=True)
class MacroWorkbook:
    xlsm_path: Path
    py_path: Path
    buttons: dict[str, list[Button]]  # sheet name -> its buttons


def template_path() -> Path:
    """quickstart_standalone.xlsm of the installed xlwings (found without importing xlwings)."""
    spec = importlib.util.find_spec("xlwings")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbookError(
            "xlwings is not installed: `pip install xlwings` (its quickstart template holds the "
            "VBA project the macro workbook needs)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / TEMPLATE_NAME
    if not path.is_file():
        raise WorkbookError(f"{path} is missing from the xlwings installation; reinstall xlwings")
    return path


def template_vba_project() -> bytes:
    with zipfile.ZipFile(template_path()) as template:
        try:
            return template.read(VBA_PART)
        except KeyError:
            raise WorkbookError(f"{template_path()} holds no {VBA_PART}") from None


def _run_python(stem: str, call: str) -> str:
    return f"'RunPython \"import {stem}; {stem}.{call}\"'"


def buttons_for(kind_of_sheet: str, stem: str) -> list[Button]:
    if kind_of_sheet == "fit":
        return [Button("Fit with Python", SAMPLE_CALL, f"{stem}.main() -> fit")]
    if kind_of_sheet == "graddesc":
        return [
            Button("One step", SAMPLE_CALL, f"{stem}.main() -> step"),
            Button("Five steps", _run_python(stem, "step5()"), f"{stem}.step5()"),
            Button("Reset", _run_python(stem, "reset()"), f"{stem}.reset()"),
        ]
    if kind_of_sheet == "movielens":
        return [Button("Train", SAMPLE_CALL, f"{stem}.main() -> train")]
    return []


def py_source(stem: str, kind: str) -> str:
    return f'''"""Python side of {stem}.xlsm (xlwings quickstart layout, made by `xlcf new {kind} --xlsm`).

The workbook's buttons run these functions through xlwings' RunPython: "Fit with Python", "One step" and
"Train" call SampleCall, which runs main(); main() looks at the active sheet and does the right thing.
Keep this file next to {stem}.xlsm and keep their names in step (SampleCall imports the workbook's name).
"""

import xlwings as xw

from xlcf.excel import macros


def main():
    macros.main(xw.Book.caller())


def fit():
    macros.fit(xw.Book.caller())


def step():
    macros.step(xw.Book.caller(), passes=1)


def step5():
    macros.step(xw.Book.caller(), passes=5)


def reset():
    macros.reset(xw.Book.caller())


def train():
    macros.train(xw.Book.caller())


if __name__ == "__main__":
    # Run from a terminal or an IDE while the workbook is open in Excel (desktop).
    xw.Book("{stem}.xlsm").set_mock_caller()
    main()
'''


# ------------------------------------------------------------------------------------------------ parts


def _parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, parser=etree.XMLParser(remove_blank_text=False, resolve_entities=False))


def _dump(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _resolve(base_part: str, target: str) -> str:
    """Relationship target -> part name (no leading slash)."""
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_part), target))


def _rels_name(part: str) -> str:
    return posixpath.join(posixpath.dirname(part), "_rels", posixpath.basename(part) + ".rels")


def _next_rel_id(rels: etree._Element) -> str:
    taken = {rel.get("Id") for rel in rels}
    n = 1
    while f"rId{n}" in taken:
        n += 1
    return f"rId{n}"


def _add_rel(rels: etree._Element, rel_type: str, target: str) -> str:
    rid = _next_rel_id(rels)
    etree.SubElement(rels, f"{{{NS_PKG_REL}}}Relationship", Id=rid, Type=rel_type, Target=target)
    return rid


def _empty_rels() -> etree._Element:
    return etree.Element(f"{{{NS_PKG_REL}}}Relationships", nsmap={None: NS_PKG_REL})


def _sheet_parts(parts: dict[str, bytes]) -> tuple[etree._Element, etree._Element, list[tuple[str, str, str]]]:
    """(workbook root, workbook rels root, [(sheet name, part name, sheetId)]) in tab order."""
    workbook = _parse(parts["xl/workbook.xml"])
    rels = _parse(parts["xl/_rels/workbook.xml.rels"])
    targets = {rel.get("Id"): _resolve("xl/workbook.xml", rel.get("Target")) for rel in rels}
    sheets = []
    for sheet in workbook.iter(f"{{{NS_MAIN}}}sheet"):
        rid = sheet.get(f"{{{NS_R}}}id")
        sheets.append((sheet.get("name"), targets[rid], sheet.get("sheetId")))
    return workbook, rels, sheets


def _local_names(workbook: etree._Element) -> dict[int, set[str]]:
    """Sheet index -> its sheet-scoped defined names (lower case)."""
    out: dict[int, set[str]] = {}
    for dn in workbook.iter(f"{{{NS_MAIN}}}definedName"):
        if dn.get("localSheetId") is not None:
            out.setdefault(int(dn.get("localSheetId")), set()).add(dn.get("name").lower())
    return out


def classify_sheets(sheet_names: list[str], local_names: dict[int, set[str]]) -> dict[str, str]:
    """Sheet name -> 'fit' | 'graddesc' | 'movielens' for the sheets that get buttons (same rules as
    :func:`xlcf.excel.macros.sheet_kind`)."""
    kinds = {}
    for index, name in enumerate(sheet_names):
        names = local_names.get(index, set())
        if name.lower() == "movielens":
            kinds[name] = "movielens"
        elif {"ratings", "user_factors", "movie_factors"} <= names:
            kinds[name] = "fit"
        elif {"slope", "const"} <= names:
            kinds[name] = "graddesc"
    return kinds


_COL_ORDER_AFTER_LEGACY = (
    "legacyDrawingHF",
    "drawingHF",
    "picture",
    "oleObjects",
    "controls",
    "webPublishItems",
    "tableParts",
    "extLst",
)


def _set_code_name(sheet_root: etree._Element, code_name: str) -> None:
    sheet_pr = sheet_root.find(f"{{{NS_MAIN}}}sheetPr")
    if sheet_pr is None:
        sheet_pr = etree.Element(f"{{{NS_MAIN}}}sheetPr")
        sheet_root.insert(0, sheet_pr)
    sheet_pr.set("codeName", code_name)


def _used_extent(sheet_root: etree._Element) -> tuple[int, int]:
    """(last row, last column), 1-based, from the cells present."""
    last_row = last_col = 1
    for cell in sheet_root.iter(f"{{{NS_MAIN}}}c"):
        try:
            row, col = split_ref(cell.get("r") or "")
        except WorkbookError:
            continue
        last_col = max(last_col, col)
        last_row = max(last_row, row)
    return last_row, last_col


def _button_shape(shape_number: int, caption: str, macro: str, col: int, row: int, z: int) -> str:
    """One VML form button (XlsxWriter's markup), anchored at 0-based (col, row), 2 columns x 2 rows."""
    left_pt, top_pt = col * 48, row * 15
    anchor = f"{col}, 0, {row}, 0, {col + 2}, 0, {row + 2}, 0"
    return (
        f'<v:shape id="_x0000_s{shape_number}" type="#_x0000_t201" style="position:absolute;'
        f"margin-left:{left_pt}pt;margin-top:{top_pt}pt;width:96pt;height:30pt;z-index:{z};"
        f'mso-wrap-style:tight" o:button="t" fillcolor="buttonFace [67]" strokecolor="windowText [64]" '
        f'o:insetmode="auto"><v:fill color2="buttonFace [67]" o:detectmouseclick="t"/>'
        f'<o:lock v:ext="edit" rotation="t"/><v:textbox style="mso-direction-alt:auto" o:singleclick="f">'
        f'<div style="text-align:center"><font face="Calibri" size="220" color="#000000">{escape(caption)}'
        f'</font></div></v:textbox><x:ClientData ObjectType="Button"><x:Anchor>{anchor}</x:Anchor>'
        f"<x:PrintObject>False</x:PrintObject><x:AutoFill>False</x:AutoFill>"
        f"<x:FmlaMacro>{escape(macro, {chr(34): '&quot;'})}</x:FmlaMacro><x:TextHAlign>Center</x:TextHAlign>"
        f"<x:TextVAlign>Center</x:TextVAlign></x:ClientData></v:shape>"
    )


_SHAPETYPE_201 = (
    '<v:shapetype id="_x0000_t201" coordsize="21600,21600" o:spt="201" path="m,l,21600r21600,l21600,xe">'
    '<v:stroke joinstyle="miter"/><v:path shadowok="f" o:extrusionok="f" strokeok="f" fillok="f" '
    'o:connecttype="rect"/><o:lock v:ext="edit" shapetype="t"/></v:shapetype>'
)


def _new_vml(idmap: int, shapes: list[str]) -> bytes:
    return (
        '<xml xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
        'xmlns:x="urn:schemas-microsoft-com:office:excel"><o:shapelayout v:ext="edit">'
        f'<o:idmap v:ext="edit" data="{idmap}"/></o:shapelayout>{_SHAPETYPE_201}{"".join(shapes)}</xml>'
    ).encode()


def _merge_vml(existing: bytes, shapes_for: callable) -> bytes:
    """Add button shapes to a sheet's existing legacy drawing (e.g. openpyxl's comment boxes)."""
    root = _parse(existing)
    numbers = [int(m) for m in re.findall(rb"_x0000_s(\d+)", existing)]
    start = max(numbers, default=1024) + 1
    wrapper = (
        f'<xml xmlns:v="{NS_V}" xmlns:o="{NS_O}" xmlns:x="{NS_X}">'
        f"{'' if b'_x0000_t201' in existing else _SHAPETYPE_201}{''.join(shapes_for(start))}</xml>"
    )
    for child in _parse(wrapper.encode("utf-8")):
        root.append(child)
    return etree.tostring(root, encoding="UTF-8")


def _conf_sheet_xml(code_name: str) -> bytes:
    rows = []
    for r, (key, value, note) in enumerate(CONF_ROWS, start=1):
        cells = [f'<c r="A{r}" t="inlineStr"><is><t>{escape(key)}</t></is></c>']
        if isinstance(value, bool):
            cells.append(f'<c r="B{r}" t="b"><v>{int(value)}</v></c>')
        elif value != "":
            cells.append(f'<c r="B{r}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
        cells.append(f'<c r="D{r}" t="inlineStr"><is><t>{escape(note)}</t></is></c>')
        rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_R}"><sheetPr codeName="{code_name}"/>'
        f'<dimension ref="A1:D{len(CONF_ROWS)}"/><sheetViews><sheetView workbookViewId="0"/></sheetViews>'
        '<sheetFormatPr defaultRowHeight="15"/><cols><col min="1" max="1" width="18" customWidth="1"/>'
        '<col min="2" max="2" width="40" customWidth="1"/><col min="4" max="4" width="90" customWidth="1"/></cols>'
        f"<sheetData>{''.join(rows)}</sheetData>"
        '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
    ).encode()


def _content_types(data: bytes, new_overrides: dict[str, str]) -> bytes:
    root = _parse(data)
    defaults = {el.get("Extension").lower() for el in root.findall(f"{{{NS_CT}}}Default")}
    for el in root.findall(f"{{{NS_CT}}}Override"):
        if el.get("ContentType") == CT_MAIN_XLSX:
            el.set("ContentType", CT_MAIN_XLSM)
    if "vml" not in defaults:
        first = root.find(f"{{{NS_CT}}}Override")
        el = etree.Element(f"{{{NS_CT}}}Default", Extension="vml", ContentType=CT_VML)
        if first is not None:
            first.addprevious(el)
        else:
            root.append(el)
    overrides = {el.get("PartName") for el in root.findall(f"{{{NS_CT}}}Override")}
    for part, content_type in new_overrides.items():
        if "/" + part not in overrides:
            etree.SubElement(root, f"{{{NS_CT}}}Override", PartName="/" + part, ContentType=content_type)
    return _dump(root)


# ------------------------------------------------------------------------------------------------ main


def make_macro_workbook(
    xlsx_path: str | os.PathLike, out_xlsm_path: str | os.PathLike, kind: str = "collab"
) -> MacroWorkbook:
    """Write ``out_xlsm_path`` (the xlsx + VBA project + xlwings.conf sheet + buttons) and ``<stem>.py``
    beside it. Atomic: both files appear only when everything worked."""
    if kind not in KINDS:
        raise WorkbookError(f"unknown workbook kind {kind!r}; choose one of {', '.join(KINDS)}")
    source = Path(xlsx_path)
    out = Path(out_xlsm_path)
    if out.suffix.lower() != ".xlsm":
        raise WorkbookError(f"{out}: a macro workbook must end in .xlsm")
    stem = out.stem
    if not stem.isidentifier():
        raise WorkbookError(
            f"{out.name}: xlwings' SampleCall imports the workbook's name as a Python module, so "
            "it must be a Python identifier (letters, digits, underscores), e.g. collab_filter.xlsm"
        )
    if not out.parent.is_dir():
        raise WorkbookError(f"{out.parent} does not exist")
    try:
        with zipfile.ZipFile(source) as package:
            infos = package.infolist()
            parts = {info.filename: package.read(info.filename) for info in infos}
    except (OSError, zipfile.BadZipFile) as err:
        raise WorkbookError(f"{source}: cannot read the workbook ({err})") from None
    if VBA_PART in parts:
        raise WorkbookError(f"{source} already holds a VBA project")
    vba = template_vba_project()

    workbook, wb_rels, sheets = _sheet_parts(parts)
    names = [name for name, _, _ in sheets]
    if CONF_SHEET in names:
        raise WorkbookError(f"{source} already has an {CONF_SHEET} sheet")
    kinds = classify_sheets(names, _local_names(workbook))
    if not kinds:
        raise WorkbookError(
            f"{source} has no sheet to put buttons on (no ratings/user_factors/movie_factors, "
            "slope/const or movielens sheet)"
        )
    new_overrides = {VBA_PART: CT_VBA}

    # VBA project + macro-enabled workbook.
    parts[VBA_PART] = vba
    _add_rel(wb_rels, REL_VBA, "vbaProject.bin")
    workbook_pr = workbook.find(f"{{{NS_MAIN}}}workbookPr")
    if workbook_pr is None:
        workbook_pr = etree.Element(f"{{{NS_MAIN}}}workbookPr")
        file_version = workbook.find(f"{{{NS_MAIN}}}fileVersion")
        (file_version.addnext if file_version is not None else (lambda el: workbook.insert(0, el)))(workbook_pr)
    workbook_pr.set("codeName", "ThisWorkbook")  # the template's document module

    # Sheet code names: Sheet1, Sheet2, ... as Excel and XlsxWriter name them (the template's document
    # modules are Sheet1 and Sheet2; Excel adds modules for the others when it opens the file).
    for index, (_, part, _) in enumerate(sheets, start=1):
        root = _parse(parts[part])
        _set_code_name(root, f"Sheet{index}")
        parts[part] = _dump(root)

    # Buttons.
    placed: dict[str, list[Button]] = {}
    vml_number = 1 + max([int(m) for p in parts for m in re.findall(r"vmlDrawing(\d+)\.vml$", p)], default=0)
    for index, (name, part, _) in enumerate(sheets):
        sheet_kind = kinds.get(name)
        if sheet_kind is None:
            continue
        buttons = buttons_for(sheet_kind, stem)
        placed[name] = buttons
        root = _parse(parts[part])
        _, last_col = _used_extent(root)
        anchor_col = last_col + 1  # 0-based: one empty column right of the used range

        def shapes_for(first_number: int, _buttons=buttons, _col=anchor_col) -> list[str]:
            return [
                _button_shape(first_number + i, b.caption, b.macro, _col, 1 + 3 * i, i + 1)
                for i, b in enumerate(_buttons)
            ]

        rels_part = _rels_name(part)
        rels = _parse(parts[rels_part]) if rels_part in parts else _empty_rels()
        legacy = root.find(f"{{{NS_MAIN}}}legacyDrawing")
        if legacy is not None:
            target = {rel.get("Id"): rel.get("Target") for rel in rels}[legacy.get(f"{{{NS_R}}}id")]
            vml_part = _resolve(part, target)
            parts[vml_part] = _merge_vml(parts[vml_part], shapes_for)
        else:
            vml_part = f"xl/drawings/vmlDrawing{vml_number}.vml"
            while vml_part in parts:
                vml_number += 1
                vml_part = f"xl/drawings/vmlDrawing{vml_number}.vml"
            parts[vml_part] = _new_vml(index + 1, shapes_for(1024 * (index + 1) + 1))
            rid = _add_rel(rels, REL_VML, f"../drawings/vmlDrawing{vml_number}.vml")
            vml_number += 1
            element = etree.Element(f"{{{NS_MAIN}}}legacyDrawing", nsmap={"r": NS_R})
            element.set(f"{{{NS_R}}}id", rid)
            following = [root.find(f"{{{NS_MAIN}}}{tag}") for tag in _COL_ORDER_AFTER_LEGACY]
            following = [el for el in following if el is not None]
            if following:
                following[0].addprevious(element)
            else:
                root.append(element)
        parts[part] = _dump(root)
        parts[rels_part] = _dump(rels)

    # xlwings.conf sheet (last tab: no existing localSheetId shifts).
    conf_part = "xl/worksheets/sheet_xlwings_conf.xml"
    parts[conf_part] = _conf_sheet_xml(f"Sheet{len(sheets) + 1}")
    new_overrides[conf_part] = CT_WORKSHEET
    conf_rid = _add_rel(wb_rels, REL_WORKSHEET, "worksheets/sheet_xlwings_conf.xml")
    sheets_el = workbook.find(f"{{{NS_MAIN}}}sheets")
    next_id = 1 + max(int(sid) for _, _, sid in sheets)
    conf_el = etree.SubElement(
        sheets_el, f"{{{NS_MAIN}}}sheet", name=CONF_SHEET, sheetId=str(next_id), nsmap={"r": NS_R}
    )
    conf_el.set(f"{{{NS_R}}}id", conf_rid)

    parts["xl/workbook.xml"] = _dump(workbook)
    parts["xl/_rels/workbook.xml.rels"] = _dump(wb_rels)
    parts["[Content_Types].xml"] = _content_types(parts["[Content_Types].xml"], new_overrides)

    # Write both files atomically (temp files in the target folder, then replace).
    order = [info.filename for info in infos] + [p for p in parts if p not in {i.filename for i in infos}]
    py_path = out.with_suffix(".py")
    try:
        # The .py is written first: when the book replaces the old one its module is already there.
        with atomic_output(out, suffix=".xlsm") as tmp_book, atomic_output(py_path, suffix=".py") as tmp_py:
            with zipfile.ZipFile(tmp_book, "w", zipfile.ZIP_DEFLATED) as package:
                for name in order:
                    compress = zipfile.ZIP_STORED if name == VBA_PART else zipfile.ZIP_DEFLATED
                    package.writestr(
                        zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), parts[name], compress_type=compress
                    )
            tmp_py.write_text(py_source(stem, kind), encoding="utf-8")
    except OSError as err:
        raise WorkbookError(f"cannot write {out}: {err}") from None
    return MacroWorkbook(xlsm_path=out, py_path=py_path, buttons=placed)
