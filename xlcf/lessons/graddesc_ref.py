"""Pure numpy reference of the gradient-descent workbook (``xlcf new graddesc``).

It implements the same update rules as the sheets' formulas, row for row, without reading any sheet: the
``--json`` output, the tests (which compare it with LibreOffice's recalculation) and `xlcf step` / the Excel
macros all use it.

Model ``y_pred = a*x + b`` fitted to the data sheet's points, one pass = one row per data point, in order;
each row uses the parameters left by the row above (the first row uses the start cells). With the residual
``r = a*x + b - y`` the derivatives are ``de/db = 2r`` and ``de/da = x * de/db``. Per optimizer:

- ``basic``: ``a <- a - lr*de/da``, ``b <- b - lr*de/db`` (the sheet also shows the finite-difference
  estimates ``((a+0.01)x+b-y)^2 - err^2)/0.01``; they do not drive the update).
- ``momentum``: ``v = g*(1-beta) + v*beta``; ``a <- a - lr*v`` (state ``v_slope``, ``v_const``).
- ``rmsprop``: ``S = beta*S + (1-beta)*g^2``; ``a <- a - lr*g/sqrt(S+eps)`` (state ``s_slope``, ``s_const``).
- ``adam`` (the lesson's form, without bias correction): ``v = g*(1-beta1) + v*beta1``,
  ``S = beta2*S + (1-beta2)*g^2``, ``a <- a - lr*v/sqrt(S+eps)``.
- ``adam_ann``: Adam whose lr is annealed inside the pass. After each row the *gradient ratio*
  ``ratio = |de/da| / sqrt(S_slope + eps)`` (the slope's gradient against its running RMS, using this row's S)
  is compared with the previous row's ratio (the start cell ``ratio`` for the first row); when it grew,
  the next row's lr is ``lr*anneal``, otherwise it stays. lr and ratio are state: a step carries them over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xlcf.errors import ConfigError

KINDS = ("basic", "momentum", "rmsprop", "adam", "adam_ann")

TRUE_SLOPE = 2.0
TRUE_CONST = 30.0
N_POINTS = 30
FD_STEP = 0.01  # finite-difference step of the basic sheet (as in the lesson)

# Start values per sheet. lr is chosen so one pass makes visible progress and repeated passes converge
# without blowing up (x goes up to 100: plain SGD needs lr < 1/x^2 = 1e-4 to stay stable).
START = {
    "basic": {"slope": 1.0, "const": 1.0},
    "momentum": {"slope": 1.0, "const": 1.0, "v_slope": 0.0, "v_const": 0.0},
    "rmsprop": {"slope": 1.0, "const": 1.0, "s_slope": 0.0, "s_const": 0.0},
    "adam": {"slope": 1.0, "const": 1.0, "v_slope": 0.0, "v_const": 0.0, "s_slope": 0.0, "s_const": 0.0},
    "adam_ann": {
        "slope": 1.0,
        "const": 1.0,
        "v_slope": 0.0,
        "v_const": 0.0,
        "s_slope": 0.0,
        "s_const": 0.0,
        "lr": 0.5,
        "ratio": 0.0,
    },
}
HYPER = {
    "basic": {"lr": 1e-4},
    "momentum": {"lr": 5e-5, "beta": 0.8},
    "rmsprop": {"lr": 0.1, "beta": 0.9, "eps": 1e-8},
    "adam": {"lr": 0.2, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8},
    "adam_ann": {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "anneal": 0.995},
}


def state_names(kind: str) -> tuple[str, ...]:
    """Start cells a step overwrites (each has an after-pass twin named ``"last" + name``)."""
    _check_kind(kind)
    return tuple(START[kind])


def after_name(name: str) -> str:
    return "last" + name


def init_name(name: str) -> str:
    return "init_" + name


def hyper_names(kind: str) -> tuple[str, ...]:
    _check_kind(kind)
    return tuple(HYPER[kind])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown gradient-descent sheet {kind!r}; choose one of {', '.join(KINDS)}")


def make_data(seed: int = 0, n: int = N_POINTS, slope: float = TRUE_SLOPE, const: float = TRUE_CONST):
    """x: integers 1..100 drawn with ``default_rng(seed)``; y = slope*x + const."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 101, size=n).astype(float)
    return x, slope * x + const


@dataclass(frozen=True)
class PassResult:
    """One pass: the state after it, per-row arrays (as the sheet shows them) and the RMSE after it."""

    kind: str
    start: dict
    after: dict
    rows: dict  # column name -> np.ndarray (one value per data point)
    rmse_start: float  # RMSE over the data with the start a, b
    rmse: float  # RMSE over the data with the a, b after the pass


