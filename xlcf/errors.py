"""One small error hierarchy. Raised (never asserted); the CLI prints ``str(err)`` and exits 2, the Excel side
writes it into the status cell, the server answers it as one line.

Every error carries, besides its message, *where* it happened and *which setting* it concerns:

- ``where``: ``file:line:column`` (``ratings.csv:3:2``), ``file:line`` or ``sheet!cell`` (``bias!V42``), or ``None``;
- ``field``: the name of the setting or column involved (``lr``, ``rating``, ``--seed``), or ``None``.

``str(err)`` is ``"where: message"`` (or the message alone), one line for a person. Front ends that map an error
back to a cell read ``err.where`` / ``err.field`` instead of parsing the text.
"""

from __future__ import annotations

MAX_QUOTE = 80  # characters of a user's value quoted in a message, at most


def quote(value: object, limit: int = MAX_QUOTE) -> str:
    """``repr``-like quoting of a user's value, cut to ``limit`` characters so an error line stays one line."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


class XlcfError(Exception):
    """Base of every error xlcf raises on purpose. ``str(err)`` is a one-line message for a person."""

    exit_code = 2

    def __init__(self, message: str = "", *, where: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.field = field

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class DataError(XlcfError, ValueError):
    """Bad ratings input: missing file, wrong columns, values outside the scale... (file, line, column)."""


class ConfigError(XlcfError, ValueError):
    """Unknown or invalid setting (optimizer name, lr, epochs...). Lists the valid choices."""


class DeviceError(ConfigError):
    """A device was asked for that this machine does not have."""


class TrainingError(XlcfError):
    """Training could not produce a usable model."""


class DivergenceError(TrainingError, ValueError):
    """Loss became NaN/Inf or exploded. ``result`` holds the last finite parameters when there are any;
    ``cause`` is the diagnosis alone (without what was done about it), for front ends that say it their way."""

    def __init__(
        self,
        message: str,
        *,
        epoch: int | None = None,
        result=None,
        where: str | None = None,
        field: str | None = None,
        cause: str | None = None,
    ):
        super().__init__(message, where=where, field=field)
        self.epoch = epoch
        self.result = result
        self.cause = cause


class WorkbookError(XlcfError):
    """A workbook cannot be read, understood or written. ``where`` names sheet!cell."""


class FormulaError(WorkbookError):
    """A formula the evaluator cannot parse or does not support (``where`` = sheet!cell)."""


class SolverModelError(WorkbookError):
    """A Solver model (objective, variables, constraints) that cannot be solved as stated."""


class BusyError(XlcfError):
    """Another writer holds the workbook (or the server's queue is full); try again later."""


class UdfInputError(XlcfError, ValueError):
    """A worksheet function got arguments it cannot use; the cell shows the message."""


class BadPayload(XlcfError, ValueError):
    """A request body that is not what xlwings' clients send (answered with 400 and one line)."""


class DataWarning(UserWarning):
    """Something in the input was odd but usable (a malformed timestamp column, ...). Shown as one line."""
