"""OPC package plumbing shared by every part editor: namespaces, relationship and content types, XML parsing
and serialisation that keep a part's original declaration, and relationship-target arithmetic."""

from __future__ import annotations

import posixpath
import re

from lxml import etree

from xlcf.errors import WorkbookError

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

REL_VBA = "http://schemas.microsoft.com/office/2006/relationships/vbaProject"
REL_VML = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/vmlDrawing"
CT_MAIN_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
CT_MAIN_XLSM = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
CT_VBA = "application/vnd.ms-office.vbaProject"
CT_VML = "application/vnd.openxmlformats-officedocument.vmlDrawing"
NS_V = "urn:schemas-microsoft-com:vml"
NS_O = "urn:schemas-microsoft-com:office:office"
NS_X = "urn:schemas-microsoft-com:office:excel"


def q(tag: str, ns: str = NS_MAIN) -> str:
    """Clark notation ``{namespace}tag`` of an element name."""
    return f"{{{ns}}}{tag}"


def parse_xml(data: bytes, name: str) -> etree._ElementTree:
    parser = etree.XMLParser(remove_blank_text=False, resolve_entities=False, huge_tree=True)
    try:
        return etree.ElementTree(etree.fromstring(data, parser))
    except etree.XMLSyntaxError as err:
        raise WorkbookError(f"part {name} of the workbook is not valid XML ({err})") from None


_DEFAULT_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def declaration(original: bytes | None) -> bytes:
    """The original part's XML declaration, byte for byte (Excel writes double quotes and CRLF; lxml would not)."""
    m = re.match(rb"\s*<\?xml[^>]*\?>\s*", original or b"")
    return m.group(0) if m else _DEFAULT_DECLARATION


def serialize(tree: etree._ElementTree, original: bytes | None = None) -> bytes:
    # tostring(tree) keeps processing instructions/comments around the root; UTF-8 without its own declaration.
    return declaration(original) + etree.tostring(tree, encoding="UTF-8", xml_declaration=False)


def rels_name(part: str) -> str:
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def resolve_target(source_part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source_part), target))


def relative_target(source_part: str, target_part: str) -> str:
    return posixpath.relpath(target_part, posixpath.dirname(source_part) or ".")
