"""The epoch loop of the gradient optimizers, one for a one-process fit and for the ranks of a data-parallel
fit: after each epoch the loss, squared-error and validation sums (summed over the ranks), the divergence guard
(the last finite parameters restored), the history, the callback, the stop checks (converged, plateau, time
cap) — decided by rank 0 alone and broadcast, so every rank stops after the same epoch — and the final result.
What differs between the two, the steps of an epoch, is the caller's ``train_epoch``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from xlcf.catalog import suggested_lr
from xlcf.errors import DivergenceError
from xlcf.train.metrics import rmse_of
from xlcf.train.result import EpochStats, FitResult, stop_reason

# Divergence guard: a weight this large means the steps are blowing up (ratings are 0.5..5).
MAX_ABS_WEIGHT = 1e3
# ... and so does a training loss this many times the starting loss.
EXPLODE_FACTOR = 1e4
# Full-batch gradient runs stop when the loss fell by less than this fraction over the last WINDOW epochs.
CONVERGED_WINDOW = 100
CONVERGED_RTOL = 1e-6

# What rank 0 decides after each epoch (broadcast to every rank of a distributed fit).
GO_ON, STOP_CALLBACK, STOP_CONVERGED, STOP_DIVERGED, STOP_TIME = 0, 1, 2, 3, 4
STOPPED = {STOP_CALLBACK: "callback", STOP_CONVERGED: "converged", STOP_TIME: "time"}
CODES = {None: GO_ON, "callback": STOP_CALLBACK, "converged": STOP_CONVERGED, "time": STOP_TIME}


class OneProcess:
    """The ranks as the loop sees them, for a fit in one process: nothing to sum, no one else to tell.
    (A distributed fit passes its :class:`~xlcf.train.collective.DistContext`, which has the same three.)"""

    rank = 0

    def sum(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]

    def decide(self, code: int) -> int:
        return code


def batch(perm, step: int, size: int, u, m, r):
    """The ratings of mini-batch ``step`` of an epoch shuffled by ``perm`` (all of them when ``perm`` is None)."""
    if perm is None:
        return u, m, r
    idx = perm[step * size : (step + 1) * size]
    return u.index_select(0, idx), m.index_select(0, idx), r.index_select(0, idx)


def divergence(params, epoch_loss: float, start_loss: float | None) -> str:
    """Why training is diverging after an epoch ("" when it is not): non-finite or huge weights, a non-finite
    loss, or a loss many times the first epoch's."""
    ok, why = _params_ok(params)
    if ok and not math.isfinite(epoch_loss):
        ok, why = False, "the loss became NaN/infinite"
    if ok and start_loss is not None and epoch_loss > EXPLODE_FACTOR * max(start_loss, 1e-3):
        ok, why = False, f"the loss exploded ({start_loss:.4g} -> {epoch_loss:.4g})"
    return "" if ok else why


def diverged_error(epoch: int, why: str, optimizer: str, cfg, result, *, full_batch: bool = False) -> DivergenceError:
    """The error of a gradient fit that diverged at ``epoch`` (``result``: the last finite parameters); the lr it
    suggests is the optimizer's default for the regime when the fit ran above it, else a tenth."""
    lr_txt = f"{cfg.lr:g}" if cfg.lr else "?"
    cause = (
        f"training diverged at epoch {epoch}: {why} with optimizer {optimizer} and lr {lr_txt}; "
        f"try a smaller lr (e.g. {suggested_lr(optimizer, cfg.lr or 0.0, full_batch=full_batch):g})"
    )
    return DivergenceError(
        f"{cause}; the parameters of epoch {epoch - 1} were kept", epoch=epoch, result=result, cause=cause
    )


def _params_ok(params) -> tuple[bool, str]:
    # One host sync for all tensors: max |w| over every parameter (NaN propagates through max).
    biggest = float(torch.stack([p.detach().abs().amax() for p in params]).max())
    if not math.isfinite(biggest):
        return False, "weights became NaN/infinite"
    if biggest > MAX_ABS_WEIGHT:
        return False, f"weights exploded (|w| > {MAX_ABS_WEIGHT:g})"
    return True, ""


