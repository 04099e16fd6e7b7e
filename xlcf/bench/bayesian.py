"""Bayesian matrix factorisation in the benchmark: the engine's ``gibbs`` against myFM (Gibbs-sampled
factorisation machines, C++; the ``bench`` extra) side by side with Surprise's SVD and the engine's defaults,
on three random 20% hold-outs (seeds 0, 1, 2) of each MovieLens release; and the time of one gibbs sweep on
the synthetic MovieLens-25M-shaped scale series (each size in a fresh process, with its peak memory).

Heavy imports happen inside the functions."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

MYFM_RANK, MYFM_SWEEPS = 32, 500  # myFM as the Bayesian baseline is usually run (Rendle et al. 2019)
GIBBS_BEST: dict[str, Any] = dict(optimizer="gibbs", factors=32, epochs=250, burn_in=50)
DEFAULT_TARGETS = {"ml-latest-small": 0.850, "ml-latest-small-2016": 0.870}  # `xlcf train` with no flags
SEEDS = (0, 1, 2)


def myfm_fit(train_df, valid_df, rank: int = MYFM_RANK, sweeps: int = MYFM_SWEEPS, seed: int = 0):
    """(validation RMSE, fit seconds) of myFM's Gibbs sampler on one-hot user and movie columns (its two groups
    with their own hyper-priors), predictions averaged over all sweeps but the first 5 (myFM's default); None
    when myfm is not installed."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # myfm imports pkg_resources
            import myfm
    except ImportError:
        return None
    import numpy as np
    import scipy.sparse as sps

    users = np.unique(train_df.userId.to_numpy())
    movies = np.unique(train_df.movieId.to_numpy())

    def one_hot(df):
        n = len(df)
        cols, rows = [], []
        for ids, vocab, shift in ((df.userId.to_numpy(), users, 0), (df.movieId.to_numpy(), movies, len(users))):
            idx = np.clip(np.searchsorted(vocab, ids), 0, len(vocab) - 1)
            known = vocab[idx] == ids  # an id unseen in training gets no column (its effect is 0)
            rows.append(np.arange(n)[known])
            cols.append(idx[known] + shift)
        r, c = np.concatenate(rows), np.concatenate(cols)
        return sps.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, len(users) + len(movies)))

    x_train, x_valid = one_hot(train_df), one_hot(valid_df)
    t0 = time.perf_counter()
    model = myfm.MyFMRegressor(rank=rank, random_seed=seed)
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):  # myFM's own progress bar
        model.fit(
            x_train, train_df.rating.to_numpy(dtype=np.float64), n_iter=sweeps, group_shapes=[len(users), len(movies)]
        )
    seconds = time.perf_counter() - t0
    pred = model.predict(x_valid)
    return float(np.sqrt(np.mean((pred - valid_df.rating.to_numpy()) ** 2))), seconds


def _spread(values) -> str:
    import numpy as np

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return "n/a"
    return f"{arr.mean():.4f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.4f}"


def _time_spread(values) -> str:
    import numpy as np

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return "n/a"
    return f"{arr.mean():6.1f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:4.1f}"


