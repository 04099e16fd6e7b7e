"""L-BFGS for problems without bounds, in numpy, with a state that can be resumed.

scipy's L-BFGS-B (used for bounded problems) costs about as much per evaluation in its Python wrapper as the
numpy tape costs to evaluate a sheet-sized objective and its gradient; and a run stopped by the multistart's stall
rule can only be continued by starting L-BFGS-B again, which forgets the curvature it had learnt. This
implementation keeps the loop lean (the two-loop recursion on the stored pairs, a line search that usually
accepts the first step) and returns its state, so the polish of the best run continues where the run stopped.

The engine's numpy L-BFGS (:mod:`xlcf.train.lbfgs`) is a step-for-step port of ``torch.optim.LBFGS``, kept so for
the engine's equivalence with torch: it evaluates the loss again at the start of every step and has no
per-iteration hook, which the multistart's stall rule needs.

Nocedal & Wright, *Numerical Optimization* (2nd ed.), algorithms 7.4 and 7.5; the line search brackets a step
satisfying the weak Wolfe conditions (Armijo, c1 = 1e-4, and curvature, c2 = 0.9), interpolating when the
sufficient decrease fails and doubling when the step is too short.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

C1, C2 = 1e-4, 0.9
MAX_LINE_SEARCH = 40  # function evaluations per line search at most


class LbfgsState:
    """Where a run is: the point, its loss and gradient, and the curvature pairs learnt so far, kept with the
    small matrices of the compact form (Byrd, Nocedal & Schnabel 1994, eq. 3.1), updated in O(m^2) per pair so
    that a direction costs a handful of small matrix products."""

    def __init__(self, x: np.ndarray, f: float, g: np.ndarray, memory: int):
        n = x.size
        self.x, self.f, self.g, self.iterations = x, f, g, 0
        # the pairs are rows start..end-1 of buffers twice the memory long: dropping the oldest pair moves
        # ``start``, and the rows are moved back to the top only once every ``memory`` pairs. Row i holds s_i and
        # y_i side by side, so that one product with a (2k, n) view gives every s_i . v and y_i . v at once.
        self.memory, self.start, self.end = memory, 0, 0
        size = 2 * memory
        self._sy = np.zeros((size, 2, n))
        self._rinv = np.zeros((size, size))  # inverse of R = upper triangle of S Y^T (of the current window)
        self._yy = np.zeros((size, size))  # Y Y^T
        self._d = np.zeros(size)  # s_i . y_i
        self._gamma = 1.0  # the initial matrix's scale: s.y / y.y of the newest pair

    @property
    def k(self) -> int:
        return self.end - self.start

    def forget(self) -> None:
        self.start = self.end = 0

    def remember(self, s: np.ndarray, y: np.ndarray, sy: float, yy: float) -> None:
        """Add the pair (s, y) with s.y = ``sy`` > 0 and y.y = ``yy``."""
        if self.k == self.memory:  # drop the oldest pair: a trailing block of a triangular inverse is the inverse
            self.start += 1
        if self.end == len(self._d):
            a, b = self.start, self.end
            m = b - a
            self._sy[:m] = self._sy[a:b]
            self._d[:m] = self._d[a:b]
            for arr in (self._rinv, self._yy):
                arr[:m, :m] = arr[a:b, a:b]
            self.start, self.end = 0, m
        a, k = self.start, self.end
        rinv = self._rinv
        if k > a:
            both = self._sy[a:k].reshape(-1, s.size) @ y  # s_i . y (the new column of R) and y_i . y, interleaved
            rinv[a:k, k] = (rinv[a:k, a:k] @ both[0::2]) / -sy
            self._yy[a:k, k] = self._yy[k, a:k] = both[1::2]
        rinv[k, a:k] = 0.0
        rinv[k, k] = 1.0 / sy
        self._yy[k, k] = yy
        self._sy[k, 0], self._sy[k, 1], self._d[k] = s, y, sy
        self._gamma = sy / yy
        self.end = k + 1
        # the views :meth:`direction` reads, taken once per pair rather than once per call
        self._pairs = self._sy[a : k + 1].reshape(-1, s.size)  # rows s_a, y_a, s_a+1, y_a+1, ...
        self._rv, self._yyv, self._dv = rinv[a : k + 1, a : k + 1], self._yy[a : k + 1, a : k + 1], self._d[a : k + 1]
        self._coef = np.empty(2 * (k + 1 - a))

    def direction(self) -> np.ndarray:
        """-H g."""
        g = self.g
        if self.end == self.start:
            return -g / max(1.0, float(np.linalg.norm(g)))  # first step: at most unit length
        pairs, rinv, gamma, coef = self._pairs, self._rv, self._gamma, self._coef
        both = pairs @ g
        w = rinv @ both[0::2]
        coef[0::2] = (self._dv * w + gamma * (self._yyv @ w - both[1::2])) @ rinv  # R^-T (...)
        coef[1::2] = w * -gamma
        d = coef @ pairs
        d += gamma * g
        return np.negative(d, out=d)


def start(fg: Callable, x0: np.ndarray, memory: int) -> LbfgsState:
    x = np.array(x0, dtype=np.float64, copy=True).reshape(-1)
    f, g = fg(x.copy())
    return LbfgsState(x, float(f), np.asarray(g, dtype=np.float64), memory)


def _line_search(fg: Callable, st: LbfgsState, d: np.ndarray, gd: float):
    """(step, x, f, g) satisfying the weak Wolfe conditions, or the best point seen with a decrease; None when no
    decrease was found."""
    lo, hi, alpha = 0.0, math.inf, 1.0
    best = None
    for _ in range(MAX_LINE_SEARCH):
        x = st.x + alpha * d
        f, g = fg(x)
        f = float(f)
        if math.isfinite(f) and f < st.f and (best is None or f < best[2]):
            best = (alpha, x, f, g)
        if not math.isfinite(f) or f > st.f + C1 * alpha * gd:
            hi = alpha
            if math.isfinite(f):  # the minimiser of the quadratic through f(0), f'(0) and f(alpha), kept inside
                denom = 2.0 * (f - st.f - gd * alpha)
                trial = -gd * alpha * alpha / denom if denom > 0 else 0.5 * alpha
                alpha = min(max(trial, lo + 0.1 * (alpha - lo)), lo + 0.5 * (alpha - lo))
            else:
                alpha = lo + 0.5 * (alpha - lo)
        elif float(g @ d) < C2 * gd:
            lo = alpha
            alpha = 2.0 * alpha if hi == math.inf else 0.5 * (lo + hi)
        else:
            return alpha, x, f, np.asarray(g, dtype=np.float64)
    return best


def run(
    fg: Callable,
    st: LbfgsState,
    *,
    max_iter: int,
    ftol: float,
    gtol: float,
    on_iteration: Callable[[float], bool] | None = None,
) -> tuple[LbfgsState, str]:
    """Iterate from ``st`` (updated in place and returned) until: the gradient's largest element is under
    ``gtol`` ("converged"), the relative reduction of an iteration is under ``ftol`` ("converged"), no step
    lowers the loss ("line search"), ``max_iter`` iterations ("budget"), or ``on_iteration(loss)`` returns False
    ("stopped")."""
    done = 0
    while True:
        largest = float(np.abs(st.g).max()) if st.g.size else 0.0
        if not math.isfinite(largest):
            return st, "non-finite gradient"
        if largest <= gtol:
            return st, "converged"
        if done >= max_iter:
            return st, "budget"
        d = st.direction()
        gd = float(st.g @ d)
        if not gd < 0:  # not a descent direction (rounding in the pairs): start again from steepest descent
            st.forget()
            d = st.direction()
            gd = float(st.g @ d)
        found = _line_search(fg, st, d, gd)
        if found is None:
            return st, "line search"
        _, x, f, g = found
        g = np.asarray(g, dtype=np.float64)
        s, y = x - st.x, g - st.g
        sy, yy = float(s @ y), float(y @ y)
        if sy > 1e-12 * math.sqrt(float(s @ s) * yy):  # keep only pairs with positive curvature
            st.remember(s, y, sy, yy)
        f_old = st.f
        st.x, st.f, st.g = x, f, g
        st.iterations += 1
        done += 1
        if on_iteration is not None and not on_iteration(f):
            return st, "stopped"
        if f_old - f <= ftol * max(abs(f_old), abs(f), 1.0):
            return st, "converged"


__all__ = ["LbfgsState", "run", "start"]
