"""The blocks a finished movielens training writes, one function per sheet: pure, a trained
:class:`~xlcf.train.FitResult` + the data in, ``{sheet: [(top_left, rows)]}`` out (finite float/int/str/bool/None
only). The zip writer (:mod:`xlcf.actions.train_book`) and the xlwings writer (``xlcf.excel``) only write these."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from xlcf.errors import ConfigError
from xlcf.lessons.movielens.layout import (
    BIAS_COLUMNS,
    BIAS_TOP,
    CROSSTAB_TOP,
    CT_PRED_COL,
    CT_TITLES_TOP,
    CT_TOP,
    EMB_FACTORS_REF,
    EMB_LONG_HEADER,
    EMB_LONG_TOP,
    EMB_MOVIE_TOP,
    EMB_ROWS_REF,
    EMB_USER_TOP,
    HALF_STARS,
    HISTORY_COLUMNS,
    HISTORY_COUNT_REF,
    HISTORY_TOP,
    MAX_COLS,
    MAX_FACTORS,
    MAX_ROWS,
    METRICS,
    METRICS_TOP,
    N_COMPONENTS,
    OUTPUT_SHEETS,
    PCA_BLOCK_STEP,
    PCA_HIGH_TOP,
    PCA_LOW_TOP,
    PCA_VAR_TOP,
    PVA_TOP,
    REC_COLUMNS,
    REC_TOP,
    SETTING_REF,
    SHEET,
    STATUS_REF,
    TOP_N_BIAS,
    TOP_N_PCA,
    TOP_N_RECOMMEND,
    EmbeddingsLayout,
    MovielensOutputs,
    Value,
)
from xlcf.ooxml.refs import cell_ref


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
            f"user id {user_id} is not in the training data "
            f"(user ids run from {user_ids.min() if len(user_ids) else '-'} to "
            f"{user_ids.max() if len(user_ids) else '-'})",
            where=f"{SHEET}!{SETTING_REF['user_id']}",
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
        first_col = 1 + j * PCA_BLOCK_STEP
        if j < c:
            high, low = pca.extremes(j, TOP_N_PCA)
        else:
            high = low = pd.DataFrame({"movieId": [], "score": []})
        for top, frame in ((PCA_HIGH_TOP, high), (PCA_LOW_TOP, low)):
            rows = [
                [i + 1, r.movieId, _title(titles, r.movieId), r.score]
                for i, r in enumerate(frame.itertuples(index=False))
            ]
            blocks["movie_pca"].append((cell_ref(top, first_col), _pad(_rows(rows), TOP_N_PCA, 4)))

    # -- recommend
    seen = pd.concat([train_df[["userId", "movieId"]], valid_df[["userId", "movieId"]]])
    rated = seen.loc[seen["userId"] == user_id, "movieId"].unique()
    recs = recommend_unrated(result.predict, user_id, movie_ids, rated, n=TOP_N_RECOMMEND)
    rec_ids = recs["movieId"].to_numpy(np.int64)
    rec_std: list[Any] = [None] * len(rec_ids)
    if getattr(result, "posterior", None) is not None and len(rec_ids):  # Bayesian fit: its predictive std
        rec_std = list(result.predict_std(np.full(len(rec_ids), user_id, dtype=np.int64), rec_ids))
    rec_rows = [
        [i + 1, r.movieId, _title(titles, r.movieId), r.prediction, std, count_of.get(int(cast(Any, r.movieId)), 0)]
        for i, (r, std) in enumerate(zip(recs.itertuples(index=False), rec_std))
    ]
    # The header too, so a book laid out before the ± column existed gets its labels.
    blocks["recommend"].append((f"A{REC_TOP - 1}", [list(REC_COLUMNS)]))
    blocks["recommend"].append((f"A{REC_TOP}", _pad(_rows(rec_rows), TOP_N_RECOMMEND, len(REC_COLUMNS))))
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
    ct_table = make_crosstab(train_df, top=CROSSTAB_TOP)
    ct_users = ct_table.index.to_numpy(np.int64)
    ct_movies = ct_table.columns.to_numpy(np.int64)
    ratings = ct_table.to_numpy(np.float64)
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

    # -- embeddings: factor matrices of the 15 users / 15 movies + the long ct_table; formulas do the rest
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
