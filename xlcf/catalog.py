"""The names every layer offers — models, optimizers, devices — and their defaults, without importing torch.

Two regimes, two sets of defaults per optimizer:

- **full batch** (``full_batch``): sheet-sized problems such as the lesson's 15x15 (every rating in every step,
  like Solver); the settings cells of a generated ``collab`` sheet start from :data:`SHEET_DEFAULTS`;
- **mini-batch** (``mini_batch``, with ``nn_mini_batch`` on top for the nn model): real data such as
  ml-latest-small; the ``movielens`` book starts from :data:`FULL_RATINGS_DEFAULTS`.

The engine's registry (:mod:`xlcf.train.optimizers`) attaches a torch builder to each name listed here; the
generators, the settings readers, the CLI and the worksheet functions read names and defaults from here, so a
new optimizer is one :class:`OptimizerInfo` line below (plus its builder in the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MODELS: tuple[str, ...] = ("dot", "bias", "nn")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")  # plus cuda:N for the N-th GPU
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps"


@dataclass(frozen=True)
class OptimizerInfo:
    """An optimizer's name, what it is, and its defaults in each regime (torch-free)."""

    name: str
    description: str
    full_batch: dict[str, Any]  # defaults when every rating is in every step
    mini_batch: dict[str, Any]  # defaults for shuffled mini-batches
    decay: str = "loss"  # "loss": per-rating L2 in the loss; "optimizer": the optimizer's own (decoupled) decay
    full_batch_only: bool = False
    uses: tuple[str, ...] = ("lr",)
    nn_mini_batch: dict[str, Any] = field(default_factory=dict)  # overrides of mini_batch for the nn model
    models: tuple[str, ...] = MODELS  # the models it can train


_B = (0.9, 0.999)
# Measured on the 15x15 sheet (full batch) and ml-latest-small (mini-batch); see the engine's documentation.
OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo(
            "sgd",
            "plain (stochastic) gradient descent; on dot/bias the step touches only the batch's rows",
            full_batch=dict(restarts=3, lr=1.5, epochs=3000, weight_decay=0.0, schedule="constant"),
            mini_batch=dict(
                lr=80.0, epochs=14, weight_decay=0.045, batch_size=4096, schedule="onecycle", init_scale=0.02
            ),
            nn_mini_batch=dict(lr=20.0, batch_size=4096, weight_decay=0.045, epochs=12, init_scale=0.02),
        ),
        OptimizerInfo(
            "momentum",
            "SGD with heavy-ball momentum",
            full_batch=dict(restarts=3, lr=0.15, epochs=2000, weight_decay=0.0, momentum=0.9, schedule="constant"),
            mini_batch=dict(lr=8.0, epochs=15, weight_decay=0.05, momentum=0.9, batch_size=4096, schedule="onecycle"),
            nn_mini_batch=dict(lr=2.0, batch_size=4096, weight_decay=0.045, epochs=12, init_scale=0.02),
            uses=("lr", "momentum"),
        ),
        OptimizerInfo(
            "rmsprop",
            "RMSprop (per-weight step size from a running mean of squared gradients)",
            full_batch=dict(restarts=3, lr=0.03, epochs=2000, weight_decay=0.0, schedule="onecycle"),
            mini_batch=dict(lr=0.012, epochs=5, weight_decay=0.1, batch_size=4096, schedule="onecycle"),
            nn_mini_batch=dict(lr=0.01, batch_size=2048, weight_decay=0.02, epochs=8),
            uses=("lr", "momentum"),
        ),
        OptimizerInfo(
            "adam",
            "Adam (momentum + RMSprop)",
            full_batch=dict(restarts=3, lr=0.05, epochs=1000, weight_decay=0.0, betas=_B, schedule="constant"),
            mini_batch=dict(lr=0.05, epochs=8, weight_decay=0.15, betas=_B, batch_size=8192, schedule="onecycle"),
            nn_mini_batch=dict(lr=0.01, batch_size=4096, weight_decay=0.02, epochs=5),
            uses=("lr", "betas"),
        ),
        OptimizerInfo(
            "adamw",
            "Adam with decoupled weight decay (torch AdamW: every weight, every step)",
            full_batch=dict(restarts=3, lr=0.05, epochs=1000, weight_decay=0.0, betas=_B, schedule="constant"),
            mini_batch=dict(lr=0.02, epochs=8, weight_decay=1.0, betas=_B, batch_size=8192, schedule="onecycle"),
            nn_mini_batch=dict(lr=0.01, batch_size=4096, weight_decay=0.1, epochs=5),
            decay="optimizer",
            uses=("lr", "betas"),
        ),
        OptimizerInfo(
            "lbfgs",
            "L-BFGS with strong-Wolfe line search, full batch (the Solver-like choice for sheets)",
            full_batch=dict(restarts=3, lr=1.0, epochs=8, weight_decay=0.0, schedule="constant"),
            mini_batch=dict(lr=1.0, epochs=5, weight_decay=0.1, schedule="constant"),
            full_batch_only=True,
        ),
        OptimizerInfo(
            "als",
            "alternating least squares with biases (closed-form ridge solves; dot and bias models)",
            # 100 epochs: on the lesson's bias sheet 50 stop short of the floor from some starts (0.3191+).
            full_batch=dict(restarts=3, epochs=100, weight_decay=1e-6, schedule="constant"),
            mini_batch=dict(epochs=10, weight_decay=0.1, schedule="constant"),
            full_batch_only=True,
            uses=(),
            models=("dot", "bias"),
        ),
        OptimizerInfo(
            "gibbs",
            "Bayesian matrix factorisation by block Gibbs sampling (posterior means and predictive std; "
            "dot and bias models)",
            full_batch=dict(
                restarts=0,
                epochs=200,
                burn_in=50,
                weight_decay=0.0,
                schedule="constant",
                prior=1.0,
                noise_df=16.0,
                factors=32,
            ),
            mini_batch=dict(
                epochs=150, burn_in=40, weight_decay=0.0, schedule="constant", prior=1.0, noise_df=16.0, factors=32
            ),
            full_batch_only=True,
            uses=("burn_in", "prior", "noise_df"),
            models=("dot", "bias"),
        ),
    )
}

