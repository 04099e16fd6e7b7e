"""Running blocks: full recalculation in dependency order, and the one-step check against cached values."""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

import numpy as np

from xlcf.formula.backend import NUMPY, NumpyBackend
from xlcf.formula.book import BookView, cell_name
from xlcf.formula.evaluator import Block, evaluate_block
from xlcf.formula.graph import Graph, build_blocks
from xlcf.formula.registry import Ctx, VaryingShape
from xlcf.formula.store import Grid, Store
from xlcf.formula.values import V, values_out

LIBREOFFICE = NumpyBackend()
LIBREOFFICE.flavor = "libreoffice"


def base_store(view: BookView, bk=NUMPY) -> Store:
    """The cached values of every sheet (formula cells included, as the file stores them)."""
    grids = {}
    for name, sv in view.sheets.items():
        grids[name] = Grid.from_cells(bk, sv.nrows, sv.ncols, sv.values)
    return Store(bk, grids)


def make_ctx(bk, store: Store, block: Block, *, rng=None, now=None) -> Ctx:
    return Ctx(
        bk,
        store,
        block.sheet,
        block.rows,
        block.cols,
        block.formula,
        block.cell(0),
        rng=rng,
        now=now,
        positions=block.positions,
    )


def run_block(block: Block, ctx: Ctx) -> V:
    """A block's values; a block whose cells see ranges of different shapes runs cell by cell (one context per
    cell, kept in the block's context so that repeated runs reuse their index arrays)."""
    if not ctx.memo.get("per_cell"):
        try:
            return evaluate_block(block, ctx)
        except VaryingShape:
            ctx.memo.clear()
            ctx.memo["per_cell"] = True
    subs = ctx.memo.get("cells")
    if subs is None:
        subs = []
        for k in range(block.n):
            one = block.subset(slice(k, k + 1))
            subs.append(
                (
                    one,
                    Ctx(
                        ctx.bk,
                        ctx.store,
                        one.sheet,
                        one.rows,
                        one.cols,
                        ctx.formula,
                        one.cell(0),
                        rng=ctx.rng,
                        now=ctx.now,
                        positions=one.positions,
                    ),
                )
            )
        ctx.memo["cells"] = subs
    outs = []
    for one, sub in subs:
        sub.store, sub.static, sub.record, sub.record_ids = ctx.store, ctx.static, ctx.record, ctx.record_ids
        outs.append(evaluate_block(one, sub))
    return _stack(ctx.bk, outs)


def _stack(bk, outs: list[V]) -> V:
    num = bk.concat([o.num for o in outs], 0)
    kinds = None if all(o.kind is None for o in outs) else np.concatenate([o.kinds() for o in outs], 0)
    text = None if all(o.text is None for o in outs) else np.concatenate([o.texts() for o in outs], 0)
    return V(num, kinds, text, False)


def store_block(store: Store, block: Block, v: V, memo: dict | None = None) -> None:
    if block.area is None:
        store.put(block.sheet, block.rows, block.cols, v, memo, ("put", block.key))
        return
    t, lft, bot, rgt = block.area
    rr, cc = np.meshgrid(np.arange(t, bot + 1), np.arange(lft, rgt + 1), indexing="ij")
    flat = V(
        v.num.reshape(-1, 1, 1) if hasattr(v.num, "reshape") else v.num,
        None if v.kind is None else np.broadcast_to(v.kind, v.shape).reshape(-1, 1, 1),
        None if v.text is None else v.texts().reshape(-1, 1, 1),
    )
    store.put(block.sheet, rr.reshape(-1), cc.reshape(-1), flat, memo, ("put", block.key))


def block_cells(block: Block) -> list[tuple[int, int]]:
    if block.area is None:
        return list(zip(block.rows.tolist(), block.cols.tolist()))
    t, lft, bot, rgt = block.area
    return [(r, c) for r in range(t, bot + 1) for c in range(lft, rgt + 1)]


def block_values(block: Block, v: V) -> list:
    """The Python value of each cell of a block, in :func:`block_cells` order."""
    if block.area is not None:
        v = V(
            v.num.reshape(-1, 1, 1),
            None if v.kind is None else np.broadcast_to(v.kind, v.shape).reshape(-1, 1, 1),
            None if v.text is None else v.texts().reshape(-1, 1, 1),
        )
    return values_out(None, v)


# ----------------------------------------------------------------------------------------------------------------
# Recalculation


@dataclass
class Recalc:
    """Result of a full recalculation: ``values`` {"Sheet!A1": value} of every supported formula cell (of the
    sheet asked for), ``problems`` [(FormulaCell, FormulaError)] of the others, ``volatile`` their cell names."""

    values: dict[str, object]
    problems: list
    volatile: list[str] = field(default_factory=list)
    cells_evaluated: int = 0


