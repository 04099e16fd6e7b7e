"""What did the model learn? The lesson's interpretation steps as pure numpy/pandas functions.

Engine-side layer (no workbook code here): arrays and data frames in, small dataclasses out. The
workbook's ``movielens`` sheets (file path and Excel path) and any notebook use the same functions.

- :func:`rating_counts` — ratings per movie (the lesson's ``g = ratings.groupby('movieId')...``).
- :func:`bias_extremes` — highest / lowest movie biases among movies with at least N ratings.
- :func:`movie_pca` — principal components of the movie factors (numpy SVD, deterministic signs).
- :func:`recommend_unrated` — top-N movies a user has not rated, by the model's prediction.
- :func:`binned_pred_vs_actual` — the lesson's hexbin jointplot as a count table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xlcf.errors import ConfigError

#: Half-star levels of the MovieLens scale; the rows/columns of the binned table.
HALF_STARS = np.arange(1, 11) * 0.5


def rating_counts(ratings_df: pd.DataFrame) -> pd.DataFrame:
    """Per movie: number of ratings and mean rating, indexed by movieId (sorted)."""
    grouped = ratings_df.groupby("movieId")["rating"]
    return pd.DataFrame({"count": grouped.size().astype(np.int64), "mean": grouped.mean()}).sort_index()


@dataclass(frozen=True)
class BiasExtremes:
    """Rows of ``highest`` / ``lowest``: columns movieId, bias, count, mean (already sorted)."""

    highest: pd.DataFrame
    lowest: pd.DataFrame
    eligible: int  # movies with >= min_ratings ratings that have a bias


def bias_extremes(
    movie_ids: np.ndarray, movie_bias: np.ndarray, counts: pd.DataFrame, *, n: int = 15, min_ratings: int = 20
) -> BiasExtremes:
    """The ``n`` highest and ``n`` lowest biases among movies rated at least ``min_ratings`` times.

    Ties are broken by movieId so the lists are reproducible. ``counts`` is :func:`rating_counts`.
    """
    frame = pd.DataFrame(
        {"movieId": np.asarray(movie_ids, dtype=np.int64), "bias": np.asarray(movie_bias, dtype=np.float64)}
    )
    frame = frame.join(counts, on="movieId")
    frame["count"] = frame["count"].fillna(0).astype(np.int64)
    frame = frame[(frame["count"] >= min_ratings) & np.isfinite(frame["bias"])]
    highest = frame.sort_values(["bias", "movieId"], ascending=[False, True], kind="mergesort").head(n)
    lowest = frame.sort_values(["bias", "movieId"], ascending=[True, True], kind="mergesort").head(n)
    return BiasExtremes(highest.reset_index(drop=True), lowest.reset_index(drop=True), int(len(frame)))


@dataclass(frozen=True)
class MoviePCA:
    """Principal components of the movie factor matrix (rows = ``movie_ids``)."""

    movie_ids: np.ndarray  # (n,) movies that entered the PCA
    scores: np.ndarray  # (n, c) projection of the centred factors on each component
    components: np.ndarray  # (c, k) unit directions in factor space
    explained_variance_ratio: np.ndarray  # (c,) share of the total variance; sums to <= 1

    def extremes(self, component: int, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(highest, lowest) ``n`` movies on one component: columns movieId, score."""
        frame = pd.DataFrame({"movieId": self.movie_ids, "score": self.scores[:, component]})
        top = frame.sort_values(["score", "movieId"], ascending=[False, True], kind="mergesort").head(n)
        bottom = frame.sort_values(["score", "movieId"], ascending=[True, True], kind="mergesort").head(n)
        return top.reset_index(drop=True), bottom.reset_index(drop=True)


def movie_pca(movie_ids: np.ndarray, movie_factors: np.ndarray, *, n_components: int = 3) -> MoviePCA:
    """PCA of the movie factors by SVD of the centred matrix (what sklearn's PCA computes).

    Signs are made deterministic: each component is flipped so that its largest-magnitude score is
    positive. Fewer components come back when there are fewer factors or movies than asked for.
    """
    factors = np.asarray(movie_factors, dtype=np.float64)
    ids = np.asarray(movie_ids, dtype=np.int64)
    if factors.ndim != 2 or factors.shape[0] != ids.shape[0]:
        raise ConfigError(f"movie_pca: {factors.shape} factors for {ids.shape[0]} movies")
    centred = factors - factors.mean(axis=0, keepdims=True)
    c = max(0, min(n_components, factors.shape[1], factors.shape[0] - 1))
    if c == 0:
        return MoviePCA(ids, np.zeros((len(ids), 0)), np.zeros((0, factors.shape[1])), np.zeros(0))
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(singular**2))
    ratio = (singular[:c] ** 2) / total if total > 0 else np.zeros(c)
    components = vt[:c].copy()
    scores = centred @ components.T
    for j in range(c):
        if scores[np.argmax(np.abs(scores[:, j])), j] < 0:
            scores[:, j] *= -1
            components[j] *= -1
    return MoviePCA(ids, scores, components, ratio)


def recommend_unrated(
    predict, user_id: int, candidate_movie_ids: np.ndarray, rated_movie_ids, *, n: int = 10
) -> pd.DataFrame:
    """Top ``n`` candidates the user has not rated, by ``predict(user_ids, movie_ids)`` (descending,
    ties by movieId). Columns movieId, prediction."""
    candidates = np.asarray(candidate_movie_ids, dtype=np.int64)
    candidates = candidates[~np.isin(candidates, np.asarray(list(rated_movie_ids), dtype=np.int64))]
    if len(candidates) == 0:
        return pd.DataFrame({"movieId": np.zeros(0, np.int64), "prediction": np.zeros(0)})
    predictions = np.asarray(predict(np.full(len(candidates), user_id, dtype=np.int64), candidates), dtype=np.float64)
    frame = pd.DataFrame({"movieId": candidates, "prediction": predictions})
    frame = frame[np.isfinite(frame["prediction"])]
    frame = frame.sort_values(["prediction", "movieId"], ascending=[False, True], kind="mergesort").head(n)
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class BinnedPredictions:
    """Counts of (actual rating level, predicted level), both on the half-star grid."""

    levels: np.ndarray  # (10,) 0.5 .. 5.0
    counts: np.ndarray  # (10, 10) int: row = actual level, column = predicted level
    mean_prediction: np.ndarray  # (10,) mean raw prediction per actual level (NaN where none)
    n_per_actual: np.ndarray  # (10,) int
    rmse: float


def to_half_star(values: np.ndarray) -> np.ndarray:
    """Index 0..9 of the nearest half-star level, clipped to the 0.5..5.0 scale."""
    return np.clip(np.rint(np.asarray(values, dtype=np.float64) * 2) - 1, 0, 9).astype(np.int64)


def binned_pred_vs_actual(predictions: np.ndarray, actual: np.ndarray) -> BinnedPredictions:
    """The lesson's ``sns.jointplot(preds, y, kind='hex')`` as a 10x10 table (actual x predicted)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    row, col = to_half_star(actual), to_half_star(predictions)
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (row, col), 1)
    n_per = np.bincount(row, minlength=10)
    sums = np.bincount(row, weights=predictions, minlength=10)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_per > 0, sums / np.maximum(n_per, 1), np.nan)
    rmse = float(np.sqrt(np.mean((predictions - actual) ** 2))) if len(actual) else float("nan")
    return BinnedPredictions(HALF_STARS.copy(), counts, mean, n_per, rmse)
