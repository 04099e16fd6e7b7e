"""Lossless editing of .xlsx/.xlsm packages at the zip level: parts and relationships (:mod:`.parts`), raw zip
records (:mod:`.zipio`), the :class:`Package` (parts, defined names, sheets, save), worksheet XML and cells
(:mod:`.sheet`, :mod:`.values`), charts (:mod:`.charts`) and A1 references (:mod:`.refs`). No domain imports.

API (stable):
    Package.open(path) -> Package            WorkbookError: missing, not a zip, encrypted OLE/.xls, truncated
    pkg.sheet_names / pkg.has_sheet(name) / pkg.sheet_part(name)
    pkg.names() -> [DefinedName(name, value, sheet|None, hidden)]     every defined name, hidden included
    pkg.defined_names(sheet=None) -> {name: value}                      global (+ that sheet's scoped names)
    pkg.name_areas(sheet, name) -> [Area] | None                        a name's ranges, parsed
    pkg.read_cell(sheet, "H2") -> Cell(value, formula, ref, style, formula_type)
    pkg.read_range(sheet, "H2:V16") -> [[Cell]] ; pkg.read_values(sheet, ref) -> [[value]]
    pkg.used_cells(sheet) -> {ref: Cell}
    pkg.write_values(sheet, {ref: value}, overwrite_formulas=False) -> n   (value: float|int|str|bool|ErrorValue|None)
    pkg.write_block(sheet, "A1", rows)       -> n
    pkg.set_cached_values(sheet, {ref: value}) -> n                     formula kept
    pkg.set_defined_name(name, value, sheet=None, hidden=False)
    pkg.add_sheet(name) -> part ; pkg.clear_sheet(name)
    pkg.chart_parts(sheet) -> [part] ; pkg.add_chart(sheet, chart_xml, anchor=(c1, r1, c2, r2), replace=None)
    line_chart_xml(sheet, rows, title=..., x_title=..., y_title=...) -> bytes   (native line chart via XlsxWriter)
    pkg.read_member(name) / pkg.replace_member(name, data) / pkg.remove_member(name) / pkg.member_names
    pkg.drop_calc_chain()                    after replacing a sheet part raw (formula cells moved)
    pkg.check_writable()                     WorkbookError: read-only, ~$BOOK.xlsx lock ("close it in Excel first")
    pkg.save(path=None, backup=False)        atomic; sets fullCalcOnLoad when a sheet changed; backup -> BOOK.xlsx.bak
    pkg.to_bytes()                           the package as save() would write it
    helpers: shift_formula; the A1 helpers of xlcf.ooxml.refs (parse_range, Area, split_ref, cell_ref,
             col_letter, col_index, split_areas, quote_sheet) are re-exported
"""

from xlcf.ooxml.charts import line_chart_xml
from xlcf.ooxml.package import DefinedName, Package, open_package
from xlcf.ooxml.refs import (
    Area,
    cell_ref,
    col_index,
    col_letter,
    parse_range,
    quote_sheet,
    shift_formula,
    split_areas,
    split_ref,
)
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
    "split_areas",
    "split_ref",
]
