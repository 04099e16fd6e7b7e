"""Evaluate one formula tree for a whole block of cells at once.

Every cell of a block holds the same formula relative to its position, so the tree is walked once: a relative
reference becomes per-cell index arrays, and every operator and function works on (N, h, w) arrays (see
:mod:`xlcf.formula.values`). The walk follows Excel's two evaluation contexts:

- *value* context (an ordinary formula): a range where one value is expected is implicitly intersected with the
  formula's row or column, and a formula whose result is an array shows its top-left element;
- *array* context (an array formula, and the arguments Excel takes as arrays: SUMPRODUCT, MMULT, TRANSPOSE, the
  SUMX... family, MATCH's and INDEX's arrays): operators work element by element on whole ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xlcf.errors import FormulaError
from xlcf.formula import criteria as _criteria  # noqa: F401 - registers COUNTIF and friends
from xlcf.formula import functions as _functions  # noqa: F401 - registers the functions
from xlcf.formula import lookup as _lookup  # noqa: F401 - registers the lookup and array functions
from xlcf.formula.book import cell_name
from xlcf.formula.nodes import (
    MAX_COL,
    MAX_ROW,
    Array,
    Binary,
    Bool,
    Call,
    Err,
    Missing,
    Name,
    Num,
    Percent,
    Ref,
    Str,
    Unary,
)
from xlcf.formula.ops import binary, negate, percent
from xlcf.formula.registry import FUNCTIONS, Ctx, VaryingShape, supported_list
from xlcf.formula.store import RefVal, implicit_intersection
from xlcf.formula.values import (
    E_NAME,
    E_REF,
    V,
    broadcast,
    err_kind,
    errors,
    expand,
    first,
    from_rows,
    scalar,
)


@dataclass
class Block:
    """Cells of one sheet holding one formula tree (relative to each cell), or one array formula (``area`` =
    (top, left, bottom, right) of its range). ``rows``/``cols`` are 1-based int arrays."""

    sheet: str
    tree: object
    rows: np.ndarray
    cols: np.ndarray
    formula: str  # the formula text of the first cell (for messages)
    area: tuple[int, int, int, int] | None = None
    volatile: bool = False
    key: object = None
    uid: int = field(default=-1)
    # cells whose formulas have the same structure but references that do not move with the cell (a transposed
    # block): per reference node, the per-cell (top, left, bottom, right) arrays
    positions: dict | None = None

    @property
    def n(self) -> int:
        return len(self.rows)

    def subset(self, idx, key=None) -> Block:
        """The block restricted to some of its cells (``idx`` an index array or a slice)."""
        pos = None if self.positions is None else {k: tuple(a[idx] for a in v) for k, v in self.positions.items()}
        return Block(
            self.sheet,
            self.tree,
            self.rows[idx],
            self.cols[idx],
            self.formula,
            None,
            self.volatile,
            key=key if key is not None else (self.key, "subset"),
            uid=self.uid,
            positions=pos,
        )

    def cell(self, i: int = 0) -> str:
        return cell_name(self.sheet, int(self.rows[i]), int(self.cols[i]))


def evaluate_block(block: Block, ctx: Ctx) -> V:
    """The values of a block: (n, 1, 1) for ordinary cells, (1, h, w) of the area for an array formula."""
    with np.errstate(all="ignore"):
        if block.area is not None:
            top, left, bottom, right = block.area
            out = value_of(block.tree, ctx, "a", True)
            return _fit_area(ctx, out, bottom - top + 1, right - left + 1)
        out = value_of(block.tree, ctx, "v", False)
        out = first(ctx.bk, out)
        return expand(ctx.bk, out, (block.n, 1, 1))


def _fit_area(ctx: Ctx, v: V, h: int, w: int) -> V:
    """An array formula's result placed on its range: a single row or column repeats, missing cells are #N/A."""
    holder = errors(ctx.bk, 0, (1, h, w))
    holder.kind = None
    if v.shape[1] > h or v.shape[2] > w:
        v = V(
            v.num[:, :h, :w],
            None if v.kind is None else np.broadcast_to(v.kind, v.shape)[:, :h, :w],
            None if v.text is None else v.texts()[:, :h, :w],
            True,
        )
    fitted, _ = broadcast(ctx.bk, v, holder)
    return fitted


# ----------------------------------------------------------------------------------------------------------------
# The walk


def value_of(node, ctx: Ctx, cls: str, arr: bool):
    """A node's value as a parameter of class ``cls`` wants it: "v" one value per element (ranges intersected
    outside array context), "a" a whole array, "r" a reference kept as such (or a value), "R" likewise."""
    static = ctx.static
    key = (id(node), cls, arr)
    if static is not None:
        hit = static.get(key)
        if hit is not None:
            return hit
    out = evaluate(node, ctx, arr or cls in ("a", "A"))
    if isinstance(out, RefVal) and cls in ("v", "a"):
        out = deref(out, ctx, arr or cls == "a")
    if ctx.record is not None and id(node) in ctx.record_ids:
        ctx.record[key] = out
    return out


def deref(ref: RefVal, ctx: Ctx, arr: bool) -> V:
    if arr:
        return ctx.store.gather(ref, memo=ctx.memo, key=ref.key)
    return implicit_intersection(ctx.store, ref, ctx.rows, ctx.cols)


