"""TrainConfig validation, the optimizer registry and device selection."""

from __future__ import annotations

import pytest
import torch

from xlcf.errors import ConfigError, DeviceError
from xlcf.train import OPTIMIZERS, TrainConfig, fit_arrays, resolve_device
from xlcf.train.optimizers import register_optimizer


def test_defaults_and_round_trip():
    cfg = TrainConfig()
    assert cfg.model == "bias" and cfg.optimizer == "adam" and cfg.valid_pct == 0.2
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.lr is None


def test_unknown_key_lists_valid_settings():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"model": "bias", "learning_rate": 0.1})
    msg = str(info.value)
    assert "'learning_rate'" in msg and "lr" in msg and "weight_decay" in msg
    with pytest.raises(ConfigError, match="valid settings"):
        TrainConfig().replace(wd=1)


def test_unknown_optimizer_lists_every_name():
    with pytest.raises(ConfigError) as info:
        TrainConfig(optimizer="adagradx")
    for name in ("sgd", "momentum", "rmsprop", "adam", "adamw", "lbfgs", "als"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "settings,fragment",
    [
        ({"lr": -1}, "lr must be > 0"),
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": "abc"}, "lr must be a finite number"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"epochs": 0}, "epochs must be a whole number >= 1"),
        ({"epochs": -5}, "epochs must be a whole number >= 1"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"factors": 0}, "factors"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"valid_pct": 0.95}, "valid_pct"),
        ({"momentum": 1.0}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"model": "svd"}, "valid models: dot, bias, nn"),
        ({"schedule": "cosine"}, "valid schedules: constant, onecycle"),
        ({"y_range": (5, 1)}, "y_range"),
        ({"y_range": "0-5"}, "y_range"),
        ({"dropout": (0.5, 1.5)}, "dropout"),
        ({"betas": (0.9,)}, "betas"),
        ({"init": "xavier"}, "valid inits"),
        ({"restarts": -1}, "restarts must be a whole number >= 0"),
        ({"restarts": 1.5}, "restarts must be a whole number"),
    ],
)
def test_invalid_values(settings, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        TrainConfig.from_dict(settings)


def test_spreadsheet_numbers_are_accepted():
    cfg = TrainConfig.from_dict({"epochs": 10.0, "factors": 5.0, "lr": 1, "y_range": [0.5, 5.5]})
    assert cfg.epochs == 10 and isinstance(cfg.epochs, int) and cfg.lr == 1.0 and cfg.y_range == (0.5, 5.5)


def test_resolve_fills_regime_defaults():
    full = TrainConfig(optimizer="adam").resolve(206)
    mini = TrainConfig(optimizer="adam").resolve(80_000)
    assert full.batch_size == 206 and mini.batch_size < 80_000
    assert full.lr == OPTIMIZERS["adam"].full_batch["lr"] and mini.lr == OPTIMIZERS["adam"].mini_batch["lr"]
    assert TrainConfig(optimizer="adam", lr=0.3).resolve(80_000).lr == 0.3
    assert TrainConfig(model="dot", y_range=None, global_mean=False).resolve(10).init == "uniform"
    with pytest.raises(ConfigError, match="full batch"):
        TrainConfig(optimizer="lbfgs", batch_size=10).resolve(1000)


def test_registry_accepts_new_names():
    register_optimizer("test_adagrad", lambda params, lr: torch.optim.Adagrad(params, lr=lr))
    try:
        cfg = TrainConfig(optimizer="test_adagrad", lr=0.1, epochs=20, factors=2, valid_pct=0, device="cpu")
        res = fit_arrays([0, 0, 1, 1], [0, 1, 0, 1], [4.0, 3.0, 2.0, 5.0], 2, 2, cfg)
        assert res.history[-1].train_loss < res.history[0].train_loss
    finally:
        OPTIMIZERS.pop("test_adagrad")


def test_cpu_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU ") == torch.device("cpu")


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("xlcf.train.devices._mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr("xlcf.train.devices._mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "gpu"])
def test_cuda_without_cuda_is_a_device_error(name):
    with pytest.raises(DeviceError, match="no CUDA"):
        resolve_device(name)
    with pytest.raises(DeviceError):  # also through the trainer, before any work
        fit_arrays([0, 1], [0, 1], [3.0, 4.0], 2, 2, TrainConfig(device=name, valid_pct=0, epochs=1))


def test_unknown_device_lists_choices():
    with pytest.raises(DeviceError, match="auto, cpu, cuda, cuda:N, mps"):
        resolve_device("tpu")


def test_mps_without_mps(monkeypatch):
    monkeypatch.setattr("xlcf.train.devices._mps_available", lambda: False)
    with pytest.raises(DeviceError, match="mps"):
        resolve_device("mps")


@pytest.mark.gpu
def test_cuda_fit_matches_cpu_quality():
    import numpy as np

    rng = np.random.default_rng(0)
    u, m = rng.integers(0, 50, 2000), rng.integers(0, 40, 2000)
    r = np.clip(3 + rng.normal(size=2000), 0.5, 5).astype(np.float32)
    cfg = TrainConfig(model="bias", optimizer="adam", epochs=30, factors=8, valid_pct=0, batch_size=256)
    cpu = fit_arrays(u, m, r, 50, 40, cfg.replace(device="cpu"))
    gpu = fit_arrays(u, m, r, 50, 40, cfg.replace(device="cuda"))
    assert gpu.device.startswith("cuda") and abs(cpu.train_rmse - gpu.train_rmse) < 0.05
    assert np.all(np.isfinite(gpu.user_factors))


@pytest.mark.gpu
def test_cuda_divergence_guard():
    import numpy as np

    from xlcf.errors import DivergenceError

    with pytest.raises(DivergenceError):
        fit_arrays(
            np.arange(20) % 5,
            np.arange(20) % 4,
            np.full(20, 3.0),
            5,
            4,
            TrainConfig(model="dot", optimizer="sgd", lr=1e9, epochs=5, valid_pct=0, device="cuda"),
        )
