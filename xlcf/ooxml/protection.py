"""Sheet protection: a protected sheet's locked cells are not xlcf's to change.

A sheet is protected when its part holds ``<sheetProtection sheet="1"/>``; a cell is locked unless its cell
style (``cellXfs`` in ``xl/styles.xml``) says ``<protection locked="0"/>`` — locked is the default, so on a
protected sheet every cell is locked except the ones the author unlocked. A cell that does not exist yet takes
the style Excel would show for it (its row's, else its column's, else the default). Updating the cached value
of a formula cell is not a change of the cell (Excel recomputes it on load), so only value writes are checked.
"""

from __future__ import annotations

from collections.abc import Iterable

from xlcf.errors import WorkbookError, quote
from xlcf.ooxml.parts import parse_xml, q
from xlcf.ooxml.refs import cell_ref, split_ref
from xlcf.ooxml.sheet import Worksheet

REL_STYLES = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles"
SHOWN = 6  # cells named in the message; the rest are counted


def unlocked_styles(styles_xml: bytes | None, part: str = "xl/styles.xml") -> frozenset[int]:
    """Indices of the cell styles (``cellXfs``) that unlock their cells."""
    if not styles_xml:
        return frozenset()
    xfs = parse_xml(styles_xml, part).getroot().find(q("cellXfs"))
    if xfs is None:
        return frozenset()
    out = set()
    for i, xf in enumerate(xfs.iterchildren(q("xf"))):
        protection = xf.find(q("protection"))
        if protection is not None and protection.get("locked") in ("0", "false"):
            out.add(i)
    return frozenset(out)


def is_protected(sheet: Worksheet) -> bool:
    el = sheet.root.find(q("sheetProtection"))
    return el is not None and el.get("sheet") in ("1", "true")


def locked_refs(sheet: Worksheet, refs: Iterable[str], unlocked: frozenset[int]) -> list[str]:
    """The cells among ``refs`` that protection forbids changing (none when the sheet is not protected)."""
    if not is_protected(sheet):
        return []
    out = []
    for ref in refs:
        row, col = split_ref(ref)
        c_el = sheet.cells.get((row, col))
        style = c_el.get("s") if c_el is not None else sheet.default_style(row, col)
        index = int(style) if style and style.isdigit() else 0
        if index not in unlocked:
            out.append(cell_ref(row, col))
    return out


def protection_error(sheet: str, locked: list[str]) -> WorkbookError:
    shown = ", ".join(locked[:SHOWN]) + (f" and {len(locked) - SHOWN} more" if len(locked) > SHOWN else "")
    return WorkbookError(
        f"sheet {quote(sheet)} is protected and xlcf would change {len(locked)} locked "
        f"cell{'s' if len(locked) != 1 else ''} ({shown}); nothing was written — unprotect the "
        f"sheet first (Excel: Review > Unprotect Sheet; LibreOffice: Tools > Protect Sheet) or "
        f"run again with --force",
        where=f"{sheet}!{locked[0]}",
    )
