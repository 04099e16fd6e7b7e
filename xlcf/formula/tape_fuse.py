"""Fusions of a numpy tape's steps (:mod:`xlcf.formula.tape`): a few operations that the evaluator's formulas
always emit together replayed as one numpy call each way.

On a sheet-sized objective each numpy call costs a microsecond or two whatever its size, so the number of calls,
not the arithmetic, sets the time of an evaluation. Two idioms of the evaluator's torch pass are worth fusing:

- **the guarded square root** (``SQRT``: ``#NUM!`` below zero)::

      bad = x < 0;  where(bad, NaN, sqrt(where(bad, 1, x)))      ->   sqrt(x)

  numpy's square root is NaN exactly where ``x < 0`` (and for a NaN), which is what the guard produces; the
  gradient is torch's through the guard: zero where ``x < 0``, ``g / (2 sqrt(x))`` elsewhere.
- **a masked sum of squares** (``SUMXMY2``, ``SUMSQ`` and ``SUMPRODUCT`` of a difference by itself, which skip
  the cells that are not numbers)::

      sum(where(mask, d * d, 0))  (mask a constant)              ->   v = d[mask];  v . v

  the cells outside the mask take no part (a NaN there stays out, as with ``where``), and the gradient is
  ``2 g v`` on the mask, zero elsewhere.

Each fused step replaces the last step of its idiom and keeps its output slot, so the tape's check against
torch's values at the recording point covers it; the steps it made unnecessary are dropped by the caller's
liveness pass when nothing else reads them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xlcf.formula.tape_ops import OpImpl, Slot

WHERE = "aten.where.self"
SUMS = ("aten.sum.dim_IntList", "aten.sum.default")


def _const(values: list, dynamic: list, slot: int, fill: float) -> bool:
    """Whether ``slot`` is a constant of the tape every element of which is ``fill`` (NaN: NaN)."""
    if dynamic[slot]:
        return False
    v = np.asarray(values[slot])
    if v.dtype.kind != "f" or v.size == 0:
        return False
    return bool(np.isnan(v).all()) if np.isnan(fill) else bool((v == fill).all())


def _safe_sqrt(x: int, with_grad: bool) -> OpImpl:
    def vjp(g, out, x):
        q = g / (2.0 * out)
        if q.ndim:  # a new array: zeroed in place where x < 0, a third cheaper than np.where on a scalar's array
            q[x < 0] = 0.0
            return (q,)
        return (np.where(x < 0, 0.0, q),)

    return OpImpl([x], np.sqrt, vjp if with_grad else None)


def _masked_sumsq(d: int, idx: np.ndarray, d_shape: tuple, out_shape: tuple, with_grad: bool) -> OpImpl:
    n = int(np.prod(d_shape)) if d_shape else 1

    def fwd(d):
        v = d.take(idx)
        return np.dot(v, v).reshape(out_shape)  # the method: np.reshape costs twice the product

    def vjp(g, out, d):
        z = np.zeros(n)
        z[idx] = (2.0 * g.item()) * d.take(idx)  # g: the one-element adjoint of the sum
        return (z.reshape(d_shape),)

    return OpImpl([d], fwd, vjp if with_grad else None)


def fuse(steps: list, args: dict, values: list, dynamic: list) -> list:
    """``steps`` (objects with ``impl``, ``out``, ``name``; kept in order) with the idioms above fused.
    ``args[out]`` are the recorded arguments of the step writing ``out`` (slots as :class:`Slot`)."""
    by_out = {st.out: st for st in steps}
    shape = [np.shape(v) for v in values]
    fused = []
    for st in steps:
        impl = _fuse_one(st, by_out, args, values, dynamic, shape)
        fused.append(st if impl is None else dataclasses.replace(st, impl=impl, name=f"fused {st.name}"))
    return fused


def _fuse_one(st, by_out: dict, args: dict, values: list, dynamic: list, shape: list) -> OpImpl | None:
    ins = st.impl.ins
    if st.name == WHERE and len(ins) == 3:
        c, k, r = ins
        root = by_out.get(r)
        inner = by_out.get(root.impl.ins[0]) if root is not None and root.name == "aten.sqrt.default" else None
        test = by_out.get(c)
        if (
            inner is not None
            and test is not None
            and inner.name == WHERE
            and test.name == "aten.lt.Scalar"
            and _const(values, dynamic, k, float("nan"))
        ):
            c2, one, x = inner.impl.ins if len(inner.impl.ins) == 3 else (-1, -1, -1)
            targs = args.get(test.out, ())
            if (
                c2 == c
                and _const(values, dynamic, one, 1.0)
                and len(targs) == 2
                and targs[0] == Slot(x)
                and targs[1] == 0
                and shape[x] == shape[st.out] == shape[c] == shape[one]
                and values[x].dtype == np.float64
            ):
                return _safe_sqrt(x, st.impl.vjp is not None)
    if st.name in SUMS and len(ins) == 1 and int(np.prod(shape[st.out])) == 1:
        w = by_out.get(ins[0])
        if w is None or w.name != WHERE or len(w.impl.ins) != 3:
            return None
        mask, sq, zero = w.impl.ins
        keep = True  # where(mask, d * d, 0), or where(mask, 0, d * d): the cells kept are those off the mask
        if by_out.get(sq) is None or by_out[sq].name != "aten.mul.Tensor":
            sq, zero, keep = zero, sq, False
        square = by_out.get(sq)
        if (
            square is None
            or square.name != "aten.mul.Tensor"
            or square.impl.fwd.__name__ != "square"
            or dynamic[mask]
            or values[mask].dtype != np.bool_
            or not _const(values, dynamic, zero, 0.0)
            or shape[sq] != shape[w.out]
        ):
            return None
        d = square.impl.ins[0]
        if shape[d] != shape[sq] or values[d].dtype != np.float64:
            return None
        kept = np.broadcast_to(values[mask], shape[w.out])
        idx = np.flatnonzero(kept if keep else ~kept)
        return _masked_sumsq(d, idx, shape[d], shape[st.out], st.impl.vjp is not None)
    return None


__all__ = ["fuse"]
