"""Structural operations of a numpy tape as gathers, composed at compile time.

Most of the operations the evaluator's torch pass records only move numbers around: the permutation of the
variables into the sheets' order, the ``index_put`` of a block's values into a sheet's flat grid, the
``index_select`` that reads a range back from it, views, slices, transposes. Each is a gather: its output, read
flat, is ``concat(sources, constants)[cidx]`` for a fixed index array. Two gathers in a row are one gather
(``cidx_1[cidx_2]``), so a chain of them — a block written into a grid, read back by the next block through
another reference, reshaped — becomes one ``take`` from the array that computed the values, or nothing at all
when it only reshapes it. The grids themselves never appear in the replayed tape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xlcf.formula.tape_ops import OpImpl, Slot
from xlcf.formula.tape_shapes import scatter_add

# views that cost nothing when replayed as themselves: kept as they are unless they fold into a plain reshape
CHEAP = frozenset(
    f"aten.{n}"
    for n in (
        "view.default",
        "_unsafe_view.default",
        "reshape.default",
        "expand.default",
        "transpose.int",
        "permute.default",
        "t.default",
        "select.int",
        "slice.Tensor",
        "squeeze.dim",
        "squeeze.dims",
        "squeeze.default",
        "unsqueeze.default",
        "alias.default",
        "clone.default",
        "contiguous.default",
        "lift_fresh.default",
        "_to_copy.default",
    )
)


RESHAPES = frozenset(
    f"aten.{n}"
    for n in (
        "view.default",
        "_unsafe_view.default",
        "reshape.default",
        "squeeze.dim",
        "squeeze.dims",
        "squeeze.default",
        "unsqueeze.default",
        "flatten.using_ints",
    )
)


@dataclass
class Gather:
    """``out.flat = concat([s.flat for s in srcs] + [consts])[cidx]``; ``srcs`` are slots that no gather
    produced."""

    srcs: tuple[int, ...]
    sizes: tuple[int, ...]
    cidx: np.ndarray  # int64, flat
    consts: np.ndarray | None

    @property
    def n_src(self) -> int:
        return int(sum(self.sizes))

    def compose(self, pos: np.ndarray) -> Gather:
        return Gather(self.srcs, self.sizes, self.cidx[np.asarray(pos, dtype=np.int64).reshape(-1)], self.consts)


def trivial(slot: int, value: np.ndarray, dynamic: bool) -> Gather:
    n = int(value.size)
    if dynamic:
        return Gather((slot,), (n,), np.arange(n, dtype=np.int64), None)
    return Gather((), (), np.arange(n, dtype=np.int64), np.asarray(value).reshape(-1))


def merge(parts: list[tuple[Gather, np.ndarray]], size: int) -> Gather:
    """One gather whose elements ``sel`` come from each part's gather (parts cover 0..size-1)."""
    srcs: list[int] = []
    sizes: list[int] = []
    for g, _ in parts:
        for s, n in zip(g.srcs, g.sizes):
            if s not in srcs:
                srcs.append(s)
                sizes.append(n)
    offset = dict(zip(srcs, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if srcs else []))
    total = int(sum(sizes))
    consts: list[np.ndarray] = []
    const_base = total
    cidx = np.zeros(size, dtype=np.int64)
    for g, sel in parts:
        n_const = 0 if g.consts is None else len(g.consts)
        table = np.empty(g.n_src + n_const, dtype=np.int64)
        at = 0
        for s, n in zip(g.srcs, g.sizes):
            table[at : at + n] = offset[s] + np.arange(n)
            at += n
        if n_const:
            table[at:] = const_base + np.arange(n_const)
            const_base += n_const
            consts.append(np.asarray(g.consts))
        cidx[sel] = table[g.cidx]
    return Gather(tuple(srcs), tuple(sizes), cidx, np.concatenate(consts) if consts else None)


