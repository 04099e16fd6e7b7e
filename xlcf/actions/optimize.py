"""Minimise a differentiable objective of a vector of variable cells, with bounds and multistart.

The objective is a torch function of one 1-D tensor (the variable cells, flattened) — built by the formula
evaluator from the sheet's own formulas — so gradients are exact (autodiff), not Solver's finite differences.

- ``lbfgs`` (default): L-BFGS-B (scipy's implementation), fed values and gradients computed by torch in float64
  on the chosen device. L-BFGS-B honours bounds exactly (projected steps), which torch's L-BFGS cannot.
- ``sgd``, ``momentum``, ``rmsprop``, ``adam``, ``adamw``: the engine's optimizers
  (:data:`xlcf.train.optimizers.OPTIMIZERS`, full-batch defaults), bounds by projection after every step.
- ``als`` and sampling solvers exploit the structure of a factorisation model and do not apply to an
  arbitrary objective: refused.

Multistart as the engine does it (:func:`xlcf.train.trainer.restart_seed`, the same agreement rule): run 0
starts from the sheet's values, further runs from seeded random draws; the best run is kept, and restarts stop
once two runs agree on the best minimum.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xlcf.errors import ConfigError, DivergenceError

GRADIENT_OPTIMIZERS = ("lbfgs", "sgd", "momentum", "rmsprop", "adam", "adamw")
NOT_APPLICABLE = {
    "als": "alternating least squares solves a factorisation model in closed form",
    "gibbs": "Gibbs sampling draws a Bayesian factorisation model",
    "mcmc": "MCMC sampling draws a Bayesian factorisation model",
}
DEFAULT_RESTARTS = 3
LBFGS_MAX_ITER = 15_000     # L-BFGS-B iterations per run (it stops far earlier on convergence)
LBFGS_FTOL = 1e-15          # relative reduction of the loss under which L-BFGS-B stops
LBFGS_GTOL = 1e-10          # projected-gradient norm under which L-BFGS-B stops
SAME_MINIMUM_RTOL = 1e-3    # as the engine's multistart: two runs this close found the same minimum


@dataclass
class Problem:
    """What to optimise. ``objective(x)`` returns the sheet's objective cell for the variables ``x``."""

    x0: np.ndarray                                   # float64 (n,)
    objective: Callable                              # torch (n,) -> scalar tensor
    lower: np.ndarray | None = None                  # (n,) or None, -inf = none
    upper: np.ndarray | None = None
    sense: str = "min"                               # "min" | "max" | "value"
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


def check_optimizer(name: str) -> str:
    key = str(name).strip().lower()
    if key in NOT_APPLICABLE:
        raise ConfigError(f"--optimizer {key} does not apply to an arbitrary Solver objective ({NOT_APPLICABLE[key]});"
                          f" use one of: {', '.join(GRADIENT_OPTIMIZERS)}", field="optimizer")
    if key not in GRADIENT_OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {key!r}; use one of: {', '.join(GRADIENT_OPTIMIZERS)}",
                          field="optimizer")
    return key


def loss_of(f, sense: str, target: float):
    """What is minimised: f (min), -f (max), (f - target)^2 (value of)."""
    if sense == "max":
        return -f
    if sense == "value":
        return (f - target) ** 2
    return f


def _bounds(problem: Problem):
    n = problem.x0.size
    lo = np.full(n, -np.inf) if problem.lower is None else np.asarray(problem.lower, np.float64)
    hi = np.full(n, np.inf) if problem.upper is None else np.asarray(problem.upper, np.float64)
    return lo, hi


