"""The lesson's collab_filter workbook, generated headless with openpyxl.

Two sheets, ``dotprod`` and ``bias``, laid out like fast.ai lesson 5's spreadsheet and identical in
geometry (``bias`` just fills the bias column/row that ``dotprod`` leaves empty). For U users, M movies
and K factors (rows/columns are 1-based; the default 15 x 15 x 5 case in brackets)::

    row 1               movie titles (wrapped header row)            G1 "title", H1:V1
    row 2               movie ids                                    G2 label,   H2:V2
    rows 3..U+2         user ids in G, ratings crosstab              G3:G17,     H3:V17   <- ratings
    row U+4             movie bias row (bias sheet)                  H19:V19              <- movie_bias
    rows U+5..U+K+4     movie factors (K x M)                        H20:V24              <- movie_factors
    row U+K+5           movie ids again, factor labels B..          H25:V25
    rows U+K+6..        user bias | user factors | user id | predictions
                        A26:A40     B26:F40        G26:G40   H26:V40              <- predictions
    two rows below      RMSE label | RMSE value (bottom right)       U42 | V42            <- rmse
    settings block      two columns right of the ratings             X2:Y7 (optimizer..status)
    (a gibbs fit adds)  title, labels, std of each prediction        G44, G45:V45, G46:V60 <- prediction_std
                        two rows under the RMSE row (xlcf.actions.fit_outputs); the generator leaves it empty

Every prediction cell is a live formula predicting the cell whether rated or not (the unrated ones are the
recommendations): ``=MMULT($B26:$F26,H$20:H$24)`` on dotprod, ``...+H$19+$A26`` on bias. The RMSE is
``SQRT(SUMPRODUCT((ratings<>"")*(ratings-predictions)^2)/COUNT(ratings))`` with explicit ranges: the
lesson's SUMXMY2 counts blanks as 0 in LibreOffice (0.86 there vs 0.32 in Excel); the mask makes both agree.

Sheet-scoped defined names point at every block, and Excel Solver's model is stored as the hidden
``solver_*`` names Excel itself writes, so Data > Solver > Solve works with no set-up.
"""

from __future__ import annotations

import math
import os
from copy import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xlcf import catalog
from xlcf.errors import ConfigError, DataError, WorkbookError
from xlcf.fileio import atomic_output
from xlcf.lessons.page import setup_page
from xlcf.ooxml.refs import absolute, cell_ref, col_letter, quote_sheet, range_ref

SHEETS = ("dotprod", "bias")

# Defaults of the settings block (read by `xlcf fit`; flags override): the sheet regime of the catalog.
DEFAULT_SETTINGS = catalog.SHEET_DEFAULTS
STATUS_TEXT = "not fitted yet: Data > Solver > Solve, or `xlcf fit BOOK --sheet SHEET`"

# Colours of the lesson: ratings blue, predictions purple, RMSE red; factors a pale amber ("adjustable").
FILL_RATINGS = "DDEBF7"
FILL_PREDICTIONS = "E4DFEC"
FILL_FACTORS = "FFF2CC"
FILL_BIAS = "FCE4D6"
FILL_SETTINGS = "E2EFDA"
FONT_RMSE = "C00000"
NUMBER_FORMAT = "0.00"
NOTE_LONG = "NB: factors start as random numbers in [0, 1); Data > Solver > Solve (or xlcf fit) optimises them."
NOTE_SHORT = "NB: random start in [0, 1)"
STATUS_ROWS = 8  # rows the wrapped status text may use

