"""Sheet-sized fits without torch: ALS and L-BFGS in numpy for the dot and bias models.

A spreadsheet's problem is tiny (the lesson's sheet: 206 ratings, 105 parameters): the arithmetic takes
milliseconds, while importing torch takes seconds. For such problems this module trains with numpy alone,
with the torch engine's semantics — the same objective (MSE + per-rating L2, see ``xlcf.train.optimizers``),
the same seeded initial weights (torch's CPU generator is reproduced bit for bit), the same L-BFGS steps
(``xlcf.train.lbfgs``) and ALS half-steps, the same stopping rules, divergence guard and multistart — so
the result equals the torch engine's within float32 rounding. Everything is float64.

:func:`small_path_applies` says when it is used: a built-in ``als`` or ``lbfgs`` optimizer, a dot or bias
model, at most ``SMALL_MAX_RATINGS`` ratings on at most ``SMALL_MAX_CELLS``
users x movies, the sheet's uniform initialisation (or a warm start), and the
CPU (``cpu``, or ``auto`` on a machine without a GPU)."""

from __future__ import annotations

import math
import os
import platform
import sys
import time

import numpy as np

from xlcf.catalog import suggested_lr
from xlcf.errors import DivergenceError
from xlcf.train.config import EXACT_MAX_WORK, FULL_BATCH_MAX
from xlcf.train.lbfgs import LBFGS
from xlcf.train.multistart import multistart
from xlcf.train.progress import Progress
from xlcf.train.result import EpochStats, FitResult, InitialParams, record_solver_epoch, stop_reason

SMALL_OPTIMIZERS = ("als", "lbfgs")
SMALL_MAX_RATINGS = FULL_BATCH_MAX
SMALL_MAX_CELLS = 250_000  # users x movies: the problem is held as a dense grid (a 500 x 500 sheet at most)
# Same guard values as the torch loop (xlcf.train.trainer).
MAX_ABS_WEIGHT = 1e3
EXPLODE_FACTOR = 1e4


# ------------------------------------------------------------------------------------------------
# when
# ------------------------------------------------------------------------------------------------
def gpu_present() -> bool:
    """Whether ``device="auto"`` may find a GPU here, answered without importing torch.

    With torch already loaded it is asked; otherwise the presence of a GPU driver decides (NVIDIA or ROCm
    device files, ``nvidia-smi``), and Apple silicon counts as a GPU (MPS). When in doubt: yes, so the torch
    engine decides."""
    torch = sys.modules.get("torch")
    if torch is not None:
        mps = getattr(torch.backends, "mps", None)
        return bool(torch.cuda.is_available() or (mps is not None and mps.is_available()))
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")):
        return True
    from shutil import which

    return which("nvidia-smi") is not None


def small_path_applies(config, n_ratings: int, n_users: int, n_movies: int, init: InitialParams | None = None) -> bool:
    """True when ``config`` on this problem is trained here (numpy) rather than by the torch engine."""
    if callable(config.optimizer) or config.optimizer not in SMALL_OPTIMIZERS or config.model not in ("dot", "bias"):
        return False
    if n_ratings > SMALL_MAX_RATINGS or n_users * n_movies > SMALL_MAX_CELLS:
        return False
    if config.batch_size is not None and config.batch_size < n_ratings:
        return False
    # torch's uniform draws are reproduced exactly; its normal draws are not (they are only used off sheets).
    init_scheme = config.init
    if init_scheme == "auto":
        init_scheme = "uniform" if config.y_range is None and not config.global_mean else "normal"
    if init_scheme != "uniform":
        return False
    k = int(np.shape(init.user_factors)[1]) if init is not None and np.ndim(init.user_factors) == 2 else config.factors
    if max(n_users, n_movies) * (k + 1) ** 3 > EXACT_MAX_WORK:  # ALS solves exactly only up to this size
        return False
    device = str(config.device).strip().lower()
    return device == "cpu" or (device == "auto" and not gpu_present())


