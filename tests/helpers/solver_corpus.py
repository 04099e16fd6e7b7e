"""Workbooks with a stored Excel Solver model, written the way people write them — by openpyxl and XlsxWriter,
never through ``xlcf new`` — for the evaluator, ``xlcf solve``, ``xlcf fit``, ``xlcf check`` and ``xlcf step``.

Every builder writes one book to ``path`` and returns a :class:`CorpusBook` saying what the solved book must
show. Formula cells carry cached values computed here with numpy, following Excel's documented semantics
(``SUMXMY2`` skips pairs where a cell is blank; ``SUMSQ`` of a range ignores text), so a reader of cached values
sees what Excel would have saved.

* ``CF_VARIANTS``: the lesson's 15 x 15 table (``xlcf.data.lesson_crosstab``) with 5 factors, written in
  different ways (prediction formulas, objective formulas, sheets, orientation); the RMSE of the predictions
  over the rated cells must reach the floor (dot 0.3929, bias 0.3187) whatever the objective cell computes.
* ``MODELS``: Solver models that are not collaborative filtering, each with a known optimum.
* ``BAD``: books a solve must refuse with one line naming ``sheet!cell`` (and leave byte-identical).
* :func:`graddesc_book`: a hand-made gradient-descent sheet (names ``slope``, ``const``, ``lastslope``,
  ``lastconst``) for ``xlcf step --copy``.

Solver names are sheet-scoped and hidden, as Excel 2010+ stores them: ``solver_opt`` (objective cell),
``solver_adj`` (variable cells, areas joined by commas), ``solver_typ`` (1 max, 2 min, 3 value of),
``solver_val``, ``solver_neg`` (1 = unconstrained variables non-negative, 2 = not), ``solver_num`` and per
constraint ``solver_lhsN`` (range), ``solver_relN`` (1 <=, 2 =, 3 >=, 4 int, 5 bin, 6 dif) and ``solver_rhsN``
(a number, a reference, or ``integer`` / ``binary`` / ``AllDifferent`` for relations 4-6).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FLOOR = {"dot": 0.3929, "bias": 0.3187}
N_FACTORS = 5
# lesson layout used by most variants (1-based rows; columns by letter)
R_TOP, R_BOTTOM = 2, 16  # ratings H2:V16 (movie ids in row 1, user ids in G)
MB_ROW = 19  # movie bias H19:V19
MF_TOP, MF_BOTTOM = 20, 24  # movie factors H20:V24
P_TOP, P_BOTTOM = 26, 40  # predictions H26:V40, user factors B26:F40, user bias A26:A40
OBJ = "V42"
RATINGS = "H2:V16"
PREDS = "H26:V40"
SOLVER_EXTRA = {
    "solver_eng": "1",
    "solver_ver": "3",
    "solver_lin": "2",
    "solver_msl": "2",
    "solver_cvg": "0.0001",
    "solver_pre": "0.000001",
    "solver_scl": "1",
    "solver_rlx": "2",
}
ERRORS = ("#DIV/0!", "#N/A", "#NAME?", "#NULL!", "#NUM!", "#REF!", "#VALUE!")


@dataclass
class F:
    """A formula (without the leading ``=``) and the value Excel would cache for it."""

    text: str
    cached: Any = 0.0


@dataclass
class Book:
    sheets: dict[str, dict[str, Any]] = field(default_factory=dict)  # sheet -> ref -> value | F
    names: list[tuple[str | None, str, str, bool]] = field(default_factory=list)  # (scope, name, text, hidden)

    def sheet(self, name: str) -> dict[str, Any]:
        return self.sheets.setdefault(name, {})


@dataclass(frozen=True)
class CorpusBook:
    name: str
    path: Path
    sheet: str  # sheet holding the Solver model
    objective: str  # objective cell on that sheet
    kind: str  # "cf" | "model" | "bad" | "step"
    model: str | None = None  # cf: "dot" | "bias"
    floor: float | None = None  # cf: RMSE over rated cells at the floor
    ratings: tuple[str, str] | None = None  # cf: (sheet, range)
    predictions: tuple[str, str] | None = None  # cf: (sheet, range) of the prediction block
    optimum: float | None = None  # model: objective value at the optimum
    solution: dict = field(default_factory=dict)  # model: {"A2": 1.0, ...} variable cells at the optimum
    sense: str = "min"  # "min" | "max" | "value"
    where: tuple[str, ...] = ()  # bad: any of these sheet!cell texts names the culprit
    words: tuple[str, ...] = ()  # bad: words the message must contain (lower case)


# ----------------------------------------------------------------------------------------------------------------
# A1 helpers and writers


def col(n: int) -> str:
    s = ""
    while n:
        n, r = divmod(n - 1, 26)
        s = chr(65 + r) + s
    return s


def colnum(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def ref(row: int, c: int) -> str:
    return f"{col(c)}{row}"


def qs(sheet: str) -> str:
    """Sheet name as Solver stores it: always quoted."""
    return "'" + sheet.replace("'", "''") + "'"


def absref(a1: str) -> str:
    import re

    return re.sub(r"([A-Z]+)(\d+)", r"$\1$\2", a1)


def solver_names(
    book: Book,
    sheet: str,
    *,
    opt: str,
    adj: list[str],
    typ: int = 2,
    val: float = 0,
    neg: int = 2,
    constraints: list[tuple[str, int, str]] = (),
    adj_sheet: str | None = None,
    raw_opt: str | None = None,
) -> None:
    """Store a Solver model the way Excel does (hidden names scoped to ``sheet``)."""
    q = qs(adj_sheet or sheet)
    items = {
        "solver_opt": raw_opt if raw_opt is not None else f"{qs(sheet)}!{absref(opt)}",
        "solver_adj": ",".join(f"{q}!{absref(a)}" for a in adj),
        "solver_typ": str(typ),
        "solver_val": repr(float(val)) if val != int(val) else str(int(val)),
        "solver_neg": str(neg),
        "solver_num": str(len(constraints)),
    }
    for i, (lhs, rel, rhs) in enumerate(constraints, 1):
        items[f"solver_lhs{i}"] = f"{qs(sheet)}!{absref(lhs)}"
        items[f"solver_rel{i}"] = str(rel)
        items[f"solver_rhs{i}"] = rhs
    items.update(SOLVER_EXTRA)
    for name, text in items.items():
        book.names.append((sheet, name, text, True))


def write_openpyxl(book: Book, path: Path) -> Path:
    """openpyxl writes no cached values: they are put into the saved XML afterwards (as Excel would store them)."""
    import openpyxl
    from openpyxl.workbook.defined_name import DefinedName

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    order = list(book.sheets)
    for sheet in order:
        ws = wb.create_sheet(sheet)
        for a1, value in book.sheets[sheet].items():
            ws[a1] = ("=" + value.text) if isinstance(value, F) else value
    for scope, name, text, hidden in book.names:
        dn = DefinedName(name, attr_text=text, hidden=hidden or None)
        if scope is None:
            wb.defined_names[name] = dn
        else:
            wb[scope].defined_names[name] = dn
    wb.calculation.fullCalcOnLoad = False
    wb.security = None
    buf = io.BytesIO()
    wb.save(buf)
    _inject_cached(
        buf.getvalue(), path, {f"xl/worksheets/sheet{i + 1}.xml": book.sheets[s] for i, s in enumerate(order)}
    )
    return path


def _inject_cached(data: bytes, path: Path, parts: dict[str, dict[str, Any]]) -> None:
    from lxml import etree

    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    zin = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            raw = zin.read(info.filename)
            cells = parts.get(info.filename)
            if cells is not None:
                root = etree.fromstring(raw)
                for c in root.iter(f"{{{ns}}}c"):
                    value = cells.get(c.get("r"))
                    if not isinstance(value, F):
                        continue
                    v = c.find(f"{{{ns}}}v")
                    if v is None:
                        v = etree.SubElement(c, f"{{{ns}}}v")
                    cached = value.cached
                    if isinstance(cached, bool):
                        c.set("t", "b")
                        v.text = "1" if cached else "0"
                    elif isinstance(cached, str):
                        c.set("t", "e" if cached in ERRORS else "str")
                        v.text = cached
                    else:
                        c.attrib.pop("t", None)
                        v.text = repr(float(cached))
                raw = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
            zout.writestr(info, raw)


def write_xlsxwriter(book: Book, path: Path, *, excel_names: bool = True) -> Path:
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path))
    for sheet, cells in book.sheets.items():
        ws = wb.add_worksheet(sheet)
        for a1, value in cells.items():
            if isinstance(value, F):
                ws.write_formula(a1, "=" + value.text, None, value.cached)
            elif value is None:
                continue
            else:
                ws.write(a1, value)
    for scope, name, text, _hidden in book.names:
        wb.define_name(name if scope is None else f"{qs(scope)}!{name}", "=" + text)
    wb.close()
    if excel_names:
        _hide_solver_names(path)
    return path


def _hide_solver_names(path: Path) -> None:
    """XlsxWriter cannot mark a name hidden (Excel stores Solver's names hidden) and flags a full recalculation
    on load (a book Excel saved has none: its cached values are current)."""
    from lxml import etree

    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    with zipfile.ZipFile(path) as zin:
        infos = zin.infolist()
        members = {i.filename: zin.read(i.filename) for i in infos}
    root = etree.fromstring(members["xl/workbook.xml"])
    for dn in root.iter(f"{{{ns}}}definedName"):
        if dn.get("name", "").startswith("solver_"):
            dn.set("hidden", "1")
    for calc in root.iter(f"{{{ns}}}calcPr"):
        calc.attrib.pop("fullCalcOnLoad", None)
    members["xl/workbook.xml"] = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in infos:
            zout.writestr(info, members[info.filename])


# ----------------------------------------------------------------------------------------------------------------
# The lesson's table and start values


def lesson() -> tuple[np.ndarray, list[int], list[int]]:
    from xlcf.data import lesson_crosstab

    df = lesson_crosstab()
    return df.to_numpy(dtype=float), [int(u) for u in df.index], [int(m) for m in df.columns]


def start_values(seed: int = 0, n_users: int = 15, n_movies: int = 15, k: int = N_FACTORS):
    rng = np.random.default_rng(seed)
    uf = rng.random((n_users, k)).round(4)
    mf = rng.random((k, n_movies)).round(4)
    ub = rng.random(n_users).round(4)
    mb = rng.random(n_movies).round(4)
    return uf, mf, ub, mb


def _sxmy2(r: np.ndarray, p: np.ndarray) -> float:
    """Excel's SUMXMY2: pairs where either cell is not a number are skipped."""
    m = ~np.isnan(r) & ~np.isnan(p)
    return float(((r[m] - p[m]) ** 2).sum())


def _objective(kind: str, sse: float, n: int) -> float:
    return {"rmse": math.sqrt(sse / n), "sse": sse, "mse": sse / n}[kind]


def _objective_text(kind: str, sse_text: str, count_text: str) -> str:
    return {"rmse": f"SQRT({sse_text}/{count_text})", "sse": sse_text, "mse": f"{sse_text}/{count_text}"}[kind]


def _lesson_frame(
    book: Book,
    sheet: str,
    r: np.ndarray,
    users,
    movies,
    uf,
    mf,
    ub,
    mb,
    *,
    bias: bool,
    factors_sheet: str | None = None,
    movie_rows: bool = True,
) -> None:
    """Ids, ratings, factor and bias values on the lesson's layout (predictions and objective left to the
    variant). ``factors_sheet``: the factor/bias blocks go on that sheet at the same addresses."""
    s = book.sheet(sheet)
    fs = book.sheet(factors_sheet or sheet)
    s["G1"] = "userId \\ movieId"
    for j, m in enumerate(movies):
        s[ref(1, 8 + j)] = m
        s[ref(P_TOP - 1, 8 + j)] = m
    for i, u in enumerate(users):
        s[ref(R_TOP + i, 7)] = u
        s[ref(P_TOP + i, 7)] = u
        for j in range(len(movies)):
            if not np.isnan(r[i, j]):
                s[ref(R_TOP + i, 8 + j)] = float(r[i, j])
    for a in range(uf.shape[1]):
        for j in range(len(movies) if movie_rows else 0):
            fs[ref(MF_TOP + a, 8 + j)] = float(mf[a, j])
        for i in range(len(users)):
            fs[ref(P_TOP + i, 2 + a)] = float(uf[i, a])
    if bias:
        for j in range(len(movies)):
            fs[ref(MB_ROW, 8 + j)] = float(mb[j])
        for i in range(len(users)):
            fs[ref(P_TOP + i, 1)] = float(ub[i])


def _adj(bias: bool) -> list[str]:
    return ["B26:F40", "H20:V24"] + (["A26:A40", "H19:V19"] if bias else [])


def _cf(name, path, sheet, bias, floor_sheet=None, preds=(None, PREDS), ratings=(None, RATINGS), objective=OBJ):
    model = "bias" if bias else "dot"
    return CorpusBook(
        name,
        Path(path),
        sheet,
        objective,
        "cf",
        model=model,
        floor=FLOOR[model],
        ratings=(ratings[0] or sheet, ratings[1]),
        predictions=(preds[0] or sheet, preds[1]),
    )


def _grid_predictions(
    book: Book, sheet: str, r, full, formula: Callable[[int, int, int, str], str], *, zero_unrated: bool
) -> np.ndarray:
    """Write H26:V40 with ``formula(i, j, row, movie_col)``; returns what the cells cache."""
    s = book.sheet(sheet)
    cached = np.where(np.isnan(r), 0.0, full) if zero_unrated else full.copy()
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            s[ref(P_TOP + i, 8 + j)] = F(formula(i, j, P_TOP + i, col(8 + j)), float(cached[i, j]))
    return cached


def _rmse_label(book: Book, sheet: str, text: str = "objective") -> None:
    book.sheet(sheet)["U42"] = text


# ----------------------------------------------------------------------------------------------------------------
# CF variants


def cf_if_outside(path: Path, *, seed: int = 0, shared: bool = False) -> CorpusBook:
    """Bias: ``IF(H2="",0,MMULT(..))+H$19+$A26`` (biases outside the IF), RMSE by SUMXMY2 (Excel skips blanks).
    ``shared``: the prediction grid stored as ONE shared formula with a calcChain, as Excel saves it (the
    XlsxWriter file rewritten at the XML level)."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "bias"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=True)
    full = uf @ mf
    pred = np.where(np.isnan(r), 0.0, full) + ub[:, None] + mb[None, :]
    for i in range(15):
        for j in range(15):
            c, row = col(8 + j), P_TOP + i
            book.sheets[sh][ref(row, 8 + j)] = F(
                f'IF({c}{R_TOP + i}="",0,MMULT($B{row}:$F{row},{c}${MF_TOP}:{c}${MF_BOTTOM}))+{c}${MB_ROW}+$A{row}',
                float(pred[i, j]),
            )
    n = int((~np.isnan(r)).sum())
    book.sheets[sh][OBJ] = F(
        _objective_text("rmse", f"SUMXMY2({RATINGS},{PREDS})", f"COUNT({RATINGS})"),
        _objective("rmse", _sxmy2(r, pred), n),
    )
    _rmse_label(book, sh, "RMSE")
    solver_names(book, sh, opt=OBJ, adj=_adj(True))
    write_xlsxwriter(book, path, excel_names=not shared)
    if shared:
        from tests.helpers.fit_books import excel_like

        excel_like(path, shared_ref=PREDS)
    return _cf("shared" if shared else "if_outside", path, sh, True)


def cf_sumsq_diff(path: Path, *, seed: int = 0) -> CorpusBook:
    """Dot: predictions everywhere, a difference block ``IF(H2="","",H2-H26)`` (text where unrated) and
    ``SUMSQ`` of it as the objective (SSE)."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "dotprod"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=False)
    full = uf @ mf
    _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: f"MMULT($B{row}:$F{row},{c}${MF_TOP}:{c}${MF_BOTTOM})",
        zero_unrated=False,
    )
    s = book.sheets[sh]
    s["G43"] = "difference"
    for i in range(15):
        for j in range(15):
            c = col(8 + j)
            d = "" if np.isnan(r[i, j]) else float(r[i, j] - full[i, j])
            s[ref(44 + i, 8 + j)] = F(f'IF({c}{R_TOP + i}="","",{c}{R_TOP + i}-{c}{P_TOP + i})', d)
    sse = float(np.nansum((r - full) ** 2))
    s[OBJ] = F("SUMSQ(H44:V58)", sse)
    _rmse_label(book, sh, "SSE")
    solver_names(book, sh, opt=OBJ, adj=_adj(False))
    write_openpyxl(book, path)
    return _cf("sumsq_diff", path, sh, False)


