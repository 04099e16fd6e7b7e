"""The ``movielens`` workbook: train on all ratings from a spreadsheet, then read what the model learned.

Three seams, so the headless CLI and the Excel add-in run the same logic:

- :func:`build_movielens` writes a NEW workbook (openpyxl): the ``movielens`` settings sheet (sheet-scoped
  names, metrics, status) and every output sheet pre-laid with headers, formats and native charts that point at
  the ranges a training fills. The ``embeddings`` sheet holds live formulas (INDEX/MATCH look-ups next to the
  same look-ups as one-hot x embedding matrix with MMULT).
- :func:`compute_outputs` is pure: a trained :class:`~xlcf.train.FitResult` + the data in, cell blocks out
  (``{sheet: [(top_left, rows)]}``; finite float/int/str/bool/None only). The zip writer here and the xlwings
  writer (``xlcf.excel``) both only write these blocks.
- :func:`train_workbook` (``xlcf fit BOOK --sheet movielens``) reads the settings through the zip
  :class:`~xlcf.ooxml.package.Package`, trains, and writes every block in place (atomic, every other zip
  member byte-identical); :func:`write_results` does the writing for ``xlcf train RATINGS --out BOOK``.

Everything stays far inside Excel's limits: the largest block is the embeddings sheet (225 rows x ~4k+50
columns); the full ratings never go into cells.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from xlcf import catalog
from xlcf.errors import ConfigError, WorkbookError
from xlcf.fileio import atomic_write_bytes
from xlcf.lessons.charts import honest
from xlcf.lessons.movielens.layout import (
    BIAS_COLUMNS,
    BIAS_TOP,
    CROSSTAB_TOP,
    CT_PRED_COL,
    CT_TITLES_TOP,
    CT_TOP,
    DEFAULT_HISTORY_ROWS,
    EMB_LONG_HEADER,
    EMB_LONG_TOP,
    EMB_MOVIE_TOP,
    EMB_USER_TOP,
    HALF_STARS,
    HISTORY_COLUMNS,
    HISTORY_HEADER_ROW,
    HISTORY_TOP,
    LONG_CAPACITY,
    MAX_EPOCHS,
    MAX_FACTORS,
    METRIC_REF,
    METRICS,
    METRICS_TOP,
    N_COMPONENTS,
    PCA_BLOCK_STEP,
    PCA_HIGH_TOP,
    PCA_LOW_TOP,
    PCA_VAR_TOP,
    PVA_TOP,
    REC_COLUMNS,
    REC_TOP,
    SETTING_REF,
    SETTINGS,
    SETTINGS_TOP,
    SHEET,
    STATUS_REF,
    TOP_N_BIAS,
    TOP_N_PCA,
    TOP_N_RECOMMEND,
    EmbeddingsLayout,
    MovielensOutputs,
)
from xlcf.lessons.page import setup_page
from xlcf.ooxml.refs import cell_ref, col_letter, split_ref

EMB_PRINT_COLS = 16  # columns of the embeddings sheet that print (the first screen)

# ------------------------------------------------------------------------------------------------------------
# Generator (openpyxl, new workbooks only)


def _styles():
    from openpyxl.styles import Alignment, Font, PatternFill

    return {
        "title": Font(bold=True, size=14),
        "bold": Font(bold=True),
        "note": Font(italic=True, color="595959"),
        "out": Font(color="1F3864"),
        "input_fill": PatternFill("solid", fgColor="FFF2CC"),
        "head_fill": PatternFill("solid", fgColor="D9E1F2"),
        "center": Alignment(horizontal="center"),
    }


def _titled_sheet(wb, name: str, st, title: str, note: str | None = None, *, first: bool = False):
    """A new sheet (``first``: the workbook's initial one, renamed) with its title in A1 and a note in A2."""
    ws = wb.active if first else wb.create_sheet(name)
    ws.title = name
    ws["A1"] = title
    ws["A1"].font = st["title"]
    if note is not None:
        ws["A2"] = note
        ws["A2"].font = st["note"]
    return ws


def _header(ws, row: int, col: int, labels, st) -> None:
    for j, label in enumerate(labels):
        cell = ws.cell(row, col + j, label)
        cell.font = st["bold"]
        cell.fill = st["head_fill"]


def _out(ws, row: int, col: int, fmt: str, st, value=None) -> None:
    """Pre-lay an output cell: styled (so it exists in the XML and the zip writer only edits it)."""
    cell = ws.cell(row, col)
    if value is not None:
        cell.value = value
    cell.font = st["out"]
    cell.number_format = fmt


def _out_block(ws, top: int, left: int, formats: list[str], n_rows: int, st) -> None:
    for i in range(n_rows):
        for j, fmt in enumerate(formats):
            _out(ws, top + i, left + j, fmt, st)


def _name(ws, name: str, ref: str) -> None:
    from openpyxl.workbook.defined_name import DefinedName

    row, col = split_ref(ref)
    ws.defined_names[name] = DefinedName(name, attr_text=f"'{ws.title}'!${col_letter(col)}${row}")


def _sheet_movielens(wb, settings: dict[str, Any], st) -> None:
    from openpyxl.worksheet.datavalidation import DataValidation

    ws = _titled_sheet(
        wb,
        SHEET,
        st,
        "xlcf · MovieLens: train on all ratings, then see what the model learned",
        (
            "Edit the yellow cells, then press Train (or, in a terminal: xlcf fit <this workbook> --sheet movielens). "
            "Results go to the sheets history, movie_bias, movie_pca, recommend, pred_vs_actual, crosstab, "
            "embeddings."
        ),
        first=True,
    )
    _header(ws, SETTINGS_TOP - 1, 1, ("setting", "value"), st)
    _header(ws, SETTINGS_TOP - 1, 4, ("metric", "value"), st)
    ws.cell(SETTINGS_TOP - 1, 7, "what it means").font = st["bold"]
    for i, s in enumerate(SETTINGS):
        row = SETTINGS_TOP + i
        ws.cell(row, 1, s.label)
        cell = ws.cell(row, 2, settings.get(s.name, s.default))
        cell.fill = st["input_fill"]
        cell.number_format = s.number_format
        ws.cell(row, 7, s.help).font = st["note"]
        _name(ws, s.name, SETTING_REF[s.name])
    for i, (name, label, fmt) in enumerate(METRICS):
        ws.cell(METRICS_TOP + i, 4, label)
        _out(ws, METRICS_TOP + i, 5, fmt, st)
        _name(ws, name, METRIC_REF[name])
    status_row = int(STATUS_REF[1:])
    ws.cell(status_row, 1, "status").font = st["bold"]
    _out(ws, status_row, 2, "General", st, "not trained yet")
    _name(ws, "status", STATUS_REF)
    for name, choices in (
        ("model", ",".join(catalog.MODELS)),
        ("optimizer", ",".join(catalog.optimizer_names())),
        ("device", ",".join(catalog.DEVICES)),
    ):
        dv = DataValidation(type="list", formula1=f'"{choices}"', allow_blank=True, showErrorMessage=False)
        ws.add_data_validation(dv)
        dv.add(SETTING_REF[name])
    ws.column_dimensions["A"].width = 26
    ws.column_dimensions["B"].width = 18
    ws.column_dimensions["D"].width = 20
    ws.column_dimensions["E"].width = 20
    ws.column_dimensions["G"].width = 60


def _history_chart(ws, n_rows: int):
    from openpyxl.chart import LineChart, Reference

    chart = LineChart()
    chart.title = "RMSE per epoch"
    chart.y_axis.title = "RMSE"
    chart.x_axis.title = "epoch"
    last = HISTORY_TOP + max(n_rows, 1) - 1
    data = Reference(ws, min_col=3, max_col=4, min_row=HISTORY_HEADER_ROW, max_row=last)
    chart.add_data(data, titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=HISTORY_TOP, max_row=last))
    chart.height, chart.width = 9, 16
    return honest(chart)


