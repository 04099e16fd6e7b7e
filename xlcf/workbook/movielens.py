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
  :class:`~xlcf.workbook.package.Package`, trains, and writes every block in place (atomic, every other zip
  member byte-identical); :func:`write_results` does the writing for ``xlcf train RATINGS --out BOOK``.

Everything stays far inside Excel's limits: the largest block is the embeddings sheet (225 rows x ~4k+50
columns); the full ratings never go into cells.
"""

from __future__ import annotations

import io
import math
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlcf.errors import ConfigError, DataError, WorkbookError, XlcfError
from xlcf.fileio import atomic_write_bytes
from xlcf.workbook.refs import cell_ref, col_letter, parse_range, split_ref

SHEET = "movielens"
OUTPUT_SHEETS = ("history", "movie_bias", "movie_pca", "recommend", "pred_vs_actual", "crosstab", "embeddings")
MAX_ROWS = 1_048_576
MAX_COLS = 16_384
MAX_FACTORS = 4000  # the embeddings sheet needs 4*k + 50 columns (Excel: 16,384)
MAX_EPOCHS = 1_000_000  # one history row per epoch (Excel: 1,048,576 rows)
TOP_N_BIAS = 15
TOP_N_PCA = 10
TOP_N_RECOMMEND = 10
N_COMPONENTS = 3
CROSSTAB_TOP = 15
LONG_CAPACITY = CROSSTAB_TOP * CROSSTAB_TOP  # every (user, movie) pair of the 15x15 fits

# ------------------------------------------------------------------------------------------------------------
# Layout of the movielens sheet (column B = settings, column E = metrics)


@dataclass(frozen=True)
class Setting:
    name: str  # sheet-scoped defined name and key in the settings dict
    label: str
    default: Any
    help: str
    number_format: str = "General"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ratings_source",
        "ratings source",
        "ml-latest-small",
        "ratings.csv, a folder holding one, a GroupLens zip (relative to this workbook's folder), "
        "or the name ml-latest-small",
    ),
    Setting("model", "model", "bias", "dot | bias | nn"),
    Setting("optimizer", "optimizer", "adam", "sgd | momentum | rmsprop | adam | adamw | lbfgs"),
    Setting("epochs", "epochs", None, "blank = the optimizer's default", "0"),
    Setting("lr", "learning rate", None, "blank = the optimizer's default", "0.0000"),
    Setting("wd", "weight decay", None, "blank = the model's default", "0.0000"),
    Setting("factors", "factors", 50, "embedding size k (1 to 4000)", "0"),
    Setting("valid_pct", "validation %", 0.2, "share of ratings held out, in (0, 90%]", "0%"),
    Setting("seed", "seed", 0, "split and initialisation seed", "0"),
    Setting("device", "device", "auto", "auto | cpu | cuda | cuda:N | mps"),
    Setting("user_id", "user id to recommend for", 1, "a userId of the ratings", "0"),
    Setting("hidden", "nn hidden size", 10, "nn model only", "0"),
    Setting("dropout_emb", "nn dropout (embeddings)", 0.05, "nn model only, in [0, 1)", "0.00"),
    Setting("dropout_hidden", "nn dropout (hidden)", 0.5, "nn model only, in [0, 1)", "0.00"),
    Setting("min_ratings", "min ratings N", 20, "bias lists and PCA use movies with >= N training ratings", "0"),
)
SETTINGS_TOP = 5
SETTING_REF = {s.name: f"B{SETTINGS_TOP + i}" for i, s in enumerate(SETTINGS)}
STATUS_REF = f"B{SETTINGS_TOP + len(SETTINGS) + 1}"

METRICS: tuple[tuple[str, str, str], ...] = (
    ("train_rmse", "train RMSE", "0.0000"),
    ("valid_rmse", "valid RMSE", "0.0000"),
    ("epochs_run", "epochs run", "0"),
    ("fit_seconds", "fit seconds", "0.00"),
    ("device_used", "device", "General"),
    ("model_used", "model", "General"),
    ("optimizer_used", "optimizer", "General"),
    ("lr_used", "learning rate (last epoch)", "0.0E+00"),
    ("n_ratings", "ratings", "#,##0"),
    ("n_users", "users", "#,##0"),
    ("n_movies", "movies", "#,##0"),
    ("n_train", "training ratings", "#,##0"),
    ("n_valid", "validation ratings", "#,##0"),
    ("trained_at", "trained at (UTC)", "General"),
)
METRICS_TOP = 5
METRIC_REF = {name: f"E{METRICS_TOP + i}" for i, (name, _, _) in enumerate(METRICS)}

# history
HISTORY_HEADER_ROW = 3
HISTORY_TOP = 4
HISTORY_COUNT_REF = "H2"  # how many history rows the last run wrote (so the next one can clear the rest)
HISTORY_COLUMNS = ("epoch", "train loss", "train RMSE", "valid RMSE", "seconds")
DEFAULT_HISTORY_ROWS = 10

# movie_bias
BIAS_TOP = 7
BIAS_COLUMNS = ("rank", "movieId", "title", "bias", "ratings", "mean rating")

# movie_pca
PCA_VAR_TOP = 5
PCA_BLOCK_STEP = 5  # columns per component block
PCA_HIGH_TOP = 12
PCA_LOW_TOP = 25

# recommend
REC_TOP = 7  # table A7:E16 under the user's summary (A2:B4)

# pred_vs_actual
PVA_TOP = 6  # rows 6..15: actual 0.5 .. 5.0
HALF_STARS = [0.5 * i for i in range(1, 11)]

# crosstab
CT_TOP = 6
CT_PRED_COL = 18  # column R: ids, S.. predictions
CT_TITLES_TOP = 26

# embeddings
EMB_FACTORS_REF = "B3"  # k the sheet is laid out for
EMB_ROWS_REF = "D3"  # long-table rows it is laid out for (= rated cells of the 15x15)
EMB_USER_TOP = 6  # rows 6..20
EMB_MOVIE_TOP = 24  # rows 24..38
EMB_LONG_HEADER = 41
EMB_LONG_TOP = 42


@dataclass(frozen=True)
class EmbeddingsLayout:
    """Positions on the embeddings sheet for ``k`` factors and ``rows`` long-table rows (1-based numbers)."""

    k: int
    rows: int = LONG_CAPACITY

    @property
    def uvec(self) -> int:  # user vector looked up with INDEX/MATCH
        return 6

    @property
    def mvec(self) -> int:
        return self.uvec + self.k + 1

    @property
    def dot_lookup(self) -> int:
        return self.mvec + self.k + 1

    @property
    def uhot(self) -> int:  # user one-hot (15 columns)
        return self.dot_lookup + 2

    @property
    def mhot(self) -> int:
        return self.uhot + CROSSTAB_TOP + 1

    @property
    def umm(self) -> int:  # MMULT(user one-hot, user embedding matrix)
        return self.mhot + CROSSTAB_TOP + 1

    @property
    def mmm(self) -> int:
        return self.umm + self.k + 1

    @property
    def dot_hot(self) -> int:
        return self.mmm + self.k + 1

    @property
    def diff(self) -> int:
        return self.dot_hot + 1

    @property
    def last_row(self) -> int:
        return EMB_LONG_TOP + max(self.rows, 1) - 1


# ------------------------------------------------------------------------------------------------------------
# Outputs (pure)


Value = float | int | str | bool | None


@dataclass
class MovielensOutputs:
    """Everything a training writes. ``blocks[sheet] = [(top_left, rows)]``; values finite or None."""

    blocks: dict[str, list[tuple[str, list[list[Value]]]]]
    history_rows: int
    factors: int
    embedding_rows: int
    status: str
    summary: dict[str, Any] = field(default_factory=dict)


def _clean(value: Any) -> Value:
    """A cell value: numpy scalars to Python, NaN/inf to None (never written)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    return str(value)


