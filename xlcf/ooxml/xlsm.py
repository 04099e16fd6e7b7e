"""Parts of macro-enabled packages edited at the XML level: relationships, sheet code names, legacy VML form
buttons, a plain key/value worksheet and the content types of a .xlsm."""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.sax.saxutils import escape

from lxml import etree

from xlcf.errors import WorkbookError
from xlcf.ooxml.parts import (
    CT_MAIN_XLSM,
    CT_MAIN_XLSX,
    CT_VML,
    NS_CT,
    NS_MAIN,
    NS_O,
    NS_PKG_REL,
    NS_REL,
    NS_V,
    NS_X,
    resolve_target,
)
from xlcf.ooxml.refs import split_ref

NS_R = NS_REL


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, parser=etree.XMLParser(remove_blank_text=False, resolve_entities=False))


def dump(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def next_rel_id(rels: etree._Element) -> str:
    taken = {rel.get("Id") for rel in rels}
    n = 1
    while f"rId{n}" in taken:
        n += 1
    return f"rId{n}"


def add_rel(rels: etree._Element, rel_type: str, target: str) -> str:
    rid = next_rel_id(rels)
    etree.SubElement(rels, f"{{{NS_PKG_REL}}}Relationship", Id=rid, Type=rel_type, Target=target)
    return rid


def empty_rels() -> etree._Element:
    return etree.Element(f"{{{NS_PKG_REL}}}Relationships", nsmap={None: NS_PKG_REL})


def sheet_parts(parts: dict[str, bytes]) -> tuple[etree._Element, etree._Element, list[tuple[str, str, str]]]:
    """(workbook root, workbook rels root, [(sheet name, part name, sheetId)]) in tab order."""
    workbook = parse(parts["xl/workbook.xml"])
    rels = parse(parts["xl/_rels/workbook.xml.rels"])
    targets = {rel.get("Id"): resolve_target("xl/workbook.xml", rel.get("Target")) for rel in rels}
    sheets = []
    for sheet in workbook.iter(f"{{{NS_MAIN}}}sheet"):
        rid = sheet.get(f"{{{NS_R}}}id")
        sheets.append((sheet.get("name"), targets[rid], sheet.get("sheetId")))
    return workbook, rels, sheets


def local_names(workbook: etree._Element) -> dict[int, set[str]]:
    """Sheet index -> its sheet-scoped defined names (lower case)."""
    out: dict[int, set[str]] = {}
    for dn in workbook.iter(f"{{{NS_MAIN}}}definedName"):
        if dn.get("localSheetId") is not None:
            out.setdefault(int(dn.get("localSheetId")), set()).add(dn.get("name").lower())
    return out


COL_ORDER_AFTER_LEGACY = (
    "legacyDrawingHF",
    "drawingHF",
    "picture",
    "oleObjects",
    "controls",
    "webPublishItems",
    "tableParts",
    "extLst",
)


def set_code_name(sheet_root: etree._Element, code_name: str) -> None:
    sheet_pr = sheet_root.find(f"{{{NS_MAIN}}}sheetPr")
    if sheet_pr is None:
        sheet_pr = etree.Element(f"{{{NS_MAIN}}}sheetPr")
        sheet_root.insert(0, sheet_pr)
    sheet_pr.set("codeName", code_name)


def used_extent(sheet_root: etree._Element) -> tuple[int, int]:
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


def button_shape(shape_number: int, caption: str, macro: str, col: int, row: int, z: int) -> str:
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


def new_vml(idmap: int, shapes: list[str]) -> bytes:
    return (
        '<xml xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
        'xmlns:x="urn:schemas-microsoft-com:office:excel"><o:shapelayout v:ext="edit">'
        f'<o:idmap v:ext="edit" data="{idmap}"/></o:shapelayout>{_SHAPETYPE_201}{"".join(shapes)}</xml>'
    ).encode()


def merge_vml(existing: bytes, shapes_for: Callable[[int], list[str]]) -> bytes:
    """Add button shapes to a sheet's existing legacy drawing (e.g. openpyxl's comment boxes)."""
    root = parse(existing)
    numbers = [int(m) for m in re.findall(rb"_x0000_s(\d+)", existing)]
    start = max(numbers, default=1024) + 1
    wrapper = (
        f'<xml xmlns:v="{NS_V}" xmlns:o="{NS_O}" xmlns:x="{NS_X}">'
        f"{'' if b'_x0000_t201' in existing else _SHAPETYPE_201}{''.join(shapes_for(start))}</xml>"
    )
    for child in parse(wrapper.encode("utf-8")):
        root.append(child)
    return etree.tostring(root, encoding="UTF-8")


def macro_content_types(data: bytes, new_overrides: dict[str, str]) -> bytes:
    root = parse(data)
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
    return dump(root)


def conf_sheet_xml(code_name: str, conf_rows) -> bytes:
    """A small worksheet of (key, value, note) rows in columns A, B and D, strings inline."""
    rows = []
    for r, (key, value, note) in enumerate(conf_rows, start=1):
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
        f'<dimension ref="A1:D{len(conf_rows)}"/><sheetViews><sheetView workbookViewId="0"/></sheetViews>'
        '<sheetFormatPr defaultRowHeight="15"/><cols><col min="1" max="1" width="18" customWidth="1"/>'
        '<col min="2" max="2" width="40" customWidth="1"/><col min="4" max="4" width="90" customWidth="1"/></cols>'
        f"<sheetData>{''.join(rows)}</sheetData>"
        '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
    ).encode()