# ------------------------------------------------------------------------------------------------
# initial weights: torch's CPU generator, reproduced
# ------------------------------------------------------------------------------------------------
def torch_uniform(seed: int, count: int, scale: float) -> np.ndarray:
    """The ``count`` float32 values ``torch.Generator().manual_seed(seed)`` draws with ``uniform_(0, scale)``.

    torch's CPU generator is the 32-bit Mersenne Twister seeded like numpy's legacy ``RandomState``; a float
    draw keeps the low 24 bits of one output, times 2**-24, times the range."""
    raw = np.random.RandomState(int(seed) & 0xFFFFFFFF).randint(0, 2**32, size=count, dtype=np.uint32)
    unit = (raw & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(2.0**-24)
    return unit * np.float32(scale) + np.float32(0.0)


def initial_weights(
    n_users: int, n_movies: int, k: int, has_bias: bool, seed: int, scale: float, init: InitialParams | None
) -> dict[str, np.ndarray]:
    """The torch model's starting parameters (float32 values, as float64): the seeded draws in parameter
    order (user factors, movie factors, user bias, movie bias), then the warm start on top."""
    sizes = [n_users * k, n_movies * k] + ([n_users, n_movies] if has_bias else [])
    draws = torch_uniform(seed, sum(sizes), scale).astype(np.float64)
    parts = np.split(draws, np.cumsum(sizes)[:-1])
    w = {"user_factors": parts[0].reshape(n_users, k), "movie_factors": parts[1].reshape(n_movies, k)}
    if has_bias:
        w["user_bias"], w["movie_bias"] = parts[2], parts[3]
    if init is not None:
        # The torch model holds float32: a warm start is rounded the same way, so both engines start alike.
        as32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)
        w["user_factors"], w["movie_factors"] = as32(init.user_factors), as32(init.movie_factors)
        if has_bias and init.user_bias is not None:
            w["user_bias"] = as32(init.user_bias)
        if has_bias and init.movie_bias is not None:
            w["movie_bias"] = as32(init.movie_bias)
    return w