def _sheet_history(wb, n_rows: int, st) -> None:
    ws = _titled_sheet(wb, "history", st, "Training history: one row per epoch (loss is the training objective, MSE)")
    ws["G2"] = "rows"
    _out(ws, 2, 8, "0", st, 0)
    _header(ws, HISTORY_HEADER_ROW, 1, HISTORY_COLUMNS, st)
    _out_block(ws, HISTORY_TOP, 1, ["0", "0.0000", "0.0000", "0.0000", "0.000"], n_rows, st)
    ws.add_chart(_history_chart(ws, n_rows), "G4")
    for col, width in zip("ABCDE", (8, 12, 12, 12, 10)):
        ws.column_dimensions[col].width = width


def _sheet_movie_bias(wb, st) -> None:
    from openpyxl.chart import BarChart, Reference

    ws = _titled_sheet(
        wb, "movie_bias", st, "Movie biases: which movies are rated better (or worse) than their audience suggests"
    )
    ws["C3"] = "min ratings N (movies with at least N training ratings)"
    _out(ws, 3, 4, "0", st)
    _out(ws, 4, 1, "General", st)
    ws["A4"].font = st["note"]
    for col, label in ((1, "15 highest biases"), (8, "15 lowest biases")):
        ws.cell(BIAS_TOP - 2, col, label).font = st["bold"]
        _header(ws, BIAS_TOP - 1, col, BIAS_COLUMNS, st)
        _out_block(ws, BIAS_TOP, col, ["0", "0", "@", "0.000", "#,##0", "0.00"], TOP_N_BIAS, st)
    for col, title, anchor in ((1, "Highest movie biases", "A24"), (8, "Lowest movie biases", "H24")):
        chart = BarChart()
        chart.type = "bar"
        chart.title = title
        chart.legend = None
        chart.add_data(
            Reference(ws, min_col=col + 3, min_row=BIAS_TOP - 1, max_row=BIAS_TOP + TOP_N_BIAS - 1),
            titles_from_data=True,
        )
        chart.set_categories(Reference(ws, min_col=col + 2, min_row=BIAS_TOP, max_row=BIAS_TOP + TOP_N_BIAS - 1))
        chart.x_axis.tickLblPos = "low"  # titles left of the plot, also where the bars are negative
        chart.x_axis.tickLblSkip = 1
        chart.height, chart.width = 12, 15
        ws.add_chart(chart, anchor)
    for letter, width in zip("ABCDEFGHIJKLM", (6, 9, 40, 8, 8, 10, 3, 6, 9, 40, 8, 8, 10)):
        ws.column_dimensions[letter].width = width


def _sheet_movie_pca(wb, st) -> None:
    from openpyxl.chart import BarChart, Reference

    ws = _titled_sheet(
        wb,
        "movie_pca",
        st,
        "What the factors mean: first 3 principal components of the movie factors",
        (
            "PCA (SVD of the centred factor matrix) over movies with >= N training ratings; a component's "
            "two ends are the movies that differ most along it."
        ),
    )
    _header(ws, PCA_VAR_TOP - 1, 1, ("component", "explained variance", "cumulative"), st)
    ws.column_dimensions["A"].width = 11
    ws.column_dimensions["B"].width = 17
    _out_block(ws, PCA_VAR_TOP, 1, ["General", "0.0%", "0.0%"], N_COMPONENTS, st)
    ws[f"E{PCA_VAR_TOP}"], ws[f"E{PCA_VAR_TOP + 1}"] = "movies in PCA", "min ratings N"
    _out_block(ws, PCA_VAR_TOP, 6, ["#,##0"], 2, st)
    for j in range(N_COMPONENTS):
        col = 1 + j * PCA_BLOCK_STEP
        for top, label in ((PCA_HIGH_TOP, "highest"), (PCA_LOW_TOP, "lowest")):
            ws.cell(top - 2, col, f"PC{j + 1}: {TOP_N_PCA} {label}").font = st["bold"]
            _header(ws, top - 1, col, ("rank", "movieId", "title", "score"), st)
            _out_block(ws, top, col, ["0", "0", "@", "0.000"], TOP_N_PCA, st)
        ws.column_dimensions[col_letter(col + 2)].width = 36
    chart = BarChart()
    chart.title = "Explained variance"
    chart.legend = None
    chart.add_data(
        Reference(ws, min_col=2, min_row=PCA_VAR_TOP - 1, max_row=PCA_VAR_TOP + N_COMPONENTS - 1), titles_from_data=True
    )
    chart.set_categories(Reference(ws, min_col=1, min_row=PCA_VAR_TOP, max_row=PCA_VAR_TOP + N_COMPONENTS - 1))
    chart.height, chart.width = 6, 10
    ws.add_chart(chart, "P3")