def _rows(rows) -> list[list[Value]]:
    return [[_clean(v) for v in row] for row in rows]


def _pad(rows: list[list[Value]], n_rows: int, n_cols: int, fill: Value = None) -> list[list[Value]]:
    out = [list(r) + [fill] * (n_cols - len(r)) for r in rows[:n_rows]]
    return out + [[fill] * n_cols for _ in range(n_rows - len(out))]


def _title(titles: dict, movie_id) -> str | None:
    return titles.get(int(movie_id)) if titles else None


def _lr_used(result):
    """The learning rate the run ended with (the engine resolves per-optimizer defaults)."""
    last = result.history[-1] if result.history else None
    lr = getattr(last, "lr", None) if last is not None else None
    return lr if lr is not None else getattr(result.config, "lr", None)


def _optimizer_name(result) -> str:
    name = getattr(result.config, "optimizer_name", None) or result.config.optimizer
    return name if isinstance(name, str) else getattr(name, "__name__", "custom")


def _setting(settings: dict | None, name: str, default):
    if not settings:
        return default
    value = settings.get(name)
    return default if value is None else value


def compute_outputs(
    result,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    titles: dict | None,
    settings: dict | None,
    *,
    previous_history_rows: int = 0,
) -> MovielensOutputs:
    """All sheet blocks of a finished training. Pure: nothing is read or written.

    ``settings`` keys used: ``user_id`` (default: the first user of the model), ``min_ratings`` (default 20).
    ``previous_history_rows`` (the history sheet's ``H2`` before this run): the history block is padded with
    blank rows down to it, so a writer that only writes blocks also clears what a longer earlier run left.
    Raises ConfigError when the user id is not in the data or k does not fit a worksheet.
    """
    from xlcf.data import crosstab as make_crosstab
    from xlcf.train.interpret import bias_extremes, binned_pred_vs_actual, movie_pca, rating_counts, recommend_unrated

    titles = titles or {}
    valid_df = valid_df if valid_df is not None else train_df.iloc[0:0]
    min_ratings = int(_setting(settings, "min_ratings", 20))
    user_ids = np.asarray(result.users.ids, dtype=np.int64)
    movie_ids = np.asarray(result.movies.ids, dtype=np.int64)
    user_id = _setting(settings, "user_id", int(user_ids[0]) if len(user_ids) else None)
    if user_id is None or int(user_id) not in set(user_ids.tolist()):
        raise ConfigError(
            f"{SHEET}!{SETTING_REF['user_id']}: user id {user_id} is not in the training data "
            f"(user ids run from {user_ids.min() if len(user_ids) else '-'} to "
            f"{user_ids.max() if len(user_ids) else '-'})"
        )
    user_id = int(user_id)
    movie_factors = np.asarray(result.movie_factors, dtype=np.float64)
    user_factors = np.asarray(result.user_factors, dtype=np.float64)
    k = int(movie_factors.shape[1])
    if not 1 <= k <= MAX_FACTORS:  # the embeddings sheet needs 4k + 47 columns; Excel stops at 16,384
        raise ConfigError(
            f"factors={k}: the embeddings sheet holds 4 x factors + 47 columns and a worksheet "
            f"has {MAX_COLS:,}; use 1 to {MAX_FACTORS} factors with a workbook"
        )
    counts = rating_counts(train_df)
    count_of = counts["count"].to_dict()
    blocks: dict[str, list] = {name: [] for name in (SHEET, *OUTPUT_SHEETS)}
    config = result.config

    # -- history
    history = list(result.history)[-(MAX_ROWS - HISTORY_TOP) :]
    hist_rows = _rows([[h.epoch, h.train_loss, h.train_rmse, h.valid_rmse, h.seconds] for h in history])
    padding = max(0, min(int(previous_history_rows or 0), MAX_ROWS - HISTORY_TOP + 1) - len(hist_rows))
    blocks["history"].append((f"A{HISTORY_TOP}", hist_rows + [[None] * len(HISTORY_COLUMNS)] * padding))
    blocks["history"].append((HISTORY_COUNT_REF, [[len(hist_rows)]]))

    # -- movie_bias
    if result.movie_bias is not None:
        extremes = bias_extremes(movie_ids, result.movie_bias, counts, n=TOP_N_BIAS, min_ratings=min_ratings)
        note = (
            f"{extremes.eligible} movies have >= {min_ratings} training ratings; bias in rating units "
            f"(the model's movie bias: how much better or worse than its audience suggests)"
        )
        for col, frame in (("A", extremes.highest), ("H", extremes.lowest)):
            rows = [
                [i + 1, r.movieId, _title(titles, r.movieId), r.bias, r.count, r.mean]
                for i, r in enumerate(frame.itertuples(index=False))
            ]
            blocks["movie_bias"].append((f"{col}{BIAS_TOP}", _pad(_rows(rows), TOP_N_BIAS, len(BIAS_COLUMNS))))
    else:
        note = f"the {config.model} model has no movie biases: train the bias model to fill these lists"
        for col in ("A", "H"):
            blocks["movie_bias"].append((f"{col}{BIAS_TOP}", _pad([], TOP_N_BIAS, len(BIAS_COLUMNS))))
    blocks["movie_bias"].append(("D3", [[min_ratings]]))
    blocks["movie_bias"].append(("A4", [[note]]))

    # -- movie_pca (movies with >= N ratings, like the lesson's top-3000 restriction)
    eligible = np.array([count_of.get(int(m), 0) >= min_ratings for m in movie_ids], dtype=bool)
    if eligible.sum() < N_COMPONENTS + 1:
        eligible[:] = True
    pca = movie_pca(movie_ids[eligible], movie_factors[eligible], n_components=N_COMPONENTS)
    c = len(pca.explained_variance_ratio)
    cumulative = np.cumsum(pca.explained_variance_ratio)
    var_rows = [
        [f"PC{j + 1}", pca.explained_variance_ratio[j] if j < c else None, cumulative[j] if j < c else None]
        for j in range(N_COMPONENTS)
    ]
    blocks["movie_pca"].append((f"A{PCA_VAR_TOP}", _rows(var_rows)))
    blocks["movie_pca"].append((f"F{PCA_VAR_TOP}", [[int(len(pca.movie_ids))], [min_ratings]]))
    for j in range(N_COMPONENTS):
        col = 1 + j * PCA_BLOCK_STEP
        if j < c:
            high, low = pca.extremes(j, TOP_N_PCA)
        else:
            high = low = pd.DataFrame({"movieId": [], "score": []})
        for top, frame in ((PCA_HIGH_TOP, high), (PCA_LOW_TOP, low)):
            rows = [
                [i + 1, r.movieId, _title(titles, r.movieId), r.score]
                for i, r in enumerate(frame.itertuples(index=False))
            ]
            blocks["movie_pca"].append((cell_ref(top, col), _pad(_rows(rows), TOP_N_PCA, 4)))

    # -- recommend
    seen = pd.concat([train_df[["userId", "movieId"]], valid_df[["userId", "movieId"]]])
    rated = seen.loc[seen["userId"] == user_id, "movieId"].unique()
    recs = recommend_unrated(result.predict, user_id, movie_ids, rated, n=TOP_N_RECOMMEND)
    rec_rows = [
        [i + 1, r.movieId, _title(titles, r.movieId), r.prediction, count_of.get(int(r.movieId), 0)]
        for i, r in enumerate(recs.itertuples(index=False))
    ]
    blocks["recommend"].append((f"A{REC_TOP}", _pad(_rows(rec_rows), TOP_N_RECOMMEND, 5)))
    user_ratings = seen.loc[seen["userId"] == user_id]
    user_mean = pd.concat([train_df, valid_df]).loc[lambda d: d["userId"] == user_id, "rating"].mean()
    blocks["recommend"].append(("B2", [[user_id], [int(len(user_ratings))], [_clean(user_mean)]]))

    # -- pred_vs_actual (validation set)
    if len(valid_df):
        valid_pred = np.asarray(
            result.predict(valid_df["userId"].to_numpy(np.int64), valid_df["movieId"].to_numpy(np.int64)),
            dtype=np.float64,
        )
        binned = binned_pred_vs_actual(valid_pred, valid_df["rating"].to_numpy(np.float64))
        table = [
            [HALF_STARS[i], *binned.counts[i].tolist(), int(binned.n_per_actual[i]), binned.mean_prediction[i]]
            for i in range(10)
        ]
        pva_rmse, n_valid = binned.rmse, len(valid_df)
    else:
        table = [[HALF_STARS[i], *([0] * 10), 0, None] for i in range(10)]
        pva_rmse, n_valid = None, 0
    blocks["pred_vs_actual"].append((f"A{PVA_TOP}", _rows(table)))
    blocks["pred_vs_actual"].append(("B18", _rows([[pva_rmse], [n_valid]])))

    # -- crosstab of the training data + the model's predictions for those cells
    table = make_crosstab(train_df, top=CROSSTAB_TOP)
    ct_users = table.index.to_numpy(np.int64)
    ct_movies = table.columns.to_numpy(np.int64)
    ratings = table.to_numpy(np.float64)
    uu, mm = np.meshgrid(ct_users, ct_movies, indexing="ij")
    pred = np.asarray(result.predict(uu.ravel(), mm.ravel()), dtype=np.float64).reshape(uu.shape)
    header = _pad([[None, *ct_movies.tolist()]], 1, CROSSTAB_TOP + 1)
    rating_rows = _pad(_rows([[u, *row] for u, row in zip(ct_users, ratings)]), CROSSTAB_TOP, CROSSTAB_TOP + 1)
    pred_rows = _pad(_rows([[u, *row] for u, row in zip(ct_users, pred)]), CROSSTAB_TOP, CROSSTAB_TOP + 1)
    rated_mask = ~np.isnan(ratings)
    ct_rmse = float(np.sqrt(np.mean((pred[rated_mask] - ratings[rated_mask]) ** 2))) if rated_mask.any() else None
    blocks["crosstab"] += [
        (f"B{CT_TOP - 1}", [header[0][1:]]),
        (f"A{CT_TOP}", rating_rows),
        (cell_ref(CT_TOP - 1, CT_PRED_COL + 1), [header[0][1:]]),
        (cell_ref(CT_TOP, CT_PRED_COL), pred_rows),
        (f"B{CT_TOP + CROSSTAB_TOP + 1}", [[_clean(ct_rmse)], [int(rated_mask.sum())]]),
    ]
    title_rows = [[m, _title(titles, m)] for m in ct_movies]
    blocks["crosstab"].append((f"A{CT_TITLES_TOP}", _pad(_rows(title_rows), CROSSTAB_TOP, 2)))

    # -- embeddings: factor matrices of the 15 users / 15 movies + the long table; formulas do the rest
    long_rows = [
        [u, m, r, p]
        for u, urow, prow in zip(ct_users, ratings, pred)
        for m, r, p in zip(ct_movies, urow, prow)
        if not np.isnan(r)
    ]
    layout = EmbeddingsLayout(k, max(1, len(long_rows)))
    u_rows = result.users.index(ct_users)
    m_rows = result.movies.index(ct_movies)
    u_mat = _pad(_rows(user_factors[u_rows]), CROSSTAB_TOP, k, 0.0)  # zeros, not blanks: MMULT needs numbers
    m_mat = _pad(_rows(movie_factors[m_rows]), CROSSTAB_TOP, k, 0.0)
    ids_u = _pad(_rows([[u] for u in ct_users]), CROSSTAB_TOP, 1)
    ids_m = _pad(_rows([[m] for m in ct_movies]), CROSSTAB_TOP, 1)
    blocks["embeddings"] += [
        (EMB_FACTORS_REF, [[k]]),
        (EMB_ROWS_REF, [[layout.rows]]),
        (f"A{EMB_USER_TOP}", ids_u),
        (f"B{EMB_USER_TOP}", u_mat),
        (f"A{EMB_MOVIE_TOP}", ids_m),
        (f"B{EMB_MOVIE_TOP}", m_mat),
        (f"A{EMB_LONG_TOP}", _pad(_rows(long_rows), layout.rows, 4)),
        (cell_ref(EMB_LONG_HEADER, layout.uhot), [[row[0] for row in ids_u]]),
        (cell_ref(EMB_LONG_HEADER, layout.mhot), [[row[0] for row in ids_m]]),
    ]

    # -- movielens: metrics and status
    valid_rmse = result.valid_rmse
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    n_train, n_valid_all = len(train_df), len(valid_df)
    all_users = pd.concat([train_df["userId"], valid_df["userId"]]).nunique()
    all_movies = pd.concat([train_df["movieId"], valid_df["movieId"]]).nunique()
    metrics = {
        "train_rmse": result.train_rmse,
        "valid_rmse": valid_rmse,
        "epochs_run": len(result.history),
        "fit_seconds": result.fit_seconds,
        "device_used": str(result.device),
        "model_used": config.model,
        "optimizer_used": _optimizer_name(result),
        "lr_used": _lr_used(result),
        "n_ratings": n_train + n_valid_all,
        "n_users": int(all_users),
        "n_movies": int(all_movies),
        "n_train": n_train,
        "n_valid": n_valid_all,
        "trained_at": stamp,
    }
    metrics = {name: _clean(v) for name, v in metrics.items()}
    blocks[SHEET].append((f"E{METRICS_TOP}", [[metrics[name]] for name, _, _ in METRICS]))
    valid_text = f"{valid_rmse:.4f}" if valid_rmse is not None and math.isfinite(valid_rmse) else "-"
    status = (
        f"ok: {config.model}/{_optimizer_name(result)}, {len(result.history)} epochs in "
        f"{result.fit_seconds:.1f} s "
        f"on {result.device}: train RMSE {result.train_rmse:.4f}, valid RMSE {valid_text} ({stamp} UTC)"
    )
    if getattr(result, "stopped_reason", None):
        status += f"; stopped: {result.stopped_reason}"
    blocks[SHEET].append((STATUS_REF, [[status]]))
    return MovielensOutputs(
        blocks=blocks,
        history_rows=len(hist_rows),
        factors=k,
        embedding_rows=layout.rows,
        status=status,
        summary={"sheet": SHEET, "user_id": user_id, **metrics, "crosstab_rmse": _clean(ct_rmse)},
    )


