"""A numpy tape of the differentiable pass: the objective's tensor operations recorded once, replayed in numpy
forward and backward (reverse mode) with no torch in the loop.

The evaluator's torch pass walks formula trees, looks up memoised index arrays and keeps Excel's bookkeeping on
every call; torch then adds its own per-operation and autograd overhead. On sheet-sized problems that overhead is
most of the time of an evaluation. The tape removes both:

1. **record**: one call of the torch objective runs under a dispatch mode that sees every tensor operation
   (aten level). Operations that read the variables, directly or through earlier ones, are recorded with their
   arguments; everything else is a constant of the tape.
2. **simplify**: a read from a sheet's grid (``index_select`` of the grid after the ``index_put`` of a block's
   values) is resolved at compile time to a gather from the values that were put there, so the grids disappear
   from the tape; identity operations (a view to the same shape, a copy to the same dtype) are dropped, and so is
   every operation the objective does not need.
3. **fuse**: the guarded square root and the masked sum of squares that ``SQRT`` and ``SUMXMY2`` record become
   one step each (:mod:`xlcf.formula.tape_fuse`).
4. **replay**: numpy calls (:mod:`xlcf.formula.tape_ops`) forward, and their vector-Jacobian products backward,
   as straight-line code generated once (:mod:`xlcf.formula.tape_replay`).

The tape is exact, not an approximation: each recorded operation is checked against torch's own output at the
recording point, and :func:`record_tape` compares the tape's gradient with torch's autograd there. Anything it
cannot reproduce — an operator it does not implement, a value read back to the host (a data-dependent branch),
an in-place update — raises :class:`NotTaped`, and the caller keeps the torch pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xlcf.formula import tape_shapes as _shapes  # noqa: F401 - registers the shape, index and product operators
from xlcf.formula.tape_fuse import fuse
from xlcf.formula.tape_gather import CHEAP, RESHAPES, Gather, emit, merge, positions, put_parts, trivial
from xlcf.formula.tape_ops import BUILDERS, NotTaped, OpImpl, Slot
from xlcf.formula.tape_replay import generate

# operators whose result does not depend on their input's values, only its shape: constants of the tape
SHAPE_ONLY = frozenset(
    f"aten.{n}.default"
    for n in ("ones_like", "zeros_like", "full_like", "empty_like", "new_zeros", "new_ones", "new_full", "new_empty")
)
# a variable-dependent value read back into Python: the recording would bake the branch it took
HOST_READS = frozenset(
    ("aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.item.default", "aten.equal.default")
)
CHECK_RTOL = 1e-9  # relative agreement asked of the tape against torch at the recording point
MAX_RECORDED_BYTES = 1 << 30  # the recording keeps a copy of every value it sees; past this, torch stays


@dataclass
class _Recorded:
    name: str
    args: tuple
    kwargs: dict
    out: int


@dataclass
class _Ctx:
    """What a builder knows about the operator it builds (see :mod:`xlcf.formula.tape_ops`)."""

    name: str
    out: int
    shape: tuple
    dtype: np.dtype
    shapes: list
    dtypes: list
    dynamic: list
    detached: list = field(default_factory=list)

    @property
    def float_out(self) -> bool:
        return self.dtype.kind == "f"


def _np_dtype(t) -> np.dtype:
    import torch

    table = {
        torch.float64: np.float64,
        torch.float32: np.float32,
        torch.bool: np.bool_,
        torch.int64: np.int64,
        torch.int32: np.int32,
        torch.int16: np.int16,
        torch.int8: np.int8,
        torch.uint8: np.uint8,
    }
    if t.dtype not in table:
        raise NotTaped(f"tensors of {t.dtype}")
    return np.dtype(table[t.dtype])


def _host(t) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)


class _Recorder:
    """Records the operations that depend on ``x`` (see the module docstring)."""

    def __init__(self, x) -> None:
        self.slot_of: dict[int, int] = {id(x): 0}
        self.keep: list = [x]  # every tensor seen stays alive, so that ids are never reused
        self.values: list[np.ndarray] = [_host(x)]
        self.dynamic: list[bool] = [True]
        self.nodes: list[_Recorded] = []
        self.problem: str | None = None
        self.bytes = 0
        self._consts: dict[tuple[int, int], int] = {}

    def _slot(self, t) -> Slot:
        i = self.slot_of.get(id(t))
        if i is not None:
            return Slot(i)
        key = (id(t), t._version)
        i = self._consts.get(key)
        if i is None:
            i = len(self.values)
            self.values.append(_host(t))
            self.dynamic.append(False)
            self.keep.append(t)
            self._consts[key] = i
        return Slot(i)

    def handle(self, func, args, kwargs, out):
        import torch
        from torch.utils._pytree import tree_leaves, tree_map

        if self.problem is not None:
            return
        leaves = tree_leaves((args, kwargs))
        if not any(isinstance(t, torch.Tensor) and id(t) in self.slot_of for t in leaves):
            return  # a constant of the tape (taken at its first use)
        name = str(func)
        if name in SHAPE_ONLY:
            return
        if name in HOST_READS:
            self.problem = f"{name}: a value that depends on the variables is read back (a branch on it)"
            return
        if func._schema.is_mutable:
            self.problem = f"{name}: an in-place update of a value that depends on the variables"
            return
        if not isinstance(out, torch.Tensor):
            self.problem = f"{name} returns several tensors"
            return
        if out.device.type != "cpu":
            self.problem = "the tape runs on the CPU"
            return
        conv = tree_map(lambda t: self._slot(t) if isinstance(t, torch.Tensor) else t, (tuple(args), dict(kwargs)))
        self.bytes += out.numel() * out.element_size()
        if self.bytes > MAX_RECORDED_BYTES:
            self.problem = "the sheet is too large to record (torch evaluates it)"
            return
        i = len(self.values)
        self.slot_of[id(out)] = i
        self.keep.append(out)
        self.values.append(_host(out))
        self.dynamic.append(True)
        self.nodes.append(_Recorded(name, conv[0], conv[1], i))


def _record(fn: Callable, x0: np.ndarray) -> tuple[_Recorder, int]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    x = torch.tensor(np.asarray(x0, dtype=np.float64))
    rec = _Recorder(x)

    class Mode(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable by default, importing the whole of
            # torch._dynamo (seconds) on first use; nothing is compiled here
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            rec.handle(func, args, kwargs, out)
            return out

    with torch.no_grad(), Mode():
        out = fn(x)
    if rec.problem is not None:
        raise NotTaped(rec.problem)
    if not isinstance(out, torch.Tensor) or id(out) not in rec.slot_of:
        raise NotTaped("the objective does not depend on the variables")
    if out.numel() != 1:
        raise NotTaped("the objective is not one number")
    return rec, rec.slot_of[id(out)]


# ----------------------------------------------------------------------------------------------------------------
# Compiling the recording into a program


@dataclass
class _Step:
    impl: OpImpl
    out: int
    name: str


def _remap(obj, rename: dict[int, int]):
    if isinstance(obj, Slot):
        return Slot(rename.get(obj.index, obj.index))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_remap(o, rename) for o in obj)
    if isinstance(obj, dict):
        return {k: _remap(v, rename) for k, v in obj.items()}
    return obj


class Tape:
    """The objective as numpy code: :meth:`value` and :meth:`value_and_grad` of a 1-D float64 ``x``."""

    def __init__(self, rec: _Recorder, out: int):
        self.n = rec.values[0].size
        shapes = [v.shape for v in rec.values]
        dtypes = [v.dtype for v in rec.values]
        self.recorded_ops = len(rec.nodes)
        detached: list[int] = []
        rename: dict[int, int] = {}
        gathers: dict[int, Gather] = {}
        info = (rec.values, rec.dynamic)

        def gather_of(slot: int) -> Gather:
            g = gathers.get(slot)
            return g if g is not None else trivial(slot, rec.values[slot], rec.dynamic[slot])

        steps: list[_Step] = []
        used: set[int] = set()
        taken: set[int] = set()  # slots replayed as a gather (a reshape of one is one gather)
        seen: dict[str, int] = {}  # the same operation on the same operands: computed once
        step_args: dict[int, tuple] = {}
        for node in rec.nodes:
            args, kwargs = _remap(node.args, rename), _remap(node.kwargs, rename)
            key = f"{node.name}{args!r}{kwargs!r}"
            if key in seen and shapes[seen[key]] == shapes[node.out]:
                rename[node.out] = seen[key]
                continue
            seen[key] = node.out
            shape, dtype = shapes[node.out], dtypes[node.out]
            first = args[0] if args and isinstance(args[0], Slot) else None
            # a gather of its first argument (or an index_put into a flat grid): composed with what made it
            g = None
            if first is not None and dtypes[first.index] == dtype:
                if node.name == "aten.index_put.default":
                    parts = put_parts(args, kwargs, gather_of, info)
                    g = None if parts is None else merge(parts, int(np.prod(shape)))
                else:
                    pos = positions(node.name, args, kwargs, shapes[first.index], shape, info)
                    g = None if pos is None else gather_of(first.index).compose(pos)
            impl = identity = None
            if g is not None:
                gathers[node.out] = g
                impl, identity = emit(g, shape, shapes, dtype)
                if (
                    impl is not None
                    and node.name in CHEAP
                    and impl.fwd.__name__ == "take1"
                    and not (node.name in RESHAPES and first is not None and first.index in taken)
                ):
                    impl = None  # a view of a computed value: cheaper replayed as itself than as a copy
                elif impl is not None and impl.fwd.__name__ in ("take1", "take"):
                    taken.add(node.out)
            if impl is None and identity is None:
                build = BUILDERS.get(node.name)
                if build is None:
                    raise NotTaped(f"{node.name} is not implemented by the numpy tape")
                ctx = _Ctx(node.name, node.out, shape, dtype, shapes, dtypes, rec.dynamic, detached)
                try:
                    impl = build(ctx, *args, **kwargs)
                except (TypeError, ValueError, IndexError) as err:
                    raise NotTaped(f"{node.name}: {err}") from None
            if identity is not None:
                rename[node.out] = identity
                continue
            assert impl is not None
            used.update(impl.ins)
            steps.append(_Step(impl, node.out, node.name))
            step_args[node.out] = args
        out = rename.get(out, out)
        if any(d not in used and d != out for d in detached):
            # torch's values taken to the host (as the evaluator does to branch on them): not reproducible
            raise NotTaped("a value that depends on the variables is read back to the host")
        steps = fuse(steps, step_args, rec.values, rec.dynamic)
        # keep only what the objective needs
        live, kept = {out}, []
        for step in reversed(steps):
            if step.out in live:
                live.update(step.impl.ins)
                kept.append(step)
        self.steps = kept[::-1]
        self.out = out
        self.n_slots = len(rec.values)
        self._base: list = [v if not d else None for v, d in zip(rec.values, rec.dynamic)]
        need = [False] * self.n_slots
        need[0] = True
        for step in self.steps:
            need[step.out] = step.impl.vjp is not None and any(need[i] for i in step.impl.ins)
        self._need = need
        # the loops below run hundreds of times per solve: plain tuples, no attribute lookups
        self._fwd = [
            (
                st.impl.fwd,
                tuple(st.impl.ins),
                st.out,
                st.impl.ins[0] if len(st.impl.ins) in (1, 2) else -1,
                st.impl.ins[1] if len(st.impl.ins) == 2 else -1,
            )
            for st in self.steps
        ]
        # a gather from the variables adds its adjoint straight into their gradient (no zeros, no sum); the
        # other steps: (vjp, operands, output, first, second operand or -1, ((position, slot) taking a gradient))
        direct = len(shapes[0]) == 1
        self._bwd = []
        for st in reversed(self.steps):
            if st.impl.vjp is None or not need[st.out]:
                continue
            ins = tuple(st.impl.ins)
            scatter = st.impl.scatter if direct and ins == (0,) else None
            targets = tuple((k, i) for k, i in enumerate(ins) if need[i])
            a = ins[0] if len(ins) in (1, 2) else -1
            b = ins[1] if len(ins) == 2 else -1
            self._bwd.append((st.impl.vjp, ins, st.out, a, b, targets, scatter))
        self._out_shape = shapes[out]
        self._seed = np.ones(self._out_shape)
        self._x_shape = shapes[0]
        self._replay_value, self._replay_grad = generate(
            self._fwd, self._bwd, out, self._base, self._x_shape, self.n, self._seed
        )
        self._check(rec)

    def __len__(self) -> int:
        return len(self.steps)

    def _check(self, rec: _Recorder) -> None:
        """Every operation kept gives torch's value at the recording point."""
        with np.errstate(all="ignore"):
            vals = self._forward(rec.values[0])
        for step in self.steps:
            got, want = np.asarray(vals[step.out]), rec.values[step.out]
            if got.shape != want.shape:
                raise NotTaped(f"{step.name}: shape {got.shape}, torch {want.shape}")
            if want.dtype.kind == "f":
                ok = np.allclose(got, want, rtol=CHECK_RTOL, atol=0.0, equal_nan=True) or np.allclose(
                    got,
                    want,
                    rtol=CHECK_RTOL,
                    atol=CHECK_RTOL * max(1.0, float(np.nanmax(np.abs(want), initial=0))),
                    equal_nan=True,
                )
            else:
                ok = np.array_equal(got, want)
            if not ok:
                raise NotTaped(f"{step.name} differs from torch at the recording point")

    def _forward(self, x: np.ndarray) -> list:
        """Every value of the tape (numpy's floating-point warnings silenced by the caller)."""
        vals = list(self._base)
        vals[0] = np.asarray(x, dtype=np.float64).reshape(self._x_shape)
        for fwd, ins, out, a, b in self._fwd:  # one and two operands (most steps) without building a list
            if b >= 0:
                vals[out] = fwd(vals[a], vals[b]) if len(ins) == 2 else fwd(*[vals[i] for i in ins])
            elif a >= 0:
                vals[out] = fwd(vals[a])
            else:
                vals[out] = fwd(*[vals[i] for i in ins])
        return vals

    def value(self, x: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            return float(np.asarray(self._replay_value(x)).reshape(-1)[0])

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its gradient: the forward pass, then each step's vector-Jacobian product in reverse
        order, gradients reaching one value from several steps added up (straight-line code, see
        :mod:`xlcf.formula.tape_replay`)."""
        with np.errstate(all="ignore"):
            out, gx = self._replay_grad(x)
            return float(np.asarray(out).reshape(-1)[0]), gx


def record_tape(fn: Callable, x0: np.ndarray, *, check_gradient: bool = True) -> Tape:
    """The numpy tape of ``fn`` (a torch function of a 1-D float64 tensor returning one number), recorded at
    ``x0``. Every operation kept is checked against torch's value there; with ``check_gradient`` the tape's
    reverse pass is also checked against its own forward pass (a central difference along a random direction),
    which costs two replays where torch's autograd would cost a backward pass through every grid of the sheet.
    NotTaped when the tape cannot reproduce ``fn``."""
    rec, out = _record(fn, x0)
    tape = Tape(rec, out)
    if check_gradient:
        x = np.asarray(x0, dtype=np.float64).reshape(-1)
        f, g = tape.value_and_grad(x)
        if not (math.isfinite(f) and np.isfinite(g).all()):
            raise NotTaped("the objective or its gradient is not finite at the recording point")
        if not directional_check(tape.value, x, f, g):
            raise NotTaped("the tape's gradient disagrees with its values at the recording point")
    return tape


def directional_check(value: Callable, x: np.ndarray, f: float, g: np.ndarray, seed: int = 0) -> bool:
    """Whether ``g`` is the gradient of ``value`` at ``x`` along a random direction, by a central difference
    (to what rounding allows: a wrong adjoint is off by far more)."""
    v = np.random.default_rng(seed).standard_normal(x.shape) * np.maximum(1.0, np.abs(x))
    h = 1e-6 / max(1.0, float(np.max(np.abs(v), initial=0.0)))
    fd = (value(x + h * v) - value(x - h * v)) / (2.0 * h)
    ad = float(g @ v)
    tol = 1e-5 * float(np.linalg.norm(g) * np.linalg.norm(v)) + 1e-9 * (1.0 + abs(f)) / h
    return bool(math.isfinite(fd) and abs(fd - ad) <= tol)


__all__ = ["NotTaped", "Tape", "directional_check", "record_tape"]