def evaluate(node, ctx: Ctx, arr: bool):
    bk = ctx.bk
    if isinstance(node, Ref):
        return ref_value(node, ctx)
    if isinstance(node, Num):
        return scalar(bk, node.value)
    if isinstance(node, Binary):
        a = value_of(node.left, ctx, "v", arr)
        b = value_of(node.right, ctx, "v", arr)
        return binary(bk, node.op, a, b)
    if isinstance(node, Call):
        return call(node, ctx, arr)
    if isinstance(node, Unary):
        a = value_of(node.operand, ctx, "v", arr)
        return negate(bk, a) if node.op == "-" else a
    if isinstance(node, Percent):
        return percent(bk, value_of(node.operand, ctx, "v", arr))
    if isinstance(node, Str):
        return scalar(bk, node.value)
    if isinstance(node, Bool):
        return scalar(bk, node.value)
    if isinstance(node, Err):
        return errors(bk, err_kind(node.code), (1, 1, 1))
    if isinstance(node, Array):
        return from_rows(bk, [list(r) for r in node.rows])
    if isinstance(node, Missing):
        return scalar(bk, None)
    if isinstance(node, Name):  # left unresolved by binding: not defined
        return errors(bk, E_NAME, (1, 1, 1))
    raise FormulaError(f"{ctx.formula}: cannot evaluate {type(node).__name__}", where=ctx.where)  # pragma: no cover


def ref_value(node: Ref, ctx: Ctx):
    sheet = node.sheet or ctx.sheet
    if sheet not in ctx.store.grids:
        return errors(ctx.bk, E_REF, (1, 1, 1))
    memo_key = ("ref", id(node))
    hit = ctx.memo.get(memo_key)
    if hit is not None:
        return hit
    rows, cols = ctx.rows, ctx.cols
    fixed = ctx.positions.get(id(node)) if ctx.positions else None
    if fixed is None and ctx.n == 1:  # one cell: plain integers
        r0, c0 = int(rows[0]), int(cols[0])
        tb, bb, lb, rb = node.top, node.bottom, node.left, node.right
        t0 = tb.value if tb.absolute else r0 + tb.value
        b0 = bb.value if bb.absolute else r0 + bb.value
        l0 = lb.value if lb.absolute else c0 + lb.value
        rt0 = rb.value if rb.absolute else c0 + rb.value
        t0, b0, l0, rt0 = min(t0, b0), max(t0, b0), min(l0, rt0), max(l0, rt0)
        if t0 < 1 or l0 < 1 or b0 > MAX_ROW or rt0 > MAX_COL:
            return errors(ctx.bk, E_REF, (1, 1, 1))
        out = RefVal(sheet, np.array([t0]), np.array([l0]), b0 - t0 + 1, rt0 - l0 + 1, key=("gather", id(node)))
        ctx.memo[memo_key] = out
        return out
    if fixed is not None:
        t, lft, b, rgt = fixed
    else:
        t = np.atleast_1d(node.top.resolve(rows))
        b = np.atleast_1d(node.bottom.resolve(rows))
        lft = np.atleast_1d(node.left.resolve(cols))
        rgt = np.atleast_1d(node.right.resolve(cols))
    if fixed is None and not node.fixed_shape:
        if ctx.n > 1:
            raise VaryingShape()
        t, b = np.minimum(t, b), np.maximum(t, b)
        lft, rgt = np.minimum(lft, rgt), np.maximum(lft, rgt)
    if (t < 1).any() or (lft < 1).any() or (b > MAX_ROW).any() or (rgt > MAX_COL).any():
        if ctx.n > 1 and not ((t < 1).all() or (lft < 1).all()):
            raise VaryingShape()  # some cells of the block point off the sheet: evaluate them one by one
        return errors(ctx.bk, E_REF, (1, 1, 1))
    out = RefVal(
        sheet,
        t.astype(np.int64),
        lft.astype(np.int64),
        int(b[0] - t[0] + 1),
        int(rgt[0] - lft[0] + 1),
        key=("gather", id(node)),
    )
    ctx.memo[memo_key] = out
    return out


def call(node: Call, ctx: Ctx, arr: bool):
    spec = FUNCTIONS.get(node.name)
    if spec is None:
        raise unsupported(node.name, ctx.formula, ctx.where)
    nargs = len(node.args)
    if nargs < spec.min_args or (spec.max_args is not None and nargs > spec.max_args):
        most = "any number of" if spec.max_args is None else str(spec.max_args)
        raise FormulaError(
            f"{ctx.formula}: {node.name} takes {spec.min_args} to {most} arguments, not {nargs}",
            where=ctx.where,
            field=node.name,
        )
    args: list[V | RefVal | None] = []
    for i, a in enumerate(node.args):
        cls = spec.param(i)
        if isinstance(a, Missing):
            args.append(None)
        else:
            args.append(value_of(a, ctx, cls, arr))
    return spec.impl(ctx, *args)


def unsupported(name: str, formula: str, where: str | None) -> FormulaError:
    return FormulaError(
        f"{formula}: {name} is not supported by the evaluator (supported: {supported_list()})", where=where, field=name
    )


__all__ = ["Block", "VaryingShape", "deref", "evaluate", "evaluate_block", "math", "unsupported", "value_of"]