# ------------------------------------------------------------------------------------------------------------
# Settings


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_settings(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, refs: dict[str, str] | None = None
) -> dict[str, Any]:
    """Validate the settings cells (+ overrides, which win) into a clean dict. Messages name the cell."""
    refs = refs or {name: f"{SHEET}!{ref}" for name, ref in SETTING_REF.items()}
    aliases = {"ratings": "ratings_source", "weight_decay": "wd", "valid": "valid_pct", "user": "user_id"}
    values = {s.name: raw.get(s.name) for s in SETTINGS}
    origin = dict(refs)
    for key, value in (overrides or {}).items():
        key = aliases.get(key, key)
        # Sheet-fit options with no meaning here (restarts: multistart is for full-batch sheet fits; training
        # on MovieLens is a single mini-batch run).
        if key in ("init", "time_limit", "restarts") or value is None:
            continue
        if key not in values:
            raise ConfigError(f"unknown movielens setting '{key}' (settings: {', '.join(values)})")
        if value is not None:
            values[key] = value
            origin[key] = f"--{key.replace('_', '-')}"

    def where(name):
        return origin.get(name, name)

    def shown(v):  # 0.0 from a cell reads as 0 in a message
        return int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) else v

    def number(name, *, integer=False, blank_ok=False, lo=None, hi=None, lo_open=False, text=None):
        value = values[name]
        if _is_blank(value):
            if blank_ok:
                return None
            raise ConfigError(f"{where(name)}: {text or name} is empty; expected a number")
        if isinstance(value, bool):
            raise ConfigError(f"{where(name)}: {text or name} is {shown(value)}; expected a number")
        try:
            number_value = float(str(value).strip().rstrip("%")) / (100 if str(value).strip().endswith("%") else 1)
        except ValueError:
            raise ConfigError(f"{where(name)}: {text or name} is '{shown(value)}'; expected a number") from None
        if not math.isfinite(number_value):
            raise ConfigError(f"{where(name)}: {text or name} is {shown(value)}; expected a finite number")
        if integer:
            if number_value != int(number_value):
                raise ConfigError(f"{where(name)}: {text or name} is {shown(value)}; expected a whole number")
            number_value = int(number_value)
        if lo is not None and (number_value <= lo if lo_open else number_value < lo):
            raise ConfigError(
                f"{where(name)}: {text or name} is {shown(value)}; expected "
                f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
            )
        if hi is not None and number_value > hi:
            raise ConfigError(f"{where(name)}: {text or name} is {shown(value)}; expected <= {hi}")
        return number_value

    def text(name, default):
        value = values[name]
        return default if _is_blank(value) else str(value).strip()

    out: dict[str, Any] = {}
    out["ratings_source"] = text("ratings_source", "")
    if not out["ratings_source"]:
        raise ConfigError(
            f"{where('ratings_source')}: ratings source is empty; expected a ratings.csv path, "
            f"a GroupLens zip or ml-latest-small"
        )
    out["model"] = text("model", "bias").lower()
    if out["model"] not in ("dot", "bias", "nn"):
        raise ConfigError(f"{where('model')}: model '{out['model']}' is not one of dot, bias, nn")
    out["optimizer"] = text("optimizer", "adam").lower()
    out["epochs"] = number("epochs", integer=True, blank_ok=True, lo=1, hi=MAX_EPOCHS)
    out["lr"] = number("lr", blank_ok=True, lo=0, lo_open=True, text="learning rate")
    out["wd"] = number("wd", blank_ok=True, lo=0, text="weight decay")
    out["factors"] = number("factors", integer=True, lo=1, hi=MAX_FACTORS)
    valid_pct = number("valid_pct", text="validation %")
    if not (0 < valid_pct <= 0.9):
        raise ConfigError(
            f"{where('valid_pct')}: validation % is {shown(values['valid_pct'])}; expected a share in "
            f"(0, 0.9] (e.g. 0.2 = 20%)"
        )
    out["valid_pct"] = valid_pct
    out["seed"] = number("seed", integer=True, lo=0)
    out["device"] = text("device", "auto").lower()
    out["user_id"] = number("user_id", integer=True, text="user id")
    out["hidden"] = number("hidden", integer=True, lo=1, hi=100_000, text="nn hidden size")
    for name in ("dropout_emb", "dropout_hidden"):
        out[name] = number(name, lo=0, hi=0.999999, text="dropout")
    out["min_ratings"] = number("min_ratings", integer=True, lo=1, text="min ratings N")
    out["_refs"] = {name: where(name) for name in values}
    return out


