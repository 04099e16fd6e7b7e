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

This module sits in the lessons layer and does not import xlwings: the template is located with
``importlib.util.find_spec("xlwings")``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from xlcf.errors import WorkbookError
from xlcf.fileio import atomic_output
from xlcf.ooxml.parts import CT_VBA, CT_WORKSHEET, NS_MAIN, REL_VBA, REL_VML, REL_WORKSHEET, rels_name, resolve_target
from xlcf.ooxml.parts import NS_REL as NS_R
from xlcf.ooxml.xlsm import (
    COL_ORDER_AFTER_LEGACY,
    add_rel,
    button_shape,
    conf_sheet_xml,
    dump,
    empty_rels,
    local_names,
    macro_content_types,
    merge_vml,
    new_vml,
    parse,
    set_code_name,
    sheet_parts,
    used_extent,
)

TEMPLATE_NAME = "quickstart_standalone.xlsm"
VBA_PART = "xl/vbaProject.bin"
CONF_SHEET = "xlwings.conf"


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
    (
        "Use UDF Server",
        True,
        "Windows only: TRUE runs the buttons in one Python process that stays open, so only "
        "the first press pays Python's start-up (FALSE: a new Python per press). After "
        "editing the .py beside this workbook: xlwings add-in > Restart UDF Server",
    ),
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
        raise WorkbookError("a macro workbook must end in .xlsm", where=str(out))
    stem = out.stem
    if not stem.isidentifier():
        raise WorkbookError(
            "xlwings' SampleCall imports the workbook's name as a Python module, so "
            "it must be a Python identifier (letters, digits, underscores), e.g. collab_filter.xlsm",
            where=out.name,
        )
    if not out.parent.is_dir():
        raise WorkbookError(f"{out.parent} does not exist")
    try:
        with zipfile.ZipFile(source) as package:
            infos = package.infolist()
            parts = {info.filename: package.read(info.filename) for info in infos}
    except (OSError, zipfile.BadZipFile) as err:
        raise WorkbookError(f"cannot read the workbook ({err})", where=str(source)) from None
    if VBA_PART in parts:
        raise WorkbookError(f"{source} already holds a VBA project")
    vba = template_vba_project()

    workbook, wb_rels, sheets = sheet_parts(parts)
    names = [name for name, _, _ in sheets]
    if CONF_SHEET in names:
        raise WorkbookError(f"{source} already has an {CONF_SHEET} sheet")
    kinds = classify_sheets(names, local_names(workbook))
    if not kinds:
        raise WorkbookError(
            f"{source} has no sheet to put buttons on (no ratings/user_factors/movie_factors, "
            "slope/const or movielens sheet)"
        )
    new_overrides = {VBA_PART: CT_VBA}

    # VBA project + macro-enabled workbook.
    parts[VBA_PART] = vba
    add_rel(wb_rels, REL_VBA, "vbaProject.bin")
    workbook_pr = workbook.find(f"{{{NS_MAIN}}}workbookPr")
    if workbook_pr is None:
        workbook_pr = etree.Element(f"{{{NS_MAIN}}}workbookPr")
        file_version = workbook.find(f"{{{NS_MAIN}}}fileVersion")
        (file_version.addnext if file_version is not None else (lambda el: workbook.insert(0, el)))(workbook_pr)
    workbook_pr.set("codeName", "ThisWorkbook")  # the template's document module

    # Sheet code names: Sheet1, Sheet2, ... as Excel and XlsxWriter name them (the template's document
    # modules are Sheet1 and Sheet2; Excel adds modules for the others when it opens the file).
    for index, (_, part, _) in enumerate(sheets, start=1):
        root = parse(parts[part])
        set_code_name(root, f"Sheet{index}")
        parts[part] = dump(root)

    # Buttons.
    placed: dict[str, list[Button]] = {}
    vml_number = 1 + max([int(m) for p in parts for m in re.findall(r"vmlDrawing(\d+)\.vml$", p)], default=0)
    for index, (name, part, _) in enumerate(sheets):
        sheet_kind = kinds.get(name)
        if sheet_kind is None:
            continue
        buttons = buttons_for(sheet_kind, stem)
        placed[name] = buttons
        root = parse(parts[part])
        _, last_col = used_extent(root)
        anchor_col = last_col + 1  # 0-based: one empty column right of the used range

        def shapes_for(first_number: int, _buttons=buttons, _col=anchor_col) -> list[str]:
            return [
                button_shape(first_number + i, b.caption, b.macro, _col, 1 + 3 * i, i + 1)
                for i, b in enumerate(_buttons)
            ]

        rels_part = rels_name(part)
        rels = parse(parts[rels_part]) if rels_part in parts else empty_rels()
        legacy = root.find(f"{{{NS_MAIN}}}legacyDrawing")
        if legacy is not None:
            target = {rel.get("Id"): rel.get("Target") for rel in rels}[legacy.get(f"{{{NS_R}}}id")]
            vml_part = resolve_target(part, target)
            parts[vml_part] = merge_vml(parts[vml_part], shapes_for)
        else:
            vml_part = f"xl/drawings/vmlDrawing{vml_number}.vml"
            while vml_part in parts:
                vml_number += 1
                vml_part = f"xl/drawings/vmlDrawing{vml_number}.vml"
            parts[vml_part] = new_vml(index + 1, shapes_for(1024 * (index + 1) + 1))
            rid = add_rel(rels, REL_VML, f"../drawings/vmlDrawing{vml_number}.vml")
            vml_number += 1
            element = etree.Element(f"{{{NS_MAIN}}}legacyDrawing", nsmap={"r": NS_R})
            element.set(f"{{{NS_R}}}id", rid)
            following = [root.find(f"{{{NS_MAIN}}}{tag}") for tag in COL_ORDER_AFTER_LEGACY]
            following = [el for el in following if el is not None]
            if following:
                following[0].addprevious(element)
            else:
                root.append(element)
        parts[part] = dump(root)
        parts[rels_part] = dump(rels)

    # xlwings.conf sheet (last tab: no existing localSheetId shifts).
    conf_part = "xl/worksheets/sheet_xlwings_conf.xml"
    parts[conf_part] = conf_sheet_xml(f"Sheet{len(sheets) + 1}", CONF_ROWS)
    new_overrides[conf_part] = CT_WORKSHEET
    conf_rid = add_rel(wb_rels, REL_WORKSHEET, "worksheets/sheet_xlwings_conf.xml")
    sheets_el = workbook.find(f"{{{NS_MAIN}}}sheets")
    next_id = 1 + max(int(sid) for _, _, sid in sheets)
    conf_el = etree.SubElement(
        sheets_el, f"{{{NS_MAIN}}}sheet", name=CONF_SHEET, sheetId=str(next_id), nsmap={"r": NS_R}
    )
    conf_el.set(f"{{{NS_R}}}id", conf_rid)

    parts["xl/workbook.xml"] = dump(workbook)
    parts["xl/_rels/workbook.xml.rels"] = dump(wb_rels)
    parts["[Content_Types].xml"] = macro_content_types(parts["[Content_Types].xml"], new_overrides)

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
