"""Training: configuration, optimizer registry, devices, the loop and its results.

from xlcf.train import TrainConfig, FitResult, EpochStats, fit, fit_arrays, OPTIMIZERS, resolve_device
"""

from xlcf.train.config import TrainConfig
from xlcf.train.devices import available_devices, resolve_device
from xlcf.train.optimizers import OPTIMIZERS, OptimizerSpec, register_optimizer
from xlcf.train.result import EpochStats, FitResult, InitialParams
from xlcf.train.trainer import fit, fit_arrays

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
