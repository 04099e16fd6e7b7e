"""The ``gibbs`` optimizer: a TrainConfig in, a FitResult out, with the sampler of ``xlcf.train.gibbs``.

``epochs`` counts sweeps; after ``burn_in`` of them every sweep's predictions are averaged. The result's
factors and biases are posterior means (what a sheet gets: its formulas recompute the predictions; their
RMSEs are ``train_rmse`` / ``valid_rmse``); ``train_rmse_avg`` / ``valid_rmse_avg`` are those of the averaged
predictions, and ``posterior`` keeps up to KEEP_SAMPLES thinned draws for the predictive std.

Only linear outputs, like ALS: a sigmoid ``y_range`` is dropped (reported as None)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from xlcf.errors import DivergenceError
from xlcf.train.config import FULL_BATCH_MAX
from xlcf.train.gibbs import EVAL_CHUNK, Priors, Sampler, predict_rows
from xlcf.train.result import EpochStats, FitResult, PosteriorSamples, stop_reason

KEEP_SAMPLES = 32  # thinned draws kept for predict_std ...
SAMPLE_BYTES = 256 << 20  # ... within this many bytes


def _dtype(device: torch.device, n_train: int) -> torch.dtype:
    # float64 where it is cheap (sheets: Solver-grade numbers), float32 beyond and on GPUs.
    return torch.float64 if device.type == "cpu" and n_train <= FULL_BATCH_MAX else torch.float32


def train_gibbs(
    u_np,
    m_np,
    r_np,
    n_users,
    n_movies,
    cfg,
    *,
    valid,
    init,
    callback,
    progress,
    users,
    movies,
    rated,
    device,
    mean,
    t_start,
    run=0,
) -> FitResult:
    cfg = cfg.replace(y_range=None)
    has_bias = cfg.model == "bias"
    offset = float(mean) if cfg.global_mean else 0.0
    n_train = len(r_np)
    dtype = _dtype(device, n_train)
    u = torch.as_tensor(np.ascontiguousarray(u_np)).to(device)
    m = torch.as_tensor(np.ascontiguousarray(m_np)).to(device)
    r = torch.as_tensor(np.ascontiguousarray(r_np, dtype=np.float32)).to(device)
    vt = None
    if valid is not None and len(valid[2]):
        vt = (
            torch.as_tensor(np.asarray(valid[0])),
            torch.as_tensor(np.asarray(valid[1])),
            torch.as_tensor(np.asarray(valid[2], dtype=np.float64)),
        )
    start = None
    if init is not None:
        ub = init.user_bias if init.user_bias is not None else np.zeros(n_users)
        mb = init.movie_bias if init.movie_bias is not None else np.zeros(n_movies)
        start = (
            np.column_stack([init.user_factors, ub]) if has_bias else init.user_factors,
            np.column_stack([init.movie_factors, mb]) if has_bias else init.movie_factors,
        )
    priors = Priors(prior=cfg.prior, noise_df=cfg.noise_df)
    sampler = Sampler(
        u,
        m,
        r,
        n_users,
        n_movies,
        rank=cfg.factors,
        has_bias=has_bias,
        offset=offset,
        priors=priors,
        seed=cfg.seed + run,
        dtype=dtype,
        valid=vt,
        init=start,
    )
    history, stopped = run_chain(sampler, cfg, callback=callback, progress=progress, run=run)
    result = _result(
        sampler,
        cfg,
        users=users,
        movies=movies,
        mean=mean,
        device=device,
        history=history,
        seconds=time.perf_counter() - t_start,
        stopped=stopped,
        n_train=n_train,
        rated=rated,
    )
    if stopped == "diverged":
        raise diverged_error(sampler, cfg, result)
    return result


def run_chain(sampler: Sampler, cfg, *, callback, progress: bool, run: int = 0) -> tuple[list[EpochStats], str | None]:
    """Sweep the chain ``cfg.epochs`` times: (the history of the sweeps, why it stopped early or None). The
    callback, the progress bar and the history are the lead process's (the only one in a one-process fit)."""
    d = sampler.d
    per_sample = (sampler.n_users + sampler.n_movies) * d * 4
    keep = max(1, min(KEEP_SAMPLES, SAMPLE_BYTES // max(per_sample, 1)))
    history: list[EpochStats] = []
    lead = sampler.ranks.lead
    bar = None
    if progress and lead:
        from tqdm.auto import tqdm

        desc = f"{cfg.model}/gibbs" + (f" run {run + 1}" if run else "")
        bar = tqdm(total=cfg.epochs, desc=desc, unit="sweep", file=sys.stderr, leave=False)

    def on_sweep(info):
        valid_rmse = info.valid_rmse_avg if info.valid_rmse_avg is not None else info.valid_rmse
        stats = EpochStats(info.sweep, info.train_rmse**2, info.train_rmse, valid_rmse, info.seconds, None, run)
        history.append(stats)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{info.train_rmse:.4f}", **({"valid": f"{valid_rmse:.4f}"} if valid_rmse else {}))
        return stop_reason(callback, stats, None, 0.0) is None

    try:
        stopped = sampler.run(
            cfg.epochs, cfg.burn_in, keep_samples=keep, on_sweep=on_sweep if lead else None, max_seconds=cfg.max_seconds
        )
    finally:
        if bar is not None:
            bar.close()
    return history, stopped


def diverged_error(sampler: Sampler, cfg, result: FitResult | None) -> DivergenceError:
    sweep = sampler.failed_sweep
    return DivergenceError(
        f"sampling diverged at sweep {sweep}: a precision matrix was not positive definite or "
        f"a draw was not finite; try a larger prior (e.g. {cfg.prior * 10:g}); the draws up to "
        f"sweep {sweep - 1} were kept",
        epoch=sweep,
        result=result,
    )


def _as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _chunked_sse(urows, mrows, u, m, r, offset: float, has_bias: bool) -> float:
    """Sum of squared errors of the given rows' predictions, in chunks (a (ratings x d) gather at once would
    dominate memory)."""
    total = 0.0
    for s in range(0, r.shape[0], EVAL_CHUNK):
        pred = predict_rows(urows, mrows, u[s : s + EVAL_CHUNK], m[s : s + EVAL_CHUNK], offset, has_bias)
        total += float(((pred.double() - r[s : s + EVAL_CHUNK].double()) ** 2).sum())
    return total


def _kept_mean(total: torch.Tensor | None, kept: int) -> torch.Tensor:
    """An accumulator's mean over the kept sweeps (the accumulators are allocated on the first kept one)."""
    assert total is not None
    return total / kept


def _sse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred.double() - target.double()) ** 2).sum())


