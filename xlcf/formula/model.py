"""Compiled evaluations for repeated use: a Solver model (objective as a function of the variable cells, numpy or
torch with gradients) and a recalculator (set constant cells, recalculate, read), both reusing their index arrays.

Only the blocks between the variables and the objective are evaluated per call; the rest of the workbook is
computed once at compile time. In the torch pass every sub-expression that does not depend on the variables (the
mask ``H3:V17<>""`` of a ratings block, a ``COUNT``) is evaluated once with numpy and kept as a constant tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xlcf.errors import FormulaError, SolverModelError
from xlcf.formula.backend import NUMPY, get_backend
from xlcf.formula.book import BookView, cell_name, split_cell
from xlcf.formula.calc import (
    base_store,
    block_cells,
    block_values,
    make_ctx,
    run_block,
    store_block,
)
from xlcf.formula.evaluator import Block
from xlcf.formula.graph import Graph, build_blocks, ref_rects
from xlcf.formula.nodes import Binary, Call, Node, Percent, Ref, Unary
from xlcf.formula.registry import Ctx
from xlcf.formula.store import Grid, RefVal, Store
from xlcf.formula.values import NUM, TEXT, V, to_python


def parse_area(text: str, sheet: str | None) -> tuple[str, int, int, int, int]:
    """``"Sheet!B26:F40"``, ``"'My sheet'!A1"`` or ``"B26:F40"`` (on ``sheet``) -> (sheet, top, left, bottom,
    right)."""
    body = text.strip().lstrip("=")
    if "!" in body:
        cut = body.rindex("!")
        sheet, body = body[:cut], body[cut + 1 :]
        if sheet.startswith("'") and sheet.endswith("'"):
            sheet = sheet[1:-1].replace("''", "'")
    if sheet is None:
        raise SolverModelError(f"'{text}' names no sheet (write it as Sheet!{body})", field=text)
    first, _, last = body.partition(":")
    r1, c1 = split_cell(first)
    r2, c2 = split_cell(last) if last else (r1, c1)
    return sheet, min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2)


@dataclass
class _Plan:
    blocks: list[Block]
    np_ctx: dict
    bk_ctx: dict


class Model:
    """The objective cell as a function of the variable cells (see :meth:`xlcf.formula.FormulaBook.compile`)."""

    def __init__(
        self,
        view: BookView,
        objective: str,
        variables: list[str],
        *,
        sheet: str | None = None,
        backend: str = "numpy",
        device=None,
        dtype=None,
    ):
        self.view = view
        self.bk = get_backend(backend, device=device, dtype=dtype)
        osheet, orow, ocol, orow2, ocol2 = parse_area(objective, sheet)
        if (orow, ocol) != (orow2, ocol2):
            raise SolverModelError(f"the objective {objective} is a range; it must be one cell", field="objective")
        view.sheet(osheet)
        self.objective_cell = cell_name(osheet, orow, ocol)
        self._obj = (osheet, orow, ocol)
        self.areas = [parse_area(v, sheet) for v in variables]
        self.variable_cells: list[str] = []
        var_pos: dict[str, tuple[list[int], list[int]]] = {}
        for s, t, lft, bot, rgt in self.areas:
            sv = view.sheet(s)
            for r in range(t, bot + 1):
                for c in range(lft, rgt + 1):
                    if (r, c) in sv.formulas or (r, c) in sv.array_members:
                        fc = sv.formulas.get((r, c)) or sv.formulas[sv.array_members[(r, c)]]
                        raise SolverModelError(
                            f"the variable cell {cell_name(s, r, c)} holds a formula ({fc.text}); "
                            f"variable cells must hold numbers",
                            where=cell_name(s, r, c),
                            field="variables",
                        )
                    self.variable_cells.append(cell_name(s, r, c))
                    rows, cols = var_pos.setdefault(s, ([], []))
                    rows.append(r)
                    cols.append(c)
        if not self.variable_cells:
            raise SolverModelError("no variable cells", field="variables")
        self._var_pos = {s: (np.array(r), np.array(c)) for s, (r, c) in var_pos.items()}
        self._var_slices = []
        start = 0
        for s, (var_rows, _cols) in self._var_pos.items():
            self._var_slices.append((s, start, start + len(var_rows)))
            start += len(var_rows)
        # the variables in the order given (areas one after the other) -> the order of x
        order = []
        offsets = dict.fromkeys(self._var_pos, 0)
        pos_in = {}
        for s, start, _ in self._var_slices:
            pos_in[s] = start
        for s, t, lft, bot, rgt in self.areas:
            for _ in range((bot - t + 1) * (rgt - lft + 1)):
                order.append(pos_in[s] + offsets[s])
                offsets[s] += 1
        self._perm = np.array(order)  # x[i] lives at internal slot _perm[i]
        self._compile()

    # -- compiling --------------------------------------------------------------------------------------------
    def _compile(self) -> None:
        view = self.view
        blocks, problems = build_blocks(view)
        graph = Graph(view, blocks)
        osheet, orow, ocol = self._obj
        obj_uid = (
            int(graph.owner[osheet][orow, ocol])
            if orow < graph.owner[osheet].shape[0] and ocol < graph.owner[osheet].shape[1]
            else -1
        )
        obj_fc = view.sheets[osheet].formulas.get((orow, ocol))
        bad = next((err for fc, err in problems if (fc.sheet, fc.row, fc.col) == self._obj), None)
        if bad is not None:
            raise bad
        if obj_uid < 0 and obj_fc is None:
            raise SolverModelError(
                f"the objective {self.objective_cell} holds no formula", where=self.objective_cell, field="objective"
            )
        var_grid = {s: np.zeros_like(g, dtype=bool) for s, g in graph.owner.items()}
        for s, (rows, cols) in self._var_pos.items():
            var_grid[s][rows, cols] = True
        direct = {b.uid for b in blocks if _reads(graph.rects[b.uid], var_grid)}
        dynamic = graph.descendants(direct)
        if obj_uid not in dynamic:
            raise SolverModelError(
                f"the objective {self.objective_cell} ({obj_fc.text if obj_fc else ''}) does not "
                f"depend on the variable cells {', '.join(_area_text(a) for a in self.areas)}",
                where=self.objective_cell,
                field="objective",
            )
        self._check_problems(problems, graph, graph.ancestors({obj_uid}) | dynamic, var_grid)
        everything = graph.order(dynamic | {obj_uid})
        store = base_store(view)
        for s, (rows, cols) in self._var_pos.items():
            vals = [view.sheets[s].values.get((int(r), int(c))) for r, c in zip(rows, cols)]
            store.put(s, rows, cols, V(np.array([_number(v) for v in vals], dtype=float).reshape(-1, 1, 1)))
        self.x0 = np.asarray(store_values(store, self._var_pos, self._var_slices))[self._perm]
        self._dyn_blocks = [b for b in everything if b.uid in dynamic]
        for blk in everything:  # constants and the first state, once
            if blk.uid not in dynamic:
                store_block(store, blk, run_block(blk, make_ctx(NUMPY, store, blk)))
        self._base = store
        obj_anc = graph.ancestors({obj_uid})
        self._obj_blocks = [b for b in self._dyn_blocks if b.uid in obj_anc]
        self.cells_evaluated = sum(len(block_cells(b)) for b in self._obj_blocks)
        self.downstream_count = sum(len(block_cells(b)) for b in self._dyn_blocks)
        dyn_grid = {s: g.copy() for s, g in var_grid.items()}
        for b in self._dyn_blocks:
            if b.area is not None:
                t, lft, bot, rgt = b.area
                dyn_grid[b.sheet][t : bot + 1, lft : rgt + 1] = True
            else:
                dyn_grid[b.sheet][b.rows, b.cols] = True
        self._dyn_grid = dyn_grid
        self._np_ctx = {id(b): make_ctx(NUMPY, store, b) for b in self._dyn_blocks}
        self._bk_ctx: dict[int, Ctx] | None = None  # built on the first differentiable evaluation
        self._bk_base: Store | None = None
        self._obj_index = (osheet, (orow - 1) * store.grids[osheet].ncols + (ocol - 1))

    def _check_problems(self, problems, graph: Graph, needed: set[int], var_grid: dict) -> None:
        """A formula the evaluator cannot compute is an error when the objective (or a cell depending on the
        variables) reads it, or when it reads the variables itself: its cached value would go stale."""
        if not problems:
            return
        dyn = {s: g.copy() for s, g in var_grid.items()}
        for uid in needed:
            blk = graph.blocks[uid]
            if blk.area is None:
                dyn[blk.sheet][blk.rows, blk.cols] = True
        for fc, err in problems:
            for uid in needed:
                for s, t, lft, bot, rgt in graph.rects[uid]:
                    if (
                        s == fc.sheet
                        and int(np.min(t)) <= fc.row <= int(np.max(bot))
                        and int(np.min(lft)) <= fc.col <= int(np.max(rgt))
                    ):
                        raise err
            if fc.parsed is not None:
                tree = self.view.bind(fc.parsed.tree, fc.sheet)
                rows, cols = np.array([fc.row]), np.array([fc.col])
                if _reads(ref_rects(tree, rows, cols, fc.sheet, self.view.sheets), dyn):
                    raise err

    def _prepare_backend(self) -> None:
        """Contexts for the differentiable pass, with the constant sub-expressions of each block folded."""
        bk = self.bk
        self._bk_base = self._base.copy(bk)
        self._bk_ctx = {}
        for blk in self._obj_blocks:
            ctx = make_ctx(bk, self._bk_base, blk)
            static_ids = _static_nodes(blk, self._dyn_grid, self.view.sheets)
            if static_ids:
                rec = make_ctx(NUMPY, self._base, blk)
                rec.record, rec.record_ids = {}, frozenset(static_ids)
                run_block(blk, rec)
                if not rec.memo.get("per_cell"):
                    ctx.static = {k: _to_backend(bk, v) for k, v in rec.record.items()}
            self._bk_ctx[id(blk)] = ctx

    # -- evaluating -------------------------------------------------------------------------------------------
    def _fresh(self, base: Store, bk) -> Store:
        return Store(
            bk, {name: Grid(bk, g.nrows, g.ncols, g.num, g.kind, g.text, g.kver) for name, g in base.grids.items()}
        )

    def _put_x(self, store: Store, x, bk) -> None:
        if bk is NUMPY:
            xs = np.asarray(x, dtype=float).reshape(-1)
            inner = np.empty_like(xs)
            inner[self._perm] = xs
        else:
            inner = x[self._inv_perm()]
        for s, start, stop in self._var_slices:
            rows, cols = self._var_pos[s]
            store.put(s, rows, cols, V(bk.reshape(inner[start:stop], (-1, 1, 1))), self._memo_for(bk), ("x", s))

    def _inv_perm(self):
        if not hasattr(self, "_inv"):
            inv = np.empty_like(self._perm)
            inv[self._perm] = np.arange(len(self._perm))
            self._inv = self.bk.index(inv) if self.bk is not NUMPY else inv
        return self._inv

    def _memo_for(self, bk) -> dict:
        if not hasattr(self, "_memos"):
            self._memos: dict[str, dict] = {}
        return self._memos.setdefault(bk.name, {})

    def objective(self, x):
        """The objective's value for variable values ``x`` (1-D, in the order of ``variable_cells``): a float
        with the numpy backend; a 0-d tensor that carries gradients with the torch backend. NaN when the cell is
        not a number (an error, text)."""
        bk = self.bk
        if bk is NUMPY:
            store = self._fresh(self._base, NUMPY)
            for g in store.grids.values():
                g.num = g.num.copy()
            self._put_x(store, x, NUMPY)
            for blk in self._obj_blocks:
                ctx = self._np_ctx[id(blk)]
                ctx.store = store
                store_block(store, blk, run_block(blk, ctx), ctx.memo)
            sheet, idx = self._obj_index
            g = store.grids[sheet]
            return float(g.num[idx]) if g.kind[idx] == NUM else math.nan
        if self._bk_ctx is None:
            self._prepare_backend()
        store = self._fresh(self._bk_base, bk)
        self._put_x(store, x, bk)
        for blk in self._obj_blocks:
            ctx = self._bk_ctx[id(blk)]
            ctx.store = store
            store_block(store, blk, run_block(blk, ctx), ctx.memo)
        sheet, idx = self._obj_index
        g = store.grids[sheet]
        out = g.num[idx]
        if g.kind[idx] != NUM:
            out = out * math.nan
        return out

    def downstream_values(self, x) -> dict[str, object]:
        """{"Sheet!A1": value} of every formula cell downstream of the variables, for variable values ``x``
        (numpy pass, Excel's errors and text included) — the cached values to write."""
        store = self._fresh(self._base, NUMPY)
        for g in store.grids.values():
            g.num = g.num.copy()
            g.kind = g.kind.copy()
            g.kver = [0]
            g.text = None if g.text is None else g.text.copy()
        self._put_x(store, np.asarray(_host(x), dtype=float), NUMPY)
        out: dict[str, object] = {}
        for blk in self._dyn_blocks:
            ctx = self._np_ctx[id(blk)]
            ctx.store = store
            v = run_block(blk, ctx)
            store_block(store, blk, v, ctx.memo)
            for (r, c), value in zip(block_cells(blk), block_values(blk, v)):
                out[cell_name(blk.sheet, r, c)] = value
        return out

    def depends_on_variables(self, cell: str) -> bool:
        """Whether a cell ("Sheet!A1") is a variable or a formula cell whose value depends on the variables."""
        s, r, c, _, _ = parse_area(cell, None)
        g = self._dyn_grid.get(s)
        return g is not None and r < g.shape[0] and c < g.shape[1] and bool(g[r, c])

    def variable_values(self, x) -> dict[str, float]:
        """{"Sheet!B26": float} for writing the variable cells."""
        xs = np.asarray(_host(x), dtype=float).reshape(-1)
        return {name: float(v) for name, v in zip(self.variable_cells, xs)}

    @property
    def f0(self) -> float:
        """The objective at the variables' cached values (numpy)."""
        return self._objective_numpy(self.x0)

    def _objective_numpy(self, x) -> float:
        bk, self.bk = self.bk, NUMPY
        try:
            return self.objective(x)
        finally:
            self.bk = bk

    def check_start(self) -> float:
        """The objective at the start; SolverModelError when it is not a finite number."""
        value = self.f0
        if not math.isfinite(value):
            raw = self.downstream_values(self.x0).get(self.objective_cell)
            shown = raw if raw is not None and not isinstance(raw, float) else value
            raise SolverModelError(
                f"the objective {self.objective_cell} is {shown} at the start (the variable "
                f"cells' current values); it must be a finite number",
                where=self.objective_cell,
                field="objective",
            )
        return value


def _host(x):
    detach = getattr(x, "detach", None)
    return detach().cpu().numpy() if detach else x


def _number(v) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return 0.0


def store_values(store: Store, var_pos, slices) -> np.ndarray:
    out = []
    for s, _start, _stop in slices:
        rows, cols = var_pos[s]
        g = store.grids[s]
        flat = (rows - 1) * g.ncols + (cols - 1)
        out.append(np.asarray(g.num)[flat])
    return np.concatenate(out)


def _area_text(a) -> str:
    s, t, lft, bot, rgt = a
    first, last = cell_name(s, t, lft), cell_name(s, bot, rgt).split("!")[1]
    return first if (t, lft) == (bot, rgt) else f"{first}:{last}"


def _reads(rects, grids: dict[str, np.ndarray]) -> bool:
    for s, t, lft, bot, rgt in rects:
        g = grids.get(s)
        if g is None:
            continue
        t0, l0 = max(int(np.min(t)), 1), max(int(np.min(lft)), 1)
        b0, r0 = min(int(np.max(bot)), g.shape[0] - 1), min(int(np.max(rgt)), g.shape[1] - 1)
        if b0 >= t0 and r0 >= l0 and g[t0 : b0 + 1, l0 : r0 + 1].any():
            return True
    return False


def _static_nodes(blk: Block, dyn_grid, sheets) -> set[int]:
    """ids of the sub-trees of a block's formula that read no cell depending on the variables."""
    out: set[int] = set()

    def visit(node) -> bool:  # True when the node reads a cell that depends on the variables
        children: tuple[Node, ...] = ()
        if isinstance(node, Binary):
            children = (node.left, node.right)
        elif isinstance(node, (Unary, Percent)):
            children = (node.operand,)
        elif isinstance(node, Call):
            children = node.args
        flags = [visit(ch) for ch in children]  # every child is visited (each registers its own static parts)
        dynamic = True in flags
        if isinstance(node, Ref) or (isinstance(node, Call) and node.name == "OFFSET"):
            dynamic = dynamic or _reads(
                ref_rects(node, blk.rows, blk.cols, blk.sheet, sheets, positions=blk.positions), dyn_grid
            )
        if not dynamic:
            out.add(id(node))
        return dynamic

    visit(blk.tree)
    return out


def _to_backend(bk, v):
    if isinstance(v, RefVal):
        return v
    return V(bk.asnum(v.num), v.kind, v.text, v.array, np.asarray(v.num))


class Recalculator:
    """Recalculate a workbook again and again after setting constant cells (``xlcf step``): compiled once."""

    def __init__(self, view: BookView):
        self.view = view
        blocks, self.problems = build_blocks(view)
        self.graph = Graph(view, blocks)
        self.order = self.graph.order()
        self.store = base_store(view)
        self._ctx = {id(b): make_ctx(NUMPY, self.store, b) for b in self.order}
        self._values: dict[str, object] = {}

    def set(self, values: dict[str, object]) -> None:
        """Set constant cells: {"Sheet!B4": value}. A formula cell is refused."""
        by_sheet: dict[str, list] = {}
        for name, value in values.items():
            s, t, lft, _, _ = parse_area(name, None)
            if (t, lft) in self.view.sheet(s).formulas:
                raise SolverModelError(f"{name} holds a formula; only constant cells can be set", where=name)
            by_sheet.setdefault(s, []).append((t, lft, value))
        for s, items in by_sheet.items():
            rows = np.array([r for r, _, _ in items])
            cols = np.array([c for _, c, _ in items])
            from xlcf.formula.values import from_rows

            col = from_rows(NUMPY, [[v] for _, _, v in items])
            self.store.put(
                s,
                rows,
                cols,
                V(
                    col.num.reshape(-1, 1, 1),
                    None if col.kind is None else col.kind.reshape(-1, 1, 1),
                    None if col.text is None else col.text.reshape(-1, 1, 1),
                ),
            )

    def recalc(self) -> dict[str, object]:
        """Recalculate every supported formula cell; {"Sheet!A1": value}."""
        out: dict[str, object] = {}
        for blk in self.order:
            ctx = self._ctx[id(blk)]
            v = run_block(blk, ctx)
            store_block(self.store, blk, v, ctx.memo)
            for (r, c), value in zip(block_cells(blk), block_values(blk, v)):
                out[cell_name(blk.sheet, r, c)] = value
        self._values = out
        return out

    def value(self, name: str):
        """The current value of any cell (constant or formula, after the last recalc)."""
        s, r, c, _, _ = parse_area(name, None)
        g = self.store.grid(s)
        if r > g.nrows or c > g.ncols:
            return None
        i = (r - 1) * g.ncols + (c - 1)
        k = int(g.kind[i])
        return to_python(k, float(g.num[i]), g.text[i] if g.text is not None and k == TEXT else None)


__all__ = ["FormulaError", "Model", "Recalculator", "parse_area"]
