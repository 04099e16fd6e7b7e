"""What a fit writes besides the factor and bias blocks: the ``±`` block (the posterior predictive std of each
prediction, after a Bayesian fit) and the ``fit_log`` sheet (``xlcf fit --history``).

The ``±`` block mirrors the prediction block two rows under it (under the RMSE cell when that is lower): a title
row, the prediction block's column labels, then one cell per prediction, each under the same movie column, with
the user labels at its left. The first ``gibbs`` fit places it, only where every cell is empty, and defines the
sheet-scoped name ``prediction_std`` over its numbers; that name is how later fits know the cells are the fit's.
A later fit that is not Bayesian and changes the factors blanks the numbers and says so in the title, so the
block never shows a spread for factors that are not the sheet's. Nothing outside the block is ever written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlcf.actions.sheetio import SheetIO
from xlcf.errors import WorkbookError
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area, absolute, cell_ref, quote_sheet, sheet_cell
from xlcf.ooxml.values import CellValue

FIT_LOG_SHEET = "fit_log"
STD_NAME = "prediction_std"
STD_FORMAT = "0.00"


def std_title(optimizer: str, sweeps: int) -> str:
    return f"± posterior predictive std of each prediction (last fit: {optimizer}, {sweeps} sweeps)"


def std_cleared_title(optimizer: str) -> str:
    return f"± std: none (the last fit, {optimizer}, is not Bayesian; fit with gibbs to fill this block)"


@dataclass
class StdBlock:
    """The ``±`` block a fit writes: ``values`` holds every cell (title, labels, numbers or blanks)."""

    area: Area  # the numbers, shaped as the predictions
    values: dict[str, CellValue]
    new: bool  # placed by this fit: the name must be defined and the styles copied
    styles: dict[str, str] = field(default_factory=dict)  # new cell -> the cell whose style it takes
    cleared: bool = False

    def describe(self, sheet: str) -> dict[str, Any]:
        return {"range": f"{sheet}!{self.area.ref}", "name": STD_NAME, "new": self.new, "cleared": self.cleared}


def _title_cell(area: Area) -> tuple[int, int]:
    return area.top - 2, max(area.left - 1, 1)


def _blank(value: CellValue, formula: str | None) -> bool:
    return formula is None and (value is None or (isinstance(value, str) and not value.strip()))


def plan_std_block(
    io: SheetIO,
    predictions: Area | None,
    rmse: Area | None,
    std: np.ndarray | None,
    optimizer: str,
    sweeps: int,
    fitted: Sequence[Area | None] = (),
) -> tuple[StdBlock | None, list[str]]:
    """The ``±`` block to write (None: nothing to write) and notes for the user. ``std`` is the (users x movies)
    posterior predictive std of a Bayesian fit, None after any other fit (then an existing block is blanked).
    ``fitted``: the ratings, factor and bias blocks, never copied as labels (on a layout where one of them borders
    the predictions)."""
    sheet = io.sheet
    existing = io.name_area(STD_NAME)
    if existing is not None and (existing.sheet or sheet) != sheet:
        existing = None  # a workbook-level name of another sheet is not this sheet's block
    if existing is not None and existing.top < 3:
        return None, [f"the name {STD_NAME} ({sheet}!{existing.ref}) leaves no room for its title; left as it is"]
    if std is None:
        if existing is None:
            return None, []
        title = cell_ref(*_title_cell(existing))
        values: dict[str, CellValue] = {ref: None for row in existing.cells() for ref in row}
        values[title] = std_cleared_title(optimizer)
        return StdBlock(existing, values, new=False, cleared=True), []
    if not np.all(np.isfinite(std)):
        raise WorkbookError("the predictive std holds non-finite numbers; nothing was written")
    if predictions is None:
        return None, ["the sheet has no predictions block, so the ± std of each prediction was not written"]
    if existing is not None:
        if existing.shape != std.shape:
            return None, [
                f"the name {STD_NAME} ({sheet}!{existing.ref}) is not shaped as the predictions "
                f"({std.shape[0]}x{std.shape[1]}); the ± std was not written"
            ]
        values = _numbers(existing, std)
        values[cell_ref(*_title_cell(existing))] = std_title(optimizer, sweeps)
        return StdBlock(existing, values, new=False), []
    return _place(io, predictions, rmse, std, optimizer, sweeps, [a for a in fitted if a is not None])


def _numbers(area: Area, std: np.ndarray) -> dict[str, CellValue]:
    return {cell_ref(area.top + i, area.left + j): float(v) for (i, j), v in np.ndenumerate(std)}


def _inside(areas: list[Area], row: int, col: int) -> bool:
    return any(a.top <= row <= a.bottom and a.left <= col <= a.right for a in areas)


def _place(
    io: SheetIO, pred: Area, rmse: Area | None, std: np.ndarray, optimizer: str, sweeps: int, fitted: list[Area]
) -> tuple[StdBlock | None, list[str]]:
    """A new block under the predictions (and the RMSE cell), labelled like them, where every cell is empty."""
    sheet = io.sheet
    bottom = pred.bottom
    if rmse is not None and (rmse.sheet or sheet) == sheet and rmse.top >= pred.top:
        bottom = max(bottom, rmse.bottom)
    area = Area(sheet, bottom + 4, pred.left, bottom + 3 + pred.shape[0], pred.right)
    label_col = pred.left - 1 if pred.left > 1 else None
    whole = Area(sheet, area.top - 2, label_col or area.left, area.bottom, area.right)
    for i, (vals, forms) in enumerate(zip(io.read_values(whole), io.read_formulas(whole), strict=True)):
        for j, (v, f) in enumerate(zip(vals, forms, strict=True)):
            if not _blank(v, f):
                where = sheet_cell(sheet, whole.top + i, whole.left + j)
                return None, [
                    f"no room for the ± std under the predictions ({where} is not empty; the block needs "
                    f"{sheet}!{whole.ref} empty); it was not written"
                ]
    values = _numbers(area, std)
    styles = {
        ref: cell_ref(pred.top + i, pred.left + j) for i, row in enumerate(area.cells()) for j, ref in enumerate(row)
    }
    title = _title_cell(area)
    values[cell_ref(*title)] = std_title(optimizer, sweeps)
    styles[cell_ref(*title)] = cell_ref(pred.top - 1, title[1]) if pred.top > 1 else cell_ref(pred.top, title[1])
    if pred.top > 1:  # the column labels over the predictions (movie ids), when they are plain values
        src = Area(sheet, pred.top - 1, whole.left, pred.top - 1, pred.right)
        for j, (v, f) in enumerate(zip(io.read_values(src)[0], io.read_formulas(src)[0], strict=True)):
            if f is None and v is not None and not _inside(fitted, src.top, src.left + j):
                ref = cell_ref(area.top - 1, src.left + j)
                values[ref], styles[ref] = v, cell_ref(src.top, src.left + j)
    if label_col is not None:  # the row labels left of the predictions (user ids)
        src = Area(sheet, pred.top, label_col, pred.bottom, label_col)
        for i, (vals, forms) in enumerate(zip(io.read_values(src), io.read_formulas(src), strict=True)):
            if forms[0] is None and vals[0] is not None and not _inside(fitted, pred.top + i, label_col):
                ref = cell_ref(area.top + i, label_col)
                values[ref], styles[ref] = vals[0], cell_ref(pred.top + i, label_col)
    return StdBlock(area, values, new=True, styles=styles), []


def apply_std_block(pkg: Package, sheet: str, block: StdBlock) -> None:
    """Write the block into the zip package: values, the name (new block), the styles of the cells it mirrors."""
    pkg.write_values(sheet, block.values)
    if block.new:
        styles = {ref: pkg.read_cell(sheet, src).style for ref, src in block.styles.items()}
        pkg.set_styles(sheet, styles)
        pkg.set_defined_name(STD_NAME, f"{quote_sheet(sheet, always=True)}!{absolute(block.area.ref)}", sheet=sheet)


# ----------------------------------------------------------------------------------------------------------------
# the fit_log sheet


def write_fit_log(pkg: Package, sheet: str, fitted: Any) -> int:
    """A ``fit_log`` sheet: RMSE (and loss, seconds) per epoch with a native line chart; replaced on every fit.
    ``fitted`` is the :class:`~xlcf.actions.fit.SheetFit`."""
    from xlcf.ooxml.charts import line_chart_xml

    hist = fitted.result.history if fitted.result is not None else []
    rows: list[list[CellValue]] = [["epoch", "rmse", "loss", "seconds"]]
    for st in hist:
        loss = st.train_loss if st.train_loss is not None and math.isfinite(st.train_loss) else None
        rmse = st.train_rmse if st.train_rmse is not None and math.isfinite(st.train_rmse) else None
        rows.append([int(st.epoch), rmse, loss, float(st.seconds)])
    summary: list[list[CellValue]] = [
        ["sheet", sheet],
        ["optimizer", fitted.optimizer],
        ["device", fitted.device],
        ["rmse before", fitted.rmse_before],
        ["rmse after", fitted.rmse_after],
    ]
    if pkg.has_sheet(FIT_LOG_SHEET):
        if pkg.read_cell(FIT_LOG_SHEET, "A1").value != "epoch" or pkg.read_cell(FIT_LOG_SHEET, "F1").value != "sheet":
            raise WorkbookError(
                f"the workbook already has a sheet '{FIT_LOG_SHEET}' that xlcf did not write; rename "
                f"it or fit without --history"
            )
        pkg.clear_sheet(FIT_LOG_SHEET)
        charts = pkg.chart_parts(FIT_LOG_SHEET)
    else:
        pkg.add_sheet(FIT_LOG_SHEET, column_widths={"A": 8, "B": 10, "C": 10, "D": 9, "F": 13, "G": 16})
        charts = []
    pkg.write_block(FIT_LOG_SHEET, "A1", rows)
    pkg.write_block(FIT_LOG_SHEET, "F1", summary)
    chart = line_chart_xml(
        FIT_LOG_SHEET, [r[:2] for r in rows], title=f"RMSE per epoch ({sheet})", x_title="epoch", y_title="RMSE"
    )
    pkg.add_chart(FIT_LOG_SHEET, chart, anchor=(5, 6, 14, 24), replace=charts[0] if charts else None)
    return len(rows) - 1
