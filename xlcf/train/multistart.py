"""Multistart, shared by both engines (torch and the numpy small-problem path): run 0 from the given start,
then fresh random starts, the best kept — like Solver's multistart. Imports neither torch nor pandas."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xlcf.errors import DivergenceError

# Two runs whose training RMSEs agree within this (relative) found the same minimum.
SAME_MINIMUM_RTOL = 1e-3


def restart_seed(seed: int, run: int) -> int:
    """Seed of the initial weights of run ``run`` (0 = the configured seed): independent streams per run."""
    if run == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(run)]).generate_state(1, dtype=np.uint32)[0])


def multistart(train_one: Callable[..., Any], u_np, m_np, r_np, n_users, n_movies, config, *, init, callback, **kw):
    """Run 0 from the given start (warm start or the seeded random draw), then up to ``restarts`` runs from
    fresh random draws; keep the run with the lowest training RMSE. Stops early once two runs agree on the
    best minimum (a second run confirming it) or the callback asks to stop. A restart that diverges is
    skipped; only run 0 diverging raises (the lr is too large).

    ``train_one(u, m, r, n_users, n_movies, config, init=, callback=, init_seed=, run=, **kw)`` trains one
    run and returns a FitResult."""
    t_start = time.perf_counter()
    restarts = config.resolve(len(r_np)).restarts or 0
    if init is not None and init.user_factors is not None and np.ndim(init.user_factors) == 2:
        # The warm start decides k (the sheet's block); the random restarts must draw the same shape.
        config = config.replace(factors=int(np.shape(init.user_factors)[1]))
    stop = {"now": False}

    def run_callback(stats):
        if callback is not None and callback(stats) is False:
            stop["now"] = True
            return False
        return None

    best = train_one(
        u_np,
        m_np,
        r_np,
        n_users,
        n_movies,
        config,
        init=init,
        callback=run_callback,
        init_seed=restart_seed(config.seed, 0),
        run=0,
        **kw,
    )
    runs = [run_summary(best, 0, "given" if init is not None else "random")]
    best_run = 0
    for run in range(1, restarts + 1):
        if stop["now"]:
            break
        try:
            res = train_one(
                u_np,
                m_np,
                r_np,
                n_users,
                n_movies,
                config,
                init=None,
                callback=run_callback,
                init_seed=restart_seed(config.seed, run),
                run=run,
                **kw,
            )
        except DivergenceError as err:
            runs.append(
                {
                    "run": run,
                    "start": "random",
                    "epochs": err.epoch,
                    "train_rmse": None,
                    "stopped": "diverged",
                    "seconds": None,
                }
            )
            continue
        runs.append(run_summary(res, run, "random"))
        if res.train_rmse < best.train_rmse:
            best, best_run = res, run
        # (an absolute floor too: two near-perfect fits agree even when their tiny errors differ relatively)
        agree = [
            r
            for r in runs
            if r["train_rmse"] is not None
            and r["train_rmse"] - best.train_rmse <= max(SAME_MINIMUM_RTOL * best.train_rmse, 1e-6)
        ]
        if len(agree) >= 2:
            break
    # The best run keeps its own stopped_reason; a restart cut short by the callback shows in `runs`.
    best.runs = runs
    best.best_run = best_run
    best.fit_seconds = time.perf_counter() - t_start
    return best


def run_summary(res, run: int, start: str) -> dict:
    return {
        "run": run,
        "start": start,
        "epochs": len(res.history),
        "train_rmse": float(res.train_rmse),
        "stopped": res.stopped_reason,
        "seconds": float(res.fit_seconds),
    }
