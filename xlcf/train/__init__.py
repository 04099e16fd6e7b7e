"""Training: configuration, optimizer registry, devices, the loop and its results.

    from xlcf.train import TrainConfig, FitResult, EpochStats, fit, fit_arrays, OPTIMIZERS, resolve_device
"""

from xlcf.train.config import TrainConfig
from xlcf.train.devices import available_devices, resolve_device
from xlcf.train.engine import fit, fit_arrays
from xlcf.train.optimizers import OPTIMIZERS, OptimizerSpec, register_optimizer
from xlcf.train.result import EpochStats, FitResult, InitialParams

__all__ = [
    "TrainConfig", "FitResult", "EpochStats", "InitialParams", "fit", "fit_arrays", "OPTIMIZERS",
    "OptimizerSpec", "register_optimizer", "resolve_device", "available_devices",
]
