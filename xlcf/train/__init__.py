"""Training: configuration, optimizer registry, devices, the loop and its results.

    from xlcf.train import TrainConfig, FitResult, EpochStats, fit, fit_arrays, OPTIMIZERS, resolve_device

The names load on first use (PEP 562), so ``import xlcf.train.config`` or ``xlcf.train.result`` — and anything
that only needs a config or a result — does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "TrainConfig": "config",
    "FitResult": "result",
    "EpochStats": "result",
    "InitialParams": "result",
    "fit": "trainer",
    "fit_arrays": "trainer",
    "OPTIMIZERS": "optimizers",
    "OptimizerSpec": "optimizers",
    "register_optimizer": "optimizers",
    "resolve_device": "devices",
    "available_devices": "devices",
}

__all__ = [
    "OPTIMIZERS",
    "EpochStats",
    "FitResult",
    "InitialParams",
    "OptimizerSpec",
    "TrainConfig",
    "available_devices",
    "fit",
    "fit_arrays",
    "register_optimizer",
    "resolve_device",
]

if TYPE_CHECKING:
    from xlcf.train.config import TrainConfig
    from xlcf.train.devices import available_devices, resolve_device
    from xlcf.train.optimizers import OPTIMIZERS, OptimizerSpec, register_optimizer
    from xlcf.train.result import EpochStats, FitResult, InitialParams
    from xlcf.train.trainer import fit, fit_arrays


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'xlcf.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"xlcf.train.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