def cf_sumproduct_mask(path: Path, *, seed: int = 0) -> CorpusBook:
    """Bias: predictions everywhere, MSE by ``SUMPRODUCT((R<>"")*(R-P)^2)/COUNT(R)``."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "bias"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=True)
    full = uf @ mf + ub[:, None] + mb[None, :]
    _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: f"MMULT($B{row}:$F{row},{c}${MF_TOP}:{c}${MF_BOTTOM})+{c}${MB_ROW}+$A{row}",
        zero_unrated=False,
    )
    n = int((~np.isnan(r)).sum())
    sse = float(np.nansum((r - full) ** 2))
    book.sheets[sh][OBJ] = F(
        f'SUMPRODUCT(({RATINGS}<>"")*({RATINGS}-{PREDS})^2)/COUNT({RATINGS})', _objective("mse", sse, n)
    )
    _rmse_label(book, sh, "MSE")
    solver_names(book, sh, opt=OBJ, adj=_adj(True))
    write_openpyxl(book, path)
    return _cf("sumproduct_mask", path, sh, True)


def cf_expanded(path: Path, *, seed: int = 0) -> CorpusBook:
    """Dot: ``=$B26*H$20+$C26*H$21+...`` written out, RMSE by the SUMPRODUCT mask."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "dotprod"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=False)
    full = uf @ mf
    _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: "+".join(f"${col(2 + a)}{row}*{c}${MF_TOP + a}" for a in range(N_FACTORS)),
        zero_unrated=False,
    )
    n = int((~np.isnan(r)).sum())
    sse = float(np.nansum((r - full) ** 2))
    book.sheets[sh][OBJ] = F(
        f'SQRT(SUMPRODUCT(({RATINGS}<>"")*({RATINGS}-{PREDS})^2)/COUNT({RATINGS}))', _objective("rmse", sse, n)
    )
    _rmse_label(book, sh, "RMSE")
    solver_names(book, sh, opt=OBJ, adj=_adj(False))
    write_xlsxwriter(book, path)
    return _cf("expanded", path, sh, False)


