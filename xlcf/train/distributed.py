"""Distributed training on ``torch.distributed``: several processes, GPUs or hosts fit one model, with the same
``FitResult`` as a one-process fit.

Start it with ``xlcf train RATINGS --nproc N`` (N local ranks through torch's elastic launcher, :func:`launch`)
or under ``torchrun --nnodes H --nproc-per-node N -m xlcf train RATINGS`` on several hosts. Every rank calls
:func:`fit_distributed` (or :func:`fit_arrays_distributed`); what happens then:

1. rank 0 reads, splits and encodes the ratings (the vocabularies stay on rank 0) and broadcasts the plan of the
   fit (:class:`~xlcf.train.dist_solvers.Job`): sizes, global mean, resolved settings;
2. rank 0 cuts the training ratings into one shard per rank — at random for the gradient optimizers, by owned
   users and owned movies for ALS and the Bayesian sampler — and sends each rank its shard (and a share of the
   validation ratings);
3. every rank runs the solver's loop (:mod:`xlcf.train.dist_solvers`, :mod:`xlcf.train.dist_gibbs`), exchanging
   only gradients or factor rows (and, for the sampler, small sums); with restarts, once per run, rank 0 keeping
   the score;
4. rank 0 returns the ``FitResult`` (the others return None): the model is complete on rank 0, so workbooks are
   written exactly as after a one-process fit.

A failure ends the job rather than hanging it: an error on rank 0 (bad input, divergence) reaches every rank
through the next broadcast; a rank that dies or stops answering makes the others' collectives fail (at the
latest after ``timeout`` seconds), and :func:`launch` turns the launcher's report into one readable line.

Solvers: :data:`SOLVERS` maps an optimizer name to its distributed loop and the way it shards the ratings; a new
algorithm adds itself with :func:`register_solver` — for one that solves or draws rows given the other side,
``shard="owner"`` gives each rank its users' and its movies' ratings, as ALS and the sampler use them."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import xlcf.errors as errors
from xlcf.errors import ConfigError, DivergenceError, TrainingError, XlcfError
from xlcf.train.collective import DEFAULT_TIMEOUT_S, DistContext, launched
from xlcf.train.config import TrainConfig
from xlcf.train.dist_gibbs import train_gibbs_owners
from xlcf.train.dist_solvers import Job, Shard, train_als_owners, train_data_parallel
from xlcf.train.optimizers import spec_for
from xlcf.train.result import FitResult

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SOLVERS",
    "DistContext",
    "fit_arrays_distributed",
    "fit_distributed",
    "launch",
    "launched",
    "register_solver",
]

SHARD_KINDS = ("random", "owner")
EXCHANGES = ("auto", "dense", "sparse")
TRAIN, BY_MOVIE, VALID = ("u", "m", "r"), ("mu", "mm", "mr"), ("vu", "vm", "vr")


@dataclass(frozen=True)
class DistributedSolver:
    """A distributed training loop and how it wants the ratings cut: ``"random"`` (each rank a random share,
    for data-parallel gradient steps) or ``"owner"`` (rank i owns a block of users and a block of movies and
    gets all their ratings, grouped both ways)."""

    shard: str
    train: Callable  # train(ctx, job, shard, *, callback, progress, export, run) -> FitResult | None


SOLVERS: dict[str, DistributedSolver] = {
    "als": DistributedSolver("owner", train_als_owners),
    "gibbs": DistributedSolver("owner", train_gibbs_owners),
}


def register_solver(name: str, shard: str, train: Callable) -> DistributedSolver:
    """Make optimizer ``name`` trainable on several ranks with the loop ``train`` (see :class:`DistributedSolver`)."""
    if shard not in SHARD_KINDS:
        raise ConfigError(f"unknown shard kind {shard!r}; valid: {', '.join(SHARD_KINDS)}")
    SOLVERS[name] = DistributedSolver(shard, train)
    return SOLVERS[name]


def solver_for(config: TrainConfig) -> DistributedSolver:
    name = config.optimizer_name
    if not callable(config.optimizer) and name in SOLVERS:
        return SOLVERS[name]
    if spec_for(config.optimizer).build is not None:  # any torch optimizer: data parallel
        return DistributedSolver("random", train_data_parallel)
    from xlcf.train.optimizers import OPTIMIZERS

    ok = sorted(n for n in OPTIMIZERS if n in SOLVERS or OPTIMIZERS[n].build is not None)
    raise ConfigError(
        f"optimizer {name!r} does not train on several ranks; use one of: {', '.join(ok)}, "
        f"or a single process (no --nproc)",
        field="optimizer",
    )


# ------------------------------------------------------------------------------------------------
# public entry points (collective: every rank calls them)
# ------------------------------------------------------------------------------------------------
def fit_distributed(
    ratings_df=None,
    config: TrainConfig | None = None,
    *,
    valid_df=None,
    loader=None,
    callback=None,
    progress: bool = False,
    context: DistContext | None = None,
    on_start=None,
    exchange: str = "auto",
) -> FitResult | None:
    """Like :func:`xlcf.train.fit`, on every rank of a job. Rank 0 passes the ratings and the settings (the
    other ranks' arguments are ignored: they get rank 0's); rank 0 gets the FitResult, the others None.

    ``loader``, instead of ``ratings_df``: a function rank 0 calls to read the data, returning (ratings_df,
    valid_df or None); an error it raises (a bad file) ends every rank with that error.
    ``callback`` runs on rank 0 after each epoch; returning False stops every rank. ``on_start(shards)`` runs on
    rank 0 once every rank holds its shard (``shards``: per rank a dict with n_train, n_valid...).
    ``exchange``: how data-parallel ranks sum the embedding gradients — ``auto`` (per table, whichever moves
    fewer bytes), ``dense`` (all-reduce the tables) or ``sparse`` (all-gather the touched rows)."""

    def prepare():
        from xlcf.train.engine import encode_for_fit

        cfg = config or TrainConfig()
        frame, valid_frame = loader() if loader is not None else (ratings_df, valid_df)
        enc, valid, rated = encode_for_fit(frame, cfg, valid_frame)
        return _Data(
            enc.user_index,
            enc.movie_index,
            enc.rating,
            len(enc.users),
            len(enc.movies),
            valid,
            enc.users,
            enc.movies,
            rated,
            cfg,
            exchange,
        )

    return _fit(prepare, callback, progress, context, on_start)


def fit_arrays_distributed(
    user_index=None,
    movie_index=None,
    rating=None,
    n_users: int = 0,
    n_movies: int = 0,
    config: TrainConfig | None = None,
    *,
    valid=None,
    users=None,
    movies=None,
    callback=None,
    progress: bool = False,
    context: DistContext | None = None,
    on_start=None,
    exchange: str = "auto",
) -> FitResult | None:
    """Like :func:`xlcf.train.fit_arrays` (all given ratings are training data), on every rank of a job;
    only rank 0's arrays and settings are used."""

    def prepare():
        from xlcf.train.engine import checked_arrays

        u, m, r, us, ms = checked_arrays(user_index, movie_index, rating, n_users, n_movies, users, movies)
        return _Data(
            u, m, r, int(n_users), int(n_movies), valid, us, ms, (u, m), config or TrainConfig(valid_pct=0), exchange
        )

    return _fit(prepare, callback, progress, context, on_start)