def run_epochs(
    ranks,
    cfg,
    params: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    train_epoch: Callable[[], tuple],
    valid_sse: Callable[[], float],
    evaluate: Callable[[], tuple[float, float | None]],
    export: Callable[..., FitResult | None],
    callback,
    bar,
    n_train: int,
    n_valid: int,
    full_batch: bool,
    name: str,
    run: int,
    t_start: float,
) -> FitResult | None:
    """Train ``cfg.epochs`` epochs and return ``export(...)`` of the result (rank 0's; None on the others).

    ``train_epoch()`` runs one epoch's steps on this rank and returns its (loss sum, squared-error sum) over its
    ratings; ``valid_sse()`` this rank's validation squared errors; ``evaluate()`` the final (train, valid) RMSE
    over every rank; ``export(history=, seconds=, train_rmse=, valid_rmse=, stopped=)`` the result. ``ranks``:
    :class:`OneProcess` or a distributed fit's context (``sum``, ``decide``, ``rank``)."""
    is_lbfgs = isinstance(optimizer, torch.optim.LBFGS)
    # Plateau stop: full batch, constant lr, and a deterministic loss (no dropout noise).
    plateau_check = (
        full_batch and not is_lbfgs and cfg.schedule == "constant" and (cfg.model != "nn" or max(cfg.dropout) == 0)
    )
    snapshot = [p.detach().clone() for p in params]
    history: list[EpochStats] = []
    stopped, start_loss, prev_loss = None, None, None  # start_loss: the yardstick of "exploding"
    losses: list[float] = []
    try:
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            loss_sum, sq_sum = train_epoch()
            loss_tot, sq_tot, vsse = ranks.sum([float(loss_sum), float(sq_sum), valid_sse()])
            epoch_loss = loss_tot / n_train
            train_rmse = math.sqrt(max(sq_tot / n_train, 0.0)) if math.isfinite(sq_tot) else float("nan")
            valid_rmse = rmse_of(vsse, n_valid) if n_valid else None
            code, why = GO_ON, ""
            if ranks.rank == 0:  # rank 0 alone checks, reports and decides
                why = divergence(params, epoch_loss, start_loss)
                if why:
                    code = STOP_DIVERGED
                else:
                    stats = EpochStats(
                        epoch=epoch,
                        train_loss=epoch_loss,
                        train_rmse=train_rmse,
                        valid_rmse=valid_rmse,
                        seconds=time.perf_counter() - t_epoch,
                        lr=float(optimizer.param_groups[0]["lr"]),
                        run=run,
                    )
                    history.append(stats)
                    bar.update(train_rmse, valid_rmse)
                    # L-BFGS stops making progress once converged: no need to run the rest
                    reason = stop_reason(callback, stats, prev_loss, epoch_loss, 1e-9 if is_lbfgs else None)
                    if (
                        not reason
                        and plateau_check
                        and len(losses) >= CONVERGED_WINDOW
                        # still falling, but by almost nothing: the loss has flattened out
                        and 0 <= losses[-CONVERGED_WINDOW] - epoch_loss <= CONVERGED_RTOL * losses[-CONVERGED_WINDOW]
                    ):
                        reason = "converged"
                    if (
                        not reason
                        and cfg.max_seconds is not None
                        and epoch < cfg.epochs
                        and time.perf_counter() - t_start >= cfg.max_seconds
                    ):
                        reason = "time"
                    code = CODES[reason]
            code = ranks.decide(code)
            if start_loss is None and math.isfinite(epoch_loss):
                start_loss = epoch_loss
            if code == STOP_DIVERGED:
                with torch.no_grad():
                    for p, saved in zip(params, snapshot):
                        p.copy_(saved)
                tr, va = evaluate()
                result = export(
                    history=history,
                    seconds=time.perf_counter() - t_start,
                    train_rmse=tr,
                    valid_rmse=va,
                    stopped="diverged",
                )
                if ranks.rank == 0:
                    raise diverged_error(epoch, why, name, cfg, result, full_batch=full_batch)
                return None
            with torch.no_grad():
                for p, saved in zip(params, snapshot):
                    saved.copy_(p)
            if code != GO_ON:
                stopped = STOPPED[code]
                break
            losses.append(epoch_loss)
            prev_loss = epoch_loss
    finally:
        bar.close()
    tr, va = evaluate()
    return export(history=history, seconds=time.perf_counter() - t_start, train_rmse=tr, valid_rmse=va, stopped=stopped)
