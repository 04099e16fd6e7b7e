"""Page setup for generated sheets: landscape, narrow margins, one page wide at a readable scale.

The scale a spreadsheet picks for "fit to N pages" is not stored in the file, so it is estimated here from the
column widths and row heights the generator wrote (Excel's default font: a width unit is ~7 px plus 5 px of
padding per column, a default row 20 px at 96 dpi) against the printable area of the smaller of A4 and Letter in
landscape. A sheet that would print below ``MIN_SCALE`` on one page wide prints at ``MIN_SCALE`` instead."""

from __future__ import annotations

from dataclasses import dataclass

MIN_SCALE = 0.5
MARGIN_IN = 0.3
PRINTABLE_W_PX = (11.0 - 2 * MARGIN_IN) * 96  # Letter landscape is the narrower of the two
PRINTABLE_H_PX = (8.27 - 2 * MARGIN_IN - 0.6) * 96  # A4 landscape is the shorter; 0.6 in for header/footer
DEFAULT_WIDTH = 8.43
DEFAULT_ROW_PT = 15.0


@dataclass(frozen=True)
class PagePlan:
    scale_wide: float  # scale at which the content is one page wide
    scale_one_page: float  # scale at which it fits on one page
    fit_width: bool
    fit_height: bool

    @property
    def scale(self) -> float:
        """The scale the sheet prints at (what a reader sees)."""
        if self.fit_height:
            return min(self.scale_one_page, 1.0)
        if self.fit_width:
            return min(self.scale_wide, 1.0)
        return MIN_SCALE


def content_px(ws, last_col: int, last_row: int) -> tuple[float, float]:
    """Width and height in pixels of columns 1..last_col and rows 1..last_row of an openpyxl worksheet."""
    from openpyxl.utils import get_column_letter

    width = 0.0
    for c in range(1, last_col + 1):
        dim = ws.column_dimensions.get(get_column_letter(c))
        units = dim.width if dim is not None and dim.width else DEFAULT_WIDTH
        width += units * 7 + 5
    height = 0.0
    for r in range(1, last_row + 1):
        dim = ws.row_dimensions.get(r)
        pt = dim.height if dim is not None and dim.height else DEFAULT_ROW_PT
        height += pt * 96 / 72
    return width, height


def _with_chart(ws, chart, w: float, h: float) -> tuple[float, float]:
    from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

    anchor = chart.anchor if isinstance(chart.anchor, str) else None
    if anchor is None:
        return w, h
    col_letters, row = coordinate_from_string(anchor)
    left, top = content_px(ws, column_index_from_string(col_letters) - 1, row - 1)
    cm = 96 / 2.54
    return max(w, left + chart.width * cm), max(h, top + chart.height * cm)


def plan_page(width_px: float, height_px: float, *, one_page: bool) -> PagePlan:
    wide = PRINTABLE_W_PX / max(width_px, 1.0)
    page = min(wide, PRINTABLE_H_PX / max(height_px, 1.0))
    fit_height = one_page and page >= MIN_SCALE
    return PagePlan(scale_wide=wide, scale_one_page=page, fit_width=wide >= MIN_SCALE, fit_height=fit_height)


def setup_page(
    ws, last_col: int, last_row: int, *, one_page: bool = False, print_area: str | None = None, title: str | None = None
) -> PagePlan:
    """Landscape, narrow margins, fit to one page wide (and one page tall when ``one_page`` and readable),
    gridlines printed; ``print_area`` limits what prints (an A1 range). Returns the plan (tests read its scale)."""
    from openpyxl.worksheet.properties import PageSetupProperties

    w, h = content_px(ws, last_col, last_row)
    for chart in getattr(ws, "_charts", []):  # charts count where they reach beyond the cells
        w, h = _with_chart(ws, chart, w, h)
    plan = plan_page(w, h, one_page=one_page)
    ws.page_setup.orientation = "landscape"
    ws.page_margins.left = ws.page_margins.right = MARGIN_IN
    ws.page_margins.top = ws.page_margins.bottom = MARGIN_IN + 0.3
    ws.page_margins.header = ws.page_margins.footer = 0.2
    if plan.fit_width:
        ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
        ws.page_setup.fitToWidth = 1
        ws.page_setup.fitToHeight = 1 if plan.fit_height else 0
    else:
        ws.page_setup.scale = int(MIN_SCALE * 100)
    ws.print_options.gridLines = True
    if print_area:
        ws.print_area = print_area
    if title:
        ws.oddHeader.center.text = title
    return plan
