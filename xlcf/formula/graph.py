"""Blocks of formula cells and the order to evaluate them in.

Cells of a sheet whose formulas are the same tree (the same R1C1 formula, names resolved) form one block. A block
depends on another when one of its references (the bounding rectangle over its cells) covers a cell of the other.
Blocks are evaluated in topological order of the strongly connected components of that graph; a component that is
not a single acyclic block (a running total ``B2=B1+A2``; two columns that feed each other row by row, as the
gradient-descent sheets do) is ordered cell by cell and split into sub-blocks of cells at the same depth — or it is
a real circular reference, reported with a cell on the cycle.
"""

from __future__ import annotations

import graphlib
from collections import defaultdict
from typing import cast

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from xlcf.errors import FormulaError
from xlcf.formula.backend import NUMPY
from xlcf.formula.book import BookView, cell_name
from xlcf.formula.evaluator import Block, evaluate, unsupported
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
    Node,
    Num,
    Ref,
    Str,
    Unary,
    walk,
)
from xlcf.formula.registry import FUNCTIONS, VOLATILE, Ctx
from xlcf.formula.store import Grid, RefVal, Store


def build_blocks(book: BookView, sheets=None, single_cells: bool = False) -> tuple[list[Block], list]:
    """(blocks, problems): every formula cell the evaluator supports in a block; the others as (FormulaCell,
    FormulaError) — parse errors and unsupported functions. ``single_cells``: one block per cell."""
    groups: dict[tuple, list] = defaultdict(list)
    trees: dict[tuple, Node] = {}
    problems = []
    checked: dict[tuple, tuple] = {}  # per parsed tree and sheet: (bound tree, unsupported function or None)
    for fc in book.formula_cells():
        if sheets is not None and fc.sheet not in sheets:
            continue
        if fc.error is not None:
            problems.append((fc, fc.error))
            continue
        seen = checked.get((fc.sheet, id(fc.parsed.tree)))
        if seen is None:
            tree = book.bind(fc.parsed.tree, fc.sheet)
            bad = next((n.name for n in walk(tree) if isinstance(n, Call) and n.name not in FUNCTIONS), None)
            seen = checked[(fc.sheet, id(fc.parsed.tree))] = (tree, bad)
        tree, bad = seen
        if bad is not None:
            problems.append((fc, unsupported(bad, fc.text, fc.where)))
            continue
        key = (fc.sheet, id(tree)) if fc.area is None and not single_cells else (fc.sheet, fc.row, fc.col, "one")
        trees[key] = tree
        groups[key].append(fc)
    blocks = []
    merged: dict[tuple, list] = defaultdict(list)
    for key, cells in groups.items():
        tree = trees[key]
        skel = None if cells[0].area is not None or single_cells else skeleton(tree)
        if skel is None:
            blocks.append(_block(tree, cells, key))
        else:
            merged[(cells[0].sheet, skel)].append((tree, cells, key))
    for parts in merged.values():
        if len(parts) == 1:
            tree, cells, key = parts[0]
            blocks.append(_block(tree, cells, key))
        else:
            blocks.append(_structure_block(parts))
    for i, b in enumerate(blocks):
        b.uid = i
    return blocks, problems


def _block(tree, cells, key) -> Block:
    first = cells[0]
    volatile = any(isinstance(n, Call) and n.name in VOLATILE for n in walk(tree))
    return Block(
        first.sheet,
        tree,
        np.array([c.row for c in cells], dtype=np.int64),
        np.array([c.col for c in cells], dtype=np.int64),
        first.text,
        first.area,
        volatile,
        key=key,
    )


def skeleton(tree):
    """A tree's structure with each reference reduced to its sheet and shape, or None when a reference's shape
    varies from cell to cell. Formulas with equal skeletons evaluate as one block even when their references do
    not move with the cell (a prediction grid reading a transposed factor block)."""
    out = []
    for node in walk(tree):
        if isinstance(node, Ref):
            if not node.fixed_shape:
                return None
            out.append(("ref", node.sheet, node.bottom.value - node.top.value, node.right.value - node.left.value))
        elif isinstance(node, (Num, Str, Bool, Err, Name, Array, Missing)):
            out.append(node)
        else:
            out.append(
                (
                    type(node).__name__,
                    getattr(node, "op", None),
                    getattr(node, "name", None),
                    len(getattr(node, "args", ())),
                )
            )
    return tuple(out)


