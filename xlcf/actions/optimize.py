"""Minimise a differentiable objective of a vector of variable cells, with bounds and multistart.

The objective is a torch function of one 1-D tensor (the variable cells, flattened) — built by the formula
evaluator from the sheet's own formulas — so gradients are exact (autodiff), not Solver's finite differences. When
the problem carries a numpy tape of it (:class:`xlcf.formula.tape.Tape`, recorded by ``xlcf solve`` on the CPU),
L-BFGS evaluates the tape instead: the same values and gradients without torch in the loop.

- ``lbfgs`` (default): without bounds, L-BFGS in numpy (:mod:`xlcf.actions.lbfgs`, whose state the polish
  resumes); with bounds, L-BFGS-B (scipy's implementation), which honours them exactly (projected steps). Values
  and gradients in float64, from the tape or from torch on the chosen device.
- ``sgd``, ``momentum``, ``rmsprop``, ``adam``, ``adamw``: the engine's optimizers
  (:data:`xlcf.train.optimizers.OPTIMIZERS`, their full-batch defaults), bounds by projection after every step.
- ``als`` and sampling solvers exploit the structure of a factorisation model and do not apply to an
  arbitrary objective: refused.

Multistart as the engine does it (:func:`xlcf.train.multistart.restart_seed`, the same agreement rule): run 0
starts from the sheet's values, further runs from seeded random draws; the best run is kept, and restarts stop
once two runs agree on the best minimum (within 0.1% of the loss). With L-BFGS each run first gets a budget of
iterations and stops once its progress stalls, so that a run crawling along a flat valley does not hold up the
restarts; a restart also stops as soon as its loss comes within 0.1% of the best finished run's minimum — it has
found that minimum (or, passing it on the way down, a point no worse than 0.1% above it: when it is then the
lower of the two, it is the one polished and goes on down). The best run is then polished (continued with strict
tolerances).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlcf.errors import ConfigError, DivergenceError

GRADIENT_OPTIMIZERS = ("lbfgs", "sgd", "momentum", "rmsprop", "adam", "adamw")
NOT_APPLICABLE = {
    "als": "alternating least squares solves a factorisation model in closed form",
    "gibbs": "Gibbs sampling draws a Bayesian factorisation model",
    "mcmc": "MCMC sampling draws a Bayesian factorisation model",
}
DEFAULT_RESTARTS = 3
LBFGS_MAX_ITER = 15_000  # L-BFGS-B iterations of one run at most (convergence stops it far earlier)
LBFGS_BUDGET = 150  # iterations a run gets before the restarts (at least; n/2 for n variables)
LBFGS_FTOL = 1e-15  # relative reduction of the loss under which L-BFGS(-B) stops
LBFGS_GTOL = 1e-10  # (projected-)gradient norm under which L-BFGS(-B) stops
LBFGS_MEMORY = 50  # correction pairs the numpy L-BFGS keeps (its compact form makes them cheap)
LBFGSB_MEMORY = 20  # correction pairs scipy's L-BFGS-B keeps (bounded problems; its cost grows with them)
STALL_WINDOW = 10  # L-BFGS iterations ...
STALL_RTOL = 1e-5  # ... over which a run must lower the loss by this much (relative) to go on
POLISH_WINDOW = 10  # the same for the best run's final polish: stricter
POLISH_RTOL = 1e-9
SAME_MINIMUM_RTOL = 1e-3  # as the engine's multistart: two runs this close found the same minimum
SMALL_PROBLEM = 100_000  # variables; below this one CPU thread is faster


@dataclass
class Problem:
    """What to optimise. ``objective(x)`` returns the sheet's objective cell for the variables ``x``."""

    x0: np.ndarray  # float64 (n,)
    objective: Callable  # torch (n,) -> scalar tensor
    # the same objective as numpy code, when it could be recorded (:class:`xlcf.formula.tape.Tape`: value(x),
    # value_and_grad(x)): L-BFGS-B on the CPU then runs without torch in the loop
    tape: Any = None
    lower: np.ndarray | None = None  # (n,) or None, -inf = none
    upper: np.ndarray | None = None
    sense: str = "min"  # "min" | "max" | "value"
    target: float = 0.0


