"""The operators of a numpy tape (:mod:`xlcf.formula.tape`): for each torch (aten) operator the evaluator's
differentiable pass uses, a numpy forward and its vector-Jacobian product.

A builder receives the operator's arguments as the recording saw them — tensors replaced by :class:`Slot`
(a value of the tape: the variables, a constant or the output of an earlier operator), everything else as given —
and the output's shape and dtype as torch computed it, and returns an :class:`OpImpl`: the slots it reads, a
forward ``fwd(*values)`` and, for differentiable operators, ``vjp(g, out, *values)`` giving one gradient (or None)
per slot read. Gradients follow torch's conventions (ties of ``maximum`` split the gradient, ``sign``,
``floor``, comparisons have none), so the tape and torch's autograd agree to rounding.

An operator missing here, or one used in a way a builder does not handle, raises :class:`NotTaped`: the caller
keeps the torch pass, which handles everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class NotTaped(Exception):
    """The recorded computation uses something the numpy tape does not implement."""


@dataclass(frozen=True)
class Slot:
    """A value of the tape."""

    index: int


@dataclass
class OpImpl:
    ins: list[int]  # the slots read, in the order fwd/vjp take them
    fwd: Callable
    vjp: Callable | None = None  # None: no gradient flows through this operator
    scatter: np.ndarray | None = None  # a gather reading each element of its one input at most once: the positions


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient of a broadcast result back to an operand's shape."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if g.shape != shape else g


# ----------------------------------------------------------------------------------------------------------------
# Builders

BUILDERS: dict[str, Callable[..., OpImpl]] = {}


def builder(*names: str):
    def register(fn):
        for n in names:
            BUILDERS[n] = fn
        return fn

    return register


def _shape_of(shapes: list, a) -> tuple:
    return tuple(shapes[a.index]) if isinstance(a, Slot) else ()


def wants(ctx, a) -> bool:
    """Whether operand ``a`` takes a gradient: a float value that depends on the variables."""
    return isinstance(a, Slot) and ctx.dynamic[a.index] and ctx.dtypes[a.index].kind == "f"


def _elementwise2(fn: Callable, vjp_a: Callable | None, vjp_b: Callable | None):
    """A binary element-wise operator whose operands are each a slot or a Python number. Gradients are computed
    only for the operands that depend on the variables."""

    def build(ctx, a, b, *rest, **kw):
        if rest or kw:
            raise NotTaped("unexpected arguments")
        sa, sb = isinstance(a, Slot), isinstance(b, Slot)
        shape_a, shape_b = _shape_of(ctx.shapes, a), _shape_of(ctx.shapes, b)
        want_a = ctx.float_out and vjp_a is not None and wants(ctx, a)
        want_b = ctx.float_out and vjp_b is not None and wants(ctx, b)
        ca, cb = (None if sa else a), (None if sb else b)
        if sa and sb:

            def vjp(g, out, x, y):
                ga = unbroadcast(vjp_a(g, out, x, y), shape_a) if want_a else None
                gb = unbroadcast(vjp_b(g, out, x, y), shape_b) if want_b else None
                return ga, gb

            return OpImpl([a.index, b.index], fn, vjp if want_a or want_b else None)
        if sa:

            def fwd_a(x):
                return fn(x, cb)

            def vjp_1a(g, out, x):
                return (unbroadcast(vjp_a(g, out, x, cb), shape_a),)

            return OpImpl([a.index], fwd_a, vjp_1a if want_a else None)
        if sb:

            def fwd_b(y):
                return fn(ca, y)

            def vjp_1b(g, out, y):
                return (unbroadcast(vjp_b(g, out, ca, y), shape_b),)

            return OpImpl([b.index], fwd_b, vjp_1b if want_b else None)
        raise NotTaped("no tensor operand")  # pragma: no cover - an operator without tensors is never recorded

    return build


def _alpha(kw: dict) -> float:
    alpha = kw.pop("alpha", 1)
    if kw:
        raise NotTaped(f"unexpected keywords {sorted(kw)}")
    return alpha


@builder("aten.add.Tensor", "aten.add.Scalar")
def _add(ctx, a, b, alpha=1, **kw):
    alpha = _alpha({"alpha": alpha, **kw})
    if alpha == 1:
        return _elementwise2(np.add, lambda g, o, x, y: g, lambda g, o, x, y: g)(ctx, a, b)
    return _elementwise2(lambda x, y: x + alpha * y, lambda g, o, x, y: g, lambda g, o, x, y: alpha * g)(ctx, a, b)


@builder("aten.sub.Tensor", "aten.sub.Scalar")
def _sub(ctx, a, b, alpha=1, **kw):
    alpha = _alpha({"alpha": alpha, **kw})
    if alpha == 1:
        return _elementwise2(np.subtract, lambda g, o, x, y: g, lambda g, o, x, y: -g)(ctx, a, b)
    return _elementwise2(lambda x, y: x - alpha * y, lambda g, o, x, y: g, lambda g, o, x, y: -alpha * g)(ctx, a, b)


@builder("aten.rsub.Tensor", "aten.rsub.Scalar")
def _rsub(ctx, a, b, alpha=1, **kw):
    alpha = _alpha({"alpha": alpha, **kw})
    return _elementwise2(lambda x, y: y - alpha * x, lambda g, o, x, y: -alpha * g, lambda g, o, x, y: g)(ctx, a, b)


_MUL = _elementwise2(np.multiply, lambda g, o, x, y: g * y, lambda g, o, x, y: g * x)


@builder("aten.mul.Tensor", "aten.mul.Scalar")
def _mul(ctx, a, b, *rest, **kw):
    if not (isinstance(a, Slot) and isinstance(b, Slot) and a.index == b.index) or rest or kw:
        return _MUL(ctx, a, b, *rest, **kw)

    # x * x (the evaluator's x^2): one operand, one product each way
    def square(x):
        return x * x

    def vjp(g, out, x):
        return (2.0 * g * x,)

    return OpImpl([a.index], square, vjp if ctx.float_out and wants(ctx, a) else None)


BUILDERS["aten.div.Tensor"] = BUILDERS["aten.div.Scalar"] = _elementwise2(
    np.true_divide, lambda g, o, x, y: g / y, lambda g, o, x, y: -g * o / y
)


def _pow_grad_base(g, o, x, y):
    # torch: exponent 0 gives a zero gradient (not 0 * x^-1, which is NaN at 0)
    return np.where(np.asarray(y) == 0, 0.0, g * y * np.power(x, np.asarray(y, dtype=float) - 1.0))


def _pow_grad_exp(g, o, x, y):
    # torch: d/dy x^y = x^y log x, taken as 0 where x == 0 and y >= 0
    with np.errstate(all="ignore"):
        lg = np.log(x)
    return np.where((np.asarray(x) == 0) & (np.asarray(y) >= 0), 0.0, g * o * lg)


BUILDERS["aten.pow.Tensor_Scalar"] = BUILDERS["aten.pow.Tensor_Tensor"] = BUILDERS["aten.pow.Scalar"] = _elementwise2(
    np.power, _pow_grad_base, _pow_grad_exp
)


def _minmax_grad(select_self: Callable):
    def ga(g, o, x, y):
        return np.where(x == y, g / 2.0, np.where(select_self(x, y), g, 0.0))

    def gb(g, o, x, y):
        return np.where(x == y, g / 2.0, np.where(select_self(x, y), 0.0, g))

    return ga, gb


_MAX_A, _MAX_B = _minmax_grad(lambda x, y: x > y)
_MIN_A, _MIN_B = _minmax_grad(lambda x, y: x < y)
BUILDERS["aten.maximum.default"] = _elementwise2(np.maximum, _MAX_A, _MAX_B)
BUILDERS["aten.minimum.default"] = _elementwise2(np.minimum, _MIN_A, _MIN_B)

_COMPARE = {
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
    "bitwise_and": np.bitwise_and,
    "bitwise_or": np.bitwise_or,
    "bitwise_xor": np.bitwise_xor,
    "__and__": np.bitwise_and,
    "__or__": np.bitwise_or,
}
for _name, _fn in _COMPARE.items():
    for _variant in ("Tensor", "Scalar"):
        BUILDERS[f"aten.{_name}.{_variant}"] = _elementwise2(_fn, None, None)
    BUILDERS[f"aten.{_name}.default"] = _elementwise2(_fn, None, None)


def _unary(fn: Callable, grad: Callable | None):
    def build(ctx, a, *rest, **kw):
        if rest or kw or not isinstance(a, Slot):
            raise NotTaped("unexpected arguments")

        def vjp(g, out, x):
            return (grad(g, out, x),)

        return OpImpl([a.index], fn, vjp if grad is not None and ctx.float_out and wants(ctx, a) else None)

    return build


def _zero_grad(g, out, x):
    return np.zeros(np.shape(x))


_UNARY: dict[str, tuple[Callable, Callable | None]] = {
    "neg": (np.negative, lambda g, o, x: -g),
    "exp": (np.exp, lambda g, o, x: g * o),
    "expm1": (np.expm1, lambda g, o, x: g * (o + 1.0)),
    "log": (np.log, lambda g, o, x: g / x),
    "log10": (np.log10, lambda g, o, x: g / (x * np.log(10.0))),
    "log2": (np.log2, lambda g, o, x: g / (x * np.log(2.0))),
    "log1p": (np.log1p, lambda g, o, x: g / (1.0 + x)),
    "sqrt": (np.sqrt, lambda g, o, x: g / (2.0 * o)),
    "rsqrt": (lambda x: 1.0 / np.sqrt(x), lambda g, o, x: -0.5 * g * o**3),
    "reciprocal": (np.reciprocal, lambda g, o, x: -g * o * o),
    "abs": (np.abs, lambda g, o, x: g * np.sign(x)),
    "sin": (np.sin, lambda g, o, x: g * np.cos(x)),
    "cos": (np.cos, lambda g, o, x: -g * np.sin(x)),
    "tan": (np.tan, lambda g, o, x: g * (1.0 + o * o)),
    "tanh": (np.tanh, lambda g, o, x: g * (1.0 - o * o)),
    "sinh": (np.sinh, lambda g, o, x: g * np.cosh(x)),
    "cosh": (np.cosh, lambda g, o, x: g * np.sinh(x)),
    "asin": (np.arcsin, lambda g, o, x: g / np.sqrt(1.0 - x * x)),
    "acos": (np.arccos, lambda g, o, x: -g / np.sqrt(1.0 - x * x)),
    "atan": (np.arctan, lambda g, o, x: g / (1.0 + x * x)),
    "asinh": (np.arcsinh, lambda g, o, x: g / np.sqrt(x * x + 1.0)),
    "acosh": (np.arccosh, lambda g, o, x: g / np.sqrt(x * x - 1.0)),
    "atanh": (np.arctanh, lambda g, o, x: g / (1.0 - x * x)),
    "sigmoid": (lambda x: 1.0 / (1.0 + np.exp(-x)), lambda g, o, x: g * o * (1.0 - o)),
    "sign": (np.sign, _zero_grad),
    "floor": (np.floor, _zero_grad),
    "ceil": (np.ceil, _zero_grad),
    "trunc": (np.trunc, _zero_grad),
    "round": (np.round, _zero_grad),
    "isnan": (np.isnan, None),
    "isinf": (np.isinf, None),
    "isfinite": (np.isfinite, None),
    "logical_not": (np.logical_not, None),
    "bitwise_not": (np.invert, None),
}
for _name, (_unary_fn, _grad) in _UNARY.items():
    BUILDERS[f"aten.{_name}.default"] = _unary(_unary_fn, _grad)


def _identity(g, out, x):
    return g


for _name in ("alias", "lift_fresh", "positive"):
    BUILDERS[f"aten.{_name}.default"] = _unary(lambda x: x, _identity)


@builder("aten.clone.default", "aten.contiguous.default")
def _clone(ctx, a, memory_format=None):
    return OpImpl([a.index], lambda x: x, (lambda g, out, x: (g,)) if ctx.float_out else None)


@builder("aten.detach.default")
def _detach(ctx, a):
    # the value goes on; no gradient flows back (ROUND, INT: flat almost everywhere, as Solver sees them)
    ctx.detached.append(ctx.out)
    return OpImpl([a.index], lambda x: x, None)


@builder("aten._to_copy.default")
def _to_copy(ctx, a, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False, memory_format=None):
    if device is not None and str(device) != "cpu":
        raise NotTaped("a copy to another device")
    out_dtype = ctx.dtype
    in_dtype = ctx.dtypes[a.index]
    diff = ctx.float_out and np.issubdtype(in_dtype, np.floating)

    def fwd(x):
        return np.asarray(x, dtype=out_dtype)

    def vjp(g, out, x):
        return (np.asarray(g, dtype=in_dtype),)

    return OpImpl([a.index], fwd, vjp if diff else None)


@builder("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(ctx, cond, a, b):
    if not isinstance(cond, Slot):
        raise NotTaped("where without a mask tensor")
    sa, sb = isinstance(a, Slot), isinstance(b, Slot)
    shape_a, shape_b = _shape_of(ctx.shapes, a), _shape_of(ctx.shapes, b)
    want_a, want_b = ctx.float_out and wants(ctx, a), ctx.float_out and wants(ctx, b)
    diff = want_a or want_b
    if sa and sb:

        def vjp2(g, out, c, x, y):
            return (
                None,
                unbroadcast(np.where(c, g, 0.0), shape_a) if want_a else None,
                unbroadcast(np.where(c, 0.0, g), shape_b) if want_b else None,
            )

        return OpImpl([cond.index, a.index, b.index], np.where, vjp2 if diff else None)
    if sa:

        def fwd_a(c, x):
            return np.where(c, x, b)

        def vjp_a(g, out, c, x):
            return None, unbroadcast(np.where(c, g, 0.0), shape_a)

        return OpImpl([cond.index, a.index], fwd_a, vjp_a if diff else None)
    if sb:

        def fwd_b(c, y):
            return np.where(c, a, y)

        def vjp_b(g, out, c, y):
            return None, unbroadcast(np.where(c, 0.0, g), shape_b)

        return OpImpl([cond.index, b.index], fwd_b, vjp_b if diff else None)
    dtype = ctx.dtype

    def fwd_c(c):
        return np.where(c, a, b).astype(dtype, copy=False)

    return OpImpl([cond.index], fwd_c)


@builder("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(ctx, a, mask, value):
    if not isinstance(a, Slot) or not isinstance(mask, Slot) or isinstance(value, Slot):
        raise NotTaped("masked_fill with a tensor value")
    shape = ctx.shapes[a.index]

    def fwd(x, m):
        return np.where(m, value, x).astype(ctx.dtype, copy=False)

    def vjp(g, out, x, m):
        return unbroadcast(np.where(m, 0.0, g), shape), None

    return OpImpl([a.index, mask.index], fwd, vjp if ctx.float_out and wants(ctx, a) else None)


@builder("aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default")
def _clamp(ctx, a, lo=None, hi=None):
    if ctx.name == "aten.clamp_max.default":
        lo, hi = None, lo
    if isinstance(lo, Slot) or isinstance(hi, Slot):
        raise NotTaped("clamp with tensor bounds")

    def fwd(x):
        return np.clip(x, lo, hi)

    def vjp(g, out, x):
        inside = np.ones(np.shape(x), dtype=bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        return (np.where(inside, g, 0.0),)

    return OpImpl([a.index], fwd, vjp if ctx.float_out and wants(ctx, a) else None)
