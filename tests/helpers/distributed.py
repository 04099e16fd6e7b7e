"""Helpers of the distributed-training tests: a small low-rank ratings set, and a rank's work (module-level so the
launcher's spawned ranks can import it)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def low_rank_ratings(
    n_users: int = 400, n_movies: int = 300, rank: int = 3, n: int = 30_000, noise: float = 0.3, seed: int = 0
) -> pd.DataFrame:
    """Ratings from a hidden bias + rank-``rank`` model plus Gaussian noise (so the best RMSE is about ``noise``)."""
    rng = np.random.default_rng(seed)
    uf, mf = rng.normal(0, 0.6, (n_users, rank)), rng.normal(0, 0.6, (n_movies, rank))
    ub, mb = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_movies)
    pairs = rng.choice(n_users * n_movies, n, replace=False)
    u, m = pairs // n_movies, pairs % n_movies
    r = 3.5 + ub[u] + mb[m] + (uf[u] * mf[m]).sum(1) + rng.normal(0, noise, n)
    return pd.DataFrame({"userId": u + 1, "movieId": m + 1, "rating": np.clip(r, 0.5, 5.0)})


def fit_each(ratings: pd.DataFrame, settings: dict[str, dict], timeout: float = 120.0) -> dict:
    """On every rank: one distributed fit per entry of ``settings`` (name -> TrainConfig fields, and ``_exchange``
    for the gradient exchange). Rank 0 returns
    name -> {train_rmse, valid_rmse, shards, epochs, factors...}; the other ranks return their shard sizes."""
    from xlcf.train import TrainConfig
    from xlcf.train.distributed import DistContext, fit_distributed

    ctx = DistContext.from_env("cpu", timeout)
    out = {}
    try:
        for name, fields in settings.items():
            config = TrainConfig(**{k: v for k, v in fields.items() if not k.startswith("_")})
            res = fit_distributed(ratings, config, context=ctx, exchange=fields.get("_exchange", "auto"))
            if res is not None:
                out[name] = {
                    "train_rmse": res.train_rmse,
                    "valid_rmse": res.valid_rmse,
                    "shards": res.shards,
                    "ranks": res.ranks,
                    "epochs": res.epochs,
                    "user_factors": res.user_factors,
                    "movie_factors": res.movie_factors,
                    "user_bias": res.user_bias,
                    "movie_bias": res.movie_bias,
                    "history": [h.train_rmse for h in res.history],
                    "train_rmse_avg": res.train_rmse_avg,
                    "valid_rmse_avg": res.valid_rmse_avg,
                    "valid_coverage": res.valid_coverage,
                    "posterior": None if res.posterior is None else res.posterior.user_rows.shape,
                    "stopped_reason": res.stopped_reason,
                    "runs": res.runs,
                    "best_run": res.best_run,
                }
    finally:
        ctx.close()
    return out