@dataclass
class OptimizeResult:
    x: np.ndarray
    objective_before: float
    objective_after: float
    loss: float
    optimizer: str
    device: str
    seconds: float
    iterations: int
    evaluations: int
    runs: list[dict] = field(default_factory=list)
    best_run: int = 0
    stopped_reason: str | None = None
    cpu_seconds: float = 0.0  # processor time of this process (a shared machine stretches ``seconds``)


def check_optimizer(name: str) -> str:
    key = str(name).strip().lower()
    if key in NOT_APPLICABLE:
        raise ConfigError(
            f"--optimizer {key} does not apply to an arbitrary Solver objective ({NOT_APPLICABLE[key]});"
            f" use one of: {', '.join(GRADIENT_OPTIMIZERS)}",
            field="optimizer",
        )
    if key not in GRADIENT_OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {key!r}; use one of: {', '.join(GRADIENT_OPTIMIZERS)}", field="optimizer")
    return key


def loss_of(f, sense: str, target: float):
    """What is minimised: f (min), -f (max), (f - target)^2 (value of)."""
    if sense == "max":
        return -f
    if sense == "value":
        return (f - target) ** 2
    return f


def restart_draw(x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh start as the lesson initialises factors — uniform in [0, 1) — widened to cover the sheet's own
    start values, and kept inside the bounds."""
    a = min(0.0, float(np.min(x0))) if x0.size else 0.0
    b = max(1.0, float(np.max(x0))) if x0.size else 1.0
    return np.clip(rng.uniform(a, b, x0.shape), lo, hi)


@dataclass
class _Run:
    x: np.ndarray
    loss: float
    iterations: int
    stopped: str
    state: Any = None  # an unbounded L-BFGS run's state (xlcf.actions.lbfgs.LbfgsState): the polish resumes it


class _Optimizer:
    """One minimisation: the objective on its device, the counters, the stop conditions, one run at a time."""

    def __init__(self, problem: Problem, name: str, dev, *, epochs, lr, callback, time_limit):
        self.problem, self.name, self.dev = problem, name, dev
        self.epochs, self.lr, self.callback, self.time_limit = epochs, lr, callback, time_limit
        self.tape = problem.tape if name == "lbfgs" and dev.type == "cpu" else None
        if self.tape is None:
            import torch

            self.torch, self.dtype = torch, torch.float64
        n = problem.x0.size
        self.lo = np.full(n, -np.inf) if problem.lower is None else np.asarray(problem.lower, np.float64)
        self.hi = np.full(n, np.inf) if problem.upper is None else np.asarray(problem.upper, np.float64)
        self.bounded = bool(np.isfinite(self.lo).any() or np.isfinite(self.hi).any())
        self.evaluations = self.iterations = 0
        self.agree: float | None = None
        self.stop: str | None = None
        self.started = time.perf_counter()
        self.started_cpu = time.process_time()

    # -- the objective -----------------------------------------------------------------------------------------
    def loss_tensor(self, x):
        self.evaluations += 1
        return loss_of(self.problem.objective(x), self.problem.sense, self.problem.target)

    def value(self, x_np: np.ndarray) -> tuple[float, float]:
        """(objective, loss) at x, no gradient."""
        if self.tape is not None:
            self.evaluations += 1
            f = self.tape.value(x_np)
            return f, float(loss_of(f, self.problem.sense, self.problem.target))
        torch = self.torch
        with torch.no_grad():
            self.evaluations += 1
            f = self.problem.objective(torch.as_tensor(x_np, dtype=self.dtype, device=self.dev))
            return float(f), float(loss_of(f, self.problem.sense, self.problem.target))

    def value_and_grad(self, x_np: np.ndarray) -> tuple[float, np.ndarray]:
        if self.tape is not None:
            self.evaluations += 1
            f, g = self.tape.value_and_grad(x_np)
            sense = self.problem.sense
            if sense == "max":
                return -f, -g
            if sense == "value":
                d = f - self.problem.target
                return d * d, (2.0 * d) * g
            return f, g
        torch = self.torch
        x = torch.tensor(x_np, dtype=self.dtype, device=self.dev, requires_grad=True)
        loss = self.loss_tensor(x)
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        g_np = np.zeros_like(x_np) if g is None else g.detach().to("cpu").numpy().astype(np.float64)
        return float(loss.detach()), g_np

    def keep_going(self, run: int, loss: float) -> bool:
        self.iterations += 1
        if (
            self.callback is not None
            and self.callback({"run": run, "iteration": self.iterations, "loss": loss}) is False
        ):
            self.stop = "callback"
        if self.time_limit is not None and time.perf_counter() - self.started > self.time_limit:
            self.stop = "time limit"
        return self.stop is None

    # -- runs --------------------------------------------------------------------------------------------------
    def run(self, run: int, x_start: np.ndarray, budget: int | None, *, polish: bool = False, state=None) -> _Run:
        if self.name == "lbfgs" and not self.bounded:
            return self._lbfgs_unbounded(run, x_start, budget, polish, state)
        if self.name == "lbfgs":
            return self._lbfgs(run, x_start, budget, polish)
        return self._first_order(run, x_start)

    def _lbfgs_unbounded(self, run: int, x_start: np.ndarray, budget: int | None, polish: bool, state) -> _Run:
        agree = None if polish else self.agree
        """L-BFGS in numpy (:mod:`xlcf.actions.lbfgs`); the polish continues the run's own state."""
        from xlcf.actions import lbfgs

        window, rtol = (POLISH_WINDOW, POLISH_RTOL) if polish else (STALL_WINDOW, STALL_RTOL)
        history: list[float] = []
        why: dict[str, str | None] = {"stop": None}

        def fg(x):
            loss, g = self.value_and_grad(x)
            if not math.isfinite(loss + float(g.sum())):  # one sum tells whether every element is finite
                return math.inf, np.zeros_like(x)  # the line search steps back from a non-finite point
            return loss, g

        def on_iteration(loss: float) -> bool:
            history.append(loss)
            if not self.keep_going(run, loss):
                why["stop"] = "stopped"
                return False
            if len(history) > window and history[-window - 1] - loss <= rtol * max(abs(loss), 1e-300):
                why["stop"] = "stalled"  # as with L-BFGS-B below
                return False
            if agree is not None and loss - agree <= max(SAME_MINIMUM_RTOL * abs(agree), 1e-9):
                why["stop"] = "agrees"
                return False
            return True

        st = state if state is not None else lbfgs.start(fg, x_start, LBFGS_MEMORY)
        before = st.iterations
        maxiter = int(self.epochs or LBFGS_MAX_ITER)
        if budget is not None and budget < maxiter:
            maxiter = budget
        st, reason = lbfgs.run(
            fg,
            st,
            max_iter=maxiter,
            ftol=LBFGS_FTOL,
            gtol=LBFGS_GTOL,
            on_iteration=on_iteration,
        )
        if why["stop"] is not None:
            reason = why["stop"]
        if reason == "budget" and (budget is None or maxiter != budget):
            reason = "iteration limit"
        return _Run(st.x.copy(), float(st.f), st.iterations - before, reason, st)

    def _lbfgs(self, run: int, x_start: np.ndarray, budget: int | None, polish: bool) -> _Run:
        from scipy.optimize import minimize as scipy_minimize

        best: dict[str, Any] = {"x": x_start, "loss": math.inf}
        window, rtol = (POLISH_WINDOW, POLISH_RTOL) if polish else (STALL_WINDOW, STALL_RTOL)
        history: list[float] = []
        why: dict[str, str | None] = {"stop": None}

        def fun(x):
            loss, g = self.value_and_grad(x)
            if not math.isfinite(loss) or not np.all(np.isfinite(g)):
                return math.inf, np.zeros_like(x)  # L-BFGS-B backtracks from a non-finite point
            if loss < best["loss"]:
                best["x"], best["loss"] = x.copy(), loss
            return loss, g

        def cb(intermediate_result):
            loss = float(intermediate_result.fun)
            history.append(loss)
            if not self.keep_going(run, loss):
                why["stop"] = "stopped"
                raise StopIteration
            # A run whose progress stalls stops (near a minimum, or crawling along a flat valley: a saddle, a poor
            # local minimum): less than `rtol` relative progress over `window` iterations.
            if len(history) > window and history[-window - 1] - loss <= rtol * max(abs(loss), 1e-300):
                why["stop"] = "stalled"
                raise StopIteration

        bounds = None
        if self.bounded:
            # None (no bound) where a bound is infinite, as scipy's bounds take; numpy's stubs refuse a None branch
            bounds = list(
                zip(
                    np.where(np.isfinite(self.lo), self.lo, None),  # type: ignore[call-overload]
                    np.where(np.isfinite(self.hi), self.hi, None),  # type: ignore[call-overload]
                )
            )
        maxiter = int(self.epochs or LBFGS_MAX_ITER)
        if budget is not None and budget < maxiter:
            maxiter = budget
        res = scipy_minimize(
            fun,
            x_start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=cb,
            options={"maxiter": maxiter, "ftol": LBFGS_FTOL, "gtol": LBFGS_GTOL, "maxcor": LBFGSB_MEMORY, "maxls": 40},
        )
        reason = why["stop"]
        if reason is None:
            reason = (
                "budget"
                if budget is not None and res.nit >= maxiter and maxiter == budget
                else str(res.message).lower()
            )
        return _Run(best["x"], best["loss"], int(res.nit), reason)

    def _first_order(self, run: int, x_start: np.ndarray) -> _Run:
        from xlcf.train.optimizers import OPTIMIZERS

        torch = self.torch
        spec = OPTIMIZERS[self.name]
        assert spec.build is not None  # every gradient optimizer has a torch builder
        hp = dict(spec.full_batch)
        if self.lr is not None:
            hp["lr"] = float(self.lr)
        hp["device_type"] = self.dev.type
        steps = int(self.epochs or hp.get("epochs", 1000))
        x = torch.tensor(x_start, dtype=self.dtype, device=self.dev, requires_grad=True)
        opt = spec.build([x], hp)
        lo_t = torch.as_tensor(self.lo, dtype=self.dtype, device=self.dev)
        hi_t = torch.as_tensor(self.hi, dtype=self.dtype, device=self.dev)
        best_x, best_loss = x.detach().clone(), math.inf
        reason, done = "epochs", 0
        for step in range(1, steps + 1):
            done = step
            opt.zero_grad(set_to_none=True)
            loss_t = self.loss_tensor(x)
            loss = float(loss_t.detach())
            if not math.isfinite(loss):
                reason = "diverged"
                break
            if loss < best_loss:  # the loss of the current x, before this step moves it
                best_x, best_loss = x.detach().clone(), loss
            loss_t.backward()
            opt.step()
            if self.bounded:
                with torch.no_grad():
                    x.copy_(torch.minimum(torch.maximum(x, lo_t), hi_t))
            if not self.keep_going(run, loss):
                reason = "stopped"
                break
        last = self.value(x.detach().to("cpu").numpy().astype(np.float64))[1]
        if math.isfinite(last) and last < best_loss:
            best_x, best_loss = x.detach().clone(), last
        return _Run(best_x.to("cpu").numpy().astype(np.float64), best_loss, done, reason)


def minimize(
    problem: Problem,
    *,
    optimizer: str = "lbfgs",
    epochs: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    restarts: int | None = None,
    device: str = "auto",
    callback: Callable | None = None,
    time_limit: float | None = None,
) -> OptimizeResult:
    """Minimise the loss of ``problem`` and return the best variables found (never worse than the start).

    ``epochs``: L-BFGS-B iterations (lbfgs) or optimizer steps (the others) per run; ``restarts``: extra runs
    from random starts (default 3, stopping early once two runs agree); ``callback(info)`` may return False
    to stop (info: dict run, iteration, loss); ``time_limit`` seconds stops between iterations.
    DivergenceError when the objective is not a finite number at the start.
    """
    import torch

    from xlcf.train.devices import resolve_device

    name = check_optimizer(optimizer)
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) < 1):
        raise ConfigError(f"--epochs must be a whole number >= 1, got {epochs!r}", field="epochs")
    if restarts is not None and (isinstance(restarts, bool) or int(restarts) < 0):
        raise ConfigError(f"--restarts must be a whole number >= 0, got {restarts!r}", field="restarts")
    from threadpoolctl import threadpool_limits

    if name == "lbfgs":
        import scipy.optimize  # noqa: F401 - imported before the clock starts

    dev = resolve_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu" and np.size(problem.x0) <= SMALL_PROBLEM:
        torch.set_num_threads(1)  # sheet-sized tensors: a second thread only adds synchronisation
    try:
        # L-BFGS-B's BLAS calls work on vectors of the variables' length: threads only spin (and on a busy
        # machine, wait for each other for milliseconds per iteration).
        with threadpool_limits(limits=1, user_api="blas"):
            opt = _Optimizer(problem, name, dev, epochs=epochs, lr=lr, callback=callback, time_limit=time_limit)
            return _multistart(opt, seed=seed, restarts=DEFAULT_RESTARTS if restarts is None else int(restarts))
    finally:
        torch.set_num_threads(threads)


