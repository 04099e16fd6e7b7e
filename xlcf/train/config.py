"""``TrainConfig``: every setting of a training run, validated on construction.

``None`` means "the chosen optimizer's default for this regime" (full batch vs mini-batch; see
``xlcf.train.optimizers``). ``resolve(n_train)`` fills those in; the resolved config is what a
``FitResult`` carries, so a result always says exactly how it was trained."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xlcf import catalog
from xlcf.errors import ConfigError, quote

MODEL_NAMES = catalog.MODELS
SCHEDULES = ("constant", "onecycle")
INIT_SCHEMES = ("auto", "normal", "uniform")
# Up to this many training ratings, batch_size=None means full batch (every rating in every step).
FULL_BATCH_MAX = 20_000
# Below this many training ratings one CPU thread is faster than several (per-op threading overhead, and
# no oversubscription when other processes share the cores).
SMALL_DATA = 1_000_000
# ALS solves each row's ridge regression exactly (float64 Cholesky) while rows x (factors + 1)^3 stays below
# this; beyond, a few warm-started conjugate-gradient steps in float32.
EXACT_MAX_WORK = 2e6
# Seeds are 32-bit, as numpy's and most tools' are (torch's generators and the restarts' seed streams derive
# from them); a larger number is a typo, not a seed.
MAX_SEED = 2**32 - 1
DEFAULT_FACTORS = catalog.FULL_RATINGS_DEFAULTS["factors"]  # embedding size unless the optimizer's defaults say


class _DefaultOptimizer(str):
    """The default optimizer's name, told apart from the same name given explicitly: the nn model (which
    gibbs cannot fit) then gets the catalog's ``nn_optimizer`` instead."""


DEFAULT_OPTIMIZER = _DefaultOptimizer(catalog.FULL_RATINGS_DEFAULTS["optimizer"])


def _optimizer_names() -> list[str]:
    return sorted(catalog.optimizer_names())


