"""Protect a sheet of a finished workbook the way Excel stores it (every cell locked, Excel's default)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from xlcf.ooxml.package import Package


def protect_sheet(path: Path, sheet: str) -> Path:
    """Rewrite ``path`` with ``<sheetProtection sheet="1"/>`` after the sheet's data (its place in the schema)."""
    part = Package.open(path).sheet_part(sheet)
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            if info.filename == part:
                assert b"<sheetProtection" not in data
                data = data.replace(b"</sheetData>", b'</sheetData><sheetProtection sheet="1"/>', 1)
            zf.writestr(info, data)
    return path
