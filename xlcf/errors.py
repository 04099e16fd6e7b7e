"""One small error hierarchy. Raised (never asserted); the CLI prints ``str(err)`` and exits non-zero,
the Excel side writes it into the status cell."""

from __future__ import annotations


class XlcfError(Exception):
    """Base of every error xlcf raises on purpose. ``str(err)`` is a one-line message for a person."""

    exit_code = 2


class DataError(XlcfError, ValueError):
    """Bad ratings input: missing file, wrong columns, values outside the scale... (file, line, column)."""


class ConfigError(XlcfError, ValueError):
    """Unknown or invalid setting (optimizer name, lr, epochs...). Lists the valid choices."""


class DeviceError(ConfigError):
    """A device was asked for that this machine does not have."""


class TrainingError(XlcfError):
    """Training could not produce a usable model."""


class DivergenceError(TrainingError, ValueError):
    """Loss became NaN/Inf or exploded. ``result`` holds the last finite parameters when there are any."""

    def __init__(self, message: str, *, epoch: int | None = None, result=None):
        super().__init__(message)
        self.epoch = epoch
        self.result = result


class WorkbookError(XlcfError):
    """A workbook cannot be read, understood or written. Messages name sheet!cell."""