def _sheet_recommend(wb, st) -> None:
    ws = _titled_sheet(
        wb,
        "recommend",
        st,
        "Top 10 movies the user has not rated, by predicted rating "
        "(± = the prediction's posterior predictive std, with optimizer gibbs)",
    )
    for i, (label, fmt) in enumerate((("user id", "0"), ("movies rated", "#,##0"), ("mean rating", "0.00"))):
        ws.cell(2 + i, 1, label)
        _out(ws, 2 + i, 2, fmt, st)
    _header(ws, REC_TOP - 1, 1, REC_COLUMNS, st)
    _out_block(ws, REC_TOP, 1, ["0", "0", "@", "0.00", "0.00", "#,##0"], TOP_N_RECOMMEND, st)
    for col, width in zip("ABCDEF", (14, 9, 48, 10, 7, 9)):
        ws.column_dimensions[col].width = width


def _sheet_pred_vs_actual(wb, st) -> None:
    from openpyxl.chart import Reference, ScatterChart, Series
    from openpyxl.formatting.rule import ColorScaleRule

    ws = _titled_sheet(
        wb,
        "pred_vs_actual",
        st,
        "Predicted vs actual on the validation set (the lesson's hexbin plot as a heat map)",
        (
            "Rows: actual rating; columns: prediction rounded to the nearest half star (clipped to 0.5-5); "
            "cells: number of validation ratings."
        ),
    )
    ws.cell(PVA_TOP - 2, 2, "predicted →").font = st["bold"]
    _header(ws, PVA_TOP - 1, 1, ("actual ↓", *HALF_STARS, "n", "mean prediction"), st)
    for i, level in enumerate(HALF_STARS):
        _out(ws, PVA_TOP + i, 1, "0.0", st, level)
        ws.cell(PVA_TOP + i, 1).font = st["bold"]
    _out_block(ws, PVA_TOP, 2, ["#,##0"] * 10 + ["#,##0", "0.000"], 10, st)
    ws.conditional_formatting.add(
        f"B{PVA_TOP}:K{PVA_TOP + 9}",
        ColorScaleRule(
            start_type="min",
            start_color="FFFFFF",
            mid_type="percentile",
            mid_value=50,
            mid_color="9BC2E6",
            end_type="max",
            end_color="1F4E78",
        ),
    )
    ws["A18"], ws["A19"] = "validation RMSE", "validation ratings"
    ws.column_dimensions["A"].width = 18
    _out(ws, 18, 2, "0.0000", st)
    _out(ws, 19, 2, "#,##0", st)
    chart = ScatterChart()
    chart.title = "Mean prediction per actual rating"
    chart.x_axis.title = "actual rating"
    chart.y_axis.title = "mean prediction"
    chart.style = 13
    xs = Reference(ws, min_col=1, min_row=PVA_TOP, max_row=PVA_TOP + 9)
    mean = Series(Reference(ws, min_col=13, min_row=PVA_TOP, max_row=PVA_TOP + 9), xs, title="mean prediction")
    ideal = Series(Reference(ws, min_col=1, min_row=PVA_TOP, max_row=PVA_TOP + 9), xs, title="perfect")
    mean.marker.symbol = "circle"
    mean.graphicalProperties.line.solidFill = "1F4E78"
    mean.marker.graphicalProperties.solidFill = "1F4E78"
    ideal.marker.symbol = "none"
    ideal.graphicalProperties.line.solidFill = "A6A6A6"
    ideal.graphicalProperties.line.dashStyle = "dash"
    chart.series.append(mean)
    chart.series.append(ideal)
    honest(chart)
    chart.height, chart.width = 9, 14
    ws.add_chart(chart, "O4")


def _sheet_crosstab(wb, st) -> None:
    from openpyxl.formatting.rule import ColorScaleRule

    ws = _titled_sheet(
        wb,
        "crosstab",
        st,
        "The lesson's 15x15 crosstab (most active users x most rated movies of the training data)",
        ("Left: ratings in the training data (blank = not rated). Right: the full model's prediction for every cell."),
    )
    ws.cell(CT_TOP - 2, 1, "ratings").font = st["bold"]
    ws.cell(CT_TOP - 2, CT_PRED_COL, "model predictions").font = st["bold"]
    for left in (1, CT_PRED_COL):
        ws.cell(CT_TOP - 1, left, "userId \\ movieId").font = st["bold"]
        _out_block(ws, CT_TOP - 1, left + 1, ["0"] * CROSSTAB_TOP, 1, st)
        _out_block(ws, CT_TOP, left, ["0"] + ["0.0" if left == 1 else "0.00"] * CROSSTAB_TOP, CROSSTAB_TOP, st)
        block = f"{col_letter(left + 1)}{CT_TOP}:{col_letter(left + CROSSTAB_TOP)}{CT_TOP + CROSSTAB_TOP - 1}"
        ws.conditional_formatting.add(
            block,
            ColorScaleRule(
                start_type="num",
                start_value=0.5,
                start_color="F8696B",
                mid_type="num",
                mid_value=3,
                mid_color="FFEB84",
                end_type="num",
                end_value=5,
                end_color="63BE7B",
            ),
        )
    row = CT_TOP + CROSSTAB_TOP + 1
    ws.cell(row, 1, "RMSE on rated cells")
    ws.cell(row + 1, 1, "rated cells")
    _out(ws, row, 2, "0.0000", st)
    _out(ws, row + 1, 2, "0", st)
    _header(ws, CT_TITLES_TOP - 1, 1, ("movieId", "title"), st)
    _out_block(ws, CT_TITLES_TOP, 1, ["0", "@"], CROSSTAB_TOP, st)
    ws.column_dimensions["A"].width = 16