def _structure_block(parts) -> Block:
    """One block from groups of cells whose formulas share a skeleton: the first group's tree, with every
    reference's per-cell position taken from each cell's own formula."""
    tree0, _cells0, key0 = parts[0]
    refs0 = [n for n in walk(tree0) if isinstance(n, Ref)]
    cols_pos: list[list[list[np.ndarray]]] = [[[], [], [], []] for _ in refs0]
    rows, cols = [], []
    for tree, cells, _ in parts:
        r = np.array([c.row for c in cells], dtype=np.int64)
        c = np.array([c.col for c in cells], dtype=np.int64)
        rows.append(r)
        cols.append(c)
        for i, node in enumerate(n for n in walk(tree) if isinstance(n, Ref)):
            t, b = node.top.resolve(r), node.bottom.resolve(r)
            lft, rgt = node.left.resolve(c), node.right.resolve(c)
            for j, a in enumerate((np.minimum(t, b), np.minimum(lft, rgt), np.maximum(t, b), np.maximum(lft, rgt))):
                cols_pos[i][j].append(np.broadcast_to(a, r.shape).astype(np.int64))
    positions = {id(node): tuple(np.concatenate(p) for p in pos) for node, pos in zip(refs0, cols_pos)}
    block = _block(tree0, [c for _, cells, _ in parts for c in cells], ("structure", key0))
    block.rows, block.cols = np.concatenate(rows), np.concatenate(cols)
    block.positions = positions
    return block


# ----------------------------------------------------------------------------------------------------------------
# Footprints


def _ints(node_bound, anchors: np.ndarray) -> np.ndarray:
    return np.atleast_1d(node_bound.resolve(anchors))


