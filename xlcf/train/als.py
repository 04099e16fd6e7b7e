"""Alternating least squares with biases: closed-form ridge solves, batched on the device.

With the movie side fixed, each user's factors and bias solve a small ridge regression
``(Z_u^T Z_u + wd * n_u * I) [p_u; b_u] = Z_u^T (r - mean - c_i)`` with ``Z_u`` the rated movies'
``[q_i, 1]`` rows; then the same for movies. ``wd * n_u`` is exactly the per-rating L2 the gradient
optimizers put in the loss, so every optimizer minimises the same objective. One epoch = a user
half-step and a movie half-step. The Gram matrices come from batched matmuls over ratings grouped by
user (movie) and padded to power-of-two lengths, then one batched Cholesky solve: no Python loop over
users or movies.

Only for linear outputs: with a sigmoid ``y_range`` the problem is no longer least squares, so ALS fits
the linear model and the result's output is the linear score (``y_range`` is reported as None)."""

from __future__ import annotations

import math
import time

import torch

from xlcf.errors import DivergenceError
from xlcf.train.config import EXACT_MAX_WORK
from xlcf.train.metrics import rmse_of, sum_squared_error, train_rmse_of, valid_rmse_of
from xlcf.train.progress import Progress
from xlcf.train.result import record_solver_epoch

CHUNK_FLOATS = 1 << 24  # floats per block of a batched solve: 16M (64 MB in float32)


