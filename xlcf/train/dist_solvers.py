"""The training loops of a distributed fit, one per kind of algorithm; each runs on every rank.

- :func:`train_data_parallel` — the gradient optimizers (sgd, momentum, rmsprop, adam, adamw, lbfgs and
  user-supplied ones): every rank keeps a full replica of the model and trains on its random shard of the
  ratings; a step of the global batch ``batch_size`` is ``batch_size / ranks`` ratings on each rank, whose
  gradients are summed (:class:`~xlcf.train.collective.GradExchange`), so every replica takes the same step.
- :func:`train_als_owners` — alternating least squares: rank ``i`` owns a block of users and a block of movies
  and holds their ratings (twice: grouped by user and grouped by movie). It solves its users' rows with the
  one-rank kernels, the ranks all-gather the new user rows, then the same for the movies. Only factor rows
  move, and each row comes out exactly as the one-rank solve computes it.

The loops share the one-rank kernels (model set-up, loss and gradients, optimizer registry, ALS half-steps,
evaluation) and, for the gradient optimizers, the one-rank epoch loop itself (:func:`xlcf.train.epochs.run_epochs`);
what is theirs is the split of the work and the epoch's collectives. Rank 0 alone runs the callback (progress,
time cap) and the stop checks, and broadcasts its decision, so every rank stops after the same epoch. ``run`` is
the multistart run (its seeds are the one-rank fit's for that run)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from xlcf.errors import DivergenceError
from xlcf.train.als import GroupPlan, _half_step, prepare_als
from xlcf.train.collective import DistContext, GradExchange
from xlcf.train.config import TrainConfig
from xlcf.train.devices import make_generator
from xlcf.train.epochs import CODES, GO_ON, STOP_DIVERGED, STOPPED, batch, run_epochs
from xlcf.train.metrics import rmse_of, sum_squared_error
from xlcf.train.multistart import restart_seed
from xlcf.train.optimizers import spec_for
from xlcf.train.progress import Progress
from xlcf.train.result import EpochStats, FitResult, stop_reason
from xlcf.train.trainer import new_model, onecycle_lr

Export = Callable[..., "FitResult | None"]


@dataclass
class Job:
    """What every rank knows about the fit (rank 0 broadcasts it)."""

    config: TrainConfig  # resolved for the global number of training ratings
    n_users: int
    n_movies: int
    n_train: int
    n_valid: int
    mean: float  # mean training rating (float64 numpy mean, as the one-rank fit computes it)
    als_mean: float  # the same through torch (what one-rank ALS puts in its offset)
    sizes: list[dict[str, int]]  # per rank: length of each shard array
    user_ranges: list[tuple[int, int]] | None = None  # ALS: users [lo, hi) each rank owns
    movie_ranges: list[tuple[int, int]] | None = None
    exchange: str = "auto"  # data parallel: auto | dense | sparse gradient exchange
    extra: dict = field(default_factory=dict)  # what the loop reports back (the exchange it chose)


@dataclass
class Shard:
    """One rank's ratings, on its device: (user index, movie index, rating) tensors."""

    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    by_movie: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # ALS: the ratings of the movies it owns
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # indices may be -1 (unknown id)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's shuffling / dropout stream: rank 0 uses the one-rank fit's, the others independent ones."""
    if rank == 0:
        return int(seed) + 1
    return int(np.random.SeedSequence([int(seed), int(rank), 1]).generate_state(1, dtype=np.uint32)[0])


def _bar(ctx: DistContext, progress: bool, total: int, desc: str, run: int = 0):
    if not progress or ctx.rank != 0:
        return None
    from tqdm.auto import tqdm

    desc += f" run {run + 1}" if run else ""
    return tqdm(total=total, desc=f"{desc} x{ctx.world} ranks", unit="epoch", file=sys.stderr, leave=False)


def _eval(ctx: DistContext, model, shard: Shard, job: Job) -> tuple[float, float | None]:
    """(train RMSE, valid RMSE or None) over all ranks' ratings: each rank sums its squared errors."""
    u, m, r = shard.train
    sse = sum_squared_error(model, u, m, r, safe=False)
    vsse = sum_squared_error(model, *shard.valid, safe=True) if shard.valid is not None else 0.0
    sse, vsse = ctx.sum([sse, vsse])
    return rmse_of(sse, job.n_train), (rmse_of(vsse, job.n_valid) if job.n_valid else None)