# Excel Solver's per-sheet model as Excel 2010+ stores it (hidden, sheet-scoped names). solver_adj and
# solver_opt are filled per sheet. Values are the dialog's defaults for a GRG Nonlinear minimisation.
SOLVER_DEFAULTS = {
    "solver_typ": "2",  # 1 max, 2 min, 3 value of
    "solver_val": "0",  # target for typ=3
    "solver_eng": "1",  # 1 GRG Nonlinear, 2 Simplex LP, 3 Evolutionary
    "solver_neg": "2",  # 1 = make unconstrained variables non-negative; 2 = no (factors may go negative)
    "solver_ver": "3",  # model format of Excel 2010+
    "solver_num": "0",  # number of constraints
    "solver_lin": "2",  # 2 = not a linear model (GRG)
    "solver_cvg": "0.0001",  # convergence
    "solver_drv": "1",  # forward derivatives
    "solver_est": "1",  # tangent estimates
    "solver_itr": "2147483647",
    "solver_mip": "2147483647",
    "solver_mni": "30",
    "solver_mrt": "0.075",
    "solver_msl": "2",  # multistart off
    "solver_nod": "2147483647",
    "solver_nwt": "1",  # Newton search
    "solver_pre": "0.000001",  # constraint precision
    "solver_rbv": "1",
    "solver_rlx": "2",  # do not ignore integer constraints
    "solver_rsd": "0",
    "solver_scl": "1",  # automatic scaling
    "solver_sho": "2",  # do not show iteration results
    "solver_ssz": "100",
    "solver_tim": "2147483647",
    "solver_tol": "0.01",
}


@dataclass(frozen=True)
class CollabLayout:
    """Where everything is on the ``dotprod`` and ``bias`` sheets (same geometry on both).

    Row/column numbers are 1-based. ``refs(sheet)`` gives every defined name's plain A1 range.
    """

    path: str
    n_users: int
    n_movies: int
    factors: int
    user_ids: tuple
    movie_ids: tuple
    seed: int
    sheets: tuple = SHEETS
    # geometry
    title_row: int = 1
    movie_id_row: int = 2
    ratings_top: int = 3
    label_col: int = 7  # G: user ids / row labels
    first_movie_col: int = 8  # H
    user_bias_col: int = 1  # A
    first_factor_col: int = 2  # B
    movie_bias_row: int = 0
    movie_factor_top: int = 0
    pred_id_row: int = 0
    pred_top: int = 0
    rmse_row: int = 0
    settings_label_col: int = 0
    settings_value_col: int = 0
    settings_rows: dict = field(default_factory=dict)

    @classmethod
    def compute(cls, path, n_users, n_movies, factors, user_ids, movie_ids, seed) -> CollabLayout:
        ratings_top = 3
        movie_bias_row = ratings_top + n_users + 1  # one blank row under the ratings
        movie_factor_top = movie_bias_row + 1
        pred_id_row = movie_factor_top + factors
        pred_top = pred_id_row + 1
        rmse_row = pred_top + n_users + 1
        first_factor_col = 2
        label_col = first_factor_col + factors
        first_movie_col = label_col + 1
        settings_label_col = first_movie_col + n_movies + 1
        names = ("optimizer", "lr", "epochs", "seed", "device", "status")
        settings_rows = {name: 2 + i for i, name in enumerate(names)}
        return cls(
            path=str(path),
            n_users=n_users,
            n_movies=n_movies,
            factors=factors,
            user_ids=tuple(user_ids),
            movie_ids=tuple(movie_ids),
            seed=seed,
            ratings_top=ratings_top,
            label_col=label_col,
            first_movie_col=first_movie_col,
            first_factor_col=first_factor_col,
            movie_bias_row=movie_bias_row,
            movie_factor_top=movie_factor_top,
            pred_id_row=pred_id_row,
            pred_top=pred_top,
            rmse_row=rmse_row,
            settings_label_col=settings_label_col,
            settings_value_col=settings_label_col + 1,
            settings_rows=settings_rows,
        )

    # --- blocks as (row1, col1, row2, col2) -------------------------------------------------------------
    @property
    def last_movie_col(self) -> int:
        return self.first_movie_col + self.n_movies - 1

    @property
    def last_factor_col(self) -> int:
        return self.first_factor_col + self.factors - 1

    def ratings_box(self):
        return (self.ratings_top, self.first_movie_col, self.ratings_top + self.n_users - 1, self.last_movie_col)

    def predictions_box(self):
        return (self.pred_top, self.first_movie_col, self.pred_top + self.n_users - 1, self.last_movie_col)

    def user_factors_box(self):
        return (self.pred_top, self.first_factor_col, self.pred_top + self.n_users - 1, self.last_factor_col)

    def movie_factors_box(self):
        return (
            self.movie_factor_top,
            self.first_movie_col,
            self.movie_factor_top + self.factors - 1,
            self.last_movie_col,
        )

    def user_bias_box(self):
        return (self.pred_top, self.user_bias_col, self.pred_top + self.n_users - 1, self.user_bias_col)

    def movie_bias_box(self):
        return (self.movie_bias_row, self.first_movie_col, self.movie_bias_row, self.last_movie_col)

    def rmse_cell(self):
        return (self.rmse_row, self.last_movie_col)

    def setting_cell(self, name: str):
        return (self.settings_rows[name], self.settings_value_col)

    def refs(self, sheet: str = "bias") -> dict[str, str]:
        """Plain A1 refs (no $, no sheet) of every sheet-scoped name on ``sheet``."""
        out = {
            "ratings": range_ref(*self.ratings_box()),
            "user_factors": range_ref(*self.user_factors_box()),
            "movie_factors": range_ref(*self.movie_factors_box()),
            "predictions": range_ref(*self.predictions_box()),
            "rmse": cell_ref(*self.rmse_cell()),
        }
        if sheet == "bias":
            out["user_bias"] = range_ref(*self.user_bias_box())
            out["movie_bias"] = range_ref(*self.movie_bias_box())
        for name in self.settings_rows:
            out[name] = cell_ref(*self.setting_cell(name))
        return out


