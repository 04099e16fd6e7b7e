"""The formula AST: frozen dataclasses, position-independent.

A reference is stored the way R1C1 notation stores it: each of its four bounds is either absolute (a row or column
number, written with ``$`` in A1 notation) or an offset from the cell that holds the formula. Two cells whose
formulas are "the same formula copied" therefore parse to equal (and hashable) trees, which is what lets the
evaluator run a whole block of such cells as one array operation.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ROW = 1_048_576
MAX_COL = 16_384


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Err:
    code: str  # "#N/A", "#DIV/0!", ...


@dataclass(frozen=True)
class Missing:
    """An omitted argument, as in ``IF(A1,,2)``."""


@dataclass(frozen=True)
class Array:
    """An array constant ``{1,2;3,4}``: rows of Python scalars (float, str, bool, or an error code as Err)."""

    rows: tuple[tuple[object, ...], ...]


@dataclass(frozen=True)
class Bound:
    """One row or column bound of a reference: ``absolute`` -> ``value`` is the 1-based index; else an offset."""

    value: int
    absolute: bool

    def resolve(self, anchor):
        """The index for a cell at ``anchor`` (an int or a numpy array of ints)."""
        return self.value if self.absolute else anchor + self.value


@dataclass(frozen=True)
class Ref:
    """A cell or a rectangular range, on ``sheet`` (None: the formula's own sheet)."""

    sheet: str | None
    top: Bound
    left: Bound
    bottom: Bound
    right: Bound

    @property
    def fixed_shape(self) -> bool:
        """True when every cell holding this reference sees a range of the same height and width."""
        return self.top.absolute == self.bottom.absolute and self.left.absolute == self.right.absolute


@dataclass(frozen=True)
class Name:
    """A defined name, optionally qualified by a sheet (``dotprod!ratings``)."""

    name: str
    sheet: str | None = None


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "+"
    operand: Node


@dataclass(frozen=True)
class Percent:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / ^ & = <> < <= > >=
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    name: str  # upper case, without the _xlfn./_xlws. prefixes
    args: tuple[Node, ...]


Node = Num | Str | Bool | Err | Missing | Array | Ref | Name | Unary | Percent | Binary | Call


def walk(node: Node):
    """Every node of a tree, parents before children."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (Unary, Percent)):
            stack.append(n.operand)
        elif isinstance(n, Binary):
            stack.extend((n.right, n.left))
        elif isinstance(n, Call):
            stack.extend(reversed(n.args))


def functions_used(node: Node) -> list[str]:
    """Names of the functions a tree calls, in order of appearance, without repeats."""
    seen: dict[str, None] = {}
    for n in walk(node):
        if isinstance(n, Call):
            seen.setdefault(n.name, None)
    return list(seen)