def rmse_of(slope: float, const: float, x: np.ndarray, y: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        return math.sqrt(float(np.sum((slope * x + const - y) ** 2)) / len(x))


def run_pass(kind: str, x, y, start: dict | None = None, hyper: dict | None = None) -> PassResult:
    """One pass over (x, y) with the sheet's rules, evaluated in the sheet's order of operations."""
    _check_kind(kind)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    st = dict(START[kind], **(start or {}))
    hp = dict(HYPER[kind], **(hyper or {}))
    a, b = float(st["slope"]), float(st["const"])
    n = len(x)
    cols = {k: np.empty(n) for k in ("b", "a", "pred", "err2", "de_db", "de_da", "new_b", "new_a")}
    if kind == "basic":
        for k in ("errb1", "est_de_db", "erra1", "est_de_da"):
            cols[k] = np.empty(n)
    if kind in ("momentum", "adam", "adam_ann"):
        cols["v_b"], cols["v_a"] = np.empty(n), np.empty(n)
    if kind in ("rmsprop", "adam", "adam_ann"):
        cols["s_b"], cols["s_a"] = np.empty(n), np.empty(n)
    if kind == "adam_ann":
        cols["lr"], cols["ratio"], cols["next_lr"] = np.empty(n), np.empty(n), np.empty(n)

    v_b, v_a = st.get("v_const", 0.0), st.get("v_slope", 0.0)
    s_b, s_a = st.get("s_const", 0.0), st.get("s_slope", 0.0)
    lr = st["lr"] if kind == "adam_ann" else hp["lr"]
    ratio_prev = st.get("ratio", 0.0)
    with np.errstate(all="ignore"):  # a diverging lr gives inf/nan: callers check, nothing is written
        for i in range(n):
            xi, yi = x[i], y[i]
            pred = a * xi + b
            err2 = (pred - yi) ** 2
            de_db = 2 * (pred - yi)
            de_da = xi * de_db
            cols["b"][i], cols["a"][i], cols["pred"][i], cols["err2"][i] = b, a, pred, err2
            cols["de_db"][i], cols["de_da"][i] = de_db, de_da
            if kind == "basic":
                errb1 = (a * xi + (b + FD_STEP) - yi) ** 2
                erra1 = ((a + FD_STEP) * xi + b - yi) ** 2
                cols["errb1"][i], cols["est_de_db"][i] = errb1, (errb1 - err2) / FD_STEP
                cols["erra1"][i], cols["est_de_da"][i] = erra1, (erra1 - err2) / FD_STEP
                new_b, new_a = b - lr * de_db, a - lr * de_da
            elif kind == "momentum":
                beta = hp["beta"]
                v_b = de_db * (1 - beta) + v_b * beta
                v_a = de_da * (1 - beta) + v_a * beta
                cols["v_b"][i], cols["v_a"][i] = v_b, v_a
                new_b, new_a = b - lr * v_b, a - lr * v_a
            elif kind == "rmsprop":
                beta, eps = hp["beta"], hp["eps"]
                s_b = beta * s_b + (1 - beta) * de_db**2
                s_a = beta * s_a + (1 - beta) * de_da**2
                cols["s_b"][i], cols["s_a"][i] = s_b, s_a
                new_b, new_a = b - lr * de_db / math.sqrt(s_b + eps), a - lr * de_da / math.sqrt(s_a + eps)
            else:  # adam, adam_ann
                b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
                v_b = de_db * (1 - b1) + v_b * b1
                v_a = de_da * (1 - b1) + v_a * b1
                s_b = b2 * s_b + (1 - b2) * de_db**2
                s_a = b2 * s_a + (1 - b2) * de_da**2
                cols["v_b"][i], cols["v_a"][i], cols["s_b"][i], cols["s_a"][i] = v_b, v_a, s_b, s_a
                new_b, new_a = b - lr * v_b / math.sqrt(s_b + eps), a - lr * v_a / math.sqrt(s_a + eps)
                if kind == "adam_ann":
                    ratio = abs(de_da) / math.sqrt(s_a + eps)
                    next_lr = lr * hp["anneal"] if ratio > ratio_prev else lr
                    cols["lr"][i], cols["ratio"][i], cols["next_lr"][i] = lr, ratio, next_lr
                    lr, ratio_prev = next_lr, ratio
            cols["new_b"][i], cols["new_a"][i] = new_b, new_a
            a, b = new_a, new_b

    after = {"slope": a, "const": b}
    if "v_slope" in st:
        after["v_slope"], after["v_const"] = v_a, v_b
    if "s_slope" in st:
        after["s_slope"], after["s_const"] = s_a, s_b
    if kind == "adam_ann":
        after["lr"], after["ratio"] = lr, ratio_prev
    after = {k: after[k] for k in st}  # same order as the start state
    return PassResult(
        kind=kind,
        start=st,
        after=after,
        rows=cols,
        rmse_start=rmse_of(st["slope"], st["const"], x, y),
        rmse=rmse_of(a, b, x, y),
    )


def run_passes(
    kind: str, x, y, start: dict | None = None, hyper: dict | None = None, passes: int = 1
) -> list[PassResult]:
    """``passes`` consecutive passes, each starting from the state the previous one left."""
    out = []
    state = start
    for _ in range(passes):
        res = run_pass(kind, x, y, state, hyper)
        out.append(res)
        state = res.after
    return out


def reference(seed: int = 0) -> dict:
    """What ``xlcf new graddesc --json`` prints: per sheet the start a/b, after-pass a/b and RMSE."""
    x, y = make_data(seed)
    out = {}
    for kind in KINDS:
        res = run_pass(kind, x, y)
        out[kind] = {
            "slope": float(res.start["slope"]),
            "const": float(res.start["const"]),
            "lastslope": float(res.after["slope"]),
            "lastconst": float(res.after["const"]),
            "rmse": float(res.rmse),
        }
    return out