def cf_sumproduct_pred(path: Path, *, seed: int = 0) -> CorpusBook:
    """Bias: ``SUMPRODUCT($B26:$F26,TRANSPOSE(H$20:H$24))+H$19+$A26`` instead of MMULT, SSE by SUMXMY2 over
    IF-zeroed predictions."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "bias"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=True)
    full = uf @ mf + ub[:, None] + mb[None, :]
    cached = _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: (
            f'IF({c}{R_TOP + i}="",0,SUMPRODUCT($B{row}:$F{row},TRANSPOSE({c}${MF_TOP}:{c}${MF_BOTTOM}))'
            f"+{c}${MB_ROW}+$A{row})"
        ),
        zero_unrated=True,
    )
    book.sheets[sh][OBJ] = F(f"SUMXMY2({RATINGS},{PREDS})", _sxmy2(r, cached))
    _rmse_label(book, sh, "SSE")
    solver_names(book, sh, opt=OBJ, adj=_adj(True))
    write_xlsxwriter(book, path)
    return _cf("sumproduct_pred", path, sh, True)


def cf_other_sheet(path: Path, *, seed: int = 0) -> CorpusBook:
    """Dot: the factors (and the objective + Solver model) on sheet 'the factors'; ratings and predictions on
    'model' read them through quoted sheet references."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh, fs = Book(), "model", "the factors"
    book.sheet(fs)  # first sheet: the Solver model's
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=False, factors_sheet=fs)
    full = uf @ mf
    q = qs(fs)
    cached = _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: f'IF({c}{R_TOP + i}="",0,MMULT({q}!$B{row}:$F{row},{q}!{c}${MF_TOP}:{c}${MF_BOTTOM}))',
        zero_unrated=True,
    )
    n = int((~np.isnan(r)).sum())
    book.sheets[fs]["A1"] = "RMSE"
    book.sheets[fs]["B1"] = F(
        f"SQRT(SUMXMY2(model!{RATINGS},model!{PREDS})/COUNT(model!{RATINGS}))", _objective("rmse", _sxmy2(r, cached), n)
    )
    solver_names(book, fs, opt="B1", adj=_adj(False))
    write_openpyxl(book, path)
    return _cf("other_sheet", path, fs, False, preds=(sh, PREDS), ratings=(sh, RATINGS), objective="B1")