# Defaults for a user-supplied factory (a callable in TrainConfig.optimizer) and for registered names.
CALLABLE_DEFAULTS: dict[str, dict[str, Any]] = dict(
    full_batch=dict(lr=0.01, epochs=1000, weight_decay=0.0, schedule="constant"),
    mini_batch=dict(lr=0.01, epochs=10, weight_decay=0.03, batch_size=4096, schedule="constant"),
)

# What a generated sheet's settings cells start from (the lesson's sheet regime: full batch): the optimizer that
# reaches the sheet's floor in the fewest milliseconds — ALS, in numpy, without torch (see docs/performance.md;
# `xlcf bench` measures it). ALS has no learning rate: the lr cell starts blank (= the chosen optimizer's default).
SHEET_DEFAULTS: dict[str, Any] = {
    "optimizer": "als",
    "lr": OPTIMIZERS["als"].full_batch.get("lr"),
    "epochs": OPTIMIZERS["als"].full_batch["epochs"],
    "seed": 0,
    "device": "auto",
}
# What a training on full ratings (``xlcf train``, ``TrainConfig()``) starts from. ``factors`` is the embedding
# size of optimizers whose defaults do not name one (gibbs's say 32); ``nn_optimizer`` replaces ``optimizer``
# for the nn model when the optimizer was not chosen (gibbs cannot fit nn).
FULL_RATINGS_DEFAULTS: dict[str, Any] = {
    "model": "bias",
    "optimizer": "gibbs",
    "nn_optimizer": "adam",
    "factors": 50,
    "valid_pct": 0.2,
    "seed": 0,
    "device": "auto",
    "hidden": 10,
    "dropout": (0.05, 0.5),
}
# What the movielens book's settings start from: the full-ratings defaults (the most accurate fit within half a
# minute on ml-latest-small on a 2-core CPU: gibbs, see docs/movielens.md), with the factors cell blank so that
# each optimizer picked in the drop-down trains with its own embedding size (32 for gibbs, 50 for the others).
MOVIELENS_BOOK_DEFAULTS: dict[str, Any] = {**FULL_RATINGS_DEFAULTS, "factors": None}


def default_factors(optimizer: str) -> int:
    """The embedding size a full-ratings training with ``optimizer`` uses when none is given."""
    info = OPTIMIZERS.get(optimizer)
    return int((info.mini_batch if info is not None else {}).get("factors", FULL_RATINGS_DEFAULTS["factors"]))


def optimizer_names() -> list[str]:
    """Every optimizer name, in registry order (names registered at run time included)."""
    return list(OPTIMIZERS)


def optimizer_info(optimizer: str | Callable) -> OptimizerInfo:
    """The info of a name, or of a callable factory (the defaults of :data:`CALLABLE_DEFAULTS`). KeyError for an
    unknown name."""
    if callable(optimizer):
        return OptimizerInfo(
            getattr(optimizer, "__name__", "custom"),
            "user-supplied factory",
            full_batch=dict(CALLABLE_DEFAULTS["full_batch"]),
            mini_batch=dict(CALLABLE_DEFAULTS["mini_batch"]),
        )
    return OPTIMIZERS[optimizer]


def register(info: OptimizerInfo) -> OptimizerInfo:
    """Add (or replace) a name; the engine calls this for optimizers registered at run time."""
    OPTIMIZERS[info.name] = info
    return info


def models_for(optimizer: str) -> tuple[str, ...]:
    return OPTIMIZERS[optimizer].models if optimizer in OPTIMIZERS else MODELS


def suggested_lr(optimizer: str, lr: float, *, full_batch: bool) -> float:
    """The lr to suggest after a divergence at ``lr``: the optimizer's own default for the regime when ``lr`` is
    above it (the default is known to work), else a tenth of ``lr``."""
    info = OPTIMIZERS.get(optimizer)
    default = (info.full_batch if full_batch else info.mini_batch).get("lr") if info is not None else None
    if isinstance(default, (int, float)) and lr > default:
        return float(default)
    return lr / 10
