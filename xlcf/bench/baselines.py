"""What several parts of the benchmark share: Surprise's SVD as the baseline, and the synthetic
MovieLens-25M-shaped ratings of the scale series."""

from __future__ import annotations

import time

ML25M_USERS, ML25M_MOVIES = 162_541, 59_047


def surprise_svd(train_df, valid_df):
    """(rmse, fit_seconds) of Surprise's SVD with default settings, or None when it is not installed."""
    try:
        from surprise import SVD, Dataset, Reader
    except ImportError:
        return None
    import numpy as np

    reader = Reader(rating_scale=(0.5, 5.0))
    trainset = Dataset.load_from_df(train_df[["userId", "movieId", "rating"]], reader).build_full_trainset()
    algo = SVD(random_state=0)
    t0 = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - t0
    preds = algo.test(list(zip(valid_df.userId, valid_df.movieId, valid_df.rating)))
    err = np.array([p.est - p.r_ui for p in preds])
    return float(np.sqrt(np.mean(err**2))), seconds


def synthetic_ratings(n: int, seed: int = 0, chunk: int = 1_000_000):
    """MovieLens-25M-shaped ratings, generated in chunks: int32 indices, float32 ratings.

    Users and movies are drawn with Zipf-like (power-law) popularity; ratings come from a hidden bias model
    (global 3.5 + user + movie bias + noise) rounded to half stars, so training has something to learn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    user_p = 1.0 / np.arange(1, ML25M_USERS + 1) ** 0.6
    movie_p = 1.0 / np.arange(1, ML25M_MOVIES + 1) ** 1.0
    user_cdf = np.cumsum(user_p / user_p.sum())
    movie_cdf = np.cumsum(movie_p / movie_p.sum())
    user_perm = rng.permutation(ML25M_USERS).astype(np.int32)  # popular ids spread over the id range
    movie_perm = rng.permutation(ML25M_MOVIES).astype(np.int32)
    user_bias = rng.normal(0, 0.4, ML25M_USERS).astype(np.float32)
    movie_bias = rng.normal(0, 0.5, ML25M_MOVIES).astype(np.float32)
    users = np.empty(n, dtype=np.int32)
    movies = np.empty(n, dtype=np.int32)
    ratings = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        u = user_perm[np.minimum(np.searchsorted(user_cdf, rng.random(size)), ML25M_USERS - 1)]
        m = movie_perm[np.minimum(np.searchsorted(movie_cdf, rng.random(size)), ML25M_MOVIES - 1)]
        raw = 3.5 + user_bias[u] + movie_bias[m] + rng.normal(0, 0.8, size).astype(np.float32)
        users[start : start + size] = u
        movies[start : start + size] = m
        ratings[start : start + size] = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
    return users, movies, ratings