# ------------------------------------------------------------------------------------------------
# gradient optimizers: data parallel
# ------------------------------------------------------------------------------------------------
def train_data_parallel(
    ctx: DistContext, job: Job, shard: Shard, *, callback, progress: bool, export: Export, run: int = 0
) -> FitResult | None:
    t_start = time.perf_counter()
    cfg, device = job.config, ctx.device
    # The job's config is resolved (every None default filled in) before it is broadcast.
    assert cfg.epochs is not None and cfg.lr is not None and cfg.factors is not None and cfg.batch_size is not None
    spec = spec_for(cfg.optimizer)
    assert spec.build is not None  # als and gibbs, which build no torch optimizer, take their own paths
    model = new_model(cfg, job.n_users, job.n_movies, job.mean, device, init_seed=restart_seed(cfg.seed, run))
    gen = make_generator(device, rank_seed(cfg.seed + run, ctx.rank))
    if cfg.model == "nn":
        model.generator = gen
    params = list(model.parameters())
    exchange = GradExchange(model, ctx)
    hp = {
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay or 0.0,
        "momentum": cfg.momentum,
        "betas": cfg.betas,
        "device_type": device.type,
    }
    optimizer = spec.build(params, hp)
    is_lbfgs = isinstance(optimizer, torch.optim.LBFGS)
    l2 = (cfg.weight_decay or 0.0) if spec.decay == "loss" else 0.0
    u, m, r = shard.train
    n_local = int(r.shape[0])
    sizes = [s["u"] for s in job.sizes]
    full_batch = cfg.batch_size >= job.n_train
    local_bs = max(max(sizes), 1) if full_batch else max(math.ceil(cfg.batch_size / ctx.world), 1)
    steps = math.ceil(max(sizes) / local_bs)
    # The global batch of each step: what every rank has left (shards differ by at most one rating).
    step_total = [sum(min(local_bs, max(n - s * local_bs, 0)) for n in sizes) for s in range(steps)]
    total_steps = cfg.epochs * steps
    # Plain SGD on the embedding models with sparse exchange: update the touched rows in place (as one rank does).
    inplace_sgd = (
        spec.name == "sgd"
        and not callable(cfg.optimizer)
        and cfg.model in ("dot", "bias")
        and not full_batch
        and job.exchange != "dense"
    )
    if inplace_sgd:  # no dense step to pay for: sparse always moves and touches the least
        exchange.sparse = dict.fromkeys(exchange.sparse, True)
    elif not (full_batch or is_lbfgs):  # (a full batch touches every row: dense)
        if job.exchange == "auto":
            probe = torch.randperm(
                n_local, generator=torch.Generator(device=device).manual_seed(cfg.seed), device=device
            )[:local_bs]
            exchange.choose(int(torch.unique(u[probe]).numel()), int(torch.unique(m[probe]).numel()))
        else:
            exchange.sparse = dict.fromkeys(exchange.sparse, job.exchange == "sparse")
    job.extra["exchange"] = {side: ("sparse" if sparse else "dense") for side, sparse in exchange.sparse.items()}

    user_tables = [t for t in (model.user_factors, getattr(model, "user_bias", None)) if t is not None]
    movie_tables = [t for t in (model.movie_factors, getattr(model, "movie_bias", None)) if t is not None]
    step = 0

    def train_epoch():
        nonlocal step
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        sq_sum = torch.zeros((), dtype=torch.float64, device=device)
        if is_lbfgs:
            first: dict = {}

            def closure(first=first):
                loss, mse = model.loss_and_grads(u, m, r, l2)
                first.setdefault("local", (loss, mse))
                exchange.reduce(n_local / job.n_train, None, None)
                total = torch.stack([loss.double(), mse.double()]) * (n_local / job.n_train)
                torch.distributed.all_reduce(total)
                return total[0].to(loss.dtype)

            optimizer.step(closure)
            return loss_sum + first["local"][0] * n_local, sq_sum + first["local"][1] * n_local
        perm = None if full_batch else torch.randperm(n_local, generator=gen, device=device)
        for s in range(steps):
            bu, bm, br = batch(perm, s, local_bs, u, m, r)
            if cfg.schedule == "onecycle":
                for group in optimizer.param_groups:
                    group["lr"] = onecycle_lr(step, total_steps, cfg.lr)
            n_b = int(br.shape[0])
            step += 1
            if inplace_sgd and ctx.world == 1:  # one rank: the one-process in-place step
                loss, mse = model.loss_and_grads(bu, bm, br, l2, sgd_lr=optimizer.param_groups[0]["lr"])
                loss_sum += loss * n_b
                sq_sum += mse * n_b
            elif inplace_sgd:
                if n_b:
                    loss, mse, gu, gm, gub, gmb = model.row_grads(bu, bm, br, l2)
                    loss_sum += loss * n_b
                    sq_sum += mse * n_b
                else:  # this rank's shard ran out a step early: no rows from it
                    gu = gm = torch.zeros(0, cfg.factors, device=device)
                    gub = gmb = torch.zeros(0, device=device) if len(user_tables) > 1 else None
                exchange.sgd_step(
                    optimizer.param_groups[0]["lr"],
                    n_b / step_total[s],
                    [
                        (bu, [gu] + ([gub] if gub is not None else []), user_tables),
                        (bm, [gm] + ([gmb] if gmb is not None else []), movie_tables),
                    ],
                )
            else:
                if n_b:
                    loss, mse = model.loss_and_grads(bu, bm, br, l2)
                    loss_sum += loss * n_b
                    sq_sum += mse * n_b
                else:  # this rank's shard ran out one step early: it adds nothing to this step
                    exchange.flat.zero_()
                exchange.reduce(n_b / step_total[s], bu, bm)
                optimizer.step()
        return loss_sum, sq_sum

    model.train()
    return run_epochs(
        ctx,
        cfg,
        params,
        optimizer,
        train_epoch=train_epoch,
        valid_sse=lambda: sum_squared_error(model, *shard.valid, safe=True) if shard.valid is not None else 0.0,
        evaluate=lambda: _eval(ctx, model, shard, job),
        export=lambda **kw: export(model, cfg, **kw),
        callback=callback,
        bar=Progress(
            cfg.epochs,
            f"{cfg.model}/{spec.name}" + (f" run {run + 1}" if run else "") + f" x{ctx.world} ranks",
            enabled=progress and ctx.rank == 0,
        ),
        n_train=job.n_train,
        n_valid=job.n_valid,
        full_batch=full_batch,
        name=spec.name,
        run=run,
        t_start=t_start,
    )


