"""The lesson's crosstab: the most active users x the most rated movies.

Selection is by number of ratings, ties broken by the smaller id (a total, stable order, so the table
is the same on every pandas version); rows and columns are then sorted by id. Written with
``value_counts`` + ``np.lexsort`` + ``pivot`` instead of the lesson's ``join(..., rsuffix='_r')``,
which fails on pandas 3.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlcf.errors import DataError


def top_ids(ids: pd.Series, n: int) -> np.ndarray:
    """The ``n`` ids that occur most often, ties by smaller id, returned sorted by id."""
    counts = ids.value_counts(sort=False)
    values = counts.index.to_numpy(dtype=np.int64)
    order = np.lexsort((values, -counts.to_numpy()))  # last key is primary: count desc, then id asc
    return np.sort(values[order[:n]])


def crosstab(ratings_df: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """``top`` users with the most ratings x ``top`` movies with the most ratings: a float DataFrame
    (index ``userId``, columns ``movieId``, both sorted), NaN where the user did not rate the movie."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise DataError(f"top={top!r}: expected a whole number >= 1")
    missing = [c for c in ("userId", "movieId", "rating") if c not in ratings_df.columns]
    if missing:
        raise DataError(
            f"crosstab: missing column {', '.join(missing)}; found columns: {', '.join(map(str, ratings_df.columns))}"
        )
    users = top_ids(ratings_df["userId"], int(top))
    movies = top_ids(ratings_df["movieId"], int(top))
    inside = ratings_df["userId"].isin(users) & ratings_df["movieId"].isin(movies)
    block = ratings_df.loc[inside, ["userId", "movieId", "rating"]]
    if block.duplicated(["userId", "movieId"]).any():
        raise DataError("crosstab: duplicate (userId, movieId) pairs; load with duplicates='last' or 'mean'")
    table = block.pivot(index="userId", columns="movieId", values="rating")
    table = table.reindex(index=pd.Index(users, name="userId"), columns=pd.Index(movies, name="movieId"))
    return table.astype(np.float64)


def format_rating(value: float) -> str:
    """How a rating is written: ``2.0``, ``4.5`` (as the lesson prints them); blank when unrated."""
    return "" if pd.isna(value) else repr(float(value))


def crosstab_csv(table: pd.DataFrame) -> str:
    """CSV text of a crosstab: header ``userId,<movie ids>``, one row per user, blank where unrated."""
    lines = [",".join(["userId", *(str(int(m)) for m in table.columns)])]
    for user, row in zip(table.index, table.to_numpy(dtype=np.float64)):
        lines.append(",".join([str(int(user)), *(format_rating(v) for v in row)]))
    return "\n".join(lines) + "\n"