def cf_transposed(path: Path, *, seed: int = 0) -> CorpusBook:
    """Bias: the movie factors stored one movie per row (Z2:AD16, movie bias in Y2:Y16), each prediction
    ``MMULT($B26:$F26,TRANSPOSE($Z3:$AD3))+$Y3+$A26``; RMSE by the SUMPRODUCT mask."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "bias"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=False, movie_rows=False)
    s = book.sheets[sh]
    s["Y1"], s["Z1"] = "movie bias", "movie factors"
    for j in range(15):
        s[ref(2 + j, 25)] = float(mb[j])
        for a in range(N_FACTORS):
            s[ref(2 + j, 26 + a)] = float(mf[a, j])
    for i in range(15):
        s[ref(P_TOP + i, 1)] = float(ub[i])
    full = uf @ mf + ub[:, None] + mb[None, :]
    _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: f"MMULT($B{row}:$F{row},TRANSPOSE($Z{2 + j}:$AD{2 + j}))+$Y{2 + j}+$A{row}",
        zero_unrated=False,
    )
    n = int((~np.isnan(r)).sum())
    sse = float(np.nansum((r - full) ** 2))
    s[OBJ] = F(f'SQRT(SUMPRODUCT(({RATINGS}<>"")*({RATINGS}-{PREDS})^2)/COUNT({RATINGS}))', _objective("rmse", sse, n))
    _rmse_label(book, sh, "RMSE")
    solver_names(book, sh, opt=OBJ, adj=["B26:F40", "Z2:AD16", "A26:A40", "Y2:Y16"])
    write_openpyxl(book, path)
    return _cf("transposed", path, sh, True)


def _zeroed(path: Path, *, seed: int, bias: bool, writer: Callable, objective: str) -> CorpusBook:
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "bias" if bias else "dotprod"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=bias)
    full = uf @ mf + ((ub[:, None] + mb[None, :]) if bias else 0.0)
    tail = (lambda c, row: f"+{c}${MB_ROW}+$A{row}") if bias else (lambda c, row: "")
    cached = _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: (
            f'IF({c}{R_TOP + i}="",0,MMULT($B{row}:$F{row},{c}${MF_TOP}:{c}${MF_BOTTOM}){tail(c, row)})'
        ),
        zero_unrated=True,
    )
    n = int((~np.isnan(r)).sum())
    book.sheets[sh][OBJ] = F(
        _objective_text(objective, f"SUMXMY2({RATINGS},{PREDS})", f"COUNT({RATINGS})"),
        _objective(objective, _sxmy2(r, cached), n),
    )
    _rmse_label(book, sh, objective.upper())
    solver_names(book, sh, opt=OBJ, adj=_adj(bias))
    writer(book, path)
    return _cf(f"sumxmy2_zero_{'bias' if bias else 'dot'}", path, sh, bias)


def cf_sumxmy2_zero_dot(path: Path, *, seed: int = 0) -> CorpusBook:
    """The lesson's own sheet: ``IF(H2="",0,MMULT(..))``, ``SQRT(SUMXMY2(R,P)/COUNT(R))`` over blanks."""
    return _zeroed(path, seed=seed, bias=False, writer=write_xlsxwriter, objective="rmse")