def bench_bayesian(folder: Path, device: str, out, seeds=SEEDS, quick: bool = False) -> dict:
    """One release, several random 20% hold-outs: SVD, myFM, `xlcf train`'s defaults and gibbs on each."""
    import warnings

    from xlcf.bench.baselines import surprise_svd
    from xlcf.data import load_ratings, split_ratings
    from xlcf.train import TrainConfig, fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratings = load_ratings(folder)
    name = folder.name
    sweeps = 6 if quick else MYFM_SWEEPS
    gibbs = {**GIBBS_BEST, **({"epochs": 6, "burn_in": 2} if quick else {})}
    defaults = {"epochs": 6} if quick else {}
    out(
        f"\n## {name}: Bayesian matrix factorisation, random 20% hold-outs (seeds {', '.join(map(str, seeds))}); "
        f"myFM rank {MYFM_RANK}, {sweeps} sweeps; gibbs {gibbs['factors']} factors, {gibbs['epochs']} sweeps "
        f"({gibbs['burn_in']} burn-in); defaults = `xlcf train` with no flags"
    )
    splits = []
    for seed in seeds:
        train_df, valid_df = split_ratings(ratings, valid_pct=0.2, seed=seed)
        row: dict = {"seed": seed, "n_train": len(train_df), "n_valid": len(valid_df)}
        svd = surprise_svd(train_df, valid_df)
        row["svd"] = None if svd is None else {"valid_rmse": svd[0], "fit_seconds": svd[1]}
        mf = myfm_fit(train_df, valid_df, sweeps=sweeps, seed=seed)
        row["myfm"] = None if mf is None else {"valid_rmse": mf[0], "fit_seconds": mf[1]}
        for key, settings in (("defaults", defaults), ("gibbs", gibbs)):
            res = fit(train_df, TrainConfig.from_dict({"device": device, "seed": seed, **settings}), valid_df=valid_df)
            # A Bayesian fit is judged by its averaged predictions (as myFM's), the others by their parameters.
            rmse = res.valid_rmse_avg if res.valid_rmse_avg is not None else res.valid_rmse
            row[key] = {
                "valid_rmse": rmse,
                "valid_rmse_point": res.valid_rmse,
                "fit_seconds": res.fit_seconds,
                "optimizer": res.optimizer,
                "epochs": res.epochs,
                "factors": res.config.factors,
                "coverage": res.valid_coverage,
            }
        splits.append(row)
        cells = [
            f"{label} {row[key]['valid_rmse']:.4f} ({row[key]['fit_seconds']:.1f} s)"
            for key, label in (("svd", "SVD"), ("myfm", "myFM"), ("defaults", "defaults"), ("gibbs", "gibbs"))
            if row[key] is not None
        ]
        out(f"  seed {seed}: " + ", ".join(cells))
    if all(s["myfm"] is None for s in splits):
        out("(myfm is not installed: `pip install 'xlcf[bench]'` to compare)")
    out(f"{'run':34s} {'valid RMSE (mean ± sd)':>24s} {'fit s (mean ± sd)':>18s}")
    labels = (
        ("svd", "Surprise SVD (default)"),
        ("myfm", f"myFM (rank {MYFM_RANK}, {sweeps} sweeps)"),
        ("defaults", "xlcf defaults"),
        ("gibbs", f"gibbs ({gibbs['factors']} factors, {gibbs['epochs']} sweeps)"),
    )
    for key, label in labels:
        if any(s[key] is not None for s in splits):
            out(
                f"{label:34s} {_spread(s[key]['valid_rmse'] for s in splits if s[key]):>24s} "
                f"{_time_spread(s[key]['fit_seconds'] for s in splits if s[key]):>18s}"
            )
    point = [s["gibbs"]["valid_rmse_point"] for s in splits]
    out(f"{'gibbs, posterior-mean factors':34s} {_spread(point):>24s}   (what a sheet's formulas give)")
    cov = [s["gibbs"]["coverage"] for s in splits if s["gibbs"]["coverage"] is not None]
    if cov:
        out(f"gibbs: {_spread(cov)} of validation ratings within ±1 predictive std (68% if calibrated)")
    verdicts = {}
    if all(s["myfm"] for s in splits):
        verdicts["gibbs <= myFM RMSE on every split"] = all(
            s["gibbs"]["valid_rmse"] <= s["myfm"]["valid_rmse"] for s in splits
        )
        verdicts["gibbs fit time <= myFM on every split"] = all(
            s["gibbs"]["fit_seconds"] <= s["myfm"]["fit_seconds"] for s in splits
        )
    target = DEFAULT_TARGETS.get(name)
    if target is not None:
        verdicts[f"defaults <= {target:.3f} on every split"] = all(
            s["defaults"]["valid_rmse"] <= target for s in splits
        )
    if all(s["svd"] for s in splits):
        verdicts["defaults < SVD on every split"] = all(
            s["defaults"]["valid_rmse"] < s["svd"]["valid_rmse"] for s in splits
        )
    for text, ok in verdicts.items():
        out(f"{text}: {'met' if ok else 'MISSED'}")
    return {
        "dataset": name,
        "seeds": list(seeds),
        "myfm_sweeps": sweeps,
        "gibbs_settings": gibbs,
        "splits": splits,
        "verdicts": verdicts,
    }


# -- the synthetic scale series: one gibbs sweep ------------------------------------------------------------
def _gibbs_scale_worker(n: int, sweeps: int, device: str, seed: int, threads: int = 1) -> dict:
    """Runs in a fresh process: generate, sample, report seconds per sweep and this process's peak RSS."""
    import resource

    import numpy as np

    from xlcf.bench.baselines import ML25M_MOVIES, ML25M_USERS, synthetic_ratings
    from xlcf.train import TrainConfig, fit_arrays

    users, movies, ratings = synthetic_ratings(n, seed=seed)
    cfg = TrainConfig(
        model="bias",
        optimizer="gibbs",
        factors=GIBBS_BEST["factors"],
        epochs=sweeps,
        burn_in=max(sweeps // 2, 1) if sweeps > 1 else 0,
        valid_pct=0,
        device=device,
        seed=seed,
        threads=threads or None,
    )
    res = fit_arrays(users, movies, ratings, ML25M_USERS, ML25M_MOVIES, cfg)
    per_sweep = [h.seconds for h in res.history]
    steady = float(np.median(per_sweep[1:] if len(per_sweep) > 1 else per_sweep))
    return dict(
        n_ratings=n,
        sweeps=res.epochs,
        seconds_per_sweep=steady,
        sweep_seconds=per_sweep,
        ratings_per_second=n / steady,
        train_rmse=res.train_rmse,
        device=res.device,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        factors=cfg.factors,
    )


def bench_gibbs_scale(sizes: list[int], sweeps: int, device: str, seed: int, out, threads: int = 1) -> list[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out(
        f"\n## gibbs on the synthetic scale series ({GIBBS_BEST['factors']} factors, {sweeps} sweeps, "
        f"{threads or 'default'} CPU thread(s) or the GPU); each size in a fresh process; peak memory = its peak RSS"
    )
    out(f"{'ratings':>12s} {'s/sweep':>9s} {'ratings/s':>12s} {'peak RSS MB':>12s}")
    rows = []
    for n in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            row = pool.submit(_gibbs_scale_worker, n, sweeps, device, seed, threads).result()
        rows.append(row)
        out(f"{n:12,d} {row['seconds_per_sweep']:9.2f} {row['ratings_per_second']:12,.0f} {row['peak_rss_mb']:12,.0f}")
    if len(rows) > 1:
        per = [r["seconds_per_sweep"] / r["n_ratings"] * 1e6 for r in rows]
        out(
            "seconds per sweep per million ratings: "
            + ", ".join(f"{p:.2f}" for p in per)
            + " (constant = linear in ratings)"
        )
    return rows
