"""Optimizers selectable by name, each with defaults for the two regimes the engine meets:

- **full batch** — small problems such as the 15x15 sheet (every rating in every step, like Solver);
- **mini-batch** — real data (ml-latest-small and up): shuffled batches of ``batch_size`` ratings.

``OPTIMIZERS`` maps a name to an :class:`OptimizerSpec`. ``TrainConfig.optimizer`` may also be a callable
``factory(params, lr) -> torch.optim.Optimizer`` (weight decay is then applied as L2 in the loss), or a name
added with :func:`register_optimizer`.

Weight decay: except for ``adamw`` (decoupled decay, as torch implements it), ``weight_decay`` is an L2
penalty **per rating in the loss** — ``wd * (|u|^2 + |m|^2 + b_u^2 + b_m^2)`` for the rows a rating uses —
as Surprise's SVD does. Rows only pay for the ratings they appear in, so rare movies are not shrunk by
steps that never touched them (global decay would).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# Which hyper-parameters an optimizer understands (others are ignored, and the docs say so).
HYPER = ("lr", "epochs", "weight_decay", "batch_size", "schedule", "momentum", "betas", "restarts")


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    description: str
    build: Callable[..., torch.optim.Optimizer] | None  # None: not a torch optimizer (als)
    full_batch: dict[str, Any]  # defaults when every rating is in every step
    mini_batch: dict[str, Any]  # defaults for shuffled mini-batches
    decay: str = "loss"  # "loss": per-rating L2 in the loss; "optimizer": the optimizer's own (decoupled) decay
    full_batch_only: bool = False
    uses: tuple[str, ...] = field(default=("lr",))
    nn_mini_batch: dict[str, Any] = field(default_factory=dict)  # overrides of mini_batch for the nn model


def _sgd(params, hp):
    return torch.optim.SGD(params, lr=hp["lr"])


def _momentum(params, hp):
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], nesterov=False)


def _rmsprop(params, hp):
    return torch.optim.RMSprop(
        params,
        lr=hp["lr"],
        alpha=hp["betas"][1] if hp.get("betas") else 0.99,
        momentum=hp.get("momentum") or 0.0,
        eps=1e-8,
    )


# Adam/AdamW use torch's fused kernel where it exists (CPU from torch 2.4, CUDA): one C++ call per step for
# all tensors -- on the sheet's tiny tensors 40 us instead of 108 us per step, where Python overhead dominates.
def _maybe_fused(cls, params, hp, **kw):
    params = list(params)
    if hp.get("device_type") in ("cpu", "cuda"):
        try:
            return cls(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # a torch without the fused kernel for this device
            pass
    return cls(params, **kw)


def _adam(params, hp):
    return _maybe_fused(torch.optim.Adam, params, hp, lr=hp["lr"], betas=tuple(hp["betas"]), eps=1e-8)


def _adamw(params, hp):
    return _maybe_fused(
        torch.optim.AdamW, params, hp, lr=hp["lr"], betas=tuple(hp["betas"]), eps=1e-8, weight_decay=hp["weight_decay"]
    )


def _lbfgs(params, hp):
    # Strong-Wolfe line search makes L-BFGS robust to the initial step (lr): Solver-like behaviour.
    return torch.optim.LBFGS(
        params,
        lr=hp["lr"],
        max_iter=hp.get("max_iter", 20),
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )


# Defaults. Measured on the 15x15 sheet (full batch) and ml-latest-small (mini-batch); see docs/readme/3-engine.md.
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(
        "sgd",
        "plain (stochastic) gradient descent; on dot/bias the step touches only the batch's rows",
        _sgd,
        full_batch=dict(restarts=3, lr=1.5, epochs=3000, weight_decay=0.0, schedule="constant"),
        mini_batch=dict(lr=80.0, epochs=14, weight_decay=0.045, batch_size=4096, schedule="onecycle", init_scale=0.02),
        nn_mini_batch=dict(lr=20.0, batch_size=4096, weight_decay=0.045, epochs=12, init_scale=0.02),
    ),
    "momentum": OptimizerSpec(
        "momentum",
        "SGD with heavy-ball momentum",
        _momentum,
        full_batch=dict(restarts=3, lr=0.15, epochs=2000, weight_decay=0.0, momentum=0.9, schedule="constant"),
        mini_batch=dict(lr=8.0, epochs=15, weight_decay=0.05, momentum=0.9, batch_size=4096, schedule="onecycle"),
        nn_mini_batch=dict(lr=2.0, batch_size=4096, weight_decay=0.045, epochs=12, init_scale=0.02),
        uses=("lr", "momentum"),
    ),
    "rmsprop": OptimizerSpec(
        "rmsprop",
        "RMSprop (per-weight step size from a running mean of squared gradients)",
        _rmsprop,
        full_batch=dict(restarts=3, lr=0.03, epochs=2000, weight_decay=0.0, schedule="onecycle"),
        mini_batch=dict(lr=0.012, epochs=5, weight_decay=0.1, batch_size=4096, schedule="onecycle"),
        nn_mini_batch=dict(lr=0.01, batch_size=2048, weight_decay=0.02, epochs=8),
        uses=("lr", "momentum"),
    ),
    "adam": OptimizerSpec(
        "adam",
        "Adam (momentum + RMSprop)",
        _adam,
        full_batch=dict(restarts=3, lr=0.05, epochs=1000, weight_decay=0.0, betas=(0.9, 0.999), schedule="constant"),
        mini_batch=dict(lr=0.05, epochs=8, weight_decay=0.15, betas=(0.9, 0.999), batch_size=8192, schedule="onecycle"),
        nn_mini_batch=dict(lr=0.01, batch_size=4096, weight_decay=0.02, epochs=5),
        uses=("lr", "betas"),
    ),
    "adamw": OptimizerSpec(
        "adamw",
        "Adam with decoupled weight decay (torch AdamW: every weight, every step)",
        _adamw,
        full_batch=dict(restarts=3, lr=0.05, epochs=1000, weight_decay=0.0, betas=(0.9, 0.999), schedule="constant"),
        mini_batch=dict(lr=0.02, epochs=8, weight_decay=1.0, betas=(0.9, 0.999), batch_size=8192, schedule="onecycle"),
        nn_mini_batch=dict(lr=0.01, batch_size=4096, weight_decay=0.1, epochs=5),
        decay="optimizer",
        uses=("lr", "betas"),
    ),
    "lbfgs": OptimizerSpec(
        "lbfgs",
        "L-BFGS with strong-Wolfe line search, full batch (the Solver-like choice for sheets)",
        _lbfgs,
        full_batch=dict(restarts=3, lr=1.0, epochs=8, weight_decay=0.0, schedule="constant"),
        mini_batch=dict(lr=1.0, epochs=5, weight_decay=0.1, schedule="constant"),
        full_batch_only=True,
    ),
    "als": OptimizerSpec(
        "als",
        "alternating least squares with biases (closed-form ridge solves; dot and bias models)",
        None,
        full_batch=dict(restarts=3, epochs=50, weight_decay=1e-6, schedule="constant"),
        mini_batch=dict(epochs=10, weight_decay=0.1, schedule="constant"),
        full_batch_only=True,
        uses=(),
    ),
}

# Defaults for a user-supplied factory (a callable in TrainConfig.optimizer).
CALLABLE_DEFAULTS = dict(
    full_batch=dict(lr=0.01, epochs=1000, weight_decay=0.0, schedule="constant"),
    mini_batch=dict(lr=0.01, epochs=10, weight_decay=0.03, batch_size=4096, schedule="constant"),
)


def register_optimizer(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    *,
    full_batch: dict | None = None,
    mini_batch: dict | None = None,
    description: str = "user-registered",
) -> OptimizerSpec:
    """Add ``name`` to the registry. ``factory(params, lr)`` returns a torch optimizer."""
    spec = OptimizerSpec(
        name,
        description,
        lambda params, hp: factory(params, hp["lr"]),
        full_batch={**CALLABLE_DEFAULTS["full_batch"], **(full_batch or {})},
        mini_batch={**CALLABLE_DEFAULTS["mini_batch"], **(mini_batch or {})},
    )
    OPTIMIZERS[name] = spec
    return spec


def spec_for(optimizer) -> OptimizerSpec:
    """The spec of a registry name or a callable factory."""
    if callable(optimizer):
        return OptimizerSpec(
            getattr(optimizer, "__name__", "custom"),
            "user-supplied factory",
            lambda params, hp: optimizer(params, hp["lr"]),
            full_batch=dict(CALLABLE_DEFAULTS["full_batch"]),
            mini_batch=dict(CALLABLE_DEFAULTS["mini_batch"]),
        )
    return OPTIMIZERS[optimizer]
