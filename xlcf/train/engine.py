"""The estimator's entry points: ``fit`` (a ratings frame) and ``fit_arrays`` (index arrays, the sheet path).

They validate the input and pick the engine: sheet-sized ALS / L-BFGS problems on the CPU train in numpy
(``xlcf.train.small``, no torch import: a spreadsheet button answers in a fraction of a second); everything
else trains in torch (``xlcf.train.trainer``). Both engines give the same result (same objective, seeded
starts, steps and stopping rules)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xlcf.errors import ConfigError, DataError
from xlcf.train.config import TrainConfig
from xlcf.train.result import EpochStats, FitResult, InitialParams

Callback = Callable[[EpochStats], "bool | None"]


def fit(
    ratings_df,
    config: TrainConfig | None = None,
    *,
    valid_df=None,
    init: InitialParams | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> FitResult:
    """Train on a ratings frame (columns userId, movieId, rating; raw ids).

    If ``valid_df`` is None and ``config.valid_pct > 0`` the frame is split with
    ``xlcf.data.split_ratings(valid_pct, seed)``. Ids are mapped with the training part's vocabularies;
    validation ratings of unseen users/movies are predicted from the global mean (+ known bias)."""
    config = config or TrainConfig()
    enc, valid, (rated_u, rated_m) = encode_for_fit(ratings_df, config, valid_df)
    return _dispatch(
        enc.user_index,
        enc.movie_index,
        enc.rating,
        len(enc.users),
        len(enc.movies),
        config,
        valid=valid,
        init=init,
        callback=callback,
        progress=progress,
        users=enc.users,
        movies=enc.movies,
        rated=(rated_u, rated_m),
    )


def fit_arrays(
    user_index,
    movie_index,
    rating,
    n_users: int,
    n_movies: int,
    config: TrainConfig | None = None,
    *,
    init: InitialParams | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    users=None,
    movies=None,
    valid=None,
) -> FitResult:
    """Train on index arrays; ALL given ratings are training data (no split). The sheet path: with the
    default ``batch_size=None`` small data runs full batch. ``valid=(user_index, movie_index, rating)``
    optionally adds a held-out set (indices may be -1 for unknown ids)."""
    config = config or TrainConfig(valid_pct=0)
    u, m, r, users, movies = checked_arrays(user_index, movie_index, rating, n_users, n_movies, users, movies)
    return _dispatch(
        u,
        m,
        r,
        int(n_users),
        int(n_movies),
        config,
        valid=valid,
        init=init,
        callback=callback,
        progress=progress,
        users=users,
        movies=movies,
        rated=(u, m),
    )


def encode_for_fit(ratings_df, config: TrainConfig, valid_df=None):
    """What ``fit`` trains on: (encoded training ratings, validation (user index, movie index, rating) or None,
    (user index, movie index) of every rated pair). Splits off ``config.valid_pct`` when ``valid_df`` is None."""
    from xlcf.data import encode_ratings, split_ratings

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig; got {type(config).__name__}")
    if valid_df is None and config.valid_pct > 0:
        train_df, valid_df = split_ratings(ratings_df, valid_pct=config.valid_pct, seed=config.seed)
    else:
        train_df = ratings_df
    if len(train_df) == 0:
        raise DataError("no training ratings (the ratings table is empty)")
    enc = encode_ratings(train_df)
    valid = None
    rated_u, rated_m = enc.user_index, enc.movie_index
    if valid_df is not None and len(valid_df):
        vu = enc.users.index(valid_df["userId"].to_numpy())
        vm = enc.movies.index(valid_df["movieId"].to_numpy())
        valid = (vu, vm, valid_df["rating"].to_numpy(dtype=np.float32))
        rated_u = np.concatenate([enc.user_index, vu])
        rated_m = np.concatenate([enc.movie_index, vm])
    return enc, valid, (rated_u, rated_m)


def checked_arrays(user_index, movie_index, rating, n_users: int, n_movies: int, users=None, movies=None):
    """Flat (user index, movie index, float32 rating) arrays and vocabularies (0..n-1 when not given), checked:
    equal lengths, finite ratings, indices in range (DataError otherwise)."""
    from xlcf.data import Vocabulary

    u = np.asarray(user_index).reshape(-1)
    m = np.asarray(movie_index).reshape(-1)
    r = np.asarray(rating, dtype=np.float32).reshape(-1)
    if not (len(u) == len(m) == len(r)):
        raise DataError(f"user, movie and rating arrays differ in length: {len(u)}, {len(m)}, {len(r)}")
    if len(r) == 0:
        raise DataError("no ratings to train on")
    if not np.all(np.isfinite(r)):
        raise DataError("ratings contain NaN or infinite values")
    if u.min() < 0 or m.min() < 0 or u.max() >= n_users or m.max() >= n_movies:
        raise DataError(f"indices out of range: users must be 0..{n_users - 1}, movies 0..{n_movies - 1}")
    users = users if users is not None else Vocabulary.from_ids(np.arange(n_users))
    movies = movies if movies is not None else Vocabulary.from_ids(np.arange(n_movies))
    if len(users) != n_users or len(movies) != n_movies:
        raise DataError(f"vocabularies have {len(users)} users x {len(movies)} movies; expected {n_users} x {n_movies}")
    return u, m, r, users, movies


def _dispatch(u, m, r, n_users: int, n_movies: int, config: TrainConfig, **kw) -> FitResult:
    from xlcf.train.small import small_path_applies, train_small

    if small_path_applies(config, len(r), n_users, n_movies, kw.get("init")):
        return train_small(u, m, r, n_users, n_movies, config, **kw)
    from xlcf.train.trainer import train

    return train(u, m, r, n_users, n_movies, config, **kw)
