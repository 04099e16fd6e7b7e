"""Lossless editing of .xlsx/.xlsm packages at the zip level: parts and relationships (:mod:`.parts`), raw zip
records (:mod:`.zipio`), the :class:`Package` (parts, defined names, sheets, save), worksheet XML and cells
(:mod:`.sheet`, :mod:`.values`), charts (:mod:`.charts`) and A1 references (:mod:`.refs`). No domain imports."""

from xlcf.ooxml.charts import line_chart_xml
from xlcf.ooxml.package import DefinedName, Package, open_package
from xlcf.ooxml.refs import Area, cell_ref, col_index, col_letter, parse_range, quote_sheet, shift_formula, split_ref
from xlcf.ooxml.values import ERROR_CODES, Cell, CellValue, ErrorValue

__all__ = [
    "ERROR_CODES",
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
    "split_ref",
]
