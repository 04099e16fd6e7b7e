"""Training: configuration, optimizer registry, devices, the loop and its results.

    from xlcf.train import TrainConfig, FitResult, EpochStats, fit, fit_arrays, OPTIMIZERS, resolve_device

Names are imported on first use (PEP 562), so ``xlcf.train.config`` and ``xlcf.train.result`` load without torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "TrainConfig": "config",
    "FitResult": "result",
    "EpochStats": "result",
    "InitialParams": "result",
    "PosteriorSamples": "result",
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
    "PosteriorSamples",
    "TrainConfig",
    "available_devices",
    "fit",
    "fit_arrays",
    "register_optimizer",
    "resolve_device",
]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"xlcf.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'xlcf.train' has no attribute {name!r}")