def cf_sumxmy2_zero_bias(path: Path, *, seed: int = 0) -> CorpusBook:
    """Bias inside the IF, objective MSE ``SUMXMY2(R,P)/COUNT(R)``."""
    return _zeroed(path, seed=seed, bias=True, writer=write_openpyxl, objective="mse")


def cf_named(path: Path, *, seed: int = 0) -> CorpusBook:
    """Dot, with sheet-scoped names used inside the formulas (``SUMXMY2(ratings,predictions)``; the factor
    blocks are names too) and an SSE objective."""
    r, users, movies = lesson()
    uf, mf, ub, mb = start_values(seed)
    book, sh = Book(), "named"
    _lesson_frame(book, sh, r, users, movies, uf, mf, ub, mb, bias=False)
    full = uf @ mf
    cached = _grid_predictions(
        book,
        sh,
        r,
        full,
        lambda i, j, row, c: f'IF({c}{R_TOP + i}="",0,MMULT($B{row}:$F{row},{c}${MF_TOP}:{c}${MF_BOTTOM}))',
        zero_unrated=True,
    )
    for name, rng in (("ratings", RATINGS), ("predictions", PREDS), ("users", "B26:F40"), ("movies", "H20:V24")):
        book.names.append((sh, name, f"{qs(sh)}!{absref(rng)}", False))
    book.sheets[sh][OBJ] = F("SUMXMY2(ratings,predictions)", _sxmy2(r, cached))
    _rmse_label(book, sh, "SSE")
    solver_names(book, sh, opt=OBJ, adj=["B26:F40", "H20:V24"])
    write_openpyxl(book, path)
    return _cf("named", path, sh, False)


def cf_shared(path: Path, *, seed: int = 0) -> CorpusBook:
    return cf_if_outside(path, seed=seed, shared=True)


CF_VARIANTS: dict[str, Callable[..., CorpusBook]] = {
    "if_outside": cf_if_outside,
    "sumsq_diff": cf_sumsq_diff,
    "sumproduct_mask": cf_sumproduct_mask,
    "expanded": cf_expanded,
    "sumproduct_pred": cf_sumproduct_pred,
    "other_sheet": cf_other_sheet,
    "transposed": cf_transposed,
    "sumxmy2_zero_dot": cf_sumxmy2_zero_dot,
    "sumxmy2_zero_bias": cf_sumxmy2_zero_bias,
    "named": cf_named,
    "shared": cf_shared,
}


# ----------------------------------------------------------------------------------------------------------------
# Solver models that are not collaborative filtering


def _model(name, path, sheet, objective, optimum, solution, sense="min"):
    return CorpusBook(
        name,
        Path(path),
        sheet,
        objective,
        "model",
        optimum=float(optimum),
        solution={k: float(v) for k, v in solution.items()},
        sense=sense,
    )


def graddesc_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from xlcf.lessons.graddesc_ref import make_data

    return make_data(seed)