# ------------------------------------------------------------------------------------------------
# the model: predictions, loss and gradient
# ------------------------------------------------------------------------------------------------
class Problem:
    """The dot/bias model on fixed ratings, held densely: a sheet's users x movies grid of rating counts and
    mean ratings, so a loss-and-gradient evaluation is a few small matrix products (no gather/scatter).

    Parameters travel as one flat float64 vector (what L-BFGS works on) or a dict of views into it."""

    def __init__(self, u, m, r, n_users: int, n_movies: int, k: int, has_bias: bool, offset: float, y_range, l2):
        u, m = np.asarray(u, dtype=np.int64), np.asarray(m, dtype=np.int64)
        r = np.asarray(r, dtype=np.float32).astype(np.float64)
        self.n = int(r.shape[0])
        cell = u * n_movies + m
        counts = np.bincount(cell, minlength=n_users * n_movies).astype(np.float64)
        sums = np.bincount(cell, weights=r, minlength=n_users * n_movies)
        self.count = counts.reshape(n_users, n_movies)  # ratings per cell (repeated pairs count twice)
        self.target = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).reshape(n_users, n_movies)
        # Repeated ratings of one cell: sum (p - r_i)^2 = c (p - mean)^2 + sum (r_i - mean)^2; keep the constant.
        self.constant = float(np.sum((r - self.target.reshape(-1)[cell]) ** 2))
        self.user_counts, self.movie_counts = self.count.sum(axis=1), self.count.sum(axis=0)
        self.n_users, self.n_movies, self.k, self.has_bias = n_users, n_movies, k, has_bias
        self.offset, self.y_range, self.l2 = float(offset), y_range, float(l2)
        self.names = ["user_factors", "movie_factors"] + (["user_bias", "movie_bias"] if has_bias else [])
        shapes = [(n_users, k), (n_movies, k)] + ([(n_users,), (n_movies,)] if has_bias else [])
        ends = np.cumsum([int(np.prod(sh)) for sh in shapes])
        self.layout = [(name, slice(int(e - np.prod(sh)), int(e)), sh) for name, sh, e in zip(self.names, shapes, ends)]
        self.size = int(ends[-1])
        self.last_mse = float("nan")
        self._als_cache: dict = {}

    # -- parameter layout --------------------------------------------------------------------------
    def flat(self, w: dict[str, np.ndarray]) -> np.ndarray:
        x = np.empty(self.size)
        for name, sl, _ in self.layout:
            x[sl] = w[name].reshape(-1)
        return x

    def unflat(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {name: x[sl].reshape(shape) for name, sl, shape in self.layout}

    # -- predictions -----------------------------------------------------------------------------------
    def raw_grid(self, w) -> np.ndarray:
        raw = w["user_factors"] @ w["movie_factors"].T
        if self.has_bias:
            raw = raw + w["user_bias"][:, None] + w["movie_bias"][None, :]
        return raw

    def squash(self, raw):
        raw = raw + self.offset
        if self.y_range is None:
            return raw
        lo, hi = self.y_range
        return lo + (hi - lo) / (1.0 + np.exp(-raw))

    def sse(self, w) -> float:
        err = self.squash(self.raw_grid(w)) - self.target
        return float(np.sum(self.count * err * err)) + self.constant

    def valid_rmse(self, w, valid) -> float | None:
        """RMSE on held-out ratings; an index of -1 (an id training never saw) contributes no factors or bias."""
        if valid is None:
            return None
        vu, vm, vr = valid
        ku, km = vu >= 0, vm >= 0
        uc, mc = np.where(ku, vu, 0), np.where(km, vm, 0)
        raw = np.einsum("ij,ij->i", w["user_factors"][uc], w["movie_factors"][mc]) * (ku & km)
        if self.has_bias:
            raw = raw + w["user_bias"][uc] * ku + w["movie_bias"][mc] * km
        err = self.squash(raw) - vr
        return math.sqrt(float(err @ err) / vr.shape[0])

    # -- loss and gradient (the torch models' loss_and_grads) -----------------------------------------
    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        w = self.unflat(x)
        pred = self.squash(self.raw_grid(w))
        err = pred - self.target
        weighted = self.count * err
        n = self.n
        mse = (float(np.sum(weighted * err)) + self.constant) / n
        g = weighted * (2.0 / n)  # d mse / d raw, per cell
        if self.y_range is not None:
            lo, hi = self.y_range
            s = (pred - lo) / (hi - lo)
            g = g * (s * (1 - s) * (hi - lo))
        grad = np.empty(self.size)
        gw = self.unflat(grad)
        np.matmul(g, w["movie_factors"], out=gw["user_factors"])
        np.matmul(g.T, w["user_factors"], out=gw["movie_factors"])
        if self.has_bias:
            np.sum(g, axis=1, out=gw["user_bias"])
            np.sum(g, axis=0, out=gw["movie_bias"])
        loss = mse
        if self.l2:
            # Per-rating L2: each row pays once per rating it appears in (mean over the ratings).
            c = 2.0 * self.l2 / n
            penalty = 0.0
            for name, _, shape in self.layout:
                counts = self.user_counts if name.startswith("user") else self.movie_counts
                p = w[name]
                per_row = counts[:, None] if len(shape) == 2 else counts
                penalty += float(np.sum(per_row * p * p))
                gw[name] += c * per_row * p
            loss = mse + self.l2 * penalty / n
        self.last_mse = mse
        return loss, grad

    # -- ALS half-steps --------------------------------------------------------------------------------
    def als_half_step(self, w, side: str, wd: float) -> None:
        """Solve one side's factors (and biases) exactly given the other side: a ridge regression per row,
        ``(Z^T C Z + wd * n_row * I) [factors; bias] = Z^T C (target - offset - other bias)``, all rows in one
        batched solve."""
        own, other = ("user", "movie") if side == "user" else ("movie", "user")
        count, weighted, ridge, rows = self._als_side(side, wd)
        z = w[f"{other}_factors"]
        if self.has_bias:
            ob = w[f"{other}_bias"]
            z = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
            rhs = (weighted - count * ob[None, :]) @ z
        else:
            rhs = weighted @ z
        d = z.shape[1]
        # Per-row Gram matrices sum_j c_ij z_j z_j^T as one matrix product: counts x (z_j outer z_j).
        gram = (count @ (z[:, :, None] * z[:, None, :]).reshape(z.shape[0], d * d)).reshape(-1, d, d)
        a = gram + ridge
        try:
            sol = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # a singular block (no ridge): least squares, one block at a time
            sol = np.stack([np.linalg.lstsq(a_i, b_i, rcond=None)[0] for a_i, b_i in zip(a, rhs)])
        # Rows with no ratings keep their values (the torch engine solves only the rows that have ratings).
        w[f"{own}_factors"][rows] = sol[rows, : self.k]
        if self.has_bias:
            w[f"{own}_bias"][rows] = sol[rows, self.k]

    def _als_side(self, side: str, wd: float):
        """(counts, counts * (target - offset), ridge * I per row, rows with ratings) for one side, cached."""
        key = (side, wd)
        if key not in self._als_cache:
            count = self.count if side == "user" else self.count.T
            target = self.target if side == "user" else self.target.T
            d = self.k + int(self.has_bias)
            n_row = count.sum(axis=1)
            ridge = (wd * n_row + 1e-12)[:, None, None] * np.eye(d)
            self._als_cache[key] = (count, count * (target - self.offset), ridge, np.flatnonzero(n_row))
        return self._als_cache[key]


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def train_small(
    u_np,
    m_np,
    r_np,
    n_users,
    n_movies,
    config,
    *,
    valid=None,
    init=None,
    callback=None,
    progress=False,
    users,
    movies,
    rated,
) -> FitResult:
    """Train like ``xlcf.train.trainer`` does (multistart included), in numpy. See :func:`small_path_applies`."""
    return multistart(
        _train_one,
        u_np,
        m_np,
        r_np,
        n_users,
        n_movies,
        config,
        init=init,
        callback=callback,
        valid=valid,
        progress=progress,
        users=users,
        movies=movies,
        rated=rated,
    )


def _offset_for(mean: float, y_range) -> float:
    if y_range is None:
        return float(mean)
    lo, hi = y_range
    p = min(max((mean - lo) / (hi - lo), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _train_one(
    u_np,
    m_np,
    r_np,
    n_users,
    n_movies,
    config,
    *,
    valid,
    init,
    callback,
    progress,
    users,
    movies,
    rated,
    init_seed: int,
    run: int = 0,
) -> FitResult:
    t_start = time.perf_counter()
    n_train = len(r_np)
    cfg = config.resolve(n_train)
    if init is not None:
        init = init.checked(n_users, n_movies, cfg.model)
        if init.user_factors.shape[1] != cfg.factors:  # the sheet's block decides k
            cfg = cfg.replace(factors=int(init.user_factors.shape[1]))
    has_bias = cfg.model == "bias"
    mean = float(np.mean(r_np, dtype=np.float64))
    w = initial_weights(n_users, n_movies, cfg.factors, has_bias, init_seed, cfg.init_scale, init)
    als = cfg.optimizer == "als"
    if als:  # ALS fits the linear model: no sigmoid, the mean (if any) in linear space
        cfg = cfg.replace(y_range=None)
        offset = mean if cfg.global_mean else 0.0
    else:
        offset = _offset_for(mean, cfg.y_range) if cfg.global_mean else 0.0
    offset = float(np.float32(offset))  # the torch model keeps it in a float32 buffer
    l2 = 0.0 if als else float(cfg.weight_decay or 0.0)
    prob = Problem(u_np, m_np, r_np, n_users, n_movies, cfg.factors, has_bias, offset, cfg.y_range, l2)
    vdata = None
    if valid is not None and len(valid[2]):
        vdata = (
            np.asarray(valid[0], dtype=np.int64),
            np.asarray(valid[1], dtype=np.int64),
            np.asarray(valid[2], dtype=np.float32).astype(np.float64),
        )

    def export(weights, history, stopped, train_rmse, valid_rmse) -> FitResult:
        return FitResult(
            config=cfg,
            users=users,
            movies=movies,
            user_factors=weights["user_factors"].copy(),
            movie_factors=weights["movie_factors"].copy(),
            user_bias=weights["user_bias"].copy() if has_bias else None,
            movie_bias=weights["movie_bias"].copy() if has_bias else None,
            global_mean=mean,
            history=list(history),
            device="cpu",
            fit_seconds=time.perf_counter() - t_start,
            train_rmse=float(train_rmse),
            valid_rmse=None if valid_rmse is None else float(valid_rmse),
            stopped_reason=stopped,
            offset=offset,
            layers=None,
            n_train=n_train,
            n_valid=0 if vdata is None else int(vdata[2].shape[0]),
            rated_user_index=rated[0],
            rated_movie_index=rated[1],
        )

    loop = _als_loop if als else _lbfgs_loop
    bar = Progress(cfg.epochs, f"{cfg.model}/{cfg.optimizer}" + (f" run {run + 1}" if run else ""), enabled=progress)
    try:
        w, history, stopped = loop(prob, w, cfg, vdata, callback, bar, run, export)
    finally:
        bar.close()
    return export(w, history, stopped, math.sqrt(prob.sse(w) / n_train), prob.valid_rmse(w, vdata))


def _als_loop(prob: Problem, w, cfg, vdata, callback, bar, run, export):
    wd = float(cfg.weight_decay or 0.0)
    history: list[EpochStats] = []
    stopped, prev = None, None
    for epoch in range(1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        last = {name: a.copy() for name, a in w.items()}
        prob.als_half_step(w, "user", wd)
        prob.als_half_step(w, "movie", wd)
        sse = prob.sse(w)
        if not math.isfinite(sse):
            result = export(last, history, "diverged", math.sqrt(prob.sse(last) / prob.n), None)
            raise DivergenceError(
                f"training diverged at epoch {epoch}: ALS produced non-finite factors; try a larger weight decay (wd)",
                epoch=epoch,
                result=result,
            )
        stopped = record_solver_epoch(
            history,
            bar,
            callback,
            epoch=epoch,
            sse=sse,
            train_rmse=math.sqrt(sse / prob.n),
            valid_rmse=prob.valid_rmse(w, vdata),
            started=t_epoch,
            previous_sse=prev,
            run=run,
        )
        if stopped:
            break
        prev = sse
    return w, history, stopped


def _params_ok(x: np.ndarray) -> tuple[bool, str]:
    biggest = float(np.abs(x).max()) if x.size else 0.0
    if not math.isfinite(biggest):
        return False, "weights became NaN/infinite"
    if biggest > MAX_ABS_WEIGHT:
        return False, f"weights exploded (|w| > {MAX_ABS_WEIGHT:g})"
    return True, ""


def _lbfgs_loop(prob: Problem, w, cfg, vdata, callback, bar, run, export):
    opt = LBFGS(lr=cfg.lr)
    x = prob.flat(w)
    history: list[EpochStats] = []
    stopped, prev_loss, start_loss = None, None, None
    first: dict[str, float] = {}  # the loss and MSE at the start of the step (torch's epoch loss)

    def func(point):
        loss, grad = prob.loss_and_grad(point)
        first.setdefault("loss", loss)
        first.setdefault("mse", prob.last_mse)
        return loss, grad

    for epoch in range(1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        first.clear()
        new_x, _ = opt.step(func, x)
        epoch_loss, mse = first["loss"], first["mse"]
        train_rmse = math.sqrt(max(mse, 0.0)) if math.isfinite(mse) else float("nan")
        # -- divergence guard (as the torch loop) ------------------------------------------------------
        ok, why = _params_ok(new_x)
        if ok and not math.isfinite(epoch_loss):
            ok, why = False, "the loss became NaN/infinite"
        if ok and start_loss is not None and epoch_loss > EXPLODE_FACTOR * max(start_loss, 1e-3):
            ok, why = False, f"the loss exploded ({start_loss:.4g} -> {epoch_loss:.4g})"
        if start_loss is None and math.isfinite(epoch_loss):
            start_loss = epoch_loss
        if not ok:
            kept = prob.unflat(x)
            result = export(kept, history, "diverged", math.sqrt(prob.sse(kept) / prob.n), prob.valid_rmse(kept, vdata))
            raise DivergenceError(
                f"training diverged at epoch {epoch}: {why} with optimizer lbfgs and lr {cfg.lr:g}; "
                f"try a smaller lr (e.g. {suggested_lr('lbfgs', cfg.lr, full_batch=True):g}); the parameters of epoch "
                f"{epoch - 1} were kept",
                epoch=epoch,
                result=result,
            )
        x = new_x
        valid_rmse = prob.valid_rmse(prob.unflat(x), vdata)
        stats = EpochStats(
            epoch=epoch,
            train_loss=epoch_loss,
            train_rmse=train_rmse,
            valid_rmse=valid_rmse,
            seconds=time.perf_counter() - t_epoch,
            lr=float(cfg.lr),
            run=run,
        )
        history.append(stats)
        bar.update(train_rmse, valid_rmse)
        stopped = stop_reason(callback, stats, prev_loss, epoch_loss, 1e-9)
        if stopped:
            break
        prev_loss = epoch_loss
    return prob.unflat(x), history, stopped