# ------------------------------------------------------------------------------------------------
# ALS: owner ranks
# ------------------------------------------------------------------------------------------------
def train_als_owners(
    ctx: DistContext, job: Job, shard: Shard, *, callback, progress: bool, export: Export, run: int = 0
) -> FitResult | None:
    t_start = time.perf_counter()
    model = new_model(
        job.config, job.n_users, job.n_movies, job.mean, ctx.device, init_seed=restart_seed(job.config.seed, run)
    )
    cfg, width, dtype = prepare_als(model, job.config, job.als_mean)
    u, m, r = shard.train
    # An owner-partitioned job always has the movie-sorted shard and the ownership ranges.
    assert shard.by_movie is not None and job.user_ranges is not None and job.movie_ranges is not None
    mu, mm, mr = shard.by_movie
    m64, mu64 = m.long(), mu.long()
    user_plan = GroupPlan(u.long(), job.n_users, width)
    movie_plan = GroupPlan(mm.long(), job.n_movies, width)
    ub = getattr(model, "user_bias", None)
    mb = getattr(model, "movie_bias", None)
    user_tables = [model.user_factors] + ([ub] if ub is not None else [])
    movie_tables = [model.movie_factors] + ([mb] if mb is not None else [])
    wd, base = float(cfg.weight_decay or 0.0), float(model.offset)
    history: list[EpochStats] = []
    stopped, prev = None, None
    snapshot = [p.detach().clone() for p in model.parameters()]
    bar = _bar(ctx, progress, cfg.epochs, f"{cfg.model}/als", run)
    try:
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            with torch.no_grad():
                _half_step(model.user_factors, ub, model.movie_factors, mb, m64, r, base, wd, user_plan, dtype)
                ctx.share_rows(user_tables, job.user_ranges)
                _half_step(model.movie_factors, mb, model.user_factors, ub, mu64, mr, base, wd, movie_plan, dtype)
                ctx.share_rows(movie_tables, job.movie_ranges)
            sse = sum_squared_error(model, u, m, r, safe=False)
            vsse = sum_squared_error(model, *shard.valid, safe=True) if shard.valid is not None else 0.0
            sse, vsse = ctx.sum([sse, vsse])
            code = GO_ON
            if ctx.rank == 0:
                if not math.isfinite(sse):
                    code = STOP_DIVERGED
                else:
                    train_rmse = rmse_of(sse, job.n_train)
                    valid_rmse = rmse_of(vsse, job.n_valid) if job.n_valid else None
                    stats = EpochStats(
                        epoch, train_rmse**2, train_rmse, valid_rmse, time.perf_counter() - t_epoch, None, run
                    )
                    history.append(stats)
                    if bar is not None:
                        bar.update(1)
                    reason = stop_reason(callback, stats, prev, sse, 1e-10)
                    if (
                        not reason
                        and cfg.max_seconds is not None
                        and epoch < cfg.epochs
                        and time.perf_counter() - t_start >= cfg.max_seconds
                    ):
                        reason = "time"  # the time cap of the settings, as one rank applies it
                    code = CODES[reason]
            code = ctx.decide(code)
            if code == STOP_DIVERGED:
                with torch.no_grad():
                    for p, s in zip(model.parameters(), snapshot):
                        p.copy_(s)
                tr, _ = _eval(ctx, model, shard, job)
                result = export(
                    model,
                    cfg,
                    history=history,
                    seconds=time.perf_counter() - t_start,
                    train_rmse=tr,
                    valid_rmse=None,
                    stopped="diverged",
                )
                if ctx.rank == 0:
                    raise DivergenceError(
                        f"training diverged at epoch {epoch}: ALS produced non-finite factors; "
                        f"try a larger weight decay (wd)",
                        epoch=epoch,
                        result=result,
                    )
                return None
            with torch.no_grad():
                for p, s in zip(model.parameters(), snapshot):
                    s.copy_(p)
            if code != GO_ON:
                stopped = STOPPED[code]
                break
            prev = sse
    finally:
        if bar is not None:
            bar.close()
    tr, va = _eval(ctx, model, shard, job)
    return export(
        model,
        cfg,
        history=history,
        seconds=time.perf_counter() - t_start,
        train_rmse=tr,
        valid_rmse=va,
        stopped=stopped,
    )