def _line_book(path: Path, x: np.ndarray, y: np.ndarray, name: str) -> CorpusBook:
    book, sh = Book(), "line"
    s = book.sheet(sh)
    s["A1"], s["B1"], s["C1"], s["D2"], s["D3"], s["D5"] = "x", "y", "y_pred", "slope", "const", "SSE"
    s["E2"], s["E3"] = 1.0, 1.0
    n = len(x)
    for i in range(n):
        s[f"A{2 + i}"], s[f"B{2 + i}"] = float(x[i]), float(y[i])
        s[f"C{2 + i}"] = F(f"$E$2*A{2 + i}+$E$3", float(x[i] + 1.0))
    s["E5"] = F(f"SUMXMY2(B2:B{n + 1},C2:C{n + 1})", float(((x + 1.0 - y) ** 2).sum()))
    solver_names(book, sh, opt="E5", adj=["E2:E3"])
    write_openpyxl(book, path)
    slope, const = np.polyfit(x, y, 1)
    sse = float(((slope * x + const - y) ** 2).sum())
    return _model(name, path, sh, "E5", sse, {"E2": slope, "E3": const})


def model_line_fit(path: Path) -> CorpusBook:
    """Least-squares line through the gradient-descent lesson's data (y = 2x + 30 exactly): SSE 0 at (2, 30)."""
    x, y = graddesc_data(0)
    return _line_book(path, x, y, "line_fit")


def model_line_noisy(path: Path) -> CorpusBook:
    """The same line fit with noise on y: the optimum is numpy's least-squares line."""
    x, y = graddesc_data(1)
    y = y + np.random.default_rng(7).normal(0, 5, len(y)).round(3)
    return _line_book(path, x, y, "line_noisy")


def model_rosenbrock(path: Path) -> CorpusBook:
    """Rosenbrock's valley from (-1.2, 1): minimum 0 at (1, 1)."""
    book, sh = Book(), "rosenbrock"
    s = book.sheet(sh)
    s["A1"], s["B1"], s["D1"] = "x", "y", "f"
    s["A2"], s["B2"] = -1.2, 1.0
    s["D2"] = F("(1-A2)^2+100*(B2-A2^2)^2", (1 + 1.2) ** 2 + 100 * (1 - 1.44) ** 2)
    solver_names(book, sh, opt="D2", adj=["A2:B2"])
    write_xlsxwriter(book, path)
    return _model("rosenbrock", path, sh, "D2", 0.0, {"A2": 1.0, "B2": 1.0})


def logistic_data(seed: int = 3, n: int = 100):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 2)).round(3)
    w = np.array([-0.5, 1.5, -2.0])
    p = 1 / (1 + np.exp(-(w[0] + x @ w[1:])))
    y = (rng.random(n) < p).astype(float)
    return x, y


def _loglik(w, x, y):
    z = w[0] + x @ w[1:]
    p = 1 / (1 + np.exp(-z))
    return float((y * np.log(p) + (1 - y) * np.log(1 - p)).sum())


def model_logistic(path: Path) -> CorpusBook:
    """Logistic regression by maximum likelihood (solver_typ 1 = max): H2:H4 intercept and two weights; the
    optimum is scipy's (BFGS, analytic gradient)."""
    from scipy.optimize import minimize

    x, y = logistic_data()
    n = len(y)
    book, sh = Book(), "logit"
    s = book.sheet(sh)
    for c, text in zip("ABCDE", ("x1", "x2", "y", "p", "loglik")):
        s[f"{c}1"] = text
    s["G2"], s["G3"], s["G4"], s["G6"] = "intercept", "w1", "w2", "log likelihood"
    s["H2"] = s["H3"] = s["H4"] = 0.0
    for i in range(n):
        r = 2 + i
        s[f"A{r}"], s[f"B{r}"], s[f"C{r}"] = float(x[i, 0]), float(x[i, 1]), float(y[i])
        s[f"D{r}"] = F(f"1/(1+EXP(-($H$2+$H$3*A{r}+$H$4*B{r})))", 0.5)
        s[f"E{r}"] = F(f"C{r}*LN(D{r})+(1-C{r})*LN(1-D{r})", math.log(0.5))
    s["H6"] = F(f"SUM(E2:E{n + 1})", n * math.log(0.5))
    solver_names(book, sh, opt="H6", adj=["H2:H4"], typ=1)
    write_openpyxl(book, path)

    def neg(w):
        z = w[0] + x @ w[1:]
        p = 1 / (1 + np.exp(-z))
        g = np.concatenate([[np.sum(p - y)], x.T @ (p - y)])
        return -_loglik(w, x, y), g

    res = minimize(neg, np.zeros(3), jac=True, method="BFGS", options={"gtol": 1e-10})
    return _model("logistic", path, sh, "H6", -res.fun, dict(zip(("H2", "H3", "H4"), res.x)), sense="max")


def model_value_of(path: Path) -> CorpusBook:
    """ "Value of" (solver_typ 3): x^3 + 2x = 10 from x = 0; the real root of the cubic."""
    book, sh = Book(), "target"
    s = book.sheet(sh)
    s["A1"], s["B1"] = "x", "x^3+2x"
    s["A2"] = 0.0
    s["B2"] = F("A2^3+2*A2", 0.0)
    solver_names(book, sh, opt="B2", adj=["A2"], typ=3, val=10)
    write_xlsxwriter(book, path)
    roots = np.roots([1, 0, 2, -10])
    root = float(roots[np.argmin(np.abs(roots.imag))].real)
    return _model("value_of", path, sh, "B2", 10.0, {"A2": root}, sense="value")