@dataclass(frozen=True)
class CollabInit:
    """The initial parameters written to the sheets (uniform [0, 1) from ``default_rng(seed)``)."""

    user_factors: np.ndarray  # users x k
    movie_factors: np.ndarray  # k x movies (sheet orientation)
    user_bias: np.ndarray  # users
    movie_bias: np.ndarray  # movies


def initial_parameters(n_users: int, n_movies: int, factors: int, seed: int) -> CollabInit:
    """Both sheets start from the same draw, in this order: user factors, movie factors, user bias, movie bias."""
    rng = np.random.default_rng(seed)
    # Rounded to 15 decimals: openpyxl stores floats with 16 significant digits, so full 17-digit draws would
    # come back from the file off in the last bit; these round-trip exactly (file == numpy).
    draw = lambda shape: np.round(rng.random(shape), 15)
    return CollabInit(
        user_factors=draw((n_users, factors)),
        movie_factors=draw((factors, n_movies)),
        user_bias=draw(n_users),
        movie_bias=draw(n_movies),
    )


# ---------------------------------------------------------------------------------------------------------
# validation and atomic output
# ---------------------------------------------------------------------------------------------------------


def validate_crosstab(ratings_crosstab: pd.DataFrame) -> np.ndarray:
    if not isinstance(ratings_crosstab, pd.DataFrame):
        raise DataError(f"ratings crosstab: expected a pandas DataFrame, got {type(ratings_crosstab).__name__}")
    n_users, n_movies = ratings_crosstab.shape
    if n_users < 1 or n_movies < 1:
        raise DataError(f"ratings crosstab is empty ({n_users} users x {n_movies} movies)")
    try:
        values = ratings_crosstab.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise DataError(f"ratings crosstab: every rating must be a number or empty ({err})") from None
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise DataError(
            f"ratings crosstab: infinite rating for user {ratings_crosstab.index[r]}, "
            f"movie {ratings_crosstab.columns[c]}"
        )
    rated = int(np.isfinite(values).sum())
    if rated < 2:
        raise DataError(f"ratings crosstab has {rated} rated cell(s); at least 2 are needed to fit and score")
    return values


