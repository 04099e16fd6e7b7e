"""The Bayesian sampler (``gibbs``) on several ranks, with the owner pattern of distributed ALS.

Rank ``i`` owns a block of users and a block of movies and holds all their ratings (grouped by user and by
movie). Each sweep, every rank draws its users' rows given the movie rows, the ranks all-gather the new user
rows; then the same for the movies. What else a sweep needs is summed over the ranks: the sufficient statistics
of the hyper-prior draws (the rows' mean, then their scatter about it; d and d x d numbers), the residual sums of
the noise draws (one number per user and per movie) and the RMSE sums. Every random draw is keyed by (seed,
sweep, side) and indexed by row or by rating in the side's sorted order, and each rank draws the same
hyper-parameters from the same summed statistics, so N ranks sample the one-rank chain up to float rounding.

Rank 0 keeps the thinned samples, builds the ``FitResult`` (the posterior sums are all-gathered at the end) and,
with its callback and clock, decides when every rank stops."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from xlcf.train.collective import DistContext
from xlcf.train.dist_solvers import CODES, GO_ON, STOPPED, Export, Job, Shard
from xlcf.train.gibbs import OneProcess, Priors, Sampler
from xlcf.train.gibbs_train import _dtype, _result, chain_fit, diverged_error, run_chain
from xlcf.train.result import FitResult


class Ranks(OneProcess):
    """The ranks of a distributed fit, as the sampler sees them (see :class:`~xlcf.train.gibbs.OneProcess`)."""

    def __init__(self, ctx: DistContext, job: Job):
        assert job.user_ranges is not None and job.movie_ranges is not None  # an owner-partitioned job
        self.ctx = ctx
        self.lead = ctx.rank == 0
        self.ranges = {0: job.user_ranges, 1: job.movie_ranges}
        self.users, self.movies = job.user_ranges[ctx.rank], job.movie_ranges[ctx.rank]
        # The ranks own contiguous, increasing blocks of rows: the ratings before this rank's are the lower ranks'.
        self.offsets = {
            0: sum(s["u"] for s in job.sizes[: ctx.rank]),
            1: sum(s["mu"] for s in job.sizes[: ctx.rank]),
        }

    def total(self, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()  # (the caller's tensor stays as it was)
        dist.all_reduce(out)
        return out

    def before(self, side: int) -> int:
        return self.offsets[side]

    def share(self, tables: list[torch.Tensor], side: int) -> None:
        self.ctx.share_rows(tables, self.ranges[side])

    def decide(self, reason: str | None) -> str | None:
        code = self.ctx.decide(CODES[reason] if self.lead else GO_ON)
        return STOPPED.get(code)


def train_gibbs_owners(
    ctx: DistContext, job: Job, shard: Shard, *, callback, progress: bool, export: Export, run: int = 0
) -> FitResult | None:
    t_start = time.perf_counter()
    cfg = job.config.replace(y_range=None)  # linear outputs only, as one rank
    assert shard.by_movie is not None  # an owner-partitioned job always has the movie-grouped shard
    has_bias = cfg.model == "bias"
    # A resolved config has every setting of the sampler.
    assert cfg.factors is not None and cfg.prior is not None and cfg.noise_df is not None
    valid = shard.valid
    if valid is None and job.n_valid:  # this rank scores no validation ratings, but takes part in the sums
        empty = torch.empty(0, dtype=torch.long, device=ctx.device)
        valid = (empty, empty, torch.empty(0, device=ctx.device))
    sampler = Sampler(
        *shard.train,
        job.n_users,
        job.n_movies,
        rank=cfg.factors,
        has_bias=has_bias,
        offset=float(job.mean) if cfg.global_mean else 0.0,
        priors=Priors(prior=cfg.prior, noise_df=cfg.noise_df),
        seed=cfg.seed + run,
        dtype=_dtype(ctx.device, job.n_train),
        valid=valid,
        movie_ratings=shard.by_movie,
        ranks=Ranks(ctx, job),
    )
    history, stopped = run_chain(sampler, cfg, callback=callback, progress=progress, run=run)
    fit = chain_fit(sampler)  # (sums over the ranks: every rank takes part)
    seconds = time.perf_counter() - t_start

    def build(**data) -> FitResult:
        return _result(sampler, cfg, **data, history=history, seconds=seconds, stopped=stopped, fit=fit)

    result = export(None, cfg, build=build)
    if stopped == "diverged" and ctx.rank == 0:
        raise diverged_error(sampler, cfg, result)
    return result