@dataclass
class ChainFit:
    """The RMSEs of a finished chain: of the posterior-mean rows, of the averaged predictions, and the share of
    validation ratings within one predictive std. Summed over every process that sampled the chain."""

    train_rmse: float
    train_avg: float | None
    valid_rmse: float | None
    valid_avg: float | None
    coverage: float | None


def chain_fit(sampler: Sampler) -> ChainFit:
    """The chain's RMSEs (every process that sampled it calls this: the sums are exchanged)."""
    ch = sampler.chain
    has_bias = sampler.has_bias
    urows, mrows = _rows(sampler)
    side = sampler.by_movie
    tm, tu, tr = side.own.long(), side.other[:-1].long(), side.rating
    train_sse = _chunked_sse(urows, mrows, tu, tm, tr, sampler.offset, has_bias)
    avg_sse = _sse(_kept_mean(ch.train_sum, ch.kept), tr) if ch.kept else 0.0
    valid_sse = valid_avg_sse = covered = 0.0
    if sampler.valid is not None:
        vu, vm, vr = sampler.valid
        valid_sse = _chunked_sse(urows, mrows, vu, vm, vr, sampler.offset, has_bias)
        if ch.kept:
            assert ch.valid_mean is not None and ch.valid_noise is not None  # allocated on the first kept sweep
            valid_avg_sse = _sse(ch.valid_mean, vr)
            std = torch.sqrt(_kept_mean(ch.valid_m2, ch.kept) + ch.valid_noise)
            covered = float(((ch.valid_mean - vr).abs() <= std).double().sum())
    train_sse, avg_sse, valid_sse, valid_avg_sse, covered = sampler._sum(
        train_sse, avg_sse, valid_sse, valid_avg_sse, covered
    )
    n, nv = sampler.n_total, sampler.n_valid
    rmse = lambda sse, count: math.sqrt(sse / count) if count else float("nan")
    return ChainFit(
        train_rmse=rmse(train_sse, n),
        train_avg=rmse(avg_sse, n) if ch.kept else None,
        valid_rmse=rmse(valid_sse, nv) if nv else None,
        valid_avg=rmse(valid_avg_sse, nv) if nv and ch.kept else None,
        coverage=covered / nv if nv and ch.kept else None,
    )


def _rows(sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means when any sweep was kept, else the last draw (stopped during burn-in)."""
    ch = sampler.chain
    urows = _kept_mean(ch.user_sum, ch.kept) if ch.kept else ch.users
    mrows = _kept_mean(ch.movie_sum, ch.kept) if ch.kept else ch.movies
    return urows, mrows


def _result(
    sampler: Sampler, cfg, *, users, movies, mean, device, history, seconds, stopped, n_train, rated, fit=None
) -> FitResult:
    """The FitResult of a finished chain (``fit``: its RMSEs when already computed, as a distributed fit does)."""
    fit = fit if fit is not None else chain_fit(sampler)
    ch = sampler.chain
    k, has_bias = cfg.factors, sampler.has_bias
    urows, mrows = _rows(sampler)
    urows_np, mrows_np = _as_np(urows), _as_np(mrows)
    samples = ch.samples or [(ch.users.float().cpu().numpy(), ch.movies.float().cpu().numpy())]
    if ch.kept:
        user_noise, movie_noise = (
            _as_np(_kept_mean(ch.user_noise_sum, ch.kept)),
            _as_np(_kept_mean(ch.movie_noise_sum, ch.kept)),
        )
    else:
        user_noise = _as_np(1.0 / (ch.alpha * ch.user_scale.double()))
        movie_noise = _as_np(1.0 / ch.movie_scale.double())
    posterior = PosteriorSamples(
        np.stack([s[0] for s in samples]),
        np.stack([s[1] for s in samples]),
        user_noise,
        movie_noise,
        has_bias,
        sampler.offset,
        list(ch.sample_sweeps),
    )
    return FitResult(
        config=cfg,
        users=users,
        movies=movies,
        user_factors=urows_np[:, :k],
        movie_factors=mrows_np[:, :k],
        user_bias=urows_np[:, k].copy() if has_bias else None,
        movie_bias=mrows_np[:, k].copy() if has_bias else None,
        global_mean=float(mean),
        history=list(history),
        device=str(device),
        fit_seconds=float(seconds),
        train_rmse=fit.train_rmse,
        valid_rmse=fit.valid_rmse,
        stopped_reason=stopped,
        offset=sampler.offset,
        n_train=int(n_train),
        n_valid=sampler.n_valid,
        rated_user_index=rated[0],
        rated_movie_index=rated[1],
        train_rmse_avg=fit.train_avg,
        valid_rmse_avg=fit.valid_avg,
        valid_coverage=fit.coverage,
        posterior=posterior,
    )
