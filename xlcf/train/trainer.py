"""The training loop: one engine for the 15x15 sheet and for millions of ratings, on any device.

Design (why it is fast without a DataLoader):
- the ratings live on the device as three flat tensors (int32 user/movie indices, float32 ratings);
- each epoch draws one permutation on the device from an explicit ``torch.Generator`` and slices it into
  batches, so there is no per-item Python overhead and no host<->device copy per batch;
- small data (<= FULL_BATCH_MAX ratings, e.g. a sheet) runs full batch: every rating in every step;
- train RMSE (running, over the epoch's batches) and validation RMSE are recorded every epoch;
- a divergence guard checks the loss and the weights after every epoch and restores the last finite
  parameters before raising ``DivergenceError``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from xlcf.models import EmbeddingNet, build_model, offset_for
from xlcf.train.config import TrainConfig
from xlcf.train.devices import make_generator, resolve_device
from xlcf.train.epochs import OneProcess, batch, run_epochs
from xlcf.train.memory import check_memory
from xlcf.train.metrics import sum_squared_error, train_rmse_of, valid_rmse_of
from xlcf.train.multistart import multistart
from xlcf.train.optimizers import spec_for
from xlcf.train.progress import Progress
from xlcf.train.result import FitResult, InitialParams

# ------------------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def onecycle_lr(
    step: int, total: int, lr_max: float, warm: float = 0.25, div: float = 25.0, final_div: float = 1e4
) -> float:
    """One-cycle: cosine warm-up from lr/div to lr over ``warm`` of the steps, then cosine down to lr/final_div."""
    warm_steps = max(int(total * warm), 1)
    if step < warm_steps:
        t = step / warm_steps
        start = lr_max / div
        return start + (lr_max - start) * (1 - math.cos(math.pi * t)) / 2
    t = (step - warm_steps) / max(total - warm_steps, 1)
    end = lr_max / final_div
    return end + (lr_max - end) * (1 + math.cos(math.pi * t)) / 2


def _index_dtype(n: int) -> torch.dtype:
    return torch.int32 if n < 2**31 - 1 else torch.int64


def _load_init(model, init: InitialParams) -> None:
    with torch.no_grad():
        model.user_factors.copy_(torch.as_tensor(init.user_factors, dtype=torch.float32))
        model.movie_factors.copy_(torch.as_tensor(init.movie_factors, dtype=torch.float32))
        if hasattr(model, "user_bias"):
            if init.user_bias is not None:
                model.user_bias.copy_(torch.as_tensor(init.user_bias, dtype=torch.float32))
            if init.movie_bias is not None:
                model.movie_bias.copy_(torch.as_tensor(init.movie_bias, dtype=torch.float32))


def new_model(cfg: TrainConfig, n_users: int, n_movies: int, mean: float, device, *, init=None, init_seed=None):
    """The model of a fit on ``device``: initialised from a CPU generator seeded with ``init_seed`` (default
    ``cfg.seed``), so every device and every rank of a distributed fit starts from the same weights, then
    overwritten by the warm start ``init`` when one is given."""
    assert cfg.factors is not None  # fits build their model from a resolved config
    offset = offset_for(mean, cfg.y_range) if cfg.global_mean else 0.0
    model = build_model(
        cfg.model,
        n_users,
        n_movies,
        cfg.factors,
        y_range=cfg.y_range,
        offset=offset,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
    )
    init_gen = torch.Generator().manual_seed(int(cfg.seed if init_seed is None else init_seed))
    assert cfg.init_scale is not None, "a resolved config has every hyper-parameter"
    model.init_random(init_gen, scheme=cfg.init, scale=cfg.init_scale)
    if init is not None:
        _load_init(model, init)
    return model.to(device)


def _export(
    model,
    cfg: TrainConfig,
    *,
    users,
    movies,
    mean,
    history,
    device,
    seconds,
    train_rmse,
    valid_rmse,
    stopped,
    n_train,
    n_valid,
    rated,
    params=None,
) -> FitResult:
    """FitResult from the model (or from ``params``, a snapshot of its parameters in the same order)."""
    named = dict(model.named_parameters())
    if params is not None:
        named = dict(zip(named.keys(), params))
    as_np = lambda t: t.detach().to("cpu", torch.float64).numpy().copy()
    layers = None
    if cfg.model == "nn":
        # The effective dense weights (see EmbeddingNet.dense); the nn's biases go out as user/movie_bias.
        layers = {key: as_np(value) for key, value in model.dense(named).items()}
    return FitResult(
        config=cfg,
        users=users,
        movies=movies,
        user_factors=as_np(named["user_factors"]),
        movie_factors=as_np(named["movie_factors"]),
        user_bias=as_np(named["user_bias"]) if "user_bias" in named else None,
        movie_bias=as_np(named["movie_bias"]) if "movie_bias" in named else None,
        global_mean=float(mean),
        history=list(history),
        device=str(device),
        fit_seconds=float(seconds),
        train_rmse=float(train_rmse),
        valid_rmse=None if valid_rmse is None else float(valid_rmse),
        stopped_reason=stopped,
        offset=float(model.offset),
        layers=layers,
        n_train=int(n_train),
        n_valid=int(n_valid),
        rated_user_index=rated[0],
        rated_movie_index=rated[1],
    )


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def _warm_imports() -> None:
    """torch.optim imports torch._dynamo (~1.4 s) the first time an optimizer is built: do it before the
    clock starts, so fit_seconds measures training, not imports."""
    import torch._dynamo  # noqa: F401


def train(u_np, m_np, r_np, n_users, n_movies, config: TrainConfig, **kw) -> FitResult:
    """The torch engine: train on index arrays (validated by ``xlcf.train.engine``), multistart included.

    ``kw``: valid, init, callback, progress, users, movies, rated (see ``xlcf.train.engine.fit_arrays``)."""
    from xlcf.train.config import SMALL_DATA

    _warm_imports()
    threads = config.threads
    if threads is None and len(r_np) < SMALL_DATA and resolve_device(config.device).type == "cpu":
        threads = 1
    if threads is None or threads == torch.get_num_threads():
        return multistart(_train_impl, u_np, m_np, r_np, n_users, n_movies, config, **kw)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return multistart(_train_impl, u_np, m_np, r_np, n_users, n_movies, config, **kw)
    finally:
        torch.set_num_threads(previous)


def _train_impl(
    u_np,
    m_np,
    r_np,
    n_users,
    n_movies,
    config: TrainConfig,
    *,
    valid,
    init,
    callback,
    progress,
    users,
    movies,
    rated,
    init_seed: int | None = None,
    run: int = 0,
) -> FitResult:
    t_start = time.perf_counter()
    n_train = int(len(r_np))
    cfg = config.resolve(n_train)
    if init is not None:
        init = init.checked(n_users, n_movies, cfg.model)
        if init.user_factors.shape[1] != cfg.factors:  # the sheet's block decides k
            cfg = cfg.replace(factors=int(init.user_factors.shape[1]))
    device = resolve_device(cfg.device)
    check_memory(n_users, n_movies, n_train, cfg, device)  # refuse before allocating, not killed while allocating
    spec = spec_for(cfg.optimizer)
    mean = float(np.mean(r_np, dtype=np.float64))
    if spec.name == "gibbs":
        from xlcf.train.gibbs_train import train_gibbs

        return train_gibbs(
            u_np,
            m_np,
            r_np,
            n_users,
            n_movies,
            cfg,
            valid=valid,
            init=init,
            callback=callback,
            progress=progress,
            users=users,
            movies=movies,
            rated=rated,
            device=device,
            mean=mean,
            t_start=t_start,
            run=run,
        )

    model = new_model(cfg, n_users, n_movies, mean, device, init=init, init_seed=init_seed)
    gen = make_generator(device, cfg.seed + 1 + run)
    if isinstance(model, EmbeddingNet):
        model.generator = gen

    idt = _index_dtype(max(n_users, n_movies))
    u = torch.as_tensor(np.ascontiguousarray(u_np)).to(device=device, dtype=idt)
    m = torch.as_tensor(np.ascontiguousarray(m_np)).to(device=device, dtype=idt)
    r = torch.as_tensor(np.ascontiguousarray(r_np, dtype=np.float32)).to(device)
    vu: torch.Tensor | None
    vm: torch.Tensor | None
    vr: torch.Tensor | None
    if valid is not None and len(valid[2]):
        vu = torch.as_tensor(np.asarray(valid[0])).to(device=device, dtype=torch.int64)
        vm = torch.as_tensor(np.asarray(valid[1])).to(device=device, dtype=torch.int64)
        vr = torch.as_tensor(np.asarray(valid[2], dtype=np.float32)).to(device)
        n_valid = int(vr.shape[0])
    else:
        vu = vm = vr = None
        n_valid = 0

    common = dict(users=users, movies=movies, mean=mean, device=device, n_train=n_train, n_valid=n_valid, rated=rated)
    if spec.name == "als":
        from xlcf.train.als import train_als

        return train_als(
            model,
            cfg,
            u,
            m,
            r,
            vu,
            vm,
            vr,
            callback=callback,
            progress=progress,
            t_start=t_start,
            run=run,
            export=lambda cfg, **kw: _export(model, cfg, **common, **kw),
        )

    assert spec.build is not None and cfg.lr is not None and cfg.epochs is not None and cfg.batch_size is not None
    params = list(model.parameters())
    hp = {
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay or 0.0,
        "momentum": cfg.momentum,
        "betas": cfg.betas,
        "device_type": device.type,
    }
    optimizer = spec.build(params, hp)
    l2 = (cfg.weight_decay or 0.0) if spec.decay == "loss" else 0.0
    full_batch = cfg.batch_size >= n_train
    bs = n_train if full_batch else int(cfg.batch_size)
    steps_per_epoch = math.ceil(n_train / bs)
    total_steps = cfg.epochs * steps_per_epoch
    # Plain SGD on the embedding models: apply the step in place to the touched rows (see DotModel).
    sparse_sgd = spec.name == "sgd" and not callable(cfg.optimizer) and cfg.model in ("dot", "bias")
    step = 0

    def train_epoch():
        nonlocal step
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        sq_sum = torch.zeros((), dtype=torch.float64, device=device)
        if isinstance(optimizer, torch.optim.LBFGS):
            holder: dict = {}

            def closure(holder=holder):
                loss, mse = model.loss_and_grads(u, m, r, l2)
                holder.setdefault("first", (loss, mse))
                return loss

            optimizer.step(closure)
            return loss_sum + holder["first"][0] * n_train, sq_sum + holder["first"][1] * n_train
        perm = None if full_batch else torch.randperm(n_train, generator=gen, device=device)
        for s in range(steps_per_epoch):
            bu, bm, br = batch(perm, s, bs, u, m, r)
            if cfg.schedule == "onecycle":
                lr_now = onecycle_lr(step, total_steps, cfg.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr_now
            if sparse_sgd:
                loss, mse = model.loss_and_grads(bu, bm, br, l2, sgd_lr=optimizer.param_groups[0]["lr"])
            else:
                loss, mse = model.loss_and_grads(bu, bm, br, l2)
                optimizer.step()
            step += 1
            n_b = br.shape[0]
            loss_sum += loss * n_b
            sq_sum += mse * n_b
        return loss_sum, sq_sum

    def valid_sse() -> float:
        return 0.0 if vu is None or vm is None or vr is None else sum_squared_error(model, vu, vm, vr, safe=True)

    model.train()
    result = run_epochs(
        OneProcess(),
        cfg,
        params,
        optimizer,
        train_epoch=train_epoch,
        valid_sse=valid_sse,
        evaluate=lambda: (train_rmse_of(model, u, m, r), valid_rmse_of(model, vu, vm, vr)),
        export=lambda **kw: _export(model, cfg, **common, **kw),
        callback=callback,
        bar=Progress(cfg.epochs, f"{cfg.model}/{spec.name}" + (f" run {run + 1}" if run else ""), enabled=progress),
        n_train=n_train,
        n_valid=n_valid,
        full_batch=full_batch,
        name=spec.name,
        run=run,
        t_start=t_start,
    )
    assert result is not None  # one process is rank 0: it gets the result (or the error)
    return result