def embeddings_formulas(k: int, rows: int) -> list[tuple[str, str, str | None, str | None]]:
    """The live formulas of the embeddings sheet: ``(ref, formula, array_range or None, number_format)``.

    Pure, so the xlwings writer can lay the sheet out again (``Range.formula`` / ``Range.formula_array``)
    when k or the number of rated cells changed, exactly as the generator does."""
    lay = EmbeddingsLayout(k, rows)
    top, bottom, head = EMB_LONG_TOP, lay.last_row, EMB_LONG_HEADER
    user_ids = f"$A${EMB_USER_TOP}:$A${EMB_USER_TOP + CROSSTAB_TOP - 1}"
    movie_ids = f"$A${EMB_MOVIE_TOP}:$A${EMB_MOVIE_TOP + CROSSTAB_TOP - 1}"
    uvec = (col_letter(lay.uvec), col_letter(lay.uvec + k - 1))
    mvec = (col_letter(lay.mvec), col_letter(lay.mvec + k - 1))
    umm = (col_letter(lay.umm), col_letter(lay.umm + k - 1))
    mmm = (col_letter(lay.mmm), col_letter(lay.mmm + k - 1))
    fact = "0.0000"
    out: list[tuple[str, str, str | None, str | None]] = []
    for r in range(top, bottom + 1):
        for j in range(k):
            src = col_letter(2 + j)
            out.append(
                (
                    cell_ref(r, lay.uvec + j),
                    f'=IF($A{r}="","",INDEX({src}${EMB_USER_TOP}:{src}$'
                    f"{EMB_USER_TOP + CROSSTAB_TOP - 1},MATCH($A{r},{user_ids},0)))",
                    None,
                    fact,
                )
            )
            out.append(
                (
                    cell_ref(r, lay.mvec + j),
                    f'=IF($B{r}="","",INDEX({src}${EMB_MOVIE_TOP}:{src}$'
                    f"{EMB_MOVIE_TOP + CROSSTAB_TOP - 1},MATCH($B{r},{movie_ids},0)))",
                    None,
                    fact,
                )
            )
        out.append(
            (
                cell_ref(r, lay.dot_lookup),
                f'=IF($A{r}="","",SUMPRODUCT({uvec[0]}{r}:{uvec[1]}{r},{mvec[0]}{r}:{mvec[1]}{r}))',
                None,
                fact,
            )
        )
        for j in range(CROSSTAB_TOP):
            ucol, mcol = col_letter(lay.uhot + j), col_letter(lay.mhot + j)
            out.append((cell_ref(r, lay.uhot + j), f'=IF(AND($A{r}<>"",$A{r}={ucol}${head}),1,0)', None, None))
            out.append((cell_ref(r, lay.mhot + j), f'=IF(AND($B{r}<>"",$B{r}={mcol}${head}),1,0)', None, None))
        out.append(
            (
                cell_ref(r, lay.dot_hot),
                f'=IF($A{r}="","",SUMPRODUCT({umm[0]}{r}:{umm[1]}{r},{mmm[0]}{r}:{mmm[1]}{r}))',
                None,
                fact,
            )
        )
        out.append(
            (
                cell_ref(r, lay.diff),
                f'=IF($A{r}="","",{col_letter(lay.dot_lookup)}{r}-{col_letter(lay.dot_hot)}{r})',
                None,
                "0.0E+00",
            )
        )
    last_k = col_letter(1 + k)
    uhot_block = f"{col_letter(lay.uhot)}{top}:{col_letter(lay.uhot + CROSSTAB_TOP - 1)}{bottom}"
    mhot_block = f"{col_letter(lay.mhot)}{top}:{col_letter(lay.mhot + CROSSTAB_TOP - 1)}{bottom}"
    out.append(
        (
            f"{umm[0]}{top}",
            f"=MMULT({uhot_block},$B${EMB_USER_TOP}:${last_k}${EMB_USER_TOP + 14})",
            f"{umm[0]}{top}:{umm[1]}{bottom}",
            fact,
        )
    )
    out.append(
        (
            f"{mmm[0]}{top}",
            f"=MMULT({mhot_block},$B${EMB_MOVIE_TOP}:${last_k}${EMB_MOVIE_TOP + 14})",
            f"{mmm[0]}{top}:{mmm[1]}{bottom}",
            fact,
        )
    )
    return out


