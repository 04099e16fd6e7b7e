"""OPC package plumbing shared by every part editor: namespaces, relationship and content types, XML parsing
and serialisation that keep a part's original declaration, and relationship-target arithmetic."""

from __future__ import annotations

import posixpath
import re

from lxml import etree

from xlcf.errors import WorkbookError, quote

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


def whole_number(text: str | None, lo: int, hi: int, where: str, what: str) -> int:
    """An integer attribute of the XML, or WorkbookError (one line) saying which and what was expected."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise WorkbookError(
            f"{where} is {quote(text)}, not {what} ({lo} to {hi}); the file is damaged — "
            f"open and save it in Excel or LibreOffice to repair it"
        )
    return value


def rels_name(part: str) -> str:
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def resolve_target(source_part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source_part), target))


def relative_target(source_part: str, target_part: str) -> str:
    return posixpath.relpath(target_part, posixpath.dirname(source_part) or ".")


def add_override(ct_tree: etree._ElementTree, part: str, content_type: str) -> None:
    """Set the content type of ``part`` in a ``[Content_Types].xml`` tree (an Override element)."""
    root = ct_tree.getroot()
    for el in root.iterchildren(q("Override", NS_CT)):
        if el.get("PartName") == "/" + part:
            el.set("ContentType", content_type)
            return
    el = etree.SubElement(root, q("Override", NS_CT))
    el.set("PartName", "/" + part)
    el.set("ContentType", content_type)


def free_part(pattern: str, existing: set[str]) -> str:
    """The first ``pattern.format(n)`` (n = 1, 2, ...) that is not a member yet."""
    i = 1
    while pattern.format(i) in existing:
        i += 1
    return pattern.format(i)


def add_relationship(
    tree: etree._ElementTree | None, source_part: str, rel_type: str, target_part: str
) -> tuple[etree._ElementTree, str]:
    """Add a relationship from ``source_part`` to ``target_part`` to its rels tree (a new one when None); returns
    the tree and the new relationship's id."""
    if tree is None:
        tree = etree.ElementTree(etree.Element(q("Relationships", NS_PKG_REL), nsmap={None: NS_PKG_REL}))
    root = tree.getroot()
    ids = {el.get("Id") for el in root}
    n = 1
    while f"rId{n}" in ids:
        n += 1
    rid = f"rId{n}"
    el = etree.SubElement(root, q("Relationship", NS_PKG_REL))
    el.set("Id", rid)
    el.set("Type", rel_type)
    el.set("Target", relative_target(source_part, target_part))
    return tree, rid