def recalculate(
    view: BookView,
    sheet: str | None = None,
    *,
    seed: int | None = None,
    now: _dt.datetime | None = None,
    store: Store | None = None,
    flavor: str = "excel",
    vectorised: bool = True,
) -> Recalc:
    """Recalculate every supported formula cell from the workbook's constants, in dependency order. Cells whose
    formula is not supported keep their cached value (and are listed in ``problems``). ``flavor="libreoffice"``
    computes what LibreOffice shows instead of Excel (for comparisons); ``vectorised=False`` evaluates every cell
    on its own (slow; the reference the block evaluation is tested against)."""
    bk = LIBREOFFICE if flavor == "libreoffice" else NUMPY
    blocks, problems = build_blocks(view, single_cells=not vectorised)
    graph = Graph(view, blocks)
    wanted = None if sheet is None else {b.uid for b in blocks if b.sheet == sheet}
    order = graph.order(wanted)
    store = store or base_store(view, bk)
    rng = np.random.default_rng(seed)
    values: dict[str, object] = {}
    volatile: list[str] = []
    count = 0
    for blk in order:
        v = run_block(blk, make_ctx(bk, store, blk, rng=rng, now=now))
        store_block(store, blk, v)
        if sheet is not None and blk.sheet != sheet:
            continue
        cells = block_cells(blk)
        count += len(cells)
        for (r, c), value in zip(cells, block_values(blk, v)):
            values[cell_name(blk.sheet, r, c)] = value
            if blk.volatile:
                volatile.append(cell_name(blk.sheet, r, c))
    if sheet is not None:
        problems = [p for p in problems if p[0].sheet == sheet]
    return Recalc(values, problems, volatile, count)


# ----------------------------------------------------------------------------------------------------------------
# Check


def same_value(a, b, rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    """Equal as a spreadsheet shows them: numbers to ``rel`` relative (or ``abs_tol``), text and errors exactly."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return False
        return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_tol)
    if type(a).__name__ == "ErrorValue" and type(b).__name__ == "ErrorValue":
        return a.code == b.code
    return a == b


def jsonable(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


@dataclass
class CheckReport:
    """What ``xlcf check`` reports (see :func:`check`)."""

    cells_checked: int
    mismatches: list[dict]
    volatile: list[str]
    unsupported: list[dict]
    excel_vs_libreoffice: list[dict]
    not_cached: list[str]
    formula_cells: int

    def to_dict(self) -> dict:
        return {
            "cells_checked": self.cells_checked,
            "mismatches": self.mismatches,
            "volatile": self.volatile,
            "unsupported": self.unsupported,
            "excel_vs_libreoffice": self.excel_vs_libreoffice,
            "not_cached": self.not_cached,
            "formula_cells": self.formula_cells,
        }


def check(view: BookView, sheet: str | None = None) -> CheckReport:
    """Evaluate every supported formula cell once from the cached values of its inputs (so one difference does
    not cascade) and compare with its own cached value. Volatile cells are listed apart; cells whose value would
    differ in LibreOffice (which treats a few things differently from Excel) are listed in
    ``excel_vs_libreoffice`` with both values."""
    sheets = None if sheet is None else {sheet}
    if sheet is not None:
        view.sheet(sheet)
    blocks, problems = build_blocks(view, sheets)
    store = base_store(view)
    lo_store = base_store(view, LIBREOFFICE)
    checked = 0
    mismatches: list[dict] = []
    volatile: list[str] = []
    not_cached: list[str] = []
    differ: list[dict] = []
    total = sum(len(block_cells(b)) for b in blocks) + len(problems)
    for blk in blocks:
        cells = block_cells(blk)
        if blk.volatile:
            volatile.extend(cell_name(blk.sheet, r, c) for r, c in cells)
            continue
        got = block_values(blk, run_block(blk, make_ctx(NUMPY, store, blk)))
        lo = block_values(blk, run_block(blk, make_ctx(LIBREOFFICE, lo_store, blk)))
        cached_values = view.sheets[blk.sheet].values
        fcs = view.sheets[blk.sheet].formulas
        for (r, c), value, lo_value in zip(cells, got, lo):
            name = cell_name(blk.sheet, r, c)
            anchor = view.sheets[blk.sheet].array_members.get((r, c), (r, c))
            formula = fcs[anchor].text if anchor in fcs else blk.formula
            if not same_value(value, lo_value):
                differ.append(
                    {"cell": name, "formula": formula, "excel": jsonable(value), "libreoffice": jsonable(lo_value)}
                )
            cached = cached_values.get((r, c))
            if cached is None:
                not_cached.append(name)
                continue
            checked += 1
            if not same_value(cached, value):
                mismatches.append(
                    {"cell": name, "formula": formula, "cached": jsonable(cached), "evaluated": jsonable(value)}
                )
    unsupported = [
        {"cell": fc.where, "formula": fc.text, "function": err.field, "error": err.message} for fc, err in problems
    ]
    return CheckReport(checked, mismatches, volatile, unsupported, differ, not_cached, total)


__all__ = [
    "LIBREOFFICE",
    "CheckReport",
    "Recalc",
    "base_store",
    "block_cells",
    "block_values",
    "check",
    "jsonable",
    "make_ctx",
    "recalculate",
    "run_block",
    "same_value",
    "store_block",
]
