"""Shared machinery of the rating models: the output range and the handling of unknown ids.

Every model maps (user index, movie index) -> predicted rating. The trainer only ever calls
``forward`` with known indices; evaluation on held-out ratings goes through ``forward_safe``, where an
index of -1 (an id the training data never saw) contributes nothing: no factors, no bias, so the
prediction falls back to the global mean (+ the bias of whichever side is known)."""

from __future__ import annotations

import math

import torch
from torch import nn


def offset_for(mean: float, y_range: tuple[float, float] | None) -> float:
    """The pre-activation constant that makes a zero-initialised model predict ``mean``."""
    if y_range is None:
        return float(mean)
    lo, hi = y_range
    p = (mean - lo) / (hi - lo)
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class RatingModel(nn.Module):
    """Base class: ``raw(u, m)`` is the model's pre-activation score; ``forward`` adds the global-mean
    offset and squashes into ``y_range`` with a sigmoid when one is set (the lesson's trick)."""

    name = "base"
    offset: torch.Tensor  # a registered buffer

    def __init__(self, n_users: int, n_movies: int, factors: int, *, y_range=None, offset: float = 0.0):
        super().__init__()
        self.n_users, self.n_movies, self.factors = int(n_users), int(n_movies), int(factors)
        self.y_range = None if y_range is None else (float(y_range[0]), float(y_range[1]))
        # A buffer (not a parameter): the global mean is data, not something to learn.
        self.register_buffer("offset", torch.tensor(float(offset)))

    # -- to be provided by subclasses -------------------------------------------------------------
    def raw(self, user_index: torch.Tensor, movie_index: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def raw_safe(self, user_index: torch.Tensor, movie_index: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def embedding_penalty(self, user_index: torch.Tensor, movie_index: torch.Tensor) -> torch.Tensor:
        """Per-rating squared norm of the embedding rows this rating uses (L2 only where data is)."""
        raise NotImplementedError  # pragma: no cover

    def init_random(self, generator: torch.Generator, *, scheme: str, scale: float) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        raw = raw + self.offset
        if self.y_range is None:
            return raw
        lo, hi = self.y_range
        return torch.sigmoid(raw) * (hi - lo) + lo

    def forward(self, user_index: torch.Tensor, movie_index: torch.Tensor) -> torch.Tensor:
        return self.squash(self.raw(user_index, movie_index))

    def forward_safe(self, user_index: torch.Tensor, movie_index: torch.Tensor) -> torch.Tensor:
        """Like ``forward`` but indices may be -1 (unknown id)."""
        return self.squash(self.raw_safe(user_index, movie_index))

    def loss_and_grads(self, user_index, movie_index, rating, l2: float, sgd_lr: float | None = None):
        """Loss (MSE + l2 * mean per-rating penalty) and MSE of one batch, with ``.grad`` filled.

        ``sgd_lr``: the models with an analytic gradient may apply a plain SGD step with it (autograd: unused).
        Default: autograd. The dot and bias models override it with the analytic gradient, which is
        several times faster on CPU than autograd's backward of an index (it scatters with
        ``scatter_add_`` straight into the gradient buffers)."""
        for p in self.parameters():
            if p.grad is not None:
                p.grad.zero_()
        err = self(user_index, movie_index) - rating
        mse = err.square().mean()
        loss = mse + l2 * self.embedding_penalty(user_index, movie_index).mean() if l2 else mse
        loss.backward()
        return loss.detach(), mse.detach()

    def _activation_grad(self, raw: torch.Tensor):
        """(prediction, d prediction / d raw) for pre-activation scores ``raw`` (offset not yet added)."""
        raw = raw + self.offset
        if self.y_range is None:
            return raw, None
        lo, hi = self.y_range
        s = torch.sigmoid(raw)
        return s * (hi - lo) + lo, s * (1 - s) * (hi - lo)

    def embeddings(self) -> list[torch.Tensor]:
        """The embedding tables (factors and biases), for the divergence guard and exports."""
        return [p for name, p in self.named_parameters() if not name.startswith("layers")]


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    """The parameter's gradient buffer, zeroed (allocated once, reused every step)."""
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    else:
        p.grad.zero_()
    return p.grad


def fill_(weight: torch.Tensor, generator: torch.Generator, scheme: str, scale: float) -> None:
    """Initialise in place from an explicit generator (never the global RNG)."""
    with torch.no_grad():
        if scheme == "uniform":
            weight.uniform_(0.0, scale, generator=generator)
        elif scheme == "normal":
            weight.normal_(0.0, scale, generator=generator)
        elif scheme == "zeros":
            weight.zero_()
        else:  # pragma: no cover - validated in TrainConfig
            raise ValueError(scheme)


def split_known(user_index: torch.Tensor, movie_index: torch.Tensor):
    """(clamped user idx, clamped movie idx, user known mask, movie known mask) for -1 = unknown."""
    known_user = user_index >= 0
    known_movie = movie_index >= 0
    return user_index.clamp(min=0), movie_index.clamp(min=0), known_user, known_movie