class GroupPlan:
    """Ratings grouped by user (or by movie) into padded blocks for batched matmuls.

    Groups are bucketed by their number of ratings rounded up to a power of two, so padding at most
    doubles the work; each block is (groups, length) rating positions (-1 = padding). Built once per fit."""

    def __init__(self, group: torch.Tensor, n_groups: int, width: int):
        counts = torch.bincount(group, minlength=n_groups)
        order = torch.argsort(group, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (group ids, positions padded with -1)
        counts_cpu = counts.cpu()
        nonempty = torch.nonzero(counts_cpu > 0).reshape(-1)
        if nonempty.numel() == 0:
            return
        bucket = torch.ceil(torch.log2(counts_cpu[nonempty].double())).long()
        for b in torch.unique(bucket).tolist():
            ids = nonempty[bucket == b]
            length = 1 << b
            # A block's temporaries are (groups, length, width) ratings and (groups, width, width) Gram matrices:
            # bound the larger (the Gram matrices, for the many groups with fewer ratings than width).
            per_chunk = max(CHUNK_FLOATS // (max(length, width) * width), 1)
            for c in range(0, ids.numel(), per_chunk):
                gid = ids[c : c + per_chunk].to(group.device)
                offs = torch.arange(length, device=group.device)
                pos = starts[gid][:, None] + offs[None, :]
                valid = offs[None, :] < counts[gid][:, None]
                pos = torch.where(valid, order[pos.clamp(max=order.numel() - 1)], torch.full_like(pos, -1))
                self.blocks.append((gid, pos))

    def gram_and_rhs(self, z: torch.Tensor, target: torch.Tensor):
        """Per-group sum of z z^T and z * target (groups with no ratings get zeros)."""
        n_groups, d = self.counts.shape[0], z.shape[1]
        gram = torch.zeros(n_groups, d, d, dtype=z.dtype, device=z.device)
        rhs = torch.zeros(n_groups, d, dtype=z.dtype, device=z.device)
        # One zero row at the end so padding (-1) gathers zeros.
        z_pad = torch.cat([z, torch.zeros(1, d, dtype=z.dtype, device=z.device)])
        t_pad = torch.cat([target, torch.zeros(1, dtype=target.dtype, device=target.device)])
        for gid, pos in self.blocks:
            zb = z_pad[pos]  # (groups, length, d)
            gram[gid] = torch.bmm(zb.transpose(1, 2), zb)
            rhs[gid] = torch.bmm(zb.transpose(1, 2), t_pad[pos][:, :, None])[:, :, 0]
        return gram, rhs


def _solve(gram: torch.Tensor, rhs: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    d = gram.shape[1]
    a = gram + ridge[:, None, None] * torch.eye(d, dtype=gram.dtype, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if bool((info != 0).any()):  # singular (no ratings and no ridge): fall back to least squares
        return torch.linalg.lstsq(a, rhs[:, :, None]).solution[:, :, 0]
    return torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]


def _solve_cg(gram: torch.Tensor, rhs: torch.Tensor, ridge: torch.Tensor, x: torch.Tensor, iters: int) -> torch.Tensor:
    """Batched conjugate gradient, warm-started from the current parameters (ALS-CG, Takacs & Tikk 2012).

    A few iterations per half-step are enough because the start is already close; every operation is a
    batched matmul, which beats thousands of tiny LAPACK factorisations on CPU and GPU alike."""

    def matvec(v):
        return torch.bmm(gram, v[:, :, None])[:, :, 0] + ridge[:, None] * v

    res = rhs - matvec(x)
    p = res.clone()
    rs = (res * res).sum(1)
    for _ in range(iters):
        ap = matvec(p)
        alpha = rs / (p * ap).sum(1).clamp_min(1e-30)
        x = x + alpha[:, None] * p
        res = res - alpha[:, None] * ap
        rs_new = (res * res).sum(1)
        p = res + (rs_new / rs.clamp_min(1e-30))[:, None] * p
        rs = rs_new
    return x


# Exact Cholesky solves while they are cheap (sheets; EXACT_MAX_WORK), warm-started CG beyond (MovieLens and up).
CG_ITERS = 5


def _half_step(own_factors, own_bias, other_factors, other_bias, other_idx, r, base, wd, plan, dtype):
    """Solve one side given the other, block by block. Each block gathers the other side's rows of its own ratings,
    so memory stays bounded by a block (CHUNK_FLOATS) however many ratings there are (no ratings x d matrix)."""
    d = other_factors.shape[1] + int(own_bias is not None)
    exact = plan.counts.shape[0] * d**3 <= EXACT_MAX_WORK
    k = own_factors.shape[1]
    with torch.no_grad():
        for gid, pos in plan.blocks:
            valid = pos >= 0
            at = pos.clamp(min=0)
            oi = other_idx[at]  # (groups, length)
            zb = other_factors[oi].to(dtype)  # (groups, length, k)
            tb = r[at].to(dtype) - base
            if other_bias is not None:
                tb = tb - other_bias[oi].to(dtype)
            if own_bias is not None:
                zb = torch.cat([zb, torch.ones(*zb.shape[:2], 1, dtype=dtype, device=zb.device)], dim=2)
            # Padding (-1) adds nothing: zero rows and zero targets.
            zb = torch.where(valid[:, :, None], zb, 0.0)
            tb = torch.where(valid, tb, 0.0)
            zt = zb.transpose(1, 2)
            gram = torch.bmm(zt, zb)
            rhs = torch.bmm(zt, tb[:, :, None])[:, :, 0]
            ridge = wd * plan.counts[gid].to(dtype) + 1e-12
            if exact:
                sol = _solve(gram, rhs, ridge)
            else:
                x0 = own_factors[gid].to(dtype)
                if own_bias is not None:
                    x0 = torch.cat([x0, own_bias[gid].to(dtype)[:, None]], dim=1)
                sol = _solve_cg(gram, rhs, ridge, x0, iters=CG_ITERS)
            own_factors[gid] = sol[:, :k].to(own_factors.dtype)
            if own_bias is not None:
                own_bias[gid] = sol[:, k].to(own_bias.dtype)


def prepare_als(model, cfg, mean: float):
    """ALS solves the linear model: drop the sigmoid and put ``mean`` (the mean training rating, when the
    model has a global mean) in linear space. Returns (config, width of a solve, dtype of the solves):
    float64 + exact Cholesky where it is cheap (sheets), Solver-grade accuracy; float32 + CG beyond."""
    model.y_range = None
    with torch.no_grad():
        model.offset.fill_(mean if cfg.global_mean else 0.0)
    cfg = cfg.replace(y_range=None)
    n_users, n_movies = model.user_factors.shape[0], model.movie_factors.shape[0]
    width = model.user_factors.shape[1] + int(hasattr(model, "user_bias"))
    exact = max(n_users, n_movies) * width**3 <= EXACT_MAX_WORK
    dtype = torch.float64 if exact and model.user_factors.device.type != "mps" else torch.float32
    return cfg, width, dtype


def train_als(model, cfg, u, m, r, vu, vm, vr, *, callback, progress, t_start, export, run=0):
    cfg, width, dtype = prepare_als(model, cfg, float(r.double().mean()))
    u64, m64 = u.long(), m.long()
    n_users, n_movies = model.user_factors.shape[0], model.movie_factors.shape[0]
    user_plan = GroupPlan(u64, n_users, width)
    movie_plan = GroupPlan(m64, n_movies, width)
    ub = getattr(model, "user_bias", None)
    mb = getattr(model, "movie_bias", None)
    wd = float(cfg.weight_decay or 0.0)
    base = float(model.offset)
    n_train = int(r.shape[0])
    history, stopped = [], None
    bar = Progress(cfg.epochs, f"{cfg.model}/als" + (f" run {run + 1}" if run else ""), enabled=progress)
    snapshot = [p.detach().clone() for p in model.parameters()]
    prev = None
    try:
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            with torch.no_grad():
                _half_step(model.user_factors, ub, model.movie_factors, mb, m64, r, base, wd, user_plan, dtype)
                _half_step(model.movie_factors, mb, model.user_factors, ub, u64, r, base, wd, movie_plan, dtype)
            sse = sum_squared_error(model, u, m, r, safe=False)
            if not math.isfinite(sse):
                with torch.no_grad():
                    for p, s in zip(model.parameters(), snapshot):
                        p.copy_(s)
                result = export(
                    cfg,
                    history=history,
                    seconds=time.perf_counter() - t_start,
                    train_rmse=train_rmse_of(model, u, m, r),
                    valid_rmse=None,
                    stopped="diverged",
                )
                raise DivergenceError(
                    f"training diverged at epoch {epoch}: ALS produced non-finite factors; "
                    f"try a larger weight decay (wd)",
                    epoch=epoch,
                    result=result,
                )
            with torch.no_grad():
                for p, s in zip(model.parameters(), snapshot):
                    s.copy_(p)
            stopped = record_solver_epoch(
                history,
                bar,
                callback,
                epoch=epoch,
                sse=sse,
                train_rmse=rmse_of(sse, n_train),
                valid_rmse=valid_rmse_of(model, vu, vm, vr),
                started=t_epoch,
                previous_sse=prev,
                run=run,
            )
            if stopped:
                break
            prev = sse
            if cfg.max_seconds is not None and epoch < cfg.epochs and time.perf_counter() - t_start >= cfg.max_seconds:
                stopped = "time"
                break
    finally:
        bar.close()
    train_rmse, valid_rmse = train_rmse_of(model, u, m, r), valid_rmse_of(model, vu, vm, vr)
    return export(
        cfg,
        history=history,
        seconds=time.perf_counter() - t_start,
        train_rmse=train_rmse,
        valid_rmse=valid_rmse,
        stopped=stopped,
    )