def constant(node) -> float | None:
    """The value of a constant number expression (``3``, ``-1``, ``2*5``), else None."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Unary):
        v = constant(node.operand)
        return None if v is None else (-v if node.op == "-" else v)
    if isinstance(node, Binary) and node.op in "+-*":
        a, b = constant(node.left), constant(node.right)
        if a is None or b is None:
            return None
        return a + b if node.op == "+" else (a - b if node.op == "-" else a * b)
    return None


def ref_rects(
    tree, rows: np.ndarray, cols: np.ndarray, sheet: str, sheets: dict, probe=None, positions: dict | None = None
) -> list[tuple]:
    """Per reference of a tree: (sheet, top[n], left[n], bottom[n], right[n]) for the block's cells (arrays of
    length n or 1). OFFSET also reads the cells its arguments point at: with constant arguments that range; else
    the range ``probe(node)`` finds from the cached values of the arguments; else the whole sheet."""
    rects = []
    for node in walk(tree):
        if isinstance(node, Ref) and positions and id(node) in positions:
            rects.append((node.sheet or sheet,) + tuple(positions[id(node)]))
        elif isinstance(node, Ref):
            s = node.sheet or sheet
            t, b = _ints(node.top, rows), _ints(node.bottom, rows)
            lft, rgt = _ints(node.left, cols), _ints(node.right, cols)
            t, b = np.minimum(t, b), np.maximum(t, b)
            lft, rgt = np.minimum(lft, rgt), np.maximum(lft, rgt)
            rects.append((s, t, lft, b, rgt))
        elif isinstance(node, Call) and node.name == "OFFSET" and node.args and isinstance(node.args[0], Ref):
            base = node.args[0]
            s = base.sheet or sheet
            nums = [constant(a) for a in node.args[1:]]
            if len(nums) >= 2 and all(x is not None for x in nums):
                known = cast("list[float]", nums)  # none is None (checked just above)
                t = _ints(base.top, rows) + int(known[0])
                lft = _ints(base.left, cols) + int(known[1])
                h = int(known[2]) if len(known) > 2 else int((_ints(base.bottom, rows) - _ints(base.top, rows))[0]) + 1
                w = int(known[3]) if len(known) > 3 else int((_ints(base.right, cols) - _ints(base.left, cols))[0]) + 1
                rects.append((s, t, lft, t + h - 1, lft + w - 1))
                continue
            found = probe(node) if probe is not None else None
            if found is not None:
                rects.append(found)
                continue
            view = sheets.get(s)
            if view is not None:
                rects.append((s, np.array([1]), np.array([1]), np.array([view.nrows]), np.array([view.ncols])))
    return rects


# ----------------------------------------------------------------------------------------------------------------
# Ordering


class Graph:
    """Dependencies between blocks and the evaluation order."""

    def __init__(self, book: BookView, blocks: list[Block]):
        self.book = book
        self.blocks = blocks
        self.owner: dict[str, np.ndarray] = {}
        for name, view in book.sheets.items():
            self.owner[name] = np.full((view.nrows + 1, view.ncols + 1), -1, dtype=np.int64)
        for b in blocks:
            grid = self.owner[b.sheet]
            if b.area is not None:
                t, lft, bot, rgt = b.area
                grid[t : bot + 1, lft : rgt + 1] = b.uid
            else:
                grid[b.rows, b.cols] = b.uid
        self._cached: Store | None = None
        self.rects = [
            ref_rects(b.tree, b.rows, b.cols, b.sheet, book.sheets, self._probe(b), b.positions) for b in blocks
        ]
        self.deps: list[set[int]] = [self._deps(i) for i in range(len(blocks))]

    def _probe(self, blk: Block):
        """Where an OFFSET with computed arguments points, from the cached values of its arguments."""

        def probe(node):
            if self._cached is None:
                self._cached = Store(
                    NUMPY, {n: Grid.from_cells(NUMPY, v.nrows, v.ncols, v.values) for n, v in self.book.sheets.items()}
                )
            ctx = Ctx(NUMPY, self._cached, blk.sheet, blk.rows, blk.cols, blk.formula, positions=blk.positions)
            try:
                with np.errstate(all="ignore"):
                    ref = evaluate(node, ctx, True)
            except Exception:
                return None
            if not isinstance(ref, RefVal):
                return None
            return (ref.sheet, ref.top, ref.left, ref.top + ref.h - 1, ref.left + ref.w - 1)

        return probe

    def _covered(self, sheet: str, t, lft, bot, rgt) -> np.ndarray:
        grid = self.owner.get(sheet)
        if grid is None:
            return np.empty(0, dtype=np.int64)
        t, lft = max(int(np.min(t)), 1), max(int(np.min(lft)), 1)
        bot, rgt = min(int(np.max(bot)), grid.shape[0] - 1), min(int(np.max(rgt)), grid.shape[1] - 1)
        if bot < t or rgt < lft:
            return np.empty(0, dtype=np.int64)
        ids = np.unique(grid[t : bot + 1, lft : rgt + 1])
        return ids[ids >= 0]

    def _deps(self, i: int) -> set[int]:
        out: set[int] = set()
        for s, t, lft, bot, rgt in self.rects[i]:
            out.update(int(x) for x in self._covered(s, t, lft, bot, rgt))
        return out

    def order(self, wanted: set[int] | None = None) -> list[Block]:
        """Blocks (split where a component needs it) in an order where every block comes after what it reads.
        ``wanted``: only these blocks and what they depend on. FormulaError on a circular reference."""
        n = len(self.blocks)
        keep = self.ancestors(wanted) if wanted is not None else set(range(n))
        src, dst = [], []
        for i in keep:
            for d in self.deps[i]:
                if d in keep:
                    src.append(i)
                    dst.append(d)
        mat = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        _, labels = connected_components(mat, directed=True, connection="strong")
        members: dict[int, list[int]] = defaultdict(list)
        for i in sorted(keep):
            members[int(labels[i])].append(i)
        sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
        for i in keep:
            sorter.add(int(labels[i]), *{int(labels[d]) for d in self.deps[i] if d in keep and labels[d] != labels[i]})
        out: list[Block] = []
        for comp in sorter.static_order():
            blocks = members[comp]
            if len(blocks) == 1 and blocks[0] not in self.deps[blocks[0]]:
                out.append(self.blocks[blocks[0]])
            else:
                out.extend(self._split(blocks))
        return out

    def ancestors(self, wanted: set[int]) -> set[int]:
        seen = set(wanted)
        stack = list(wanted)
        while stack:
            for d in self.deps[stack.pop()]:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return seen

    def descendants(self, roots: set[int]) -> set[int]:
        users: dict[int, list[int]] = defaultdict(list)
        for i, ds in enumerate(self.deps):
            for d in ds:
                users[d].append(i)
        seen = set(roots)
        stack = list(roots)
        while stack:
            for u in users[stack.pop()]:
                if u not in seen:
                    seen.add(u)
                    stack.append(u)
        return seen

    def _split(self, comp: list[int]) -> list[Block]:
        """Order the cells of a cyclic component one by one; sub-blocks of cells at equal depth."""
        units: list[tuple[int, int]] = []  # (block uid, index in block)
        unit_grid: dict[str, dict[tuple[int, int], int]] = defaultdict(dict)
        for b in comp:
            blk = self.blocks[b]
            if blk.area is not None:
                uid = len(units)
                units.append((b, 0))
                t, lft, bot, rgt = blk.area
                for r in range(t, bot + 1):
                    for c in range(lft, rgt + 1):
                        unit_grid[blk.sheet][(r, c)] = uid
                continue
            for k in range(blk.n):
                unit_grid[blk.sheet][(int(blk.rows[k]), int(blk.cols[k]))] = len(units)
                units.append((b, k))
        deps: list[set[int]] = [set() for _ in units]
        for u, (b, k) in enumerate(units):
            blk = self.blocks[b]
            for s, t, lft, bot, rgt in self.rects[b]:
                cells = unit_grid.get(s)
                if not cells:
                    continue
                if blk.area is not None:
                    r0, c0, r1, c1 = int(np.min(t)), int(np.min(lft)), int(np.max(bot)), int(np.max(rgt))
                else:
                    r0, c0, r1, c1 = (int(a[k]) if len(a) > 1 else int(a[0]) for a in (t, lft, bot, rgt))
                if (r1 - r0 + 1) * (c1 - c0 + 1) <= len(cells):
                    for r in range(max(r0, 1), min(r1, MAX_ROW) + 1):
                        for c in range(max(c0, 1), min(c1, MAX_COL) + 1):
                            v = cells.get((r, c))
                            if v is not None:
                                deps[u].add(v)
                else:
                    for (r, c), v in cells.items():
                        if r0 <= r <= r1 and c0 <= c <= c1:
                            deps[u].add(v)
        level = self._levels(units, deps)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for u, (b, k) in enumerate(units):
            groups[(level[u], b)].append(k)
        out = []
        for (lv, b), ks in sorted(groups.items()):
            blk = self.blocks[b]
            if blk.area is not None:
                out.append(blk)
                continue
            idx = np.array(sorted(ks))
            out.append(blk.subset(idx, key=(blk.key, "level", lv)))
        return out

    def _levels(self, units, deps: list[set[int]]) -> list[int]:
        indeg = [len(d) for d in deps]
        users: list[list[int]] = [[] for _ in units]
        for u, ds in enumerate(deps):
            for d in ds:
                users[d].append(u)
        level = [0] * len(units)
        ready = [u for u, k in enumerate(indeg) if k == 0]
        done = 0
        while ready:
            nxt = []
            for u in ready:
                done += 1
                for v in users[u]:
                    level[v] = max(level[v], level[u] + 1)
                    indeg[v] -= 1
                    if indeg[v] == 0:
                        nxt.append(v)
            ready = nxt
        if done < len(units):
            left = {u for u, k in enumerate(indeg) if k > 0}
            u = next(iter(left))
            seen = []
            while u not in seen:  # walk back along dependencies inside the cycle until a cell repeats
                seen.append(u)
                u = next(d for d in deps[u] if d in left)
            cyc = seen[seen.index(u) :]
            names = [self._unit_name(units[x]) for x in cyc]
            chain = " -> ".join(names[:8] + (["..."] if len(names) > 8 else []) + [names[0]])
            raise FormulaError(
                f"circular reference: {chain} (each reads the next; the evaluator does not iterate)",
                where=names[0],
                field="circular reference",
            )
        return level

    def _unit_name(self, unit) -> str:
        b, k = unit
        blk = self.blocks[b]
        if blk.area is not None:
            return cell_name(blk.sheet, blk.area[0], blk.area[1])
        return cell_name(blk.sheet, int(blk.rows[k]), int(blk.cols[k]))


__all__ = ["Graph", "build_blocks", "ref_rects"]
