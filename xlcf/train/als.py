"""Alternating least squares with biases: closed-form ridge solves, batched on the device.

With the movie side fixed, each user's factors and bias solve a small ridge regression
``(Z_u^T Z_u + wd * n_u * I) [p_u; b_u] = Z_u^T (r - mean - c_i)`` with ``Z_u`` the rated movies'
``[q_i, 1]`` rows; then the same for movies. ``wd * n_u`` is exactly the per-rating L2 the gradient
optimizers put in the loss, so every optimizer minimises the same objective. One epoch = a user
half-step and a movie half-step. All the Gram matrices come from one ``index_add_`` of outer products
(chunked to bound memory) and one batched Cholesky solve: no Python loop over users or movies.

Only for linear outputs: with a sigmoid ``y_range`` the problem is no longer least squares, so ALS fits
the linear model and the result's output is the linear score (``y_range`` is reported as None)."""

from __future__ import annotations

import math
import sys
import time

import torch

from xlcf.errors import DivergenceError
from xlcf.train.result import EpochStats

CHUNK_FLOATS = 1 << 23  # outer products per chunk: 8M floats = 32 MB


def _gram_and_rhs(z: torch.Tensor, target: torch.Tensor, group: torch.Tensor, n_groups: int):
    """Per-group sum of z z^T and z * target over the rows (chunked)."""
    d = z.shape[1]
    gram = torch.zeros(n_groups, d * d, dtype=z.dtype, device=z.device)
    rhs = torch.zeros(n_groups, d, dtype=z.dtype, device=z.device)
    rhs.index_add_(0, group, z * target[:, None])
    step = max(CHUNK_FLOATS // (d * d), 1)
    for start in range(0, z.shape[0], step):
        zc = z[start:start + step]
        gram.index_add_(0, group[start:start + step], (zc[:, :, None] * zc[:, None, :]).reshape(zc.shape[0], -1))
    return gram.view(n_groups, d, d), rhs


def _solve(gram: torch.Tensor, rhs: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    d = gram.shape[1]
    a = gram + ridge[:, None, None] * torch.eye(d, dtype=gram.dtype, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if bool((info != 0).any()):  # singular (no ratings and no ridge): fall back to least squares
        return torch.linalg.lstsq(a, rhs[:, :, None]).solution[:, :, 0]
    return torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]


def _half_step(own_factors, own_bias, other_factors, other_bias, own_idx, other_idx, r, base, wd, counts):
    """Solve one side given the other. Works in float64 for accuracy on the sheet (cheap: small systems)."""
    z = other_factors[other_idx].double()
    target = r.double() - base
    if other_bias is not None:
        target = target - other_bias[other_idx].double()
    if own_bias is not None:
        z = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)
    gram, rhs = _gram_and_rhs(z, target, own_idx, own_factors.shape[0])
    sol = _solve(gram, rhs, wd * counts.double() + 1e-12)
    with torch.no_grad():
        own_factors.copy_(sol[:, : own_factors.shape[1]].to(own_factors.dtype))
        if own_bias is not None:
            own_bias.copy_(sol[:, -1].to(own_bias.dtype))


def train_als(model, cfg, u, m, r, vu, vm, vr, *, callback, progress, t_start, export):
    from xlcf.train.trainer import _rmse, _sum_squared_error

    # ALS solves the linear model: drop the sigmoid and put the mean (if any) in linear space.
    model.y_range = None
    with torch.no_grad():
        model.offset.fill_(float(r.double().mean()) if cfg.global_mean else 0.0)
    cfg = cfg.replace(y_range=None)
    u64, m64 = u.long(), m.long()
    n_users, n_movies = model.user_factors.shape[0], model.movie_factors.shape[0]
    user_counts = torch.bincount(u64, minlength=n_users)
    movie_counts = torch.bincount(m64, minlength=n_movies)
    has_bias = hasattr(model, "user_bias")
    ub = model.user_bias if has_bias else None
    mb = model.movie_bias if has_bias else None
    wd = float(cfg.weight_decay or 0.0)
    base = float(model.offset)
    n_train = int(r.shape[0])
    n_valid = 0 if vr is None else int(vr.shape[0])
    history, stopped = [], None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, desc=f"{cfg.model}/als", unit="epoch", file=sys.stderr, leave=False)
    snapshot = [p.detach().clone() for p in model.parameters()]
    prev = None
    try:
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            with torch.no_grad():
                _half_step(model.user_factors, ub, model.movie_factors, mb, u64, m64, r, base, wd, user_counts)
                _half_step(model.movie_factors, mb, model.user_factors, ub, m64, u64, r, base, wd, movie_counts)
            sse = _sum_squared_error(model, u, m, r, safe=False)
            if not math.isfinite(sse):
                with torch.no_grad():
                    for p, s in zip(model.parameters(), snapshot):
                        p.copy_(s)
                result = export(history=history, seconds=time.perf_counter() - t_start,
                                train_rmse=_rmse(_sum_squared_error(model, u, m, r, safe=False), n_train),
                                valid_rmse=None, stopped="diverged")
                raise DivergenceError(f"training diverged at epoch {epoch}: ALS produced non-finite factors; "
                                      f"try a larger weight decay (wd)", epoch=epoch, result=result)
            with torch.no_grad():
                for p, s in zip(model.parameters(), snapshot):
                    s.copy_(p)
            train_rmse = _rmse(sse, n_train)
            valid_rmse = _rmse(_sum_squared_error(model, vu, vm, vr, safe=True), n_valid) if n_valid else None
            stats = EpochStats(epoch, train_rmse ** 2, train_rmse, valid_rmse, time.perf_counter() - t_epoch, None)
            history.append(stats)
            if bar is not None:
                bar.update(1)
            if callback is not None and callback(stats) is False:
                stopped = "callback"
                break
            if prev is not None and abs(prev - sse) <= 1e-10 * max(prev, 1e-12):
                stopped = "converged"
                break
            prev = sse
    finally:
        if bar is not None:
            bar.close()
    train_rmse = _rmse(_sum_squared_error(model, u, m, r, safe=False), n_train)
    valid_rmse = _rmse(_sum_squared_error(model, vu, vm, vr, safe=True), n_valid) if n_valid else None
    return export(history=history, seconds=time.perf_counter() - t_start, train_rmse=train_rmse,
                  valid_rmse=valid_rmse, stopped=stopped)
