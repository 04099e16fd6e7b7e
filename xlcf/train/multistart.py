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


class Runs:
    """The bookkeeping of a multistart: which run is best, whether to go on. Shared by :func:`multistart` and
    the distributed fit (where rank 0 keeps it and broadcasts its decisions)."""

    def __init__(self, callback):
        self.user_callback = callback
        self.stopped = False  # the caller's callback asked to stop
        self.best = None
        self.best_run = 0
        self.runs: list[dict] = []
        self.t_start = time.perf_counter()

    def callback(self, stats):
        """The callback every run gets: the caller's, and a False from it stops the restarts too."""
        if self.user_callback is not None and self.user_callback(stats) is False:
            self.stopped = True
            return False
        return None

    def add(self, res, run: int, start: str = "random") -> None:
        self.runs.append(run_summary(res, run, start))
        if self.best is None or res.train_rmse < self.best.train_rmse:
            self.best, self.best_run = res, run

    def diverged(self, run: int, epoch) -> None:
        """A restart that diverged: recorded and skipped."""
        self.runs.append(
            {"run": run, "start": "random", "epochs": epoch, "train_rmse": None, "stopped": "diverged", "seconds": None}
        )

    def go_on(self) -> bool:
        """Whether another restart may still find something: not once the callback stopped, nor once two runs
        agree on the best minimum (a second run confirming it)."""
        if self.stopped:
            return False
        if len(self.runs) < 2 or self.best is None:
            return True
        # (an absolute floor too: two near-perfect fits agree even when their tiny errors differ relatively)
        best = self.best.train_rmse
        agree = [
            r
            for r in self.runs
            if r["train_rmse"] is not None and r["train_rmse"] - best <= max(SAME_MINIMUM_RTOL * best, 1e-6)
        ]
        return len(agree) < 2

    def result(self):
        """The best run's result, with every run's summary; its fit_seconds span all runs."""
        best = self.best
        # The best run keeps its own stopped_reason; a restart cut short by the callback shows in `runs`.
        best.runs = self.runs
        best.best_run = self.best_run
        best.fit_seconds = time.perf_counter() - self.t_start
        return best


def multistart(train_one: Callable[..., Any], u_np, m_np, r_np, n_users, n_movies, config, *, init, callback, **kw):
    """Run 0 from the given start (warm start or the seeded random draw), then up to ``restarts`` runs from
    fresh random draws; keep the run with the lowest training RMSE. Stops early once two runs agree on the
    best minimum (a second run confirming it) or the callback asks to stop. A restart that diverges is
    skipped; only run 0 diverging raises (the lr is too large).

    ``train_one(u, m, r, n_users, n_movies, config, init=, callback=, init_seed=, run=, **kw)`` trains one
    run and returns a FitResult."""
    restarts = config.resolve(len(r_np)).restarts or 0
    if init is not None and init.user_factors is not None and np.ndim(init.user_factors) == 2:
        # The warm start decides k (the sheet's block); the random restarts must draw the same shape.
        config = config.replace(factors=int(np.shape(init.user_factors)[1]))
    runs = Runs(callback)
    for run in range(restarts + 1):
        if run and not runs.go_on():
            break
        try:
            res = train_one(
                u_np,
                m_np,
                r_np,
                n_users,
                n_movies,
                config,
                init=init if run == 0 else None,
                callback=runs.callback,
                init_seed=restart_seed(config.seed, run),
                run=run,
                **kw,
            )
        except DivergenceError as err:
            if run == 0:
                raise
            runs.diverged(run, err.epoch)
            continue
        runs.add(res, run, "given" if run == 0 and init is not None else "random")
    return runs.result()


def run_summary(res, run: int, start: str) -> dict:
    return {
        "run": run,
        "start": start,
        "epochs": len(res.history),
        "train_rmse": float(res.train_rmse),
        "stopped": res.stopped_reason,
        "seconds": float(res.fit_seconds),
    }