def model_nonnegative(path: Path) -> CorpusBook:
    """solver_neg = 1 (make unconstrained variables non-negative): (a+1)^2 + (b-2)^2 -> 1 at (0, 2)."""
    book, sh = Book(), "bounds"
    s = book.sheet(sh)
    s["A1"], s["B1"], s["D1"] = "a", "b", "f"
    s["A2"], s["B2"] = 1.0, 1.0
    s["D2"] = F("(A2+1)^2+(B2-2)^2", 5.0)
    solver_names(book, sh, opt="D2", adj=["A2:B2"], neg=1)
    write_openpyxl(book, path)
    return _model("nonnegative", path, sh, "D2", 1.0, {"A2": 0.0, "B2": 2.0})


def model_bounds(path: Path) -> CorpusBook:
    """Constraints as Solver stores them: A2:C2 >= 0, B2 <= 1.5, C2 <= F2 (a cell holding 2.5);
    (a+1)^2 + (b-2)^2 + (c-3)^2 -> 1.5 at (0, 1.5, 2.5)."""
    book, sh = Book(), "bounds"
    s = book.sheet(sh)
    s["A1"], s["B1"], s["C1"], s["D1"], s["F1"] = "a", "b", "c", "f", "cap"
    s["A2"] = s["B2"] = s["C2"] = 1.0
    s["F2"] = 2.5
    s["D2"] = F("(A2+1)^2+(B2-2)^2+(C2-3)^2", 9.0)
    solver_names(
        book,
        sh,
        opt="D2",
        adj=["A2:C2"],
        constraints=[("A2:C2", 3, "0"), ("B2", 1, "1.5"), ("C2", 1, f"{qs(sh)}!$F$2")],
    )
    write_xlsxwriter(book, path)
    return _model("bounds", path, sh, "D2", 1.5, {"A2": 0.0, "B2": 1.5, "C2": 2.5})


MODELS: dict[str, Callable[..., CorpusBook]] = {
    "line_fit": model_line_fit,
    "line_noisy": model_line_noisy,
    "rosenbrock": model_rosenbrock,
    "logistic": model_logistic,
    "value_of": model_value_of,
    "nonnegative": model_nonnegative,
    "bounds": model_bounds,
}


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line naming sheet!cell, exit 2, nothing written


def _bad(name, path, where, words, book: Book, writer=write_openpyxl, objective="D2"):
    writer(book, path)
    return CorpusBook(name, Path(path), "bad", objective, "bad", where=tuple(where), words=tuple(words))


def _bad_base(f_text="(A2-1)^2+(B2-3)^2", f_cached=5.0, **solver) -> Book:
    book = Book()
    s = book.sheet("bad")
    s["A1"], s["B1"], s["D1"] = "a", "b", "f"
    s["A2"], s["B2"] = 0.0, 1.0
    s["D2"] = F(f_text, f_cached)
    solver.setdefault("opt", "D2")
    solver.setdefault("adj", ["A2:B2"])
    solver_names(book, "bad", **solver)
    return book


def bad_unsupported_function(path: Path) -> CorpusBook:
    book = _bad_base()
    book.sheets["bad"]["C2"] = F("BESSELJ(A2,1)", 0.0)
    book.sheets["bad"]["D2"] = F("(A2-1)^2+(B2-3)^2+C2", 5.0)
    return _bad("unsupported_function", path, ["bad!C2"], ["besselj"], book)


def bad_circular(path: Path) -> CorpusBook:
    book = _bad_base()
    book.sheets["bad"]["C2"] = F("A2+C3", 0.0)
    book.sheets["bad"]["C3"] = F("C2/2", 0.0)
    book.sheets["bad"]["D2"] = F("(A2-1)^2+(B2-3)^2+C2^2", 5.0)
    return _bad("circular", path, ["bad!C2", "bad!C3"], ["circular"], book)


def bad_independent(path: Path) -> CorpusBook:
    book = _bad_base("C2^2", 9.0)
    book.sheets["bad"]["C2"] = 3.0
    return _bad("independent", path, ["bad!D2"], ["depend"], book)


def bad_variable_formula(path: Path) -> CorpusBook:
    book = _bad_base()
    book.sheets["bad"]["B2"] = F("A2*2", 0.0)
    book.sheets["bad"]["D2"] = F("(A2-1)^2+(B2-3)^2", 10.0)
    return _bad("variable_formula", path, ["bad!B2"], ["formula"], book)


def bad_ref_objective(path: Path) -> CorpusBook:
    book = _bad_base(raw_opt=f"{qs('bad')}!#REF!")
    return _bad("ref_objective", path, ["bad!"], ["#ref!", "objective"], book)


def bad_integer(path: Path) -> CorpusBook:
    return _bad("integer", path, ["bad!A2"], ["integer"], _bad_base(constraints=[("A2", 4, "integer")]))


def bad_binary(path: Path) -> CorpusBook:
    return _bad(
        "binary",
        path,
        ["bad!A2:B2"],
        ["binary"],
        _bad_base(constraints=[("A2:B2", 5, "binary")]),
        writer=write_xlsxwriter,
    )


def bad_alldifferent(path: Path) -> CorpusBook:
    return _bad(
        "alldifferent", path, ["bad!A2:B2"], ["different"], _bad_base(constraints=[("A2:B2", 6, "AllDifferent")])
    )


