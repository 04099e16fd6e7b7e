"""Optimizers selectable by name, each with defaults for the two regimes the engine meets:

- **full batch** — small problems such as the 15x15 sheet (every rating in every step, like Solver);
- **mini-batch** — real data (ml-latest-small and up): shuffled batches of ``batch_size`` ratings.

``OPTIMIZERS`` maps a name to an :class:`OptimizerSpec`: the catalog's entry (:mod:`xlcf.catalog`, names and
defaults without torch) with its torch builder. ``TrainConfig.optimizer`` may also be a callable
``factory(params, lr) -> torch.optim.Optimizer`` (weight decay is then applied as L2 in the loss), or a name
added with :func:`register_optimizer`.

Weight decay: except for ``adamw`` (decoupled decay, as torch implements it), ``weight_decay`` is an L2
penalty **per rating in the loss** — ``wd * (|u|^2 + |m|^2 + b_u^2 + b_m^2)`` for the rows a rating uses —
as Surprise's SVD does. Rows only pay for the ratings they appear in, so rare movies are not shrunk by
steps that never touched them (global decay would).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from xlcf import catalog
from xlcf.catalog import CALLABLE_DEFAULTS, OptimizerInfo

# Which hyper-parameters an optimizer understands (others are ignored, and the docs say so).
HYPER = ("lr", "epochs", "weight_decay", "batch_size", "schedule", "momentum", "betas", "restarts")


@dataclass(frozen=True)
class OptimizerSpec(OptimizerInfo):
    """A catalog entry (:class:`xlcf.catalog.OptimizerInfo`) with its torch builder."""

    build: Callable[..., torch.optim.Optimizer] | None = None  # None: not a torch optimizer (als)

    @classmethod
    def of(cls, info: OptimizerInfo, build: Callable[..., torch.optim.Optimizer] | None) -> OptimizerSpec:
        return cls(**{f.name: getattr(info, f.name) for f in fields(OptimizerInfo)}, build=build)


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


# Builders of the catalog's names (xlcf.catalog holds their defaults); a name without one is not a torch optimizer.
BUILDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
    "lbfgs": _lbfgs,
}
OPTIMIZERS: dict[str, OptimizerSpec] = {
    name: OptimizerSpec.of(info, BUILDERS.get(name)) for name, info in catalog.OPTIMIZERS.items()
}


def register_optimizer(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    *,
    full_batch: dict | None = None,
    mini_batch: dict | None = None,
    description: str = "user-registered",
) -> OptimizerSpec:
    """Add ``name`` to the registry. ``factory(params, lr)`` returns a torch optimizer."""
    info = catalog.register(
        OptimizerInfo(
            name,
            description,
            full_batch={**CALLABLE_DEFAULTS["full_batch"], **(full_batch or {})},
            mini_batch={**CALLABLE_DEFAULTS["mini_batch"], **(mini_batch or {})},
        )
    )
    spec = OptimizerSpec.of(info, lambda params, hp: factory(params, hp["lr"]))
    OPTIMIZERS[name] = spec
    return spec


def spec_for(optimizer) -> OptimizerSpec:
    """The spec of a registry name or a callable factory."""
    if callable(optimizer):
        return OptimizerSpec.of(catalog.optimizer_info(optimizer), lambda params, hp: optimizer(params, hp["lr"]))
    return OPTIMIZERS[optimizer]