def _agree(runs: list[dict], best_loss: float) -> int:
    done = [r["loss"] for r in runs if r.get("loss") is not None and r.get("stopped") != "budget"]
    return sum(1 for v in done if v - best_loss <= max(SAME_MINIMUM_RTOL * abs(best_loss), 1e-9))


def _multistart(opt: _Optimizer, *, seed: int, restarts: int) -> OptimizeResult:
    from xlcf.train.multistart import restart_seed

    problem = opt.problem
    x0 = np.asarray(problem.x0, dtype=np.float64).ravel()
    start = np.clip(x0, opt.lo, opt.hi)
    f_before, loss_before = opt.value(start)
    if not (math.isfinite(f_before) and math.isfinite(loss_before)):
        raise DivergenceError(f"the objective is {f_before} at the start; it must be a finite number")
    budget = max(LBFGS_BUDGET, x0.size // 2) if opt.name == "lbfgs" and restarts > 0 else None
    best = _Run(start, loss_before, 0, "start")
    best_run, runs = 0, []
    for run in range(restarts + 1):
        if opt.stop:
            break
        if run == 0:
            x_start = start
        else:
            x_start = restart_draw(x0, opt.lo, opt.hi, np.random.default_rng(restart_seed(seed, run)))
            if not math.isfinite(opt.value(x_start)[1]):
                runs.append({"run": run, "start": "random", "loss": None, "stopped": "non-finite start"})
                continue
        t_run = time.perf_counter()
        opt.agree = best.loss if run > 0 and best.iterations and _agree(runs, best.loss) >= 1 else None
        res = opt.run(run, x_start, budget)
        runs.append(
            {
                "run": run,
                "start": "sheet" if run == 0 else "random",
                "loss": res.loss if math.isfinite(res.loss) else None,
                "iterations": res.iterations,
                "stopped": res.stopped,
                "seconds": time.perf_counter() - t_run,
            }
        )
        if math.isfinite(res.loss) and res.loss < best.loss:
            best, best_run = res, run
        if _agree(runs, best.loss) >= 2 or (problem.sense == "value" and best.loss <= 1e-20):
            break
    if opt.name == "lbfgs" and best.iterations and not opt.stop:
        # The best run stopped on its budget or once its progress stalled: continue it with strict tolerances.
        t_run = time.perf_counter()
        res = opt.run(best_run, best.x, None, polish=True, state=best.state)
        runs.append(
            {
                "run": best_run,
                "start": f"run {best_run} polished",
                "loss": res.loss if math.isfinite(res.loss) else None,
                "iterations": res.iterations,
                "stopped": res.stopped,
                "seconds": time.perf_counter() - t_run,
            }
        )
        if math.isfinite(res.loss) and res.loss < best.loss:
            best = res
    f_after, loss_after = opt.value(best.x)
    x = best.x
    if not math.isfinite(f_after) or loss_after > loss_before:  # never leave the sheet worse than found
        x, f_after, loss_after, best_run = start, f_before, loss_before, 0
    return OptimizeResult(
        x=x,
        objective_before=f_before,
        objective_after=f_after,
        loss=loss_after,
        optimizer=opt.name,
        device=str(opt.dev),
        seconds=time.perf_counter() - opt.started,
        iterations=opt.iterations,
        evaluations=opt.evaluations,
        runs=runs,
        best_run=best_run,
        stopped_reason=opt.stop,
        cpu_seconds=time.process_time() - opt.started_cpu,
    )