def bad_nonlinear_equality(path: Path) -> CorpusBook:
    book = _bad_base(constraints=[("C2", 2, "1")])
    book.sheets["bad"]["C2"] = F("A2*B2", 0.0)
    return _bad("nonlinear_equality", path, ["bad!C2"], ["not supported"], book)


def bad_nonfinite_start(path: Path) -> CorpusBook:
    book = _bad_base("(A2-1)^2+(B2-3)^2+C2", "#DIV/0!")
    book.sheets["bad"]["C2"] = F("1/A2", "#DIV/0!")
    return _bad("nonfinite_start", path, ["bad!D2", "bad!C2"], ["#div/0!"], book)


BAD: dict[str, Callable[..., CorpusBook]] = {
    "unsupported_function": bad_unsupported_function,
    "circular": bad_circular,
    "independent": bad_independent,
    "variable_formula": bad_variable_formula,
    "ref_objective": bad_ref_objective,
    "integer": bad_integer,
    "binary": bad_binary,
    "alldifferent": bad_alldifferent,
    "nonlinear_equality": bad_nonlinear_equality,
    "nonfinite_start": bad_nonfinite_start,
}


# ----------------------------------------------------------------------------------------------------------------
# Gradient descent by hand, for `xlcf step --copy`

GD_SHEET = "sgd"
GD_TABLE_TOP = 10


def graddesc_pass(slope: float, const: float, lr: float, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """One pass of the hand-made sheet, row by row (what its formulas compute)."""
    n = len(x)
    out = {k: np.zeros(n) for k in ("b", "a", "pred", "err2", "de_db", "de_da", "new_b", "new_a")}
    b, a = const, slope
    for i in range(n):
        pred = a * x[i] + b
        de_db = 2 * (pred - y[i])
        de_da = x[i] * de_db
        out["b"][i], out["a"][i], out["pred"][i] = b, a, pred
        out["err2"][i], out["de_db"][i], out["de_da"][i] = (pred - y[i]) ** 2, de_db, de_da
        b, a = b - lr * de_db, a - lr * de_da
        out["new_b"][i], out["new_a"][i] = b, a
    return out


def graddesc_book(path: Path, *, slope: float = 1.0, const: float = 1.0, lr: float = 1e-4, seed: int = 0) -> CorpusBook:
    """Sheet ``sgd``: slope B2 / const B3 (names ``slope``, ``const``), after-pass values C2 / C3 (``lastslope``,
    ``lastconst``), lr B4, mean squared error along the pass B6 (``err``); the pass table from row 10 (x, y,
    b, a, y_pred, err^2, de/db, de/da, new b, new a), each row starting from the row above. The "one step"
    macro is ``lastslope -> slope`` then ``lastconst -> const`` (values)."""
    x, y = graddesc_data(seed)
    n = len(x)
    top, last = GD_TABLE_TOP, GD_TABLE_TOP + n - 1
    res = graddesc_pass(slope, const, lr, x, y)
    book, sh = Book(), GD_SHEET
    s = book.sheet(sh)
    s["A1"] = "gradient descent, one pass per step"
    s["A2"], s["B2"], s["C2"] = "slope", slope, F(f"J{last}", float(res["new_a"][-1]))
    s["A3"], s["B3"], s["C3"] = "const", const, F(f"I{last}", float(res["new_b"][-1]))
    s["A4"], s["B4"] = "lr", lr
    s["A6"], s["B6"] = "err", F(f"AVERAGE(F{top}:F{last})", float(res["err2"].mean()))
    s["B1"], s["C1"] = "start", "after pass"
    for c, text in zip("ABCDEFGHIJ", ("x", "y", "b", "a", "y_pred", "err^2", "de/db", "de/da", "new b", "new a")):
        s[f"{c}{top - 1}"] = text
    for i in range(n):
        r = top + i
        s[f"A{r}"], s[f"B{r}"] = float(x[i]), float(y[i])
        s[f"C{r}"] = F("$B$3" if i == 0 else f"I{r - 1}", float(res["b"][i]))
        s[f"D{r}"] = F("$B$2" if i == 0 else f"J{r - 1}", float(res["a"][i]))
        s[f"E{r}"] = F(f"D{r}*A{r}+C{r}", float(res["pred"][i]))
        s[f"F{r}"] = F(f"(E{r}-B{r})^2", float(res["err2"][i]))
        s[f"G{r}"] = F(f"2*(E{r}-B{r})", float(res["de_db"][i]))
        s[f"H{r}"] = F(f"A{r}*G{r}", float(res["de_da"][i]))
        s[f"I{r}"] = F(f"C{r}-$B$4*G{r}", float(res["new_b"][i]))
        s[f"J{r}"] = F(f"D{r}-$B$4*H{r}", float(res["new_a"][i]))
    for name, a1 in (
        ("slope", "B2"),
        ("const", "B3"),
        ("lastslope", "C2"),
        ("lastconst", "C3"),
        ("lr", "B4"),
        ("err", "B6"),
    ):
        book.names.append((sh, name, f"{qs(sh)}!{absref(a1)}", False))
    write_openpyxl(book, path)
    return CorpusBook("graddesc", Path(path), sh, "B6", "step")


def build_all(folder: Path) -> dict[str, CorpusBook]:
    """Every corpus book in ``folder`` (file name = key + .xlsx)."""
    out = {}
    for group in (CF_VARIANTS, MODELS, BAD):
        for key, builder in group.items():
            out[key] = builder(Path(folder) / f"{key}.xlsx")
    out["graddesc"] = graddesc_book(Path(folder) / "graddesc.xlsx")
    return out
