"""Device selection: ``auto`` picks CUDA, then Apple MPS, then the CPU; explicit names are checked."""

from __future__ import annotations

import re

import torch

from xlcf import catalog
from xlcf.errors import DeviceError, quote

DEVICE_CHOICES = catalog.DEVICE_HELP.replace(" |", ",")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def available_devices() -> list[str]:
    """Names of the devices this machine can train on, best first."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        names.append("mps")
    return names + ["cpu"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a torch.device that exists here.

    Raises DeviceError (a ConfigError) when the device is not present, naming the ones that are."""
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", text)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {quote(name)} was asked for but this machine has no CUDA GPU "
                f"(torch {torch.__version__}); available: {', '.join(available_devices())}",
                field="device",
            )
        index = int(match.group(2)) if match.group(2) is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {quote(name)} does not exist; available: {', '.join(available_devices())}", field="device"
            )
        return torch.device("cuda", index)
    if text == "mps":
        if not _mps_available():
            raise DeviceError(
                f"device 'mps' was asked for but Apple MPS is not available here; "
                f"available: {', '.join(available_devices())}",
                field="device",
            )
        return torch.device("mps")
    raise DeviceError(f"unknown device {quote(name)}; valid devices: {DEVICE_CHOICES}", field="device")


def device_label(device: torch.device) -> str:
    """Human label for reports, e.g. ``cuda:0 (NVIDIA H200)`` or ``cpu``."""
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return str(device)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """An explicit generator on ``device`` (never the global RNG); falls back to a CPU one if unsupported."""
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:  # pragma: no cover - very old MPS builds
        gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen
