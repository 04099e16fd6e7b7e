"""The numpy tape's operators that change shapes, index, reduce and multiply (see :mod:`xlcf.formula.tape_ops`
for the conventions). Registered into the same table as the element-wise ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xlcf.formula.tape_ops import BUILDERS, NotTaped, OpImpl, Slot, builder, unbroadcast, wants


def _diff(ctx, a) -> bool:
    return ctx.float_out and wants(ctx, a)


# ----------------------------------------------------------------------------------------------------------------
# Shapes


def _reshaping(ctx, a, *args, **kw):
    """view, reshape, unsqueeze, squeeze: the output's shape is known from the recording."""
    out_shape, in_shape = tuple(ctx.shape), tuple(ctx.shapes[a.index])

    def reshape(x):
        return x.reshape(out_shape)

    def vjp(g, out, x):
        return (g.reshape(in_shape),)

    return OpImpl([a.index], reshape, vjp if _diff(ctx, a) else None)


for _name in (
    "aten.view.default",
    "aten._unsafe_view.default",
    "aten.reshape.default",
    "aten.unsqueeze.default",
    "aten.squeeze.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
    "aten.flatten.using_ints",
):
    BUILDERS[_name] = _reshaping


@builder("aten.expand.default")
def _expand(ctx, a, size, implicit=False):
    out_shape, in_shape = tuple(ctx.shape), tuple(ctx.shapes[a.index])

    def fwd(x):
        return np.broadcast_to(x, out_shape)

    def vjp(g, out, x):
        return (unbroadcast(g, in_shape),)

    return OpImpl([a.index], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.transpose.int")
def _transpose(ctx, a, d0, d1):
    def fwd(x):
        return x.swapaxes(d0, d1)

    def vjp(g, out, x):
        return (g.swapaxes(d0, d1),)

    return OpImpl([a.index], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.t.default", "aten.numpy_T.default")
def _t(ctx, a):
    return OpImpl([a.index], np.transpose, (lambda g, out, x: (g.T,)) if _diff(ctx, a) else None)


@builder("aten.permute.default")
def _permute(ctx, a, dims):
    ndim = len(ctx.shapes[a.index])
    dims = [d % ndim for d in dims] if ndim else list(dims)
    back = list(np.argsort(dims))

    def fwd(x):
        return x.transpose(dims)

    def vjp(g, out, x):
        return (g.transpose(back),)

    return OpImpl([a.index], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.flip.default")
def _flip(ctx, a, dims):
    axes = tuple(dims)
    return OpImpl(
        [a.index], lambda x: np.flip(x, axes), (lambda g, out, x: (np.flip(g, axes),)) if _diff(ctx, a) else None
    )


def _sub_view(ctx, a, key: tuple):
    in_shape = tuple(ctx.shapes[a.index])

    def fwd(x):
        return x[key]

    def vjp(g, out, x):
        z = np.zeros(in_shape)
        z[key] = g
        return (z,)

    return OpImpl([a.index], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.select.int")
def _select(ctx, a, dim, index):
    if isinstance(index, Slot):
        raise NotTaped("select with a tensor index")
    if ctx.shapes[a.index][dim] == 1:  # the only element along a dimension: a reshape (cheaper both ways)
        return _reshaping(ctx, a)
    return _sub_view(ctx, a, (slice(None),) * (dim % len(ctx.shapes[a.index])) + (index,))


@builder("aten.slice.Tensor")
def _slice(ctx, a, dim=0, start=None, end=None, step=1):
    return _sub_view(ctx, a, (slice(None),) * (dim % len(ctx.shapes[a.index])) + (slice(start, end, step),))


@builder("aten.cat.default")
def _cat(ctx, tensors, dim=0):
    if not all(isinstance(t, Slot) for t in tensors):
        raise NotTaped("cat of non-tensors")
    ins = [t.index for t in tensors]
    axis = dim % len(ctx.shape)
    in_shapes = [tuple(ctx.shapes[i]) for i in ins]
    # torch lets an empty 1-D tensor join any concatenation
    sizes = [s[axis] if len(s) > axis else 0 for s in in_shapes]
    cuts = np.cumsum(sizes)[:-1]
    wanted = [wants(ctx, t) for t in tensors]

    def fwd(*xs):
        return np.concatenate([x for x, s in zip(xs, in_shapes) if len(s) > axis], axis=axis)

    def vjp(g, out, *xs):
        pieces = np.split(g, cuts, axis=axis)
        return tuple(
            (p.reshape(s) if len(s) > axis else np.zeros(s)) if w else None
            for p, s, w in zip(pieces, in_shapes, wanted)
        )

    return OpImpl(ins, fwd, vjp if ctx.float_out and any(wanted) else None)


@builder("aten.stack.default")
def _stack(ctx, tensors, dim=0):
    if not all(isinstance(t, Slot) for t in tensors):
        raise NotTaped("stack of non-tensors")
    ins = [t.index for t in tensors]
    axis = dim % len(ctx.shape)

    def fwd(*xs):
        return np.stack(xs, axis=axis)

    def vjp(g, out, *xs):
        return tuple(np.take(g, i, axis=axis) for i in range(len(xs)))

    return OpImpl(ins, fwd, vjp if ctx.float_out and any(wants(ctx, t) for t in tensors) else None)


# ----------------------------------------------------------------------------------------------------------------
# Indexing


def scatter_add(shape: tuple, index: np.ndarray, g: np.ndarray) -> np.ndarray:
    """zeros(shape) with ``g`` added at ``index`` along the first axis (repeated indices add up)."""
    index = index.reshape(-1)
    if len(shape) == 1:
        return np.bincount(index, weights=np.asarray(g, dtype=np.float64).reshape(-1), minlength=shape[0])
    z = np.zeros(shape)
    np.add.at(z, index, np.reshape(g, (index.size, *shape[1:])))
    return z


@builder("aten.index_select.default")
def _index_select(ctx, a, dim, index):
    in_shape = tuple(ctx.shapes[a.index])
    axis = dim % len(in_shape)
    rest = tuple(n for k, n in enumerate(in_shape) if k != axis)

    def fwd(x, i):
        return np.take(x, i, axis=axis)

    def vjp(g, out, x, i):
        if axis == 0:
            return scatter_add(in_shape, i, g), None
        return np.moveaxis(scatter_add((in_shape[axis], *rest), i, np.moveaxis(g, axis, 0)), 0, axis), None

    return OpImpl([a.index, index.index], fwd, vjp if _diff(ctx, a) else None)


def _index_key(indices) -> tuple[list[int], Callable]:
    """The slots of an ``indices`` list (None = a whole dimension) and a function of their values -> numpy key."""
    slots = [i.index for i in indices if isinstance(i, Slot)]
    pattern = [isinstance(i, Slot) for i in indices]
    if not all(p or i is None for p, i in zip(pattern, indices)):
        raise NotTaped("an index that is neither a tensor nor None")

    def key(vals) -> tuple:
        it = iter(vals)
        return tuple(next(it) if p else slice(None) for p in pattern)

    return slots, key


@builder("aten.index.Tensor")
def _index(ctx, a, indices):
    in_shape = tuple(ctx.shapes[a.index])
    slots, key = _index_key(indices)
    simple = len(indices) == 1 and isinstance(indices[0], Slot) and ctx.dtypes[indices[0].index].kind == "i"
    rest = (None,) * len(slots)

    def fwd(x, *idx):
        return x[key(idx)]

    def vjp(g, out, x, *idx):
        if simple:
            return (scatter_add(in_shape, idx[0], g), *rest)
        z = np.zeros(in_shape)
        np.add.at(z, key(idx), g)
        return (z, *rest)

    return OpImpl([a.index, *slots], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.index_put.default")
def _index_put(ctx, a, indices, values, accumulate=False):
    if not isinstance(values, Slot):
        raise NotTaped("index_put of a number")
    slots, key = _index_key(indices)
    v_shape = tuple(ctx.shapes[values.index])
    rest = (None,) * len(slots)
    want_a, want_v = wants(ctx, a), wants(ctx, values)
    dtype = ctx.dtype

    def fwd(x, v, *idx):
        out = np.array(x, dtype=dtype, copy=True)
        if accumulate:
            np.add.at(out, key(idx), v)
        else:
            out[key(idx)] = v
        return out

    def vjp(g, out, x, v, *idx):
        k = key(idx)
        gv = unbroadcast(np.asarray(g[k]), v_shape) if want_v else None
        if not want_a:
            return (None, gv, *rest)
        if accumulate:
            return (g, gv, *rest)
        gx = np.array(g, copy=True)
        gx[k] = 0.0
        return (gx, gv, *rest)

    return OpImpl([a.index, values.index, *slots], fwd, vjp if ctx.float_out and (want_a or want_v) else None)


# ----------------------------------------------------------------------------------------------------------------
# Reductions and products


def _axes(dim, ndim: int) -> tuple | None:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return None
    if isinstance(dim, int):
        dim = [dim]
    return tuple(d % ndim for d in dim) if ndim else None


def _kept_shape(in_shape: tuple, axes: tuple | None) -> tuple:
    if axes is None:
        return (1,) * len(in_shape)
    return tuple(1 if i in axes else n for i, n in enumerate(in_shape))


@builder("aten.sum.dim_IntList", "aten.sum.default", "aten.mean.dim", "aten.mean.default")
def _sum(ctx, a, dim=None, keepdim=False, dtype=None):
    in_shape = tuple(ctx.shapes[a.index])
    axes = _axes(dim, len(in_shape))
    kept = _kept_shape(in_shape, axes)
    mean = ".mean." in ctx.name
    count = float(np.prod([in_shape[i] for i in axes]) if axes is not None else np.prod(in_shape))
    scale = 1.0 / count if mean else 1.0
    out_shape = tuple(ctx.shape)

    def fwd(x):
        s = x.sum(axis=axes, keepdims=keepdim)
        if mean:
            s = s / count
        return s.reshape(out_shape) if np.shape(s) != out_shape else s

    def vjp(g, out, x):
        g = g.reshape(kept)
        if g.size == 1:
            return (np.full(in_shape, g.item() * scale),)
        return (np.broadcast_to(g * scale if mean else g, in_shape),)

    return OpImpl([a.index], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.amax.default", "aten.amin.default", "aten.max.default", "aten.min.default")
def _extreme(ctx, a, dim=(), keepdim=False):
    in_shape = tuple(ctx.shapes[a.index])
    axes = _axes(dim, len(in_shape))
    kept = _kept_shape(in_shape, axes)
    fn = np.amax if ctx.name.split(".")[1] in ("amax", "max") else np.amin
    out_shape = tuple(ctx.shape)

    def fwd(x):
        return np.reshape(fn(x, axis=axes, keepdims=keepdim), out_shape)

    def vjp(g, out, x):
        hit = x == out.reshape(kept)
        share = hit / hit.sum(axis=axes, keepdims=True)  # ties share the gradient, as torch does
        return (g.reshape(kept) * share,)

    return OpImpl([a.index], fwd, vjp if _diff(ctx, a) else None)


@builder("aten.any.default", "aten.any.dim", "aten.any.dims", "aten.all.default", "aten.all.dim", "aten.all.dims")
def _any_all(ctx, a, dim=None, keepdim=False):
    in_shape = tuple(ctx.shapes[a.index])
    axes = _axes(dim, len(in_shape))
    fn = np.any if ".any." in ctx.name else np.all
    out_shape = tuple(ctx.shape)
    return OpImpl([a.index], lambda x: np.reshape(fn(x, axis=axes, keepdims=keepdim), out_shape))


@builder("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _mm(ctx, a, b):
    if not (isinstance(a, Slot) and isinstance(b, Slot)):
        raise NotTaped("a product with a number")
    sa, sb = tuple(ctx.shapes[a.index]), tuple(ctx.shapes[b.index])
    if len(sa) < 2 or len(sb) < 2:
        raise NotTaped("a product of vectors")
    want_a, want_b = wants(ctx, a), wants(ctx, b)

    def vjp(g, out, x, y):
        return (
            unbroadcast(g @ y.swapaxes(-1, -2), sa) if want_a else None,
            unbroadcast(x.swapaxes(-1, -2) @ g, sb) if want_b else None,
        )

    def vjp2d(g, out, x, y):  # matrices (MMULT): no batch dimension to sum over
        return (g @ y.T if want_a else None, x.T @ g if want_b else None)

    if len(sa) == len(sb) == 2:
        vjp = vjp2d

    return OpImpl([a.index, b.index], np.matmul, vjp if ctx.float_out and (want_a or want_b) else None)


@builder("aten.cumsum.default")
def _cumsum(ctx, a, dim, dtype=None):
    axis = dim % len(ctx.shapes[a.index])

    def vjp(g, out, x):
        return (np.flip(np.cumsum(np.flip(g, axis), axis=axis), axis),)

    return OpImpl([a.index], lambda x: np.cumsum(x, axis=axis), vjp if _diff(ctx, a) else None)


__all__ = ["scatter_add"]