def check_output_path(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse a missing/unwritable folder or an existing file without force; nothing is written here."""
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if out.suffix.lower() not in (".xlsx", ".xlsm"):
        raise WorkbookError("the output must end in .xlsx (or .xlsm with --xlsm)", where=str(out))
    if not folder.is_dir():
        raise WorkbookError(f"folder {folder} does not exist", where=str(out))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WorkbookError(f"folder {folder} is not writable", where=str(out))
    if out.exists() and not force:
        raise WorkbookError(f"{out} already exists; use --force to overwrite it")
    if out.is_dir():
        raise WorkbookError(f"{out} is a folder, not a workbook file")
    return out


def save_atomic(wb, path: Path) -> None:
    """Save an openpyxl workbook atomically (:func:`xlcf.fileio.atomic_output`): a failure leaves no partial
    file and the old one untouched; a new file gets the usual umask-based mode."""
    try:
        with atomic_output(path, suffix=".xlsx") as tmp:
            wb.save(tmp)
    except OSError as err:
        raise WorkbookError(f"could not write the workbook ({err.strerror or err})", where=str(path)) from None


# ---------------------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------------------


def build_collab(
    path,
    ratings_crosstab: pd.DataFrame,
    titles: dict | None = None,
    *,
    factors: int = 5,
    seed: int = 0,
    force: bool = False,
) -> CollabLayout:
    """Write collab_filter.xlsx (sheets dotprod and bias) to ``path`` and return where everything is."""
    if not isinstance(factors, (int, np.integer)) or isinstance(factors, bool) or factors < 1:
        raise ConfigError(f"--factors must be a whole number >= 1, got {factors!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"--seed must be a whole number >= 0, got {seed!r}")
    ratings = validate_crosstab(ratings_crosstab)
    out = check_output_path(path, force=force)
    titles = titles or {}

    from openpyxl import Workbook

    n_users, n_movies = ratings.shape
    layout = CollabLayout.compute(
        out,
        n_users,
        n_movies,
        int(factors),
        [_plain(u) for u in ratings_crosstab.index],
        [_plain(m) for m in ratings_crosstab.columns],
        int(seed),
    )
    init = initial_parameters(n_users, n_movies, int(factors), int(seed))
    optimizers = catalog.optimizer_names()
    settings = dict(DEFAULT_SETTINGS)

    wb = Workbook()
    wb.remove(wb.worksheets[0])  # the default sheet
    for sheet in SHEETS:
        ws = wb.create_sheet(sheet)
        _write_collab_sheet(
            ws, layout, ratings, titles, init, with_bias=(sheet == "bias"), optimizers=optimizers, settings=settings
        )
    wb.calculation.fullCalcOnLoad = True  # openpyxl stores no cached values: make every reader recalc
    wb.security = None  # openpyxl would write an empty <workbookProtection/>
    save_atomic(wb, out)
    return layout


def _plain(value):
    """numpy scalars -> python (openpyxl writes them, but ints should stay ints)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        f = float(value)
        return int(f) if f.is_integer() else f
    return value


def _write_collab_sheet(
    ws,
    layout: CollabLayout,
    ratings: np.ndarray,
    titles: dict,
    init: CollabInit,
    *,
    with_bias: bool,
    optimizers: list[str],
    settings: dict,
) -> None:
    from openpyxl.comments import Comment
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.workbook.defined_name import DefinedName
    from openpyxl.worksheet.datavalidation import DataValidation

    L = layout
    bold = Font(bold=True)
    fill = lambda rgb: PatternFill("solid", start_color=rgb, end_color=rgb)
    center = Alignment(horizontal="center")

    styles: dict = {}  # (font, fill, format, alignment) -> the style array openpyxl made for it

    def put(row, col, value, *, font=None, fill_rgb=None, fmt=None, align=None):
        c = ws.cell(row=row, column=col, value=value)
        # Only the shared style objects (or none) make a key: a one-off Font(...) may reuse a freed id().
        shared = font in (None, bold) and align in (None, center)
        key = (font is bold, fill_rgb, fmt, align is center) if shared else None
        if key in styles:
            # Same look as a cell styled before: copy its style indices, as openpyxl's own cell copy does
            # (assigning the objects again would hash every font and fill: a third of `xlcf new`'s time).
            c._style = copy(styles[key])
            return c
        if font is not None:
            c.font = font
        if fill_rgb:
            c.fill = fill(fill_rgb)
        if fmt:
            c.number_format = fmt
        if align is not None:
            c.alignment = align
        if key is not None:
            styles[key] = copy(c._style)
        return c

    # --- header: titles row, movie ids, user ids, ratings --------------------------------------------
    put(L.title_row, L.label_col, "title", font=bold)
    put(L.movie_id_row, L.label_col, "userId \\ movieId", font=bold)
    title_lines = 1
    for j, movie in enumerate(L.movie_ids):
        col = L.first_movie_col + j
        title = titles.get(movie) if titles else None
        if title is None and titles:
            title = titles.get(str(movie))
        if title:
            put(
                L.title_row,
                col,
                str(title),
                font=Font(size=8),
                align=Alignment(wrap_text=True, vertical="bottom", horizontal="center"),
            )
            title_lines = max(title_lines, math.ceil(len(str(title)) / 14))
        id_cell = put(L.movie_id_row, col, movie, font=bold, align=center)
        if title:
            id_cell.comment = Comment(str(title), "xlcf")
        put(L.pred_id_row, col, movie, font=bold, align=center)
    ws.row_dimensions[L.title_row].height = min(15 + 11 * (title_lines - 1), 80)

    for i, user in enumerate(L.user_ids):
        put(L.ratings_top + i, L.label_col, user, font=bold)
        put(L.pred_top + i, L.label_col, user, font=bold)
        for j in range(L.n_movies):
            value = ratings[i, j]
            put(
                L.ratings_top + i,
                L.first_movie_col + j,
                None if np.isnan(value) else float(value),
                fill_rgb=FILL_RATINGS,
                fmt="0.0",
            )

    # --- factor blocks, biases -------------------------------------------------------------------------
    # The note sits in the empty corner left of the movie factors (bias row + factor rows, user-bias and factor
    # columns), merged and wrapped so the factor labels beside it never clip it.
    note_top, note_bottom = L.movie_bias_row, L.movie_factor_top + L.factors - 1
    note_text = NOTE_LONG if L.factors >= 3 else NOTE_SHORT
    note = ws.cell(row=note_top, column=L.user_bias_col, value=note_text)
    note.font = Font(italic=True, size=8)
    note.alignment = Alignment(wrap_text=True, vertical="top")
    ws.merge_cells(start_row=note_top, start_column=L.user_bias_col, end_row=note_bottom, end_column=L.last_factor_col)
    for f in range(L.factors):
        put(L.movie_factor_top + f, L.label_col, f"factor {f + 1}", font=Font(italic=True))
        put(L.pred_id_row, L.first_factor_col + f, f"f{f + 1}", font=Font(italic=True), align=center)
        for j in range(L.n_movies):
            put(
                L.movie_factor_top + f,
                L.first_movie_col + j,
                float(init.movie_factors[f, j]),
                fill_rgb=FILL_FACTORS,
                fmt=NUMBER_FORMAT,
            )
        for i in range(L.n_users):
            put(
                L.pred_top + i,
                L.first_factor_col + f,
                float(init.user_factors[i, f]),
                fill_rgb=FILL_FACTORS,
                fmt=NUMBER_FORMAT,
            )
    put(L.pred_id_row, L.label_col, "userId \\ movieId", font=bold)
    if with_bias:
        put(L.movie_bias_row, L.label_col, "movie bias", font=Font(italic=True))
        put(L.pred_id_row, L.user_bias_col, "bias", font=Font(italic=True), align=center)
        for j in range(L.n_movies):
            put(
                L.movie_bias_row,
                L.first_movie_col + j,
                float(init.movie_bias[j]),
                fill_rgb=FILL_BIAS,
                fmt=NUMBER_FORMAT,
            )
        for i in range(L.n_users):
            put(L.pred_top + i, L.user_bias_col, float(init.user_bias[i]), fill_rgb=FILL_BIAS, fmt=NUMBER_FORMAT)

    # --- predictions: every cell, rated or not ---------------------------------------------------------
    uf1, uf2 = col_letter(L.first_factor_col), col_letter(L.last_factor_col)
    mf1, mf2 = L.movie_factor_top, L.movie_factor_top + L.factors - 1
    for i in range(L.n_users):
        row = L.pred_top + i
        for j in range(L.n_movies):
            mc = col_letter(L.first_movie_col + j)
            formula = f"=MMULT(${uf1}{row}:${uf2}{row},{mc}${mf1}:{mc}${mf2})"
            if with_bias:
                formula += f"+{mc}${L.movie_bias_row}+${col_letter(L.user_bias_col)}{row}"
            put(row, L.first_movie_col + j, formula, fill_rgb=FILL_PREDICTIONS, fmt=NUMBER_FORMAT)

    # --- RMSE over rated cells only (portable: mask, not SUMXMY2) -------------------------------------
    ratings_ref = range_ref(*L.ratings_box())
    preds_ref = range_ref(*L.predictions_box())
    rr, rc = L.rmse_cell()
    put(rr, rc - 1, "RMSE", font=Font(bold=True, color=FONT_RMSE), align=Alignment(horizontal="right"))
    put(
        rr,
        rc,
        f'=SQRT(SUMPRODUCT(({ratings_ref}<>"")*({ratings_ref}-{preds_ref})^2)/COUNT({ratings_ref}))',
        font=Font(bold=True, color=FONT_RMSE),
        fmt="0.0000",
    )

    # --- settings block + status ----------------------------------------------------------------------
    sl, sv = L.settings_label_col, L.settings_value_col
    put(1, sl, "Python fit settings", font=bold)
    for name, row in L.settings_rows.items():
        put(row, sl, name, font=bold)
        value = STATUS_TEXT if name == "status" else settings[name]
        put(
            row,
            sv,
            value,
            fill_rgb=None if name == "status" else FILL_SETTINGS,
            font=Font(italic=True) if name == "status" else None,
        )
    # The status line is long: it wraps in a tall merged cell under its label instead of running off the page.
    status_row = L.settings_rows["status"]
    ws.cell(row=status_row, column=sv).alignment = Alignment(wrap_text=True, vertical="top")
    ws.merge_cells(start_row=status_row, start_column=sv, end_row=status_row + STATUS_ROWS - 1, end_column=sv)
    opt_dv = DataValidation(
        type="list",
        formula1='"' + ",".join(optimizers) + '"',
        allow_blank=False,
        showErrorMessage=True,
        errorTitle="optimizer",
        error="Choose one of: " + ", ".join(optimizers),
        promptTitle="optimizer",
        prompt="Optimizer used by `xlcf fit` / Fit with Python",
    )
    dev_dv = DataValidation(
        type="list",
        formula1='"' + ",".join(catalog.DEVICES) + '"',
        allow_blank=True,
        showErrorMessage=False,  # cuda:1 etc. are valid too
        promptTitle="device",
        prompt="auto, cpu, cuda, cuda:N or mps",
    )
    lr_dv = DataValidation(
        type="decimal",
        operator="greaterThan",
        formula1="0",
        allow_blank=True,
        showErrorMessage=True,
        error="lr must be a number > 0",
    )
    ep_dv = DataValidation(
        type="whole",
        operator="between",
        formula1="1",
        formula2="1000000",
        allow_blank=True,
        showErrorMessage=True,
        error="epochs must be a whole number >= 1",
    )
    seed_dv = DataValidation(
        type="whole",
        operator="greaterThanOrEqual",
        formula1="0",
        allow_blank=True,
        showErrorMessage=True,
        error="seed must be a whole number >= 0",
    )
    for dv, name in ((opt_dv, "optimizer"), (dev_dv, "device"), (lr_dv, "lr"), (ep_dv, "epochs"), (seed_dv, "seed")):
        ws.add_data_validation(dv)
        dv.add(cell_ref(*L.setting_cell(name)))

    # --- sheet-scoped names (+ Solver's hidden model) ---------------------------------------------------
    q = quote_sheet(ws.title, always=True)  # as Excel's Solver writes its names
    for name, ref in L.refs(ws.title).items():
        ws.defined_names[name] = DefinedName(name, attr_text=f"{q}!{absolute(ref)}")
    adjustable = [L.user_factors_box(), L.movie_factors_box()]
    if with_bias:
        adjustable += [L.user_bias_box(), L.movie_bias_box()]
    solver = {
        "solver_adj": ",".join(f"{q}!{range_ref(*box, absolute=True)}" for box in adjustable),
        "solver_opt": f"{q}!{cell_ref(*L.rmse_cell(), absolute=True)}",
        **SOLVER_DEFAULTS,
    }
    for name, text in solver.items():
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)

    # --- looks: widths, freeze ---------------------------------------------------------------------------
    ws.column_dimensions[col_letter(L.user_bias_col)].width = 7
    for f in range(L.factors):
        ws.column_dimensions[col_letter(L.first_factor_col + f)].width = 6
    ws.column_dimensions[col_letter(L.label_col)].width = 16
    for j in range(L.n_movies):
        ws.column_dimensions[col_letter(L.first_movie_col + j)].width = 10
    ws.column_dimensions[col_letter(sl)].width = 18
    ws.column_dimensions[col_letter(sv)].width = 20
    ws.freeze_panes = cell_ref(L.ratings_top, L.first_movie_col)
    rmse_row, _ = L.rmse_cell()
    setup_page(
        ws, last_col=sv, last_row=max(rmse_row, status_row + STATUS_ROWS - 1), one_page=True, title=f"{ws.title}: &D"
    )
