"""Results of training: per-epoch stats, the fitted parameters (numpy, in vocabulary order = original ids
sorted) and prediction / recommendation on raw ids. No torch needed to use a result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlcf.data.encoding import Vocabulary
from xlcf.errors import ConfigError, DataError
from xlcf.train.config import TrainConfig


def stop_reason(callback, stats, previous_loss, loss, rtol=None):
    """Why a training loop should stop after this epoch, or None: the callback returned False ("callback"),
    or, when ``rtol`` is given, the loss stopped changing ("converged")."""
    if callback is not None and callback(stats) is False:
        return "callback"
    if (
        rtol is not None
        and previous_loss is not None
        and abs(previous_loss - loss) <= rtol * max(abs(previous_loss), 1e-12)
    ):
        return "converged"
    return None


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean loss over the epoch's batches (MSE + L2 penalty)
    train_rmse: float
    valid_rmse: float | None
    seconds: float  # wall time of this epoch (training + evaluation)
    lr: float | None = None  # learning rate at the end of the epoch (None for als)
    run: int = 0  # multistart run (0 = from the given or seeded start; 1.. = restarts)


def record_solver_epoch(
    history: list,
    bar,
    callback,
    *,
    epoch: int,
    sse: float,
    train_rmse: float,
    valid_rmse: float | None,
    started: float,
    previous_sse: float | None,
    run: int,
) -> str | None:
    """One epoch of a full-batch solver (ALS, L-BFGS on all ratings: the loss is the mean squared error): record it,
    redraw the bar, and say why to stop (the callback, or the sum of squares no longer changing), or None."""
    stats = EpochStats(epoch, train_rmse**2, train_rmse, valid_rmse, time.perf_counter() - started, None, run)
    history.append(stats)
    bar.update(train_rmse, valid_rmse)
    return stop_reason(callback, stats, previous_sse, sse, 1e-10)


@dataclass
class InitialParams:
    """Warm start (e.g. the sheet's current factors). Shapes: (n_users, k), (n_movies, k), (n_users,), (n_movies,)."""

    user_factors: np.ndarray
    movie_factors: np.ndarray
    user_bias: np.ndarray | None = None
    movie_bias: np.ndarray | None = None

    def checked(self, n_users: int, n_movies: int, model: str) -> InitialParams:
        uf = np.asarray(self.user_factors, dtype=np.float64)
        mf = np.asarray(self.movie_factors, dtype=np.float64)
        if uf.ndim != 2 or mf.ndim != 2 or uf.shape[1] != mf.shape[1]:
            raise ConfigError(
                f"initial factors must be (users x k) and (movies x k) with the same k; got {uf.shape} and {mf.shape}"
            )
        if uf.shape[0] != n_users or mf.shape[0] != n_movies:
            raise ConfigError(
                f"initial factors are {uf.shape[0]} users x {mf.shape[0]} movies but the ratings "
                f"have {n_users} users x {n_movies} movies"
            )
        ub = None if self.user_bias is None else np.asarray(self.user_bias, dtype=np.float64).reshape(-1)
        mb = None if self.movie_bias is None else np.asarray(self.movie_bias, dtype=np.float64).reshape(-1)
        if ub is not None and ub.shape != (n_users,):
            raise ConfigError(f"initial user_bias must have {n_users} values; got {ub.shape[0]}")
        if mb is not None and mb.shape != (n_movies,):
            raise ConfigError(f"initial movie_bias must have {n_movies} values; got {mb.shape[0]}")
        for name, arr in (("user_factors", uf), ("movie_factors", mf), ("user_bias", ub), ("movie_bias", mb)):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ConfigError(f"initial {name} contains NaN or infinite values")
        return InitialParams(uf, mf, ub, mb)


STD_CHUNK = 4096  # pairs per chunk in predict_std: bounds the (samples x pairs x d) gather


@dataclass
class PosteriorSamples:
    """Thinned draws of a Bayesian fit (optimizer gibbs), for the posterior predictive standard deviation.

    ``user_rows`` (S, n_users, d) and ``movie_rows`` (S, n_movies, d) hold [factors, bias] (d = k + 1) or the
    factors alone (dot model) of S sweeps spread over the kept ones; the noise variance of a pair is
    ``user_noise[u] * movie_noise[m]`` (posterior means of 1 / (alpha s_u) and 1 / s_m)."""

    user_rows: np.ndarray
    movie_rows: np.ndarray
    user_noise: np.ndarray
    movie_noise: np.ndarray
    has_bias: bool
    offset: float
    sweeps: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.user_rows.shape[0])

    def std_indices(self, u: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Posterior predictive std for index pairs (-1 = unknown id: no factors, no bias, average noise):
        the spread of the samples' predictions and the noise, added in variance."""
        out = np.empty(u.shape[0], dtype=np.float64)
        k = self.user_rows.shape[2] - int(self.has_bias)
        user_noise = np.concatenate([self.user_noise, [float(np.mean(self.user_noise))]])
        movie_noise = np.concatenate([self.movie_noise, [float(np.mean(self.movie_noise))]])
        for s in range(0, u.shape[0], STD_CHUNK):
            uc, mc = u[s : s + STD_CHUNK], m[s : s + STD_CHUNK]
            ku, km = uc >= 0, mc >= 0
            uu = self.user_rows[:, np.where(ku, uc, 0)].astype(np.float64)  # (S, chunk, d)
            mm = self.movie_rows[:, np.where(km, mc, 0)].astype(np.float64)
            pred = np.einsum("spk,spk->sp", uu[:, :, :k], mm[:, :, :k]) * (ku & km)
            if self.has_bias:
                pred = pred + uu[:, :, k] * ku + mm[:, :, k] * km
            noise = user_noise[np.where(ku, uc, -1)] * movie_noise[np.where(km, mc, -1)]
            out[s : s + STD_CHUNK] = np.sqrt(pred.var(axis=0) + noise)
        return out


@dataclass
class FitResult:
    config: TrainConfig  # the resolved config
    users: Vocabulary  # raw user ids in index order
    movies: Vocabulary
    user_factors: np.ndarray  # (n_users, k) float64
    movie_factors: np.ndarray  # (n_movies, k)
    user_bias: np.ndarray | None
    movie_bias: np.ndarray | None
    global_mean: float  # mean training rating
    history: list[EpochStats]
    device: str
    fit_seconds: float
    train_rmse: float
    valid_rmse: float | None
    stopped_reason: str | None = None  # None (all epochs), "callback", "converged", "diverged", "time"
    offset: float = 0.0  # pre-activation constant the model adds (global mean, in sigmoid space if y_range)
    layers: dict[str, np.ndarray] | None = None  # nn model: hidden/out weights and biases
    n_train: int = 0
    n_valid: int = 0
    rated_user_index: np.ndarray | None = field(default=None, repr=False)  # (user, movie) index pairs seen
    rated_movie_index: np.ndarray | None = field(default=None, repr=False)
    # Multistart: one entry per run (run, start "given"/"random", epochs, train_rmse, stopped, seconds); the
    # parameters and history above are those of run ``best_run``.
    runs: list[dict] = field(default_factory=list)
    best_run: int = 0
    # Bayesian fits (gibbs): the parameters above are posterior means (train/valid_rmse are theirs, what a sheet's
    # formulas give); *_rmse_avg are those of the predictions averaged over the kept sweeps (the posterior
    # predictive mean); ``posterior`` holds thinned draws for predict_std.
    train_rmse_avg: float | None = None
    valid_rmse_avg: float | None = None
    valid_coverage: float | None = None  # fraction of validation ratings within +-1 predictive std
    posterior: PosteriorSamples | None = field(default=None, repr=False)
    # Distributed fits (xlcf.train.distributed): how many ranks trained, and per rank what it held
    # (rank, n_train, n_valid, and for ALS n_train_by_movie, the copy grouped by the movies it owns).
    ranks: int = 1
    shards: list[dict] = field(default_factory=list)

    # -- convenience ------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.config.model

    @property
    def optimizer(self) -> str:
        return self.config.optimizer_name

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.config.to_dict()

    # -- prediction -------------------------------------------------------------------------------
    def _scores(self, u: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Pre-activation score for indices (-1 = unknown id: its factors and bias count as zero)."""
        ku, km = u >= 0, m >= 0
        uc, mc = np.where(ku, u, 0), np.where(km, m, 0)
        both = ku & km
        if self.layers is not None:  # nn: numpy forward pass (eval mode: no dropout)
            x = np.concatenate([self.user_factors[uc], self.movie_factors[mc]], axis=1)
            h = np.maximum(x @ self.layers["hidden_weight"].T + self.layers["hidden_bias"], 0.0)
            raw = (h @ self.layers["out_weight"].T).reshape(-1) + self.layers["out_bias"][0]
            raw = np.where(both, raw, 0.0)
            if self.user_bias is not None and self.movie_bias is not None:  # the net's biases (known side only)
                raw = raw + self.user_bias[uc] * ku + self.movie_bias[mc] * km
            return raw
        raw = np.einsum("ij,ij->i", self.user_factors[uc], self.movie_factors[mc]) * both
        if self.user_bias is not None and self.movie_bias is not None:
            raw = raw + self.user_bias[uc] * ku + self.movie_bias[mc] * km
        return raw

    def _squash(self, raw: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
        y_range = self.config.y_range
        raw = raw + self.offset
        if fallback is not None and not self.config.global_mean:
            # The model has no mean term: an unknown id starts from the training mean instead of 0.
            raw = np.where(fallback, raw + _pre_activation(self.global_mean, y_range), raw)
        if y_range is None:
            return raw
        lo, hi = y_range
        return lo + (hi - lo) / (1.0 + np.exp(-raw))

    def predict_indices(self, user_index, movie_index) -> np.ndarray:
        u = np.asarray(user_index, dtype=np.int64).reshape(-1)
        m = np.asarray(movie_index, dtype=np.int64).reshape(-1)
        if u.shape != m.shape:
            raise DataError(f"user and movie index arrays differ in length: {u.shape[0]} vs {m.shape[0]}")
        return self._squash(self._scores(u, m), fallback=(u < 0) | (m < 0))

    def predict_std_indices(self, user_index, movie_index) -> np.ndarray:
        """Posterior predictive std per index pair; NaN-free, but needs a Bayesian fit (optimizer gibbs)."""
        if self.posterior is None:
            raise ConfigError(
                f"a predictive std needs a Bayesian fit (optimizer gibbs); this one used {self.optimizer}",
                field="optimizer",
            )
        u = np.asarray(user_index, dtype=np.int64).reshape(-1)
        m = np.asarray(movie_index, dtype=np.int64).reshape(-1)
        if u.shape != m.shape:
            raise DataError(f"user and movie index arrays differ in length: {u.shape[0]} vs {m.shape[0]}")
        return self.posterior.std_indices(u, m)

    def predict(self, user_ids, movie_ids, return_std: bool = False):
        """Predicted ratings for raw ids (scalars or sequences). Unknown ids never raise: an unknown user or
        movie contributes no factors and no bias, so the answer is the global mean + the known side's bias.
        ``return_std=True`` (Bayesian fits) returns ``(prediction, posterior predictive std)``."""
        scalar = np.ndim(user_ids) == 0 and np.ndim(movie_ids) == 0
        users = np.atleast_1d(np.asarray(user_ids))
        movies = np.atleast_1d(np.asarray(movie_ids))
        if users.shape != movies.shape:
            users, movies = np.broadcast_arrays(users, movies)
        ui, mi = self.users.index(users.reshape(-1)), self.movies.index(movies.reshape(-1))
        out = self.predict_indices(ui, mi).reshape(users.shape)
        if not return_std:
            return out[0] if scalar else out
        std = self.predict_std_indices(ui, mi).reshape(users.shape)
        return (out[0], std[0]) if scalar else (out, std)

    def predict_std(self, user_ids, movie_ids):
        """Posterior predictive std for raw ids (Bayesian fits only): how far a rating may fall from the
        prediction (about 68% of ratings within one std)."""
        return self.predict(user_ids, movie_ids, return_std=True)[1]

    def predict_matrix(self) -> np.ndarray:
        """(n_users, n_movies) predictions in vocabulary order (for sheets; mind the size on big data)."""
        n_u, n_m = len(self.users), len(self.movies)
        if self.layers is not None:
            u = np.repeat(np.arange(n_u), n_m)
            m = np.tile(np.arange(n_m), n_u)
            return self.predict_indices(u, m).reshape(n_u, n_m)
        raw = self.user_factors @ self.movie_factors.T
        if self.user_bias is not None and self.movie_bias is not None:
            raw = raw + self.user_bias[:, None] + self.movie_bias[None, :]
        return self._squash(raw)

    def rated_movies(self, user_id) -> np.ndarray:
        """Movie indices the user rated (training + validation data)."""
        idx = int(self.users.index(np.asarray([user_id]))[0])
        if idx < 0 or self.rated_user_index is None or self.rated_movie_index is None:
            return np.empty(0, dtype=np.int64)
        rated = self.rated_movie_index[self.rated_user_index == idx]
        return np.unique(rated[rated >= 0]).astype(np.int64)

    def recommend(self, user_id, n: int = 10, exclude_rated: bool = True):
        """Top-``n`` movies by prediction for a known user (a pandas DataFrame: movieId, prediction); rated ones
        left out unless ``exclude_rated=False``."""
        import pandas as pd  # only this method needs it

        idx = int(self.users.index(np.asarray([user_id]))[0])
        if idx < 0:
            raise DataError(f"user id {user_id!r} is not in the training data ({len(self.users)} users)")
        n_m = len(self.movies)
        scores = self.predict_indices(np.full(n_m, idx), np.arange(n_m))
        keep = np.ones(n_m, dtype=bool)
        if exclude_rated:
            keep[self.rated_movies(user_id)] = False
        candidates = np.flatnonzero(keep)
        # Stable sort: ties go to the smaller movie id, so the list is reproducible.
        order = candidates[np.argsort(-scores[candidates], kind="stable")][: max(int(n), 0)]
        frame = pd.DataFrame({"movieId": np.asarray(self.movies.ids)[order], "prediction": scores[order]})
        if self.posterior is not None:  # Bayesian fit: the predictive std beside each prediction
            frame["std"] = self.posterior.std_indices(np.full(order.shape[0], idx), order)
        return frame

    def summary(self) -> dict[str, Any]:
        """JSON-ready one-object summary (what `xlcf train --json` prints, minus data counts)."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "device": self.device,
            "epochs": self.epochs,
            "n_users": len(self.users),
            "n_movies": len(self.movies),
            "n_train": self.n_train,
            "n_valid": self.n_valid,
            "train_rmse": self.train_rmse,
            "valid_rmse": self.valid_rmse,
            "fit_seconds": self.fit_seconds,
            "stopped_reason": self.stopped_reason,
            "runs": len(self.runs) or 1,
            "best_run": self.best_run,
            "ranks": self.ranks,
            "config": self.config.to_dict(),
            **(
                {
                    "train_rmse_avg": self.train_rmse_avg,
                    "valid_rmse_avg": self.valid_rmse_avg,
                    "valid_coverage": self.valid_coverage,
                    "samples": self.posterior.count,
                }
                if self.posterior is not None
                else {}
            ),
        }


def _pre_activation(mean: float, y_range) -> float:
    """The raw score whose squashed value is ``mean`` (numpy twin of xlcf.models.offset_for)."""
    if y_range is None:
        return float(mean)
    lo, hi = y_range
    p = min(max((mean - lo) / (hi - lo), 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))
