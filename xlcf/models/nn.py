"""``nn``: the lesson's EmbeddingNet — concatenated user and movie embeddings -> Dropout -> Linear -> ReLU
-> Dropout -> Linear -> sigmoid range. Dropout draws from the model's explicit generator (set by the
trainer) so a seed reproduces a run bit for bit."""

from __future__ import annotations

import math

import torch
from torch import nn

from xlcf.models.base import RatingModel, fill_, split_known


def _dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not training or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)


class EmbeddingNet(RatingModel):
    name = "nn"

    def __init__(self, n_users: int, n_movies: int, factors: int, *, y_range=None, offset: float = 0.0,
                 hidden: int = 10, dropout: tuple[float, float] = (0.05, 0.5)):
        super().__init__(n_users, n_movies, factors, y_range=y_range, offset=offset)
        self.user_factors = nn.Parameter(torch.zeros(self.n_users, self.factors))
        self.movie_factors = nn.Parameter(torch.zeros(self.n_movies, self.factors))
        self.layers = nn.ModuleDict({"hidden": nn.Linear(2 * self.factors, hidden), "out": nn.Linear(hidden, 1)})
        self.dropout = (float(dropout[0]), float(dropout[1]))
        self.generator: torch.Generator | None = None  # set by the trainer (same device as the data)

    def init_random(self, generator, *, scheme, scale):
        fill_(self.user_factors, generator, scheme, scale)
        fill_(self.movie_factors, generator, scheme, scale)
        with torch.no_grad():  # torch's default Linear init, but from our generator
            for layer in self.layers.values():
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def raw(self, user_index, movie_index):
        x = torch.cat([self.user_factors[user_index], self.movie_factors[movie_index]], dim=1)
        x = _dropout(x, self.dropout[0], self.training, self.generator)
        x = torch.relu(self.layers["hidden"](x))
        x = _dropout(x, self.dropout[1], self.training, self.generator)
        return self.layers["out"](x).squeeze(1)

    def raw_safe(self, user_index, movie_index):
        u, m, ku, km = split_known(user_index, movie_index)
        # No bias terms to fall back on: an unknown user or movie gets the global mean (raw 0).
        return self.raw(u, m) * (ku & km)

    def embedding_penalty(self, user_index, movie_index):
        return self.user_factors[user_index].square().sum(1) + self.movie_factors[movie_index].square().sum(1)
