"""The lesson's gradient-descent workbook (``xlcf new graddesc``), generated headless with openpyxl.

Sheets: ``data`` (x integers 1..100 fixed by the seed, stored as values; y = slope*x + const as live
formulas of the true-parameter cells) and one sheet per optimizer -- ``basic``, ``momentum``, ``rmsprop``,
``adam``, ``adam_ann`` -- each running ONE pass over the data as live formulas, one row per data point.
The rules are those of :mod:`xlcf.lessons.graddesc_ref` (its docstring is the specification; the tests
compare LibreOffice's recalculation of these formulas with it).

Optimizer sheet layout (same on all five; columns of the pass table depend on the optimizer)::

    A1            title + the update rule
    A2            status (``status``): the last step / reset
    A3:D3         header  | start | after pass | initial
    rows 4..      one row per state variable: label in A, start value in B (name ``slope``, ``const``,
                  ``v_slope``...), after-pass formula in C (``lastslope``...), initial value in D
                  (``init_slope``...; what Reset writes back)
    next rows     hyperparameters: label A, value B (``lr``, ``beta``, ``beta1``, ``beta2``, ``eps``, ``anneal``)
    next rows     RMSE with the start values (``rmse_start``) and after the pass (``rmse``), in B
    row 20        pass table header; rows 21.. one row per data point
    right of it   RMSE history per pass (``history_pass``, ``history_rmse``; row 0 = initial values),
                  filled by ``xlcf step`` / the One step button; charts (error along the pass, RMSE per pass)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xlcf.errors import ConfigError
from xlcf.lessons import graddesc_ref as ref
from xlcf.lessons.charts import honest
from xlcf.lessons.collab import check_output_path, save_atomic
from xlcf.lessons.page import setup_page
from xlcf.ooxml.refs import absolute, col_letter, quote_sheet, range_ref

DATA_SHEET = "data"
STATUS_TEXT = "not stepped yet: One step / Five steps / Reset buttons, or `xlcf step BOOK --sheet SHEET --passes N`"
TABLE_HEADER_ROW = 20
PARAM_HEADER_ROW = 3
HISTORY_ROWS = 100  # passes kept in the history table (oldest dropped by the step when full)
DATA_FIRST_ROW = 5

RULES = {
    "basic": "basic SGD: a <- a - lr*de/da, b <- b - lr*de/db (finite-difference estimates shown beside)",
    "momentum": "momentum: v = g*(1-beta) + v*beta; a <- a - lr*v",
    "rmsprop": "RMSProp: S = beta*S + (1-beta)*g^2; a <- a - lr*g/sqrt(S+eps)",
    "adam": "Adam (no bias correction): v = g*(1-beta1) + v*beta1; S = beta2*S + (1-beta2)*g^2; "
    "a <- a - lr*v/sqrt(S+eps)",
    "adam_ann": "Adam with annealing: ratio = |de/da|/sqrt(S_slope+eps); when it grows vs the previous row, "
    "next lr = lr*anneal",
}
LABELS = {
    "const": "const (b)",
    "slope": "slope (a)",
    "v_const": "v const",
    "v_slope": "v slope",
    "s_const": "S const",
    "s_slope": "S slope",
    "lr": "lr",
    "ratio": "gradient ratio",
    "beta": "beta",
    "beta1": "beta1 (v)",
    "beta2": "beta2 (S)",
    "eps": "eps",
    "anneal": "anneal factor",
}

# pass-table columns per sheet: (key, header)
_COMMON = [("x", "x"), ("y", "y"), ("b", "intercept b"), ("a", "slope a"), ("pred", "y_pred"), ("err2", "err^2")]
COLUMNS = {
    "basic": _COMMON
    + [
        ("errb1", "errb1"),
        ("est_de_db", "est de/db"),
        ("erra1", "erra1"),
        ("est_de_da", "est de/da"),
        ("de_db", "de/db"),
        ("de_da", "de/da"),
        ("new_b", "new b"),
        ("new_a", "new a"),
    ],
    "momentum": _COMMON
    + [("de_db", "de/db"), ("de_da", "de/da"), ("v_b", "v b"), ("v_a", "v a"), ("new_b", "new b"), ("new_a", "new a")],
    "rmsprop": _COMMON
    + [("de_db", "de/db"), ("de_da", "de/da"), ("s_b", "S b"), ("s_a", "S a"), ("new_b", "new b"), ("new_a", "new a")],
    "adam": _COMMON
    + [
        ("de_db", "de/db"),
        ("de_da", "de/da"),
        ("v_b", "v b"),
        ("v_a", "v a"),
        ("s_b", "S b"),
        ("s_a", "S a"),
        ("new_b", "new b"),
        ("new_a", "new a"),
    ],
    "adam_ann": _COMMON
    + [
        ("de_db", "de/db"),
        ("de_da", "de/da"),
        ("v_b", "v b"),
        ("v_a", "v a"),
        ("s_b", "S b"),
        ("s_a", "S a"),
        ("lr", "lr"),
        ("ratio", "ratio"),
        ("next_lr", "next lr"),
        ("new_b", "new b"),
        ("new_a", "new a"),
    ],
}
# which table column carries each state variable's after-pass value
AFTER_COLUMN = {
    "const": "new_b",
    "slope": "new_a",
    "v_const": "v_b",
    "v_slope": "v_a",
    "s_const": "s_b",
    "s_slope": "s_a",
    "lr": "next_lr",
    "ratio": "ratio",
}


@dataclass(frozen=True)
class GraddescLayout:
    path: str
    seed: int
    n_points: int
    x: tuple
    data_names: dict  # name -> A1 ref on the data sheet
    names: dict = field(default_factory=dict)  # sheet -> {name -> A1 ref (no $)}
    table_first_row: int = TABLE_HEADER_ROW + 1

    def refs(self, sheet: str) -> dict[str, str]:
        return self.data_names if sheet == DATA_SHEET else self.names[sheet]


def sheet_cells(kind: str, n_points: int) -> dict[str, str]:
    """Every sheet-scoped name of an optimizer sheet -> plain A1 ref (the layout, without writing)."""
    states = ref.state_names(kind)
    hypers = ref.hyper_names(kind)
    cells = {}
    row = PARAM_HEADER_ROW + 1
    for name in states:
        cells[name] = f"B{row}"
        cells[ref.after_name(name)] = f"C{row}"
        cells[ref.init_name(name)] = f"D{row}"
        row += 1
    for name in hypers:
        cells[name] = f"B{row}"
        row += 1
    cells["status"] = "A2"  # last step/reset, written by `xlcf step` and the buttons
    cells["rmse_start"] = f"B{row}"
    cells["rmse"] = f"B{row + 1}"
    ncols = len(COLUMNS[kind])
    hcol = ncols + 2
    first, last = TABLE_HEADER_ROW + 1, TABLE_HEADER_ROW + n_points
    cells["history_pass"] = range_ref(PARAM_HEADER_ROW + 1, hcol, PARAM_HEADER_ROW + HISTORY_ROWS, hcol)
    cells["history_rmse"] = range_ref(PARAM_HEADER_ROW + 1, hcol + 1, PARAM_HEADER_ROW + HISTORY_ROWS, hcol + 1)
    cells["pass_table"] = range_ref(first, 1, last, ncols)
    return cells


def build_graddesc(path, *, seed: int = 0, force: bool = False, n_points: int = ref.N_POINTS) -> GraddescLayout:
    """Write graddesc.xlsx to ``path`` and return where everything is."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"--seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(n_points, int) or n_points < 2:
        raise ConfigError(f"the data sheet needs at least 2 points, got {n_points!r}")
    out = check_output_path(path, force=force)

    from openpyxl import Workbook
    from openpyxl.chart import LineChart, Reference, ScatterChart, Series
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.workbook.defined_name import DefinedName

    x, y = ref.make_data(seed, n_points)
    bold, italic = Font(bold=True), Font(italic=True)
    fill = lambda rgb: PatternFill("solid", start_color=rgb, end_color=rgb)

    wb = Workbook()
    wb.remove(wb.worksheets[0])  # the default sheet

    # --- data sheet ------------------------------------------------------------------------------------
    ds = wb.create_sheet(DATA_SHEET)
    ds["A1"] = "Data: x are integers 1..100 drawn with the seed; y = a*x + b with the true a and b below"
    ds["A1"].font = bold
    ds["A2"], ds["B2"] = "const (b)", ref.TRUE_CONST
    ds["A3"], ds["B3"] = "slope (a)", ref.TRUE_SLOPE
    ds["A4"], ds["B4"], ds["C4"] = "x", "y=a*x+b", "current fit (basic)"
    for c in ("A4", "B4", "C4"):
        ds[c].font = bold
    last = DATA_FIRST_ROW + n_points - 1
    basic_cells = sheet_cells("basic", n_points)
    for i in range(n_points):
        r = DATA_FIRST_ROW + i
        ds.cell(row=r, column=1, value=int(x[i]))
        ds.cell(row=r, column=2, value=f"=$B$3*A{r}+$B$2")
        fitted_slope, fitted_const = absolute(basic_cells["lastslope"]), absolute(basic_cells["lastconst"])
        ds.cell(row=r, column=3, value=f"=basic!{fitted_slope}*A{r}+basic!{fitted_const}")
    data_names = {
        "true_const": "B2",
        "true_slope": "B3",
        "data_x": f"A{DATA_FIRST_ROW}:A{last}",
        "data_y": f"B{DATA_FIRST_ROW}:B{last}",
        "data_fit": f"C{DATA_FIRST_ROW}:C{last}",
    }
    q = quote_sheet(DATA_SHEET, always=True)
    for name, a1 in data_names.items():
        ds.defined_names[name] = DefinedName(name, attr_text=f"{q}!{absolute(a1)}")
    sc = ScatterChart()
    sc.title = "data and the current line (basic sheet, after the pass)"
    sc.style = 13
    sc.x_axis.title, sc.y_axis.title = "x", "y"
    xs = Reference(ds, min_col=1, min_row=DATA_FIRST_ROW, max_row=last)
    pts = Series(Reference(ds, min_col=2, min_row=DATA_FIRST_ROW - 1, max_row=last), xs, title_from_data=True)
    pts.marker.symbol = "circle"
    pts.graphicalProperties.line.noFill = True
    line = Series(Reference(ds, min_col=3, min_row=DATA_FIRST_ROW - 1, max_row=last), xs, title_from_data=True)
    line.marker.symbol = "none"
    sc.series.extend([pts, line])
    _show_axes(sc)
    honest(sc)
    ds.add_chart(sc, "E4")
    ds.column_dimensions["A"].width = 12
    ds.column_dimensions["B"].width = 10
    ds.column_dimensions["C"].width = 18
    for r in range(DATA_FIRST_ROW, last + 1):  # the fitted line: 4 decimals, not General's 15 digits
        ds.cell(row=r, column=3).number_format = "0.0000"
    ds.freeze_panes = f"A{DATA_FIRST_ROW}"
    setup_page(ds, last_col=3, last_row=last, title="data: &D")
    dx = f"data!$A${DATA_FIRST_ROW}:$A${last}"
    dy = f"data!$B${DATA_FIRST_ROW}:$B${last}"

    names_by_sheet = {}
    for kind in ref.KINDS:
        ws = wb.create_sheet(kind)
        cells = sheet_cells(kind, n_points)
        names_by_sheet[kind] = cells
        start = ref.START[kind]
        hyper = ref.HYPER[kind]
        A = {k: absolute(v) for k, v in cells.items() if ":" not in v}  # absolute refs for formulas
        ws["A1"] = f"{kind}: one pass over the data, one row per point. {RULES[kind]}"
        ws["A1"].font = bold
        ws["A2"] = STATUS_TEXT
        ws["A2"].font = italic
        for col, text in zip("ABCD", ("", "start", "after pass", "initial")):
            ws[f"{col}{PARAM_HEADER_ROW}"] = text or None
            ws[f"{col}{PARAM_HEADER_ROW}"].font = bold
        cols = {key: i + 1 for i, (key, _h) in enumerate(COLUMNS[kind])}
        L = {key: col_letter(c) for key, c in cols.items()}
        first, last_row = TABLE_HEADER_ROW + 1, TABLE_HEADER_ROW + n_points
        for name, value in start.items():
            r = int(cells[name][1:])
            ws[f"A{r}"] = LABELS[name]
            ws[cells[name]] = float(value)
            ws[cells[name]].fill = fill("FFF2CC")
            ws[cells[ref.after_name(name)]] = f"={L[AFTER_COLUMN[name]]}{last_row}"
            ws[cells[ref.init_name(name)]] = float(value)
            ws[cells[ref.init_name(name)]].font = italic
        for name, value in hyper.items():
            r = int(cells[name][1:])
            ws[f"A{r}"] = LABELS[name]
            ws[cells[name]] = float(value)
            ws[cells[name]].fill = fill("E2EFDA")
        for key, a_name, b_name in (("rmse_start", "slope", "const"), ("rmse", "lastslope", "lastconst")):
            r = int(cells[key][1:])
            ws[f"A{r}"] = "RMSE, start values" if key == "rmse_start" else "RMSE after the pass"
            ws[f"A{r}"].font = Font(bold=True, color="C00000")
            ws[cells[key]] = f"=SQRT(SUMPRODUCT(({A[a_name]}*{dx}+{A[b_name]}-{dy})^2)/COUNT({dx}))"
            ws[cells[key]].font = Font(bold=True, color="C00000")

        # the pass table
        for key, header in COLUMNS[kind]:
            c = ws.cell(row=TABLE_HEADER_ROW, column=cols[key], value=header)
            c.font = bold
            c.alignment = Alignment(horizontal="center")
        lr_ref = A["lr"]
        for i in range(n_points):
            r = first + i
            p = r - 1  # the row above
            d = DATA_FIRST_ROW + i
            f = {
                "x": f"=data!A{d}",
                "y": f"=data!B{d}",
                "b": f"={A['const']}" if i == 0 else f"={L['new_b']}{p}",
                "a": f"={A['slope']}" if i == 0 else f"={L['new_a']}{p}",
                "pred": f"={L['a']}{r}*{L['x']}{r}+{L['b']}{r}",
                "err2": f"=({L['pred']}{r}-{L['y']}{r})^2",
                "de_db": f"=2*({L['pred']}{r}-{L['y']}{r})",
                "de_da": f"={L['x']}{r}*{L['de_db']}{r}",
            }
            X, Y, Bc, Ac = (f"{L[k]}{r}" for k in ("x", "y", "b", "a"))
            if kind == "basic":
                f["errb1"] = f"=({Ac}*{X}+({Bc}+{ref.FD_STEP})-{Y})^2"
                f["est_de_db"] = f"=({L['errb1']}{r}-{L['err2']}{r})/{ref.FD_STEP}"
                f["erra1"] = f"=(({Ac}+{ref.FD_STEP})*{X}+{Bc}-{Y})^2"
                f["est_de_da"] = f"=({L['erra1']}{r}-{L['err2']}{r})/{ref.FD_STEP}"
                f["new_b"] = f"={Bc}-{lr_ref}*{L['de_db']}{r}"
                f["new_a"] = f"={Ac}-{lr_ref}*{L['de_da']}{r}"
            gb, ga = f"{L['de_db']}{r}", f"{L['de_da']}{r}"
            if "v_b" in L:
                beta = A["beta"] if kind == "momentum" else A["beta1"]
                prev_vb = A["v_const"] if i == 0 else f"{L['v_b']}{p}"
                prev_va = A["v_slope"] if i == 0 else f"{L['v_a']}{p}"
                f["v_b"] = f"={gb}*(1-{beta})+{prev_vb}*{beta}"
                f["v_a"] = f"={ga}*(1-{beta})+{prev_va}*{beta}"
            if "s_b" in L:
                beta = A["beta"] if kind == "rmsprop" else A["beta2"]
                prev_sb = A["s_const"] if i == 0 else f"{L['s_b']}{p}"
                prev_sa = A["s_slope"] if i == 0 else f"{L['s_a']}{p}"
                f["s_b"] = f"={beta}*{prev_sb}+(1-{beta})*{gb}^2"
                f["s_a"] = f"={beta}*{prev_sa}+(1-{beta})*{ga}^2"
            eps = A.get("eps")
            if kind == "momentum":
                f["new_b"] = f"={Bc}-{lr_ref}*{L['v_b']}{r}"
                f["new_a"] = f"={Ac}-{lr_ref}*{L['v_a']}{r}"
            elif kind == "rmsprop":
                f["new_b"] = f"={Bc}-{lr_ref}*{gb}/SQRT({L['s_b']}{r}+{eps})"
                f["new_a"] = f"={Ac}-{lr_ref}*{ga}/SQRT({L['s_a']}{r}+{eps})"
            elif kind in ("adam", "adam_ann"):
                lr_here = lr_ref if kind == "adam" else f"{L['lr']}{r}"
                if kind == "adam_ann":
                    f["lr"] = f"={A['lr']}" if i == 0 else f"={L['next_lr']}{p}"
                    f["ratio"] = f"=ABS({ga})/SQRT({L['s_a']}{r}+{eps})"
                    prev_ratio = A["ratio"] if i == 0 else f"{L['ratio']}{p}"
                    f["next_lr"] = f"=IF({L['ratio']}{r}>{prev_ratio},{L['lr']}{r}*{A['anneal']},{L['lr']}{r})"
                f["new_b"] = f"={Bc}-{lr_here}*{L['v_b']}{r}/SQRT({L['s_b']}{r}+{eps})"
                f["new_a"] = f"={Ac}-{lr_here}*{L['v_a']}{r}/SQRT({L['s_a']}{r}+{eps})"
            for key, _h in COLUMNS[kind]:
                cell = ws.cell(row=r, column=cols[key], value=f[key])
                if key in ("new_a", "new_b"):
                    cell.fill = fill("DDEBF7")
                if key == "err2":
                    cell.fill = fill("FCE4D6")

        # RMSE history per pass (filled by the step) + charts
        hcol = len(COLUMNS[kind]) + 2
        ws.cell(row=PARAM_HEADER_ROW, column=hcol, value="pass").font = bold
        ws.cell(row=PARAM_HEADER_ROW, column=hcol + 1, value="RMSE").font = bold
        ws.cell(row=PARAM_HEADER_ROW + 1, column=hcol, value=0)
        ws.cell(row=PARAM_HEADER_ROW + 1, column=hcol + 1, value=ref.rmse_of(start["slope"], start["const"], x, y))
        q = quote_sheet(kind, always=True)
        for name, a1 in cells.items():
            ws.defined_names[name] = DefinedName(name, attr_text=f"{q}!{absolute(a1)}")

        err_chart = LineChart()
        err_chart.title = "squared error along the pass"
        err_chart.y_axis.title, err_chart.x_axis.title = "err^2", "data point"
        err_chart.add_data(
            Reference(ws, min_col=cols["err2"], min_row=TABLE_HEADER_ROW, max_row=last_row), titles_from_data=True
        )
        err_chart.height, err_chart.width = 7, 14
        _show_axes(err_chart)
        honest(err_chart)
        # Charts go under the pass table (not beside it) so the sheet prints one page wide at a readable scale.
        chart_row = last_row + 3
        ws.add_chart(err_chart, f"A{chart_row}")
        hist_chart = LineChart()
        hist_chart.title = "RMSE after each pass"
        hist_chart.y_axis.title, hist_chart.x_axis.title = "RMSE", "pass"
        hist_chart.add_data(
            Reference(ws, min_col=hcol + 1, min_row=PARAM_HEADER_ROW, max_row=PARAM_HEADER_ROW + HISTORY_ROWS),
            titles_from_data=True,
        )
        hist_chart.set_categories(
            Reference(ws, min_col=hcol, min_row=PARAM_HEADER_ROW + 1, max_row=PARAM_HEADER_ROW + HISTORY_ROWS)
        )
        hist_chart.height, hist_chart.width = 7, 14
        _show_axes(hist_chart)
        honest(hist_chart)
        ws.add_chart(hist_chart, f"G{chart_row}")

        # Hyperparameters (lr 5e-5, eps 1e-8) and the accumulators (S grows to ~1e7, v and the gradients span
        # decades) keep General: it shows any magnitude in the column's width (9.1E+06, 1.2E-05), where a fixed
        # 0.0000 prints ### once a value outgrows the column.
        general = {cells[name] for name in hyper}
        general |= {
            cells[n]
            for name in ref.state_names(kind)
            if name not in ("slope", "const")
            for n in (name, ref.after_name(name), ref.init_name(name))
        }
        for row in ws.iter_rows(min_row=PARAM_HEADER_ROW + 1, max_row=first - 1, min_col=2, max_col=4):
            for cell in row:
                if cell.value is not None and cell.coordinate not in general:
                    cell.number_format = "0.0000"
        accumulators = {"s_b", "s_a", "v_b", "v_a", "lr", "ratio", "next_lr"}
        for j, (key, _h) in enumerate(COLUMNS[kind][2:], start=3):
            if key not in accumulators:
                for row in ws.iter_rows(min_row=first, max_row=last_row, min_col=j, max_col=j):
                    row[0].number_format = "0.00"
        ws.column_dimensions["A"].width = 20
        for column in range(2, len(COLUMNS[kind]) + 1):
            ws.column_dimensions[col_letter(column)].width = 11
        ws.freeze_panes = f"A{first}"
        setup_page(ws, last_col=hcol + 1, last_row=chart_row + 15, title=f"{kind}: &D")

    wb.calculation.fullCalcOnLoad = True
    wb.security = None  # openpyxl would write an empty <workbookProtection/>
    save_atomic(wb, out)
    return GraddescLayout(
        path=str(out),
        seed=seed,
        n_points=n_points,
        x=tuple(int(v) for v in x),
        data_names=data_names,
        names=names_by_sheet,
    )


def _show_axes(chart) -> None:
    # openpyxl >= 3.1 leaves <c:delete> unset and recent Excel then hides the axes; say "not deleted".
    chart.x_axis.delete = False
    chart.y_axis.delete = False