def prune(g: Gather) -> Gather:
    """Drop the sources and constants no element reads."""
    used = np.zeros(g.n_src + (0 if g.consts is None else len(g.consts)), dtype=bool)
    used[g.cidx] = True
    srcs, sizes, keep_ranges = [], [], []
    at = 0
    for s, n in zip(g.srcs, g.sizes):
        if used[at : at + n].any():
            srcs.append(s)
            sizes.append(n)
            keep_ranges.append(np.arange(at, at + n))
        at += n
    consts = None
    if g.consts is not None:
        ci = np.nonzero(used[at:])[0]
        if len(ci):
            consts = g.consts[ci]
            keep_ranges.append(at + ci)
    keep = np.concatenate(keep_ranges) if keep_ranges else np.zeros(0, dtype=np.int64)
    remap = np.full(len(used), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    return Gather(tuple(srcs), tuple(sizes), remap[g.cidx], consts)


def positions(name: str, args: tuple, kwargs: dict, in_shape: tuple, out_shape: tuple, values) -> np.ndarray | None:
    """Flat positions in the (first) input that each output element copies, shaped as the output; None when the
    operation is not a plain gather of its first argument (or its indices depend on the variables)."""
    n = int(np.prod(in_shape)) if in_shape else 1
    grid = np.arange(n, dtype=np.int64).reshape(in_shape)
    if name in RESHAPES or name in (
        "aten.alias.default",
        "aten.clone.default",
        "aten.contiguous.default",
        "aten.lift_fresh.default",
        "aten._to_copy.default",
    ):
        return grid.reshape(out_shape)
    if name == "aten.expand.default":
        return np.broadcast_to(grid, out_shape)
    if name == "aten.transpose.int":
        return np.swapaxes(grid, args[1], args[2])
    if name in ("aten.t.default", "aten.numpy_T.default"):
        return grid.T
    if name == "aten.permute.default":
        return np.transpose(grid, [d % len(in_shape) for d in args[1]])
    if name == "aten.flip.default":
        return np.flip(grid, tuple(args[1]))
    if name == "aten.select.int":
        if isinstance(args[2], Slot):
            return None
        return grid[(slice(None),) * (args[1] % len(in_shape)) + (args[2],)]
    if name == "aten.slice.Tensor":
        full = list(args) + [None] * (5 - len(args))
        dim = full[1] if full[1] is not None else kwargs.get("dim", 0)
        start = full[2] if full[2] is not None else kwargs.get("start")
        end = full[3] if full[3] is not None else kwargs.get("end")
        step = full[4] if full[4] is not None else kwargs.get("step", 1)
        return grid[(slice(None),) * (dim % len(in_shape)) + (slice(start, end, step),)]
    if name == "aten.index_select.default":
        index = args[2]
        if values[1][index.index] or values[0][index.index].dtype.kind not in "iu":
            return None
        return np.take(grid, values[0][index.index], axis=args[1] % len(in_shape))
    if name == "aten.index.Tensor":
        key = []
        for i in args[1]:
            if i is None:
                key.append(slice(None))
            elif isinstance(i, Slot) and not values[1][i.index]:
                key.append(values[0][i.index])
            else:
                return None
        return grid[tuple(key)]
    return None


def put_parts(args: tuple, kwargs: dict, gathers, values) -> list[tuple[Gather, np.ndarray]] | None:
    """``index_put`` of a flat grid with constant, distinct indices, as parts for :func:`merge`: the written
    elements from the values, the others from the grid before."""
    base, indices, vals = args[0], args[1], args[2]
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    recorded, dynamic = values
    if accumulate or len(indices) != 1 or not isinstance(indices[0], Slot) or not isinstance(vals, Slot):
        return None
    idx_slot = indices[0].index
    if dynamic[idx_slot] or recorded[base.index].ndim != 1 or recorded[vals.index].ndim > 1:
        return None
    idx = recorded[idx_slot]
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        return None
    size = len(recorded[base.index])
    idx = np.where(idx < 0, idx + size, idx).astype(np.int64)
    n_values = recorded[vals.index].size
    if len(np.unique(idx)) != len(idx) or n_values not in (1, len(idx)):
        return None
    if recorded[vals.index].dtype != recorded[base.index].dtype:
        return None
    inverse = np.full(size, -1, dtype=np.int64)
    inverse[idx] = np.arange(len(idx)) if n_values == len(idx) else 0
    hit = inverse >= 0
    everything = np.arange(size)
    return [
        (gathers(vals.index).compose(inverse[hit]), everything[hit]),
        (gathers(base.index).compose(everything[~hit]), everything[~hit]),
    ]


def emit(g: Gather, shape: tuple, shapes: list, dtype) -> tuple[OpImpl | None, int | None]:
    """The replayed form of a gather of ``shape``: (None, slot) when it is a source unchanged, else (impl, None)."""
    g = prune(g)
    size = int(np.prod(shape)) if shape else 1
    if len(g.srcs) == 1 and g.consts is None and g.sizes[0] == size and np.array_equal(g.cidx, np.arange(size)):
        src = g.srcs[0]
        if tuple(shapes[src]) == tuple(shape):
            return None, src

        src_shape = tuple(shapes[src])

        def reshape(x):
            return x.reshape(shape)

        return OpImpl([src], reshape, lambda gr, out, x: (gr.reshape(src_shape),)), None
    cidx = g.cidx.reshape(shape)
    src_shapes = [shapes[s] for s in g.srcs]
    total = g.n_src
    full = total + (0 if g.consts is None else len(g.consts))
    consts = None if g.consts is None else np.asarray(g.consts, dtype=dtype)
    if len(g.srcs) == 1 and consts is None:
        n0, shape0 = g.sizes[0], src_shapes[0]

        def take1(x):
            return x.take(cidx)

        unique = len(np.unique(g.cidx)) == len(g.cidx)
        if unique:  # each element read once: the adjoint is a plain scatter

            def vjp1(gr, out, x):
                z = np.zeros(n0)
                z[g.cidx] = gr.reshape(-1)
                return (z.reshape(shape0),)

        else:

            def vjp1(gr, out, x):
                return (scatter_add((n0,), cidx, gr).reshape(shape0),)

        return OpImpl([g.srcs[0]], take1, vjp1, g.cidx if unique else None), None
    cuts = np.cumsum(g.sizes)[:-1]

    def take(*xs):
        pieces = [np.ravel(x) for x in xs]
        if consts is not None:
            pieces.append(consts)
        return np.concatenate(pieces).take(cidx)

    def vjp(gr, out, *xs):
        flat = scatter_add((full,), cidx, gr)[:total]
        return tuple(piece.reshape(s) for piece, s in zip(np.split(flat, cuts), src_shapes))

    return OpImpl(list(g.srcs), take, vjp), None


__all__ = ["CHEAP", "RESHAPES", "Gather", "emit", "merge", "positions", "prune", "put_parts", "trivial"]
