"""``dot``: the lesson's EmbeddingDot — a rating is the dot product of a user and a movie factor vector."""

from __future__ import annotations

import torch
from torch import nn

from xlcf.models.base import RatingModel, fill_, split_known


class DotModel(RatingModel):
    name = "dot"

    def __init__(self, n_users: int, n_movies: int, factors: int, *, y_range=None, offset: float = 0.0):
        super().__init__(n_users, n_movies, factors, y_range=y_range, offset=offset)
        self.user_factors = nn.Parameter(torch.zeros(self.n_users, self.factors))
        self.movie_factors = nn.Parameter(torch.zeros(self.n_movies, self.factors))

    def init_random(self, generator, *, scheme, scale):
        fill_(self.user_factors, generator, scheme, scale)
        fill_(self.movie_factors, generator, scheme, scale)

    def raw(self, user_index, movie_index):
        return (self.user_factors[user_index] * self.movie_factors[movie_index]).sum(1)

    def raw_safe(self, user_index, movie_index):
        u, m, ku, km = split_known(user_index, movie_index)
        return self.raw(u, m) * (ku & km)

    def embedding_penalty(self, user_index, movie_index):
        return self.user_factors[user_index].square().sum(1) + self.movie_factors[movie_index].square().sum(1)
