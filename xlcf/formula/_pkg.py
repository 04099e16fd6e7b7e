"""The evaluator's one door to the zip package layer: every import of it happens here.

Reading cells one by one through :meth:`Package.read_cell` costs tens of microseconds a cell (a 200x200 sheet of
formulas beside its data would take seconds), so the evaluator reads a sheet part once with lxml here, keeping
what it needs: cached values, formula text, shared-formula groups and array-formula ranges.
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass

from lxml import etree

from xlcf.errors import WorkbookError
from xlcf.ooxml import DefinedName, ErrorValue, Package  # noqa: F401 - re-exported for the evaluator

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_SHARED_STRINGS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"
_C, _V, _F, _IS, _T, _ROW = (f"{{{NS_MAIN}}}{t}" for t in ("c", "v", "f", "is", "t", "row"))
_RPH = f"{{{NS_MAIN}}}rPh"


@dataclass
class RawFormula:
    """A formula as stored: ``text`` (without ``=``; for a shared formula's follower, the master's text),
    ``kind`` None/"shared"/"array"/"dataTable", ``master`` (row, col) of a shared group's master, ``ref`` the
    range of an array formula or a shared group as written."""

    text: str | None
    kind: str | None = None
    master: tuple[int, int] | None = None
    ref: str | None = None


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - 64)
    return n


_DIGITS = "0123456789"


@functools.lru_cache(maxsize=16384)
def _col_of(letters: str) -> int:
    return _col_index(letters.upper())


def _split(ref: str) -> tuple[int, int]:
    letters = ref.rstrip(_DIGITS)  # string methods: faster than a regular expression, once per cell
    return int(ref[len(letters) :]), _col_of(letters)


def shared_strings(pkg: Package) -> list[str]:
    rels_part = posixpath.join(
        posixpath.dirname(pkg.workbook_part), "_rels", posixpath.basename(pkg.workbook_part) + ".rels"
    )
    if rels_part not in pkg.member_names:
        return []
    target = None
    for rel in etree.fromstring(pkg.read_member(rels_part)):
        if rel.get("Type") == _REL_SHARED_STRINGS and rel.get("TargetMode") != "External":
            t = rel.get("Target")
            target = (
                t.lstrip("/")
                if t.startswith("/")
                else posixpath.normpath(posixpath.join(posixpath.dirname(pkg.workbook_part), t))
            )
    if target is None or target not in pkg.member_names:
        return []
    out = []
    for si in etree.fromstring(pkg.read_member(target), etree.XMLParser(huge_tree=True)).iterchildren(
        f"{{{NS_MAIN}}}si"
    ):
        out.append("".join(t.text or "" for t in si.iter(_T) if t.getparent().tag != _RPH))
    return out


def read_sheet(pkg: Package, sheet: str, strings: list[str]):
    """(values, formulas) of a sheet: ``values[(row, col)]`` the cached value of every non-empty cell (float, str,
    bool, ErrorValue), ``formulas[(row, col)]`` a RawFormula for every cell holding one."""
    part = pkg.sheet_part(sheet)
    try:
        root = etree.fromstring(pkg.read_member(part), etree.XMLParser(huge_tree=True, resolve_entities=False))
    except etree.XMLSyntaxError as err:
        raise WorkbookError(f"part {part} of the workbook is not valid XML ({err})") from None
    values: dict[tuple[int, int], object] = {}
    formulas: dict[tuple[int, int], RawFormula] = {}
    masters: dict[str, tuple[int, int]] = {}
    followers: list[tuple[tuple[int, int], str]] = []
    last_row = 0
    for row_el in root.iter(_ROW):
        r_attr = row_el.get("r")
        row = int(r_attr) if r_attr else last_row + 1
        last_row = row
        last_col = 0
        for c in row_el.iterchildren(_C):
            ref = c.get("r")
            pos = _split(ref) if ref else (row, last_col + 1)
            last_col = pos[1]
            v_el = f = is_el = None
            for child in c:  # one pass over <f>, <v>, <is> (find() per tag costs more on big sheets)
                tag = child.tag
                if tag == _V:
                    v_el = child
                elif tag == _F:
                    f = child
                elif tag == _IS:
                    is_el = child
            value = _value(c, v_el, is_el, strings, sheet, ref)
            if value is not None:
                values[pos] = value
            if f is None:
                continue
            kind = f.get("t")
            if kind == "shared":
                si = f.get("si")
                if f.text:
                    masters[si] = pos
                    formulas[pos] = RawFormula(f.text, "shared", pos, f.get("ref"))
                else:
                    followers.append((pos, si))
            else:
                formulas[pos] = RawFormula(
                    f.text or "", kind if kind in ("array", "dataTable") else None, None, f.get("ref")
                )
    for pos, si in followers:
        master = masters.get(si)
        formulas[pos] = RawFormula(formulas[master].text if master else None, "shared", master)
    return values, formulas


def _value(c, v, is_el, strings: list[str], sheet: str, ref: str | None):
    kind = c.get("t", "n")
    if kind == "inlineStr":
        return "" if is_el is None else "".join(t.text or "" for t in is_el.iter(_T) if t.getparent().tag != _RPH)
    if v is None or v.text is None:
        return "" if kind == "str" and v is not None else None
    text = v.text
    if kind == "s":
        try:
            return strings[int(text)]
        except (ValueError, IndexError):
            raise WorkbookError(f"{sheet}!{ref}: shared string {text} does not exist") from None
    if kind == "b":
        return text.strip() in ("1", "true")
    if kind == "e":
        return ErrorValue(text.strip())
    if kind in ("str", "d"):
        return text
    try:
        return float(text)
    except ValueError:
        raise WorkbookError(f"{sheet}!{ref}: '{text}' is not a number") from None