def train_config(settings: dict[str, Any]):
    """TrainConfig from parsed settings; engine ConfigErrors get the cell prefixed."""
    from xlcf.train import TrainConfig

    fields = {
        "model": settings["model"],
        "optimizer": settings["optimizer"],
        "epochs": settings["epochs"],
        "lr": settings["lr"],
        "weight_decay": settings["wd"],
        "factors": settings["factors"],
        "valid_pct": settings["valid_pct"],
        "seed": settings["seed"],
        "device": settings["device"],
        "hidden": settings["hidden"],
        "dropout": (settings["dropout_emb"], settings["dropout_hidden"]),
    }
    try:
        return TrainConfig.from_dict({k: v for k, v in fields.items() if v is not None})
    except XlcfError as err:
        refs = settings.get("_refs", {})
        message = str(err)
        for key, ref in (
            ("optimizer", "optimizer"),
            ("device", "device"),
            ("lr", "lr"),
            ("model", "model"),
            ("weight_decay", "wd"),
            ("epochs", "epochs"),
            ("hidden", "hidden"),
            ("dropout", "dropout_emb"),
        ):
            if key in message.split(":")[0] or message.startswith(key):
                raise type(err)(f"{refs.get(ref, ref)}: {message}") from None
        raise type(err)(f"{SHEET}: {message}") from None