@dataclass
class _Data:
    """Rank 0's whole data set, encoded."""

    u: np.ndarray
    m: np.ndarray
    r: np.ndarray
    n_users: int
    n_movies: int
    valid: tuple | None
    users: object
    movies: object
    rated: tuple
    config: TrainConfig
    exchange: str = "auto"


def _fit(prepare, callback, progress, context, on_start=None):
    from xlcf.train.trainer import _warm_imports

    ctx = context or DistContext.from_env()
    _warm_imports()
    try:
        job, shard, data = _distribute(ctx, prepare)
        solver = solver_for(job.config)
        export = _exporter(ctx, job, data)
        if on_start is not None and ctx.rank == 0:
            on_start(shard_summary(job))
        threads = job.config.threads
        if ctx.device.type == "cpu":  # the host's cores, shared by its ranks
            import os

            torch.set_num_threads(threads or max((os.cpu_count() or 1) // max(ctx.local_world, 1), 1))

        def train_run(run: int, run_callback):
            return solver.train(ctx, job, shard, callback=run_callback, progress=progress, export=export, run=run)

        return _multistart(ctx, job, train_run, callback if ctx.rank == 0 else None)
    except RuntimeError as err:  # a collective failed: another rank died, hung past the timeout, or lost its link
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        if not (
            isinstance(err, getattr(torch.distributed, "DistError", ()))
            or any(word in first for word in ("gloo", "nccl", "NCCL", "Connection", "Timed out", "timed out"))
        ):
            raise
        raise TrainingError(
            f"rank {ctx.rank} of {ctx.world}: a collective operation failed ({first}); another rank "
            f"stopped or did not answer within {ctx.timeout:g} s"
        ) from err


def _multistart(ctx: DistContext, job: Job, train_run, callback) -> FitResult | None:
    """Run 0, then up to ``restarts`` runs from fresh random starts, the best kept — as one process does
    (:func:`xlcf.train.multistart.multistart`). Rank 0 keeps the score and decides, after each run, whether the
    ranks go on; a restart that diverges is skipped, run 0 diverging ends the fit with its error."""
    from xlcf.train.multistart import Runs

    restarts = job.config.restarts or 0
    if not restarts:
        return train_run(0, callback)
    runs = Runs(callback) if ctx.rank == 0 else None
    for run in range(restarts + 1):
        error = None
        try:
            res = train_run(run, runs.callback if runs is not None else None)
        except DivergenceError as err:  # (raised on rank 0 only; the others returned None)
            assert runs is not None
            if run == 0:
                error = err
            else:
                runs.diverged(run, err.epoch)
        else:
            if runs is not None:
                runs.add(res, run)
        go = runs is not None and error is None and run < restarts and runs.go_on()
        if not ctx.decide(int(go)):
            if error is not None:
                raise error
            break
    return runs.result() if runs is not None else None


def shard_summary(job: Job) -> list[dict]:
    """Per rank: its number of training and validation ratings (and for ALS of ratings grouped by its movies)."""
    return [
        {"rank": i, "n_train": s["u"], "n_valid": s["vu"], **({"n_train_by_movie": s["mu"]} if s["mu"] else {})}
        for i, s in enumerate(job.sizes)
    ]


def _exporter(ctx: DistContext, job: Job, data):
    from xlcf.train.trainer import _export

    def export(model, cfg, build=None, **kw):
        """Rank 0's FitResult of ``model`` (``build``, instead: a function of the data's vocabularies that
        makes it, for a solver whose result is not a model's parameters, like the sampler's)."""
        if ctx.rank != 0:
            return None
        common = dict(
            users=data.users,
            movies=data.movies,
            mean=job.mean,
            device=ctx.device,
            n_train=job.n_train,
            rated=data.rated,
        )
        res = build(**common) if build is not None else _export(model, cfg, n_valid=job.n_valid, **common, **kw)
        shards = shard_summary(job)
        if "exchange" in job.extra:  # data parallel: how each side's gradients were summed
            for sh in shards:
                sh["exchange"] = dict(job.extra["exchange"])
        res.ranks, res.shards = ctx.world, shards
        res.device = f"{res.device} x{ctx.world} ranks ({ctx.backend})"
        return res

    return export


# ------------------------------------------------------------------------------------------------
# rank 0 cuts the data, every rank receives its shard
# ------------------------------------------------------------------------------------------------
def _distribute(ctx: DistContext, prepare) -> tuple[Job, Shard, _Data | None]:
    data: _Data | None = None
    parts: list[dict] | None = None
    job: Job | None = None
    failure = None
    if ctx.rank == 0:
        error = None
        try:
            data = prepare()
            job, parts = _plan(ctx.world, data)
        except XlcfError as err:
            error, job = err, None
            failure = (type(err).__name__, err.message, err.where, err.field)
        ctx.broadcast_object((failure, job))
        if error is not None:
            raise error
    else:
        failure, job = ctx.broadcast_object()
        if failure:  # rank 0's error, on every rank (marked, so front ends report it once)
            cls = getattr(errors, failure[0], XlcfError)
            mirrored = cls(failure[1], where=failure[2], field=failure[3])
            mirrored.from_rank0 = True  # type: ignore[union-attr]  # a marker attribute, read with getattr
            raise mirrored
    assert job is not None  # without a job, rank 0 raised its error and the other ranks a copy of it
    idt = np.int32 if max(job.n_users, job.n_movies) < 2**31 - 1 else np.int64
    names = TRAIN + BY_MOVIE + VALID
    dtypes = [idt, idt, np.float32] * 3
    if ctx.rank == 0:
        assert parts is not None  # rank 0 planned the job (or raised above)
        for dst in range(1, ctx.world):
            ctx.send_arrays(dst, [np.ascontiguousarray(parts[dst][n], dtype=d) for n, d in zip(names, dtypes)])
        mine = [np.asarray(parts[0][n], dtype=d) for n, d in zip(names, dtypes)]
    else:
        mine = ctx.recv_arrays([(job.sizes[ctx.rank][n], d) for n, d in zip(names, dtypes)])
    dev = ctx.device
    as_t = [torch.as_tensor(a).to(dev) for a in mine]
    owner = solver_for(job.config).shard == "owner"
    shard = Shard(
        train=(as_t[0], as_t[1], as_t[2]),
        by_movie=(as_t[3], as_t[4], as_t[5]) if owner else None,
        valid=(as_t[6].long(), as_t[7].long(), as_t[8]) if job.sizes[ctx.rank]["vu"] else None,
    )
    return job, shard, data


def _plan(world: int, data: _Data) -> tuple[Job, list[dict]]:
    """The job every rank must know, and each rank's arrays (rank 0 only)."""
    config = data.config
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig; got {type(config).__name__}")
    if data.exchange not in EXCHANGES:
        raise ConfigError(f"unknown exchange {data.exchange!r}; valid: {', '.join(EXCHANGES)}", field="exchange")
    n_train = int(len(data.r))
    solver = solver_for(config)
    resolved = config.resolve(n_train)
    r = np.asarray(data.r, dtype=np.float32)
    mean = float(np.mean(r, dtype=np.float64))
    als_mean = float(torch.as_tensor(r).double().mean())
    u, m = np.asarray(data.u), np.asarray(data.m)
    empty_i, empty_f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    parts: list[dict[str, Any]] = [dict.fromkeys(TRAIN + BY_MOVIE + VALID) for _ in range(world)]
    user_ranges = movie_ranges = None
    if solver.shard == "owner":
        user_ranges = _balanced_ranges(u, data.n_users, world)
        movie_ranges = _balanced_ranges(m, data.n_movies, world)
        for j in range(world):
            keep = (u >= user_ranges[j][0]) & (u < user_ranges[j][1])  # file order kept within a shard
            parts[j].update(u=u[keep], m=m[keep], r=r[keep])
            keep = (m >= movie_ranges[j][0]) & (m < movie_ranges[j][1])
            parts[j].update(mu=u[keep], mm=m[keep], mr=r[keep])
    else:
        rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 7]))
        for j, idx in enumerate(np.array_split(rng.permutation(n_train), world)):
            parts[j].update(u=u[idx], m=m[idx], r=r[idx], mu=empty_i, mm=empty_i, mr=empty_f)
    if data.valid is not None and len(data.valid[2]):
        vu, vm, vr = (np.asarray(a) for a in data.valid)
        for j, idx in enumerate(np.array_split(np.arange(len(vr)), world)):
            parts[j].update(vu=vu[idx], vm=vm[idx], vr=np.asarray(vr[idx], dtype=np.float32))
        n_valid = int(len(vr))
    else:
        for p in parts:
            p.update(vu=empty_i, vm=empty_i, vr=empty_f)
        n_valid = 0
    sizes = [{k: int(len(v)) for k, v in p.items()} for p in parts]
    job = Job(
        config=resolved,
        n_users=int(data.n_users),
        n_movies=int(data.n_movies),
        n_train=n_train,
        n_valid=n_valid,
        mean=mean,
        als_mean=als_mean,
        sizes=sizes,
        user_ranges=user_ranges,
        movie_ranges=movie_ranges,
        exchange=data.exchange,
    )
    return job, parts


