"""RMSE of a model over index/rating tensors, in float64 and in chunks (shared by every training loop)."""

from __future__ import annotations

import math

import torch

EVAL_CHUNK = 1 << 18  # ratings per evaluation chunk: bounds the temporaries (chunk x factors)


@torch.no_grad()
def sum_squared_error(model, u: torch.Tensor, m: torch.Tensor, r: torch.Tensor, safe: bool) -> float:
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=r.device)
    for start in range(0, r.shape[0], EVAL_CHUNK):
        sl = slice(start, start + EVAL_CHUNK)
        pred = model.forward_safe(u[sl], m[sl]) if safe else model(u[sl], m[sl])
        total += (pred - r[sl]).double().square().sum()
    model.train(was_training)
    return float(total)


def rmse_of(sse: float, n: int) -> float:
    return math.sqrt(sse / n) if n else float("nan")


def train_rmse_of(model, u: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> float:
    """RMSE over the training ratings (every index known)."""
    return rmse_of(sum_squared_error(model, u, m, r, safe=False), int(r.shape[0]))


def valid_rmse_of(model, vu, vm, vr) -> float | None:
    """RMSE over the validation ratings (indices may be -1 = unknown id), or None without any."""
    if vr is None or int(vr.shape[0]) == 0:
        return None
    return rmse_of(sum_squared_error(model, vu, vm, vr, safe=True), int(vr.shape[0]))