def resolve_ratings_source(source: str, book: Path, ref: str) -> str:
    """Relative paths are relative to the workbook's folder; known names (ml-latest-small) pass through."""
    from xlcf.data.download import DATASETS

    path = Path(source).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise DataError(f"{ref}: ratings source {source} not found")
        return str(path)
    beside = book.resolve().parent / path
    if beside.exists():
        return str(beside)
    if source in DATASETS:
        return source
    raise DataError(
        f"{ref}: ratings source '{source}' not found (relative paths are relative to the "
        f"workbook's folder {book.resolve().parent}; or use one of: {', '.join(sorted(DATASETS))})"
    )


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

    col, row = re.match(r"([A-Z]+)(\d+)", ref).groups()
    ws.defined_names[name] = DefinedName(name, attr_text=f"'{ws.title}'!${col}${row}")


def _sheet_movielens(wb, settings: dict[str, Any], st) -> None:
    from openpyxl.worksheet.datavalidation import DataValidation

    ws = _titled_sheet(
        wb,
        SHEET,
        st,
        "xlcf · MovieLens: train on all ratings, then see what the model learned",
        (
            "Edit the yellow cells, then run  xlcf fit THIS.xlsx --sheet movielens  (or the Train button). "
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
        ("model", "dot,bias,nn"),
        ("optimizer", "sgd,momentum,rmsprop,adam,adamw,lbfgs"),
        ("device", "auto,cpu,cuda,mps"),
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
    return chart


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
    for col, width in zip("ABCDEFGHIJKLM", (6, 9, 40, 8, 8, 10, 3, 6, 9, 40, 8, 8, 10)):
        ws.column_dimensions[col].width = width


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
    ws = _titled_sheet(wb, "recommend", st, "Top 10 movies the user has not rated, by predicted rating")
    for i, (label, fmt) in enumerate((("user id", "0"), ("movies rated", "#,##0"), ("mean rating", "0.00"))):
        ws.cell(2 + i, 1, label)
        _out(ws, 2 + i, 2, fmt, st)
    _header(ws, REC_TOP - 1, 1, ("rank", "movieId", "title", "predicted", "ratings"), st)
    _out_block(ws, REC_TOP, 1, ["0", "0", "@", "0.00", "#,##0"], TOP_N_RECOMMEND, st)
    for col, width in zip("ABCDE", (14, 9, 48, 10, 9)):
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
            "with INDEX/MATCH, and as one-hot row x embedding matrix (MMULT). The dot products agree."
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
    for ws in wb.worksheets:  # print (and PDF) each sheet landscape; all but the wide embeddings one page wide
        ws.page_setup.orientation = "landscape"
        if ws.title != "embeddings":
            ws.sheet_properties.pageSetUpPr.fitToPage = True
            ws.page_setup.fitToWidth = 1
            ws.page_setup.fitToHeight = 0
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
        raise WorkbookError(f"{path}: folder {folder} does not exist")
    buf = io.BytesIO()
    wb.save(buf)  # in memory first: an openpyxl error leaves not even a temporary file
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:
        raise WorkbookError(f"{path}: could not write the workbook ({err.strerror or err})") from None


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
        raise WorkbookError(f"{target}: expected a .xlsx file name")
    if target.exists() and not force:
        raise WorkbookError(f"{target}: already exists; pass --force to replace it")
    values = {s.name: s.default for s in SETTINGS}
    values.update({k: v for k, v in (settings or {}).items() if k in values and v is not None})
    if ratings_source is not None:
        values["ratings_source"] = str(ratings_source)
    k = int(outputs.factors) if outputs is not None else int(values["factors"] or 50)
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


# ------------------------------------------------------------------------------------------------------------
# Writing into an existing workbook (zip Package: everything else byte-identical)

_CHART_REF_RE = re.compile(r"((?:'history'|history)!\$[A-Z]{1,3}\$(\d+):\$[A-Z]{1,3}\$)(\d+)")


def _history_chart_xml(data: bytes, n_rows: int) -> bytes:
    """Point every history range of a chart at rows HISTORY_TOP..HISTORY_TOP+n-1; drop stale caches."""
    from lxml import etree

    last = HISTORY_TOP + max(n_rows, 1) - 1
    root = etree.fromstring(data)
    ns = {"c": "http://schemas.openxmlformats.org/drawingml/2006/chart"}
    changed = False
    for f_el in root.iterfind(".//c:f", ns):
        text = f_el.text or ""

        def repl(m):
            first = int(m.group(2))
            return m.group(1) + str(last) if first in (HISTORY_TOP, HISTORY_HEADER_ROW) else m.group(0)

        new = _CHART_REF_RE.sub(repl, text)
        if new != text:
            f_el.text = new
            changed = True
            for cache in f_el.getparent().iterfind("c:numCache", ns):
                f_el.getparent().remove(cache)
            for cache in f_el.getparent().iterfind("c:strCache", ns):
                f_el.getparent().remove(cache)
    if not changed:
        return data
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _block_values(top_left: str, rows: list[list[Value]]) -> dict[str, Value]:
    """``{ref: value}`` of a block (one dict per sheet, so a sheet's cells are all checked before any is written)."""
    r0, c0 = split_ref(top_left)
    return {cell_ref(r0 + i, c0 + j): value for i, row in enumerate(rows) for j, value in enumerate(row)}


def _embeddings_sheet_xml(outputs: MovielensOutputs, target_styles: bytes | None) -> bytes:
    """The embeddings worksheet part for ``outputs.factors``, generated fresh (formulas + values).

    Used when a workbook's embeddings sheet was laid out for another k (or is missing): openpyxl writes it in a
    scratch workbook, strings become inline strings, and cell styles are kept only when the scratch
    workbook's styles part is identical to the target's (else the cells go unstyled rather than mis-styled)."""
    from lxml import etree

    wb = _new_workbook(
        {s.name: s.default for s in SETTINGS}, outputs.factors, max(outputs.history_rows, 1), outputs.embedding_rows
    )
    _fill_openpyxl(wb, outputs)
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        part = f"xl/worksheets/sheet{OUTPUT_SHEETS.index('embeddings') + 2}.xml"
        xml = zf.read(part)
        styles = zf.read("xl/styles.xml")
        shared = zf.read("xl/sharedStrings.xml") if "xl/sharedStrings.xml" in zf.namelist() else None
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    root = etree.fromstring(xml)
    strings = []
    if shared is not None:
        sroot = etree.fromstring(shared)
        strings = ["".join(t.text or "" for t in si.iter(f"{{{main}}}t")) for si in sroot.iter(f"{{{main}}}si")]
    keep_styles = target_styles is not None and target_styles == styles
    for c_el in root.iter(f"{{{main}}}c"):
        if c_el.get("t") == "s":
            v_el = c_el.find(f"{{{main}}}v")
            text = strings[int(v_el.text)]
            c_el.remove(v_el)
            c_el.set("t", "inlineStr")
            is_el = etree.SubElement(c_el, f"{{{main}}}is")
            etree.SubElement(is_el, f"{{{main}}}t").text = text
        if not keep_styles:
            c_el.attrib.pop("s", None)
    if not keep_styles:
        for el in list(root.iter(f"{{{main}}}col")):
            el.attrib.pop("style", None)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _laid_out(pkg, path: Path, ref: str) -> float | None:
    """A number cell of the embeddings sheet, read WITHOUT parsing the sheet through ``pkg`` (the sheet may be
    replaced raw afterwards, which the Package refuses for parsed sheets; parsing ~60k cells also costs)."""
    from xlcf.workbook.package import Package

    xml = pkg.read_member(pkg.sheet_part("embeddings"))
    m = re.search(rb'<c r="' + ref.encode() + rb'"(?: [^>]*)?>\s*<v>([^<]*)</v>', xml)
    if m is not None:
        try:
            return float(m.group(1))
        except ValueError:
            return None
    value = Package.open(path).read_cell("embeddings", ref).value  # unusual XML (prefixes, shared string...)
    return value if isinstance(value, float) else None


def _write_package(
    path: Path, outputs: MovielensOutputs, *, settings_values: dict[str, Any] | None = None, backup: bool = False
) -> dict[str, Any]:
    """Write every block of ``outputs`` into the workbook at ``path`` in place (atomic)."""
    from xlcf.workbook.package import Package

    pkg = Package.open(path)
    if not pkg.has_sheet(SHEET):
        raise WorkbookError(f"{path}: has no '{SHEET}' sheet (make one with: xlcf new movielens -o BOOK.xlsx)")
    pkg.check_writable()
    relayout = (
        not pkg.has_sheet("embeddings")
        or _laid_out(pkg, path, EMB_FACTORS_REF) != float(outputs.factors)
        or _laid_out(pkg, path, EMB_ROWS_REF) != float(outputs.embedding_rows)
    )
    old_history = 0
    if pkg.has_sheet("history"):
        count = pkg.read_cell("history", HISTORY_COUNT_REF).value
        old_history = int(count) if isinstance(count, float) and count > 0 else 0
    cells = 0
    for sheet, blocks in outputs.blocks.items():
        if sheet == "embeddings" and relayout:
            continue
        if not pkg.has_sheet(sheet):
            pkg.add_sheet(sheet)
        values: dict[str, Value] = {}
        for top_left, rows in blocks:
            values.update(_block_values(top_left, rows))
        if sheet == "history" and old_history > outputs.history_rows:
            for r in range(HISTORY_TOP + outputs.history_rows, HISTORY_TOP + old_history):
                for c in range(1, len(HISTORY_COLUMNS) + 1):
                    values[cell_ref(r, c)] = None
        if sheet == SHEET and settings_values:
            for name, value in settings_values.items():
                if name in SETTING_REF and value is not None:
                    values[SETTING_REF[name]] = _clean(value)
        cells += pkg.write_values(sheet, values)
    if relayout:
        styles = pkg.read_member("xl/styles.xml") if "xl/styles.xml" in pkg.member_names else None
        if not pkg.has_sheet("embeddings"):
            pkg.add_sheet("embeddings")
        pkg.replace_member(pkg.sheet_part("embeddings"), _embeddings_sheet_xml(outputs, styles))
        # Formula cells moved: a calculation chain naming the old ones makes Excel report a damaged file.
        # (Package drops it itself for sheets edited through its API; this sheet was replaced raw.)
        pkg.drop_calc_chain()
    for chart in pkg.chart_parts("history"):
        old = pkg.read_member(chart)
        new = _history_chart_xml(old, outputs.history_rows)
        if new != old:
            pkg.replace_member(chart, new)
    pkg.save(backup=backup)
    return {"cells_written": cells, "embeddings_relaid": relayout}


# ------------------------------------------------------------------------------------------------------------
# Entry points


def read_settings(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of a movielens workbook (validated; overrides win). Names first, fixed cells as fallback."""
    from xlcf.workbook.package import Package

    pkg = Package.open(path)
    if not pkg.has_sheet(SHEET):
        raise WorkbookError(f"{path}: has no '{SHEET}' sheet (make one with: xlcf new movielens -o BOOK.xlsx)")
    names = {k.lower(): v for k, v in pkg.defined_names(SHEET).items()}
    raw, refs = {}, {}
    for s in SETTINGS:
        area = None
        if s.name in names:
            try:
                area = parse_range(names[s.name], SHEET)
            except WorkbookError:
                area = None
        sheet = area.sheet if area is not None and area.sheet else SHEET
        ref = cell_ref(area.top, area.left) if area is not None else SETTING_REF[s.name]
        if not pkg.has_sheet(sheet):
            sheet, ref = SHEET, SETTING_REF[s.name]
        cell = pkg.read_cell(sheet, ref)
        if cell.value is not None and not isinstance(cell.value, (float, str, bool)):
            raise ConfigError(f"{sheet}!{ref}: {s.label} holds the error {cell.value}")
        raw[s.name] = cell.value
        refs[s.name] = f"{sheet}!{ref}"
    return parse_settings(raw, overrides, refs)


@dataclass
class Prepared:
    """Everything a movielens training needs, validated before anything is trained or written."""

    book: Path
    settings: dict[str, Any]
    config: Any
    source: str
    train_df: pd.DataFrame
    valid_df: pd.DataFrame
    titles: dict[int, str]
    load_seconds: float


def load_and_split(settings: dict[str, Any], source: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, str]]:
    """Load the ratings (+ titles) of a resolved source, check the user id, split. Errors name the cells."""
    from xlcf.data import load_ratings, load_titles, split_ratings

    refs = settings.get("_refs") or {name: f"{SHEET}!{ref}" for name, ref in SETTING_REF.items()}
    try:
        ratings = load_ratings(source)
        titles = load_titles(source)
    except DataError as err:
        raise DataError(f"{refs['ratings_source']}: {err}") from None
    user_id = settings["user_id"]
    if user_id not in set(ratings["userId"].unique().tolist()):
        raise ConfigError(
            f"{refs['user_id']}: user id {user_id} is not in {settings['ratings_source']} "
            f"(user ids {ratings['userId'].min()} to {ratings['userId'].max()})"
        )
    train_df, valid_df = split_ratings(ratings, settings["valid_pct"], settings["seed"])
    if user_id not in set(train_df["userId"].unique().tolist()):
        raise ConfigError(
            f"{refs['user_id']}: user id {user_id} has no ratings in the training part of the "
            f"split; pick another user or seed"
        )
    return train_df, valid_df, titles


def check_device(settings: dict[str, Any]) -> None:
    """A missing GPU is a settings error: say so (naming the cell) before loading anything."""
    from xlcf.train import resolve_device

    refs = settings.get("_refs") or {}
    try:
        resolve_device(settings["device"])
    except XlcfError as err:
        raise type(err)(f"{refs.get('device', SHEET + '!' + SETTING_REF['device'])}: {err}") from None


def train_from_settings(
    settings: dict[str, Any], source: str, *, callback: Callable | None = None, progress: bool = False
):
    """Parsed settings + resolved source -> (result, train_df, valid_df, titles). Shared by the zip path
    (:func:`train_workbook`) and the xlwings path, which differ only in where the settings come from."""
    from xlcf.train import fit

    config = train_config(settings)
    check_device(settings)
    train_df, valid_df, titles = load_and_split(settings, source)
    result = fit(train_df, config, valid_df=valid_df, progress=progress, callback=callback)
    return result, train_df, valid_df, titles


def prepare_training(
    path: str | os.PathLike, overrides: dict[str, Any] | None = None, *, dry_run: bool = False
) -> Prepared:
    """Read and check the settings, load and split the ratings. Raises XlcfError naming the cell."""
    from xlcf.workbook.package import Package

    book = Path(path)
    settings = read_settings(book, overrides)
    if not dry_run:
        Package.open(book).check_writable()  # fail before a long training, not after
    refs = settings["_refs"]
    source = resolve_ratings_source(settings["ratings_source"], book, refs["ratings_source"])
    config = train_config(settings)
    check_device(settings)
    t0 = time.perf_counter()
    train_df, valid_df, titles = load_and_split(settings, source)
    return Prepared(book, settings, config, source, train_df, valid_df, titles, time.perf_counter() - t0)


def train_workbook_result(
    path: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    callback: Callable | None = None,
    backup: bool = False,
    dry_run: bool = False,
):
    """:func:`train_workbook` that also returns what it trained: (summary, result, prepared)."""
    from xlcf.train import fit

    started = time.perf_counter()
    prep = prepare_training(path, overrides, dry_run=dry_run)
    result = fit(prep.train_df, prep.config, valid_df=prep.valid_df, progress=progress, callback=callback)
    t1 = time.perf_counter()
    outputs = compute_outputs(result, prep.train_df, prep.valid_df, prep.titles, prep.settings)
    written = {"cells_written": 0, "dry_run": True} if dry_run else _write_package(prep.book, outputs, backup=backup)
    summary = {
        **outputs.summary,
        **written,
        "path": str(prep.book),
        "status": outputs.status,
        "load_seconds": round(prep.load_seconds, 3),
        "write_seconds": round(time.perf_counter() - t1, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return summary, result, prep


def train_workbook(
    path: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    callback: Callable | None = None,
    backup: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Train from the settings on the ``movielens`` sheet and write every output in place. Returns a JSON-ready
    summary (metrics, cells written, seconds per phase). Any error: nothing written.

    ``overrides`` (CLI flags) win over the cells: keys as in :data:`SETTINGS` (``weight_decay`` and
    ``ratings`` accepted as aliases); None values are ignored. ``dry_run`` trains and reports, writes nothing;
    ``backup`` keeps BOOK.bak."""
    return train_workbook_result(
        path, overrides=overrides, progress=progress, callback=callback, backup=backup, dry_run=dry_run
    )[0]


def _source_for_book(source: str, book: Path) -> str:
    """How the settings cell names a ratings source given on the command line: the sheet resolves relative paths
    against the workbook's folder, so an existing path is stored relative to it (absolute when on another
    drive); data-set names stay as they are."""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    try:
        relative = os.path.relpath(path.resolve(), book.resolve().parent)
    except ValueError:  # another drive on Windows
        return str(path.resolve())
    # beside the book, below it, or in a sibling folder (../data): relative; anywhere else: absolute
    return relative if Path(relative).parts[:2].count("..") <= 1 else str(path.resolve())


def write_results(
    path: str | os.PathLike,
    result,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    titles: dict | None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a finished training into BOOK (``xlcf train RATINGS --out BOOK``). A book that does not exist is
    generated first (with the run's settings filled in); an existing one is updated in place."""
    book = Path(path)
    settings = dict(settings or {})
    if "ratings" in settings and "ratings_source" not in settings:
        settings["ratings_source"] = settings.pop("ratings")
    config = result.config
    run_settings = {
        "model": config.model,
        "optimizer": _optimizer_name(result),
        "epochs": config.epochs,
        "lr": config.lr,
        "wd": getattr(config, "weight_decay", None),
        "factors": config.factors,
        "valid_pct": config.valid_pct or None,
        "seed": config.seed,
        "device": config.device,
        "hidden": getattr(config, "hidden", None),
    }
    dropout = getattr(config, "dropout", None)
    if isinstance(dropout, (tuple, list)) and len(dropout) == 2:
        run_settings["dropout_emb"], run_settings["dropout_hidden"] = dropout
    if settings.get("ratings_source") is not None:
        run_settings["ratings_source"] = _source_for_book(str(settings["ratings_source"]), book)
    if book.exists():
        # user id / min ratings not given: take them from the workbook's settings cells
        from xlcf.workbook.package import Package

        pkg = Package.open(book)
        if pkg.has_sheet(SHEET):
            for name in ("user_id", "min_ratings"):
                if settings.get(name) is None:
                    value = pkg.read_cell(SHEET, SETTING_REF[name]).value
                    if isinstance(value, float) and value == int(value):
                        settings[name] = int(value)
    if settings.get("user_id") is None:
        ids = np.asarray(result.users.ids)
        settings["user_id"] = 1 if 1 in set(ids.tolist()) else int(ids[0])
    outputs = compute_outputs(result, train_df, valid_df, titles, settings)
    run_settings["user_id"] = outputs.summary["user_id"]
    run_settings["min_ratings"] = settings.get("min_ratings")
    if not book.exists():
        build_movielens(book, settings=run_settings, outputs=outputs)
        return {**outputs.summary, "path": str(book), "created": True, "status": outputs.status}
    written = _write_package(book, outputs, settings_values=run_settings)
    return {**outputs.summary, **written, "path": str(book), "created": False, "status": outputs.status}