def _balanced_ranges(index: np.ndarray, n: int, world: int) -> list[tuple[int, int]]:
    """``world`` contiguous ranges of 0..n-1 holding about the same number of ratings each."""
    cum = np.cumsum(np.bincount(index, minlength=n))
    total = int(cum[-1]) if n else 0
    cuts = [0] + [int(np.searchsorted(cum, total * j / world, side="left")) + 1 for j in range(1, world)] + [n]
    cuts = np.minimum(np.maximum.accumulate(np.asarray(cuts)), n).tolist()
    return [(int(cuts[j]), int(cuts[j + 1])) for j in range(world)]


# ------------------------------------------------------------------------------------------------
# launching N local ranks
# ------------------------------------------------------------------------------------------------
def launch(nproc: int, fn: Callable, *args, timeout: float = DEFAULT_TIMEOUT_S) -> dict[int, Any]:
    """Run ``fn(*args)`` on ``nproc`` local ranks through torch's elastic launcher (what torchrun uses) and
    return {rank: fn's return value}. ``fn`` must be importable (a module-level function). A rank that fails
    or dies stops the job: TrainingError names it and says why."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be a whole number >= 1; got {nproc!r}", field="--nproc")
    for name in ("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the failure is reported below, as one line
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
        rdzv_timeout=int(math.ceil(timeout)),
    )
    try:
        return elastic_launch(config, _entry)(fn, *args)
    except ChildFailedError as err:
        raise TrainingError(failure_message(err, nproc)) from None


def _entry(fn, *args):
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(fn)(*args)


def failure_message(err, nproc: int) -> str:
    """One line from the launcher's ChildFailedError: which rank failed first and how."""
    first_rank, first = err.get_first_failure()
    parts = [_describe(first_rank, first, nproc)]
    others = sorted(r for r in err.failures if r != first_rank)
    if others:
        parts.append(f"rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} also stopped")
    return "; ".join(parts) + "; the job was stopped"


def _describe(rank: int, failure, nproc: int) -> str:
    who = f"rank {rank} of {nproc} (pid {failure.pid})"
    if failure.exitcode is not None and failure.exitcode < 0:
        return f"{who} was killed by {failure.signal_name()}"
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    text = (str(message).strip().splitlines() or [""])[0][:300]
    if text and "To enable traceback" not in text:
        return f"{who} failed: {text}"
    return f"{who} exited with code {failure.exitcode}"
