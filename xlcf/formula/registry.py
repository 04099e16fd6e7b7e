"""The function table and the evaluation context shared by the evaluator and the function modules."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from xlcf.formula.store import Store


class VaryingShape(Exception):
    """Raised inside a block whose cells see ranges of different shapes (``$A$1:A1`` copied down, an OFFSET with
    a per-cell height): the block is then evaluated cell by cell."""


@dataclass(frozen=True)
class Spec:
    """A worksheet function: ``params`` gives each argument's class (the last repeats): "v" a value, "a" an array
    (evaluated in array context), "A" likewise but a reference is handed over unread, "r" a reference or a value,
    "R" a reference. ``cycle``: the classes of the arguments after ``params``, repeated (COUNTIFS's range,
    criterion, range, criterion...)."""

    name: str
    impl: Callable
    params: str
    min_args: int
    max_args: int | None
    volatile: bool = False
    cycle: str = ""

    def param(self, i: int) -> str:
        if i < len(self.params):
            return self.params[i]
        if self.cycle:
            return self.cycle[(i - len(self.params)) % len(self.cycle)]
        return self.params[-1]


FUNCTIONS: dict[str, Spec] = {}


def register(
    name: str, params: str, min_args: int, max_args: int | None = -1, *, volatile: bool = False, cycle: str = ""
):
    """Decorator: ``max_args`` -1 (default) means ``len(params)``; None means any number."""

    def deco(fn):
        most = len(params) if max_args == -1 else max_args
        FUNCTIONS[name] = Spec(name, fn, params, min_args, most, volatile, cycle)
        return fn

    return deco


def supported_list() -> str:
    return ", ".join(sorted(n for n in FUNCTIONS if n != "SINGLE"))


VOLATILE = frozenset({"RAND", "RANDBETWEEN", "NOW", "TODAY"})


@dataclass
class Ctx:
    """What evaluating one block needs: the backend, the values (store), the block's cells and caches.

    ``memo`` holds per-block index arrays (references never move, so a block evaluated again reuses them);
    ``static``/``record`` implement constant folding for the differentiable pass."""

    bk: object
    store: Store
    sheet: str
    rows: np.ndarray
    cols: np.ndarray
    formula: str = ""
    where: str | None = None
    memo: dict = field(default_factory=dict)
    static: dict | None = None
    record: dict | None = None
    record_ids: frozenset = frozenset()
    rng: np.random.Generator | None = None
    now: _dt.datetime | None = None
    positions: dict | None = None

    @property
    def n(self) -> int:
        return len(self.rows)
