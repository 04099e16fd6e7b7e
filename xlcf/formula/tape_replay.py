"""The replay of a numpy tape (:mod:`xlcf.formula.tape`) as straight-line Python: one generated function for the
forward pass and one for the forward and reverse passes.

A sheet-sized objective is a few dozen numpy calls of a microsecond or two each; an interpreted loop over the
steps (unpacking each step, choosing how to call it, looking up and accumulating gradients in lists) costs as much
again. The generated code does that bookkeeping once, when the tape is built: each step is one line calling its
operator on the values it reads, each gradient a local variable, accumulated only where two steps feed one value —
the technique ``dataclasses`` and ``collections.namedtuple`` use to build their methods. The operators called are
the tape's own (nothing is re-derived), so the replay computes exactly what the loop computed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _indent(lines: list[str]) -> str:
    return "".join(f"    {line}\n" for line in lines)


def generate(
    fwd: list, bwd: list, out: int, base: list, x_shape: tuple, n: int, seed: np.ndarray
) -> tuple[Callable, Callable]:
    """(value(x) -> the output array, value_and_grad(x) -> (output array, gradient)) for the steps ``fwd``
    ((fn, operands, output, ...) in order) and ``bwd`` ((vjp, operands, output, _, _, targets, scatter), in
    reverse order), as :class:`xlcf.formula.tape.Tape` keeps them."""
    env: dict = {"_base": base, "_zeros": np.zeros, "_asarray": np.asarray, "_f64": np.float64, "_seed": seed}
    env.update({"_xs": x_shape, "_n": n})
    body = ["v = _base.copy()", "v[0] = _asarray(x, dtype=_f64).reshape(_xs)"]
    for i, (fn, ins, o, *_) in enumerate(fwd):
        env[f"fn_{i}"] = fn
        body.append(f"v[{o}] = fn_{i}({', '.join(f'v[{j}]' for j in ins)})")
    value_src = "def value(x):\n" + _indent([*body, f"return v[{out}]"])
    slots = sorted({0, out} | {step[2] for step in bwd} | {slot for step in bwd for _, slot in step[5]})
    grad = [*body, "gx = _zeros(_n)", " = ".join(f"g{s}" for s in slots) + " = None", f"g{out} = _seed"]
    for i, (vjp, ins, o, _a, _b, targets, scatter) in enumerate(bwd):
        grad.append(f"if g{o} is not None:")
        if scatter is not None:  # a gather from the variables: its adjoint goes straight into the gradient
            env[f"at_{i}"] = scatter
            grad.append(f"    gx[at_{i}] += g{o}.reshape(-1)")
            continue
        env[f"vjp_{i}"] = vjp
        grad.append(f"    gs = vjp_{i}(g{o}, v[{o}], {', '.join(f'v[{j}]' for j in ins)})")
        for k, slot in targets:
            add = f"        g{slot} = t if g{slot} is None else g{slot} + t"
            grad += [f"    t = gs[{k}]", "    if t is not None:", add]
    grad += ["if g0 is not None:", "    gx += _asarray(g0, dtype=_f64).reshape(-1)", f"return v[{out}], gx"]
    grad_src = "def value_and_grad(x):\n" + _indent(grad)
    exec(compile(value_src + grad_src, "<numpy tape>", "exec"), env)  # the code built above: no outside input
    return env["value"], env["value_and_grad"]


__all__ = ["generate"]