@dataclass(frozen=True)
class TrainConfig:
    model: str = "bias"
    optimizer: str | Callable = DEFAULT_OPTIMIZER  # gibbs (adam for the nn model)
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    factors: int | None = None  # None: the optimizer's default (32 for gibbs, 50 for the others)
    batch_size: int | None = None  # None: full batch up to FULL_BATCH_MAX ratings, else the optimizer's default
    schedule: str | None = None  # constant | onecycle; None: the optimizer's default
    seed: int = 0
    device: str = "auto"
    valid_pct: float = 0.2
    y_range: tuple[float, float] | None = (0.5, 5.5)
    global_mean: bool = True
    hidden: int = 10
    dropout: tuple[float, float] = (0.05, 0.5)
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    init: str = "auto"  # auto: uniform[0,1) for raw sheet models (no y_range, no mean), else normal
    init_scale: float | None = None  # uniform upper bound / normal std; None: 1.0 (uniform) or the optimizer's
    threads: int | None = None  # CPU threads for torch; None: 1 below SMALL_DATA ratings (less overhead), else torch's
    restarts: int | None = None  # extra runs from fresh random starts, best kept (multistart); None: optimizer default
    max_seconds: float | None = None  # time cap: stop after the epoch (sweep) that passes it; None: no cap
    # gibbs (Bayesian matrix factorisation): sweeps = epochs; the first burn_in sweeps are not averaged
    burn_in: int | None = None  # None: the optimizer's default (at most half the sweeps)
    prior: float | None = None  # hyper-prior W0 = I / prior: larger = smaller rows expected (more shrinkage)
    noise_df: float | None = None  # per-user/per-movie noise scales ~ Gamma(df/2, df/2); 0: one noise level

    def __post_init__(self) -> None:
        # Normalise what spreadsheets and JSON hand us (floats for ints, lists for tuples), then check.
        fix = object.__setattr__
        if isinstance(self.optimizer, _DefaultOptimizer):
            nn_default = catalog.FULL_RATINGS_DEFAULTS["nn_optimizer"]
            is_nn = isinstance(self.model, str) and self.model.strip().lower() == "nn"
            fix(self, "optimizer", nn_default if is_nn else str(self.optimizer))
        for name in ("epochs", "factors", "batch_size", "seed", "hidden", "threads", "restarts", "burn_in"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool) and isinstance(value, float) and value.is_integer():
                fix(self, name, int(value))
        for name in ("model", "optimizer", "device"):  # names are case-insensitive, as Excel's are
            value = getattr(self, name)
            if isinstance(value, str):
                fix(self, name, value.strip().lower())
        for name in ("y_range", "dropout", "betas"):
            value = getattr(self, name)
            if isinstance(value, list):
                fix(self, name, tuple(value))
        for name in ("lr", "weight_decay", "valid_pct", "momentum", "init_scale", "max_seconds", "prior", "noise_df"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                fix(self, name, float(value))
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        names = _optimizer_names()
        if self.model not in MODEL_NAMES:
            raise ConfigError(
                f"unknown model {quote(self.model)}; valid models: {', '.join(MODEL_NAMES)}", field="model"
            )
        if not callable(self.optimizer):
            if not isinstance(self.optimizer, str) or self.optimizer not in names:
                raise ConfigError(
                    f"unknown optimizer {quote(self.optimizer)}; valid optimizers: {', '.join(names)}",
                    field="optimizer",
                )
            if self.model not in catalog.models_for(self.optimizer):
                fits = " and ".join(catalog.models_for(self.optimizer))
                raise ConfigError(
                    f"optimizer '{self.optimizer}' fits the {fits} models only; for {self.model} use "
                    "one of: " + ", ".join(n for n in names if self.model in catalog.models_for(n)),
                    field="optimizer",
                )
        _int(self.epochs, "epochs", 1, allow_none=True)
        _int(self.factors, "factors", 1, allow_none=True)
        _int(self.batch_size, "batch_size", 1, allow_none=True)
        _int(self.seed, "seed", 0, hi=MAX_SEED)
        _int(self.hidden, "hidden", 1)
        _int(self.threads, "threads", 1, allow_none=True)
        _int(self.restarts, "restarts", 0, allow_none=True)
        _num(self.lr, "lr", lo=0.0, lo_open=True, allow_none=True)
        _num(self.weight_decay, "weight_decay", lo=0.0, allow_none=True)
        _num(self.valid_pct, "valid_pct", lo=0.0, hi=0.9)
        _num(self.momentum, "momentum", lo=0.0, hi=1.0, hi_open=True, allow_none=True)
        _num(self.init_scale, "init_scale", lo=0.0, lo_open=True, allow_none=True)
        _num(self.max_seconds, "max_seconds", lo=0.0, lo_open=True, allow_none=True)
        _int(self.burn_in, "burn_in", 0, allow_none=True)
        _num(self.prior, "prior", lo=0.0, lo_open=True, allow_none=True)
        _num(self.noise_df, "noise_df", lo=0.0, allow_none=True)
        if self.burn_in is not None and self.epochs is not None and self.burn_in >= self.epochs:
            raise ConfigError(
                f"burn_in must be smaller than epochs (the sweeps): {self.burn_in} burn-in sweeps leave "
                f"none of {self.epochs} to average",
                field="burn_in",
            )
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {quote(self.schedule)}; valid schedules: {', '.join(SCHEDULES)}", field="schedule"
            )
        if self.init not in INIT_SCHEMES:
            raise ConfigError(f"unknown init {quote(self.init)}; valid inits: {', '.join(INIT_SCHEMES)}", field="init")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(
                f"device must be a name such as auto, cpu, cuda, cuda:0 or mps; got {quote(self.device)}",
                field="device",
            )
        if not isinstance(self.global_mean, bool):
            raise ConfigError(f"global_mean must be true or false; got {quote(self.global_mean)}", field="global_mean")
        if self.y_range is not None:
            _pair(self.y_range, "y_range")
            if not self.y_range[0] < self.y_range[1]:
                raise ConfigError(
                    f"y_range must be (low, high) with low < high; got {quote(self.y_range)}", field="y_range"
                )
        _pair(self.dropout, "dropout")
        for p in self.dropout:
            _num(p, "dropout", lo=0.0, hi=1.0, hi_open=True)
        if self.betas is not None:
            _pair(self.betas, "betas")
            for b in self.betas:
                _num(b, "betas", lo=0.0, hi=1.0, hi_open=True)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (JSON, sheet settings). Unknown keys are an error that lists the valid keys."""
        if not isinstance(d, dict):
            raise ConfigError(f"settings must be a mapping of name -> value; got {type(d).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"valid settings: {', '.join(valid)}"
            )
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ConfigError(f"unknown setting {', '.join(map(repr, unknown))}; valid settings: {', '.join(valid)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a callable optimizer is reported by its name)."""
        out = dataclasses.asdict(self)
        if callable(self.optimizer):
            out["optimizer"] = getattr(self.optimizer, "__name__", "custom")
        for key in ("y_range", "dropout", "betas"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @property
    def optimizer_name(self) -> str:
        return getattr(self.optimizer, "__name__", "custom") if callable(self.optimizer) else self.optimizer

    def is_full_batch(self, n_train: int) -> bool:
        if catalog.optimizer_info(self.optimizer).full_batch_only:
            return True
        if self.batch_size is None:
            return n_train <= FULL_BATCH_MAX
        return self.batch_size >= n_train

    def resolve(self, n_train: int) -> TrainConfig:
        """Fill every ``None`` hyper-parameter with the optimizer's default for this regime."""
        spec = catalog.optimizer_info(self.optimizer)
        if spec.full_batch_only and self.batch_size is not None and self.batch_size < n_train:
            mini = ", ".join(n for n in catalog.optimizer_names() if not catalog.optimizer_info(n).full_batch_only)
            raise ConfigError(
                f"optimizer {spec.name!r} works on the full batch; leave batch_size empty or use one of: {mini}",
                field="batch_size",
            )
        full = self.is_full_batch(n_train)
        # Sheet-sized data gets the full-batch defaults, real data the mini-batch ones (for lbfgs and als,
        # which always take the full batch, "mini_batch" simply means "defaults for large data").
        small = n_train <= FULL_BATCH_MAX if self.batch_size is None else full
        defaults = spec.full_batch if small else spec.mini_batch
        if not small and self.model == "nn":
            defaults = {**defaults, **spec.nn_mini_batch}
        changes: dict[str, Any] = {}
        for key in ("epochs", "lr", "weight_decay", "schedule", "momentum", "betas", "prior", "noise_df"):
            if getattr(self, key) is None and key in defaults:
                changes[key] = defaults[key]
        if self.factors is None:
            changes["factors"] = defaults.get("factors", DEFAULT_FACTORS)
        if self.burn_in is None and "burn_in" in defaults:  # never more than half the sweeps
            epochs = changes.get("epochs", self.epochs)
            assert epochs is not None  # every optimizer with a burn_in default also has an epochs default
            changes["burn_in"] = min(defaults["burn_in"], epochs // 2)
        if self.restarts is None:
            # Multistart pays on small non-convex problems (the sheet has local minima); on real data one
            # run is the norm (and restarts would multiply the fit time).
            changes["restarts"] = defaults.get("restarts", 0) if self.model != "nn" else 0
        if self.batch_size is None or full:
            changes["batch_size"] = max(int(n_train), 1) if full else defaults.get("batch_size", 4096)
        if self.init == "auto":
            raw_sheet = self.y_range is None and not self.global_mean
            changes["init"] = "uniform" if raw_sheet else "normal"
        scheme = changes.get("init", self.init)
        if self.init_scale is None:
            changes["init_scale"] = 1.0 if scheme == "uniform" else defaults.get("init_scale", 0.01)
        if spec.name == "lbfgs" and self.model == "nn":
            changes["dropout"] = (0.0, 0.0)  # the line search needs a deterministic objective
        if spec.name in ("lbfgs", "als", "gibbs") and (changes.get("schedule", self.schedule) == "onecycle"):
            changes["schedule"] = "constant"  # no lr schedule for line-search / closed-form solvers
        return self.replace(**changes)


# -- validation helpers (one-line messages that say what was expected) ----------------------------
def _int(value, name: str, lo: int, allow_none: bool = False, hi: int | None = None) -> None:
    if value is None and allow_none:
        return
    expected = f"a whole number >= {lo}" if hi is None else f"a whole number from {lo} to {hi}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be {expected}; got {quote(repr(value))[1:-1]}", field=name)
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be {expected}; got {quote(value)[1:-1]}", field=name)


def _num(value, name: str, *, lo=None, hi=None, lo_open=False, hi_open=False, allow_none=False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {quote(value)}", field=name)
    lo_txt = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
    hi_txt = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi)
    )
    if bad:
        raise ConfigError(f"{name} must be {' and '.join(t for t in (lo_txt, hi_txt) if t)}; got {value}", field=name)


def _pair(value, name: str) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise ConfigError(f"{name} must be a pair of numbers (a, b); got {quote(value)}", field=name)
