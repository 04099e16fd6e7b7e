"""L-BFGS with a strong-Wolfe line search in numpy: the algorithm of ``torch.optim.LBFGS`` (itself a port of
minFunc / torch7's optim), step for step (the search direction in compact form, see
:meth:`LBFGS._inverse_hessian_times`), on a flat float64 parameter vector.

Why not scipy.optimize: importing it costs more than half a second, many times a sheet's whole fit. Why the
same algorithm as torch: so the numpy small-problem path and the torch engine take the same steps, stop by
the same rules and, on a sheet, land on the same minimum (one "epoch" = one ``step`` = up to ``max_iter``
iterations, with the search direction history kept between steps)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Objective = Callable[[np.ndarray], "tuple[float, np.ndarray]"]  # x -> (loss, gradient)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    # The minimiser of the cubic through two points with their slopes, clamped to the bounds.
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = float(np.sqrt(d2_square))
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(func: Objective, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Line search along ``d`` from ``x``: (loss, gradient, step, evaluations) at a strong-Wolfe point."""
    d_norm = float(np.abs(d).max())
    f_new, g_new = func(x + t * d)
    ls_func_evals = 1
    gtd_new = float(g_new @ d)

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    bracket_gtd: list = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # extrapolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = func(x + t * d)
        ls_func_evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1

    if ls_iter == max_ls:  # reached the evaluation budget while extrapolating
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]

    # zoom: shrink the bracket until a point satisfies the criteria
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:  # the bracket is tiny
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # Too close to an end of the bracket (twice, or outside it): move 10% of its width inwards.
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = func(x + t * d)
        ls_func_evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than the lowest point
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True  # Wolfe conditions satisfied
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class LBFGS:
    """``LBFGS(lr, ...)``; ``x, loss = opt.step(func, x)`` runs up to ``max_iter`` iterations from ``x`` and
    returns the new point and the loss at the START of the step (what torch's ``step`` returns). The search
    history carries over from one step to the next. Defaults are xlcf's (history 20, tight tolerances)."""

    def __init__(
        self,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-9,
        tolerance_change: float = 1e-12,
        history_size: int = 20,
    ):
        self.lr = float(lr)
        self.max_iter = int(max_iter)
        self.max_eval = int(max_eval) if max_eval is not None else self.max_iter * 5 // 4
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        self.history_size = int(history_size)
        self.n_iter = 0
        self.func_evals = 0
        self.d: np.ndarray | None = None  # direction and step length of the last iteration
        self.t: float | None = None
        self.prev_flat_grad: np.ndarray | None = None
        self.old_dirs: list[np.ndarray] = []
        self.old_stps: list[np.ndarray] = []
        self.ro: list[float] = []
        self.h_diag = 1.0

    def step(self, func: Objective, x: np.ndarray) -> tuple[np.ndarray, float]:
        x = np.array(x, dtype=np.float64)
        orig_loss, flat_grad = func(x)
        loss = float(orig_loss)
        current_evals = 1
        self.func_evals += 1
        if float(np.abs(flat_grad).max()) <= self.tolerance_grad:
            return x, float(orig_loss)
        d, t = self.d, self.t
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            self.n_iter += 1
            # -- direction -------------------------------------------------------------------------
            if self.n_iter == 1:
                d = -flat_grad
                self.old_dirs, self.old_stps, self.ro = [], [], []
                self.h_diag = 1.0
            else:
                assert d is not None and t is not None and self.prev_flat_grad is not None  # set by the last iteration
                y = flat_grad - self.prev_flat_grad
                s = d * t
                ys = float(y @ s)
                if ys > 1e-10:  # curvature condition: update the memory
                    if len(self.old_dirs) == self.history_size:
                        self.old_dirs.pop(0)
                        self.old_stps.pop(0)
                        self.ro.pop(0)
                    self.old_dirs.append(y)
                    self.old_stps.append(s)
                    self.ro.append(1.0 / ys)
                    self.h_diag = ys / float(y @ y)
                d = -self._inverse_hessian_times(flat_grad) if self.old_dirs else -self.h_diag * flat_grad
            self.prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            # -- step length -----------------------------------------------------------------------
            if self.n_iter == 1:
                t = min(1.0, 1.0 / float(np.abs(flat_grad).sum())) * self.lr
            else:
                t = self.lr
            gtd = float(flat_grad @ d)
            if gtd > -self.tolerance_change:  # not a descent direction any more
                break
            loss, flat_grad, t, ls_evals = _strong_wolfe(
                func, x, t, d, loss, flat_grad, gtd, max_ls=self.max_eval - current_evals
            )
            x = x + t * d
            opt_cond = float(np.abs(flat_grad).max()) <= self.tolerance_grad
            current_evals += ls_evals
            self.func_evals += ls_evals
            # -- stopping rules ----------------------------------------------------------------------
            if n_iter == self.max_iter or current_evals >= self.max_eval or opt_cond:
                break
            if float(np.abs(d * t).max()) <= self.tolerance_change:  # lack of progress
                break
            if abs(loss - prev_loss) < self.tolerance_change:
                break
        self.d, self.t = d, t
        return x, float(orig_loss)

    def _inverse_hessian_times(self, g: np.ndarray) -> np.ndarray:
        """``H g`` for the L-BFGS inverse Hessian approximation with ``H0 = h_diag * I``.

        The compact form of Byrd, Nocedal & Schnabel (1994), eq. 2.6 — the same matrix torch's two-loop
        recursion applies, with a dozen small matrix operations instead of four per stored pair (on a sheet,
        the recursion's Python loop costs more than the objective)."""
        s = np.asarray(self.old_stps)  # (m, n): rows s_i
        y = np.asarray(self.old_dirs)  # (m, n): rows y_i
        gamma = float(self.h_diag)
        sy = s @ y.T
        r = np.triu(sy)  # R_ij = s_i . y_j for i <= j
        q = np.linalg.solve(r, s @ g)
        u = np.linalg.solve(r.T, np.diag(sy) * q + gamma * ((y @ y.T) @ q) - gamma * (y @ g))
        return gamma * g + s.T @ u - gamma * (y.T @ q)