def _sheet_embeddings(wb, k: int, rows: int, st) -> None:
    from openpyxl.worksheet.formula import ArrayFormula

    lay = EmbeddingsLayout(k, rows)
    ws = _titled_sheet(
        wb,
        "embeddings",
        st,
        "An embedding is a one-hot multiplication (the lesson's movielens_emb and movielens_1hot)",
        (
            "The 15x15 ratings as a long table. Each row looks up its user's and movie's factors twice: "
            "with INDEX/MATCH, and as one-hot row x embedding matrix (MMULT). The dot products agree. "
            "Printing shows the first screen only (the two factor matrices)."
        ),
    )
    ws["A3"], ws["C3"] = "factors", "rows"
    _out(ws, 3, 2, "0", st, k)
    _out(ws, 3, 4, "0", st, lay.rows)
    fact_fmt = "0.0000"
    for top, label, id_label in (
        (EMB_USER_TOP, "user embeddings (the model's user factors)", "userId"),
        (EMB_MOVIE_TOP, "movie embeddings (the model's movie factors)", "movieId"),
    ):
        ws.cell(top - 2, 1, label).font = st["bold"]
        _header(ws, top - 1, 1, (id_label, *(f"f{j + 1}" for j in range(k))), st)
        _out_block(ws, top, 1, ["0"], CROSSTAB_TOP, st)
        for i in range(CROSSTAB_TOP):
            for j in range(k):
                _out(ws, top + i, 2 + j, fact_fmt, st, 0.0)
    head = EMB_LONG_HEADER
    top, bottom = EMB_LONG_TOP, lay.last_row
    for col, label in (
        (1, "ratings (long table)"),
        (lay.uvec, "user factors: INDEX/MATCH"),
        (lay.mvec, "movie factors: INDEX/MATCH"),
        (lay.dot_lookup, "dot"),
        (lay.uhot, "user one-hot (userId →)"),
        (lay.mhot, "movie one-hot (movieId →)"),
        (lay.umm, "user factors: MMULT(one-hot, user embeddings)"),
        (lay.mmm, "movie factors: MMULT(one-hot, movie embeddings)"),
        (lay.dot_hot, "dot"),
    ):
        ws.cell(head - 1, col, label).font = st["bold"]
    _header(ws, head, 1, ("userId", "movieId", "rating", "model prediction"), st)
    _header(ws, head, lay.uvec, [f"u{j + 1}" for j in range(k)], st)
    _header(ws, head, lay.mvec, [f"m{j + 1}" for j in range(k)], st)
    _header(ws, head, lay.dot_lookup, ["u·m"], st)
    _header(ws, head, lay.umm, [f"u{j + 1}" for j in range(k)], st)
    _header(ws, head, lay.mmm, [f"m{j + 1}" for j in range(k)], st)
    _header(ws, head, lay.dot_hot, ["u·m", "difference"], st)
    _out_block(ws, head, lay.uhot, ["0"] * CROSSTAB_TOP, 1, st)
    _out_block(ws, head, lay.mhot, ["0"] * CROSSTAB_TOP, 1, st)
    for col in (lay.uhot, lay.mhot):
        for j in range(CROSSTAB_TOP):
            ws.cell(head, col + j).font = st["bold"]
    _out_block(ws, top, 1, ["0", "0", "0.0", "0.000"], lay.rows, st)
    for ref, formula, array_ref, fmt in embeddings_formulas(k, lay.rows):
        if array_ref is None:
            cell = ws[ref]
            cell.value = formula
        else:
            ws[ref] = ArrayFormula(array_ref, formula)
            cell = ws[ref]
        if fmt:
            cell.number_format = fmt
    for r in range(top, bottom + 1):  # number formats of the array cells (values come from the array formula)
        for c0 in (lay.umm, lay.mmm):
            for j in range(k):
                ws.cell(r, c0 + j).number_format = fact_fmt


