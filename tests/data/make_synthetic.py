"""Writes {ratings,movies}.csv of a small MovieLens-shaped, entirely synthetic data set for the engine's logic tests
(300 users x 200 movies, ratings from a rank-3 model plus noise, on the half-star scale, ~20% of the cells rated,
popular movies and heavy raters more likely). Deterministic: run it again and the files come out identical.

    python3 tests/data/make_synthetic.py [FOLDER]

The tests call :func:`write` into a temporary folder (the ``synthetic_data`` fixture); nothing is stored in the
repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

USERS, MOVIES, RANK, DENSITY, SEED = 300, 200, 3, 0.2, 0


def write(out: Path) -> Path:
    """Write the data set into the folder ``out`` (created if needed); returns ``out``."""
    rng = np.random.default_rng(SEED)
    user_factors = rng.normal(0.0, 0.6, (USERS, RANK))
    movie_factors = rng.normal(0.0, 0.6, (MOVIES, RANK))
    user_bias = rng.normal(0.0, 0.3, USERS)
    movie_bias = rng.normal(0.0, 0.4, MOVIES)
    scores = 3.5 + user_bias[:, None] + movie_bias[None, :] + user_factors @ movie_factors.T
    scores += rng.normal(0.0, 0.5, scores.shape)
    ratings = np.clip(np.round(scores * 2) / 2, 0.5, 5.0)
    # Who rates what: heavy raters and popular movies are more likely, as in MovieLens.
    activity = rng.pareto(2.0, USERS) + 0.2
    popularity = rng.pareto(1.5, MOVIES) + 0.2
    p = np.outer(activity, popularity)
    p *= DENSITY * USERS * MOVIES / p.sum()
    rated = rng.random((USERS, MOVIES)) < np.minimum(p, 0.95)
    rated[np.arange(USERS), rng.integers(0, MOVIES, USERS)] = True  # every user rates something
    users, movies = np.nonzero(rated)
    timestamps = 964_982_703 + rng.integers(0, 10**8, users.size)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u + 1},{m + 1},{ratings[u, m]:g},{t}" for u, m, t in zip(users, movies, timestamps)]
    (out / "ratings.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    genres = ("Drama", "Comedy", "Action|Adventure", "Romance", "Thriller", "Documentary")
    titles = ["movieId,title,genres"]
    titles += [f"{m},Movie {m} ({1950 + m % 70}),{genres[m % len(genres)]}" for m in range(1, MOVIES + 1)]
    (out / "movies.csv").write_text("\n".join(titles) + "\n", encoding="utf-8")

    return out


if __name__ == "__main__":
    import sys

    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("synthetic"))