def restart_draw(x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh start as the lesson initialises factors — uniform in [0, 1) — widened to cover the sheet's own
    start values, and kept inside the bounds."""
    a = min(0.0, float(np.min(x0))) if x0.size else 0.0
    b = max(1.0, float(np.max(x0))) if x0.size else 1.0
    x = rng.uniform(a, b, x0.shape)
    return np.clip(x, lo, hi)


def minimize(problem: Problem, *, optimizer: str = "lbfgs", epochs: int | None = None, lr: float | None = None,
             seed: int = 0, restarts: int | None = None, device: str = "auto",
             callback: Callable | None = None, time_limit: float | None = None) -> OptimizeResult:
    """Minimise the loss of ``problem`` and return the best variables found (never worse than the start).

    ``epochs``: L-BFGS-B iterations (lbfgs) or optimizer steps (the others) per run; ``restarts``: extra runs
    from random starts (default 3, stopping early once two runs agree); ``callback(info)`` may return False
    to stop (info: dict run, iteration, loss); ``time_limit`` seconds stops between iterations.
    DivergenceError when the objective is not a finite number at the start.
    """
    import torch

    from xlcf.train.devices import resolve_device
    from xlcf.train.trainer import restart_seed

    name = check_optimizer(optimizer)
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) < 1):
        raise ConfigError(f"--epochs must be a whole number >= 1, got {epochs!r}", field="epochs")
    if restarts is not None and (isinstance(restarts, bool) or int(restarts) < 0):
        raise ConfigError(f"--restarts must be a whole number >= 0, got {restarts!r}", field="restarts")
    dev = resolve_device(device)
    dtype = torch.float64
    x0 = np.asarray(problem.x0, dtype=np.float64).ravel()
    lo, hi = _bounds(problem)
    start = np.clip(x0, lo, hi)
    started = time.perf_counter()
    counters = {"evals": 0, "iters": 0}
    stop = {"now": None}

    def evaluate(x_np: np.ndarray, *, grad: bool):
        counters["evals"] += 1
        x = torch.as_tensor(x_np, dtype=dtype, device=dev)
        if grad:
            x.requires_grad_(True)
        f = problem.objective(x)
        loss = loss_of(f, problem.sense, problem.target)
        if not grad:
            return float(f), float(loss), None
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        g_np = np.zeros_like(x_np) if g is None else g.detach().to("cpu").numpy().astype(np.float64)
        return float(f), float(loss), g_np

    def loss_tensor(x):
        counters["evals"] += 1
        return loss_of(problem.objective(x), problem.sense, problem.target)

    with torch.no_grad():
        f_before, loss_before, _ = evaluate(start, grad=False)
    if not (math.isfinite(f_before) and math.isfinite(loss_before)):
        raise DivergenceError(f"the objective is {f_before} at the start; it must be a finite number")

    def keep_going(run: int, loss: float) -> bool:
        counters["iters"] += 1
        if callback is not None and callback({"run": run, "iteration": counters["iters"], "loss": loss}) is False:
            stop["now"] = "callback"
        if time_limit is not None and time.perf_counter() - started > time_limit:
            stop["now"] = "time limit"
        return stop["now"] is None

    run_fn = _run_lbfgs if name == "lbfgs" else _run_torch
    n_restarts = DEFAULT_RESTARTS if restarts is None else int(restarts)
    best_x, best_loss = start, loss_before
    runs: list[dict] = []
    best_run = 0
    for run in range(n_restarts + 1):
        if stop["now"]:
            break
        if run == 0:
            x_start = start
        else:
            x_start = restart_draw(x0, lo, hi, np.random.default_rng(restart_seed(seed, run)))
            with torch.no_grad():
                _, l0, _ = evaluate(x_start, grad=False)
            if not math.isfinite(l0):
                runs.append({"run": run, "start": "random", "loss": None, "stopped": "non-finite start"})
                continue
        t_run = time.perf_counter()
        x, loss, iters, reason = run_fn(evaluate, loss_tensor, x_start, lo, hi, name=name, epochs=epochs, lr=lr,
                                        keep_going=lambda value, r=run: keep_going(r, value), torch=torch,
                                        dev=dev, dtype=dtype)
        runs.append({"run": run, "start": "sheet" if run == 0 else "random",
                     "loss": loss if math.isfinite(loss) else None, "iterations": iters, "stopped": reason,
                     "seconds": time.perf_counter() - t_run})
        if math.isfinite(loss) and loss < best_loss:
            best_x, best_loss, best_run = x, loss, run
        done = [r["loss"] for r in runs if r.get("loss") is not None]
        agree = [v for v in done if v - best_loss <= max(SAME_MINIMUM_RTOL * abs(best_loss), 1e-9)]
        if len(agree) >= 2 or (problem.sense == "value" and best_loss <= 1e-20):
            break
    with torch.no_grad():
        f_after, loss_after, _ = evaluate(best_x, grad=False)
    if not math.isfinite(f_after) or loss_after > loss_before:  # never leave the sheet worse than found
        best_x, f_after, loss_after, best_run = start, f_before, loss_before, 0
    return OptimizeResult(x=best_x, objective_before=f_before, objective_after=f_after, loss=loss_after,
                          optimizer=name, device=str(dev), seconds=time.perf_counter() - started,
                          iterations=counters["iters"], evaluations=counters["evals"], runs=runs,
                          best_run=best_run, stopped_reason=stop["now"])


def _run_lbfgs(evaluate, loss_tensor, x_start, lo, hi, *, name, epochs, lr, keep_going, torch, dev, dtype):
    from scipy.optimize import minimize as scipy_minimize

    best = {"x": x_start, "loss": math.inf}

    def fun(x):
        _, loss, g = evaluate(x, grad=True)
        if not math.isfinite(loss) or not np.all(np.isfinite(g)):
            return math.inf, np.zeros_like(x)   # L-BFGS-B backtracks from a non-finite point
        if loss < best["loss"]:
            best["x"], best["loss"] = x.copy(), loss
        return loss, g

    def cb(intermediate_result):
        if not keep_going(float(intermediate_result.fun)):
            raise StopIteration

    bounds = None if not (np.isfinite(lo).any() or np.isfinite(hi).any()) else list(
        zip(np.where(np.isfinite(lo), lo, None), np.where(np.isfinite(hi), hi, None)))
    res = scipy_minimize(fun, x_start, jac=True, method="L-BFGS-B", bounds=bounds, callback=cb,
                         options={"maxiter": int(epochs or LBFGS_MAX_ITER), "ftol": LBFGS_FTOL, "gtol": LBFGS_GTOL,
                                  "maxcor": 20, "maxls": 40})
    return best["x"], best["loss"], int(res.nit), str(res.message)


def _run_torch(evaluate, loss_tensor, x_start, lo, hi, *, name, epochs, lr, keep_going, torch, dev, dtype):
    from xlcf.train.optimizers import OPTIMIZERS

    spec = OPTIMIZERS[name]
    hp = dict(spec.full_batch)
    if lr is not None:
        hp["lr"] = float(lr)
    hp["device_type"] = dev.type
    steps = int(epochs or hp.get("epochs", 1000))
    x = torch.tensor(x_start, dtype=dtype, device=dev, requires_grad=True)
    opt = spec.build([x], hp)
    lo_t = torch.as_tensor(lo, dtype=dtype, device=dev)
    hi_t = torch.as_tensor(hi, dtype=dtype, device=dev)
    bounded = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
    best_x, best_loss = x.detach().clone(), math.inf
    reason, done = "epochs", 0
    for done in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss_t = loss_tensor(x)
        loss = float(loss_t)
        if not math.isfinite(loss):
            reason = "diverged"
            break
        if loss < best_loss:  # the loss of the current x, before this step moves it
            best_x, best_loss = x.detach().clone(), loss
        loss_t.backward()
        opt.step()
        if bounded:
            with torch.no_grad():
                x.copy_(torch.minimum(torch.maximum(x, lo_t), hi_t))
        if not keep_going(loss):
            reason = "stopped"
            break
    with torch.no_grad():
        last = float(loss_tensor(x))
    if math.isfinite(last) and last < best_loss:
        best_x, best_loss = x.detach().clone(), last
    return best_x.to("cpu").numpy().astype(np.float64), best_loss, done, reason