def _new_workbook(settings: dict[str, Any], k: int, history_rows: int, embedding_rows: int = LONG_CAPACITY):
    import openpyxl

    st = _styles()
    wb = openpyxl.Workbook()
    _sheet_movielens(wb, settings, st)
    _sheet_history(wb, history_rows, st)
    _sheet_movie_bias(wb, st)
    _sheet_movie_pca(wb, st)
    _sheet_recommend(wb, st)
    _sheet_pred_vs_actual(wb, st)
    _sheet_crosstab(wb, st)
    _sheet_embeddings(wb, k, embedding_rows, st)
    for ws in wb.worksheets:  # print (and PDF) each sheet landscape, one page wide where readable
        if ws.title == "embeddings":
            # thousands of formula cells: only the first screen (the two factor matrices) prints
            last_col = min(1 + k, EMB_PRINT_COLS)
            area = f"A1:{col_letter(last_col)}{EMB_MOVIE_TOP + CROSSTAB_TOP - 1}"
            setup_page(
                ws,
                last_col=last_col,
                last_row=EMB_MOVIE_TOP + CROSSTAB_TOP - 1,
                print_area=area,
                one_page=True,
                title="embeddings (first screen): &D",
            )
        else:
            setup_page(ws, last_col=ws.max_column, last_row=ws.max_row, title=f"{ws.title}: &D")
    return wb


def _fill_openpyxl(wb, outputs: MovielensOutputs) -> None:
    for sheet, blocks in outputs.blocks.items():
        ws = wb[sheet]
        for top_left, rows in blocks:
            r0, c0 = split_ref(top_left)
            for i, values in enumerate(rows):
                for j, value in enumerate(values):
                    ws.cell(r0 + i, c0 + j).value = value


def _save_atomic(wb, path: Path) -> None:
    folder = path.resolve().parent
    if not folder.is_dir():
        raise WorkbookError(f"folder {folder} does not exist", where=str(path))
    buf = io.BytesIO()
    wb.save(buf)  # in memory first: an openpyxl error leaves not even a temporary file
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:
        raise WorkbookError(f"could not write the workbook ({err.strerror or err})", where=str(path)) from None


def build_movielens(
    path: str | os.PathLike,
    *,
    ratings_source: str | None = None,
    force: bool = False,
    settings: dict[str, Any] | None = None,
    outputs: MovielensOutputs | None = None,
) -> Path:
    """Write a NEW movielens workbook at ``path`` (refuses to overwrite unless ``force``).

    ``settings`` pre-fills setting cells (names as in :data:`SETTINGS`); ``outputs`` fills the result sheets
    at once (used by :func:`write_results` for a book that does not exist yet)."""
    target = Path(path)
    if target.suffix.lower() not in (".xlsx", ".xlsm"):
        raise WorkbookError("expected a .xlsx file name", where=str(target))
    if target.exists() and not force:
        raise WorkbookError("already exists; pass --force to replace it", where=str(target))
    values = {s.name: s.default for s in SETTINGS}
    values.update({k: v for k, v in (settings or {}).items() if k in values and v is not None})
    if ratings_source is not None:
        values["ratings_source"] = str(ratings_source)
    # The embeddings sheet is laid out for the k a training with these settings will have.
    k = (
        int(outputs.factors)
        if outputs is not None
        else int(values["factors"] or catalog.default_factors(str(values["optimizer"])))
    )
    if not 1 <= k <= MAX_FACTORS:
        raise ConfigError(f"factors={k}: expected 1 to {MAX_FACTORS}")
    epochs = values.get("epochs")
    history_rows = outputs.history_rows if outputs is not None else int(epochs or DEFAULT_HISTORY_ROWS)
    rows = outputs.embedding_rows if outputs is not None else LONG_CAPACITY
    wb = _new_workbook(values, k, max(1, min(history_rows, MAX_EPOCHS)), rows)
    if outputs is not None:
        _fill_openpyxl(wb, outputs)
    _save_atomic(wb, target)
    return target
