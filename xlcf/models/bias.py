"""``bias``: the lesson's EmbeddingDotBias — dot product plus a user bias, a movie bias and (optionally)
the global mean, squashed into ``y_range`` with a sigmoid when one is set."""

from __future__ import annotations

import torch
from torch import nn

from xlcf.models.base import _grad_buffer, fill_, split_known
from xlcf.models.dot import DotModel


class BiasModel(DotModel):
    name = "bias"

    def __init__(self, n_users: int, n_movies: int, factors: int, *, y_range=None, offset: float = 0.0):
        super().__init__(n_users, n_movies, factors, y_range=y_range, offset=offset)
        self.user_bias = nn.Parameter(torch.zeros(self.n_users))
        self.movie_bias = nn.Parameter(torch.zeros(self.n_movies))

    def init_random(self, generator, *, scheme, scale):
        super().init_random(generator, scheme=scheme, scale=scale)
        # Biases: the sheet (uniform scheme) draws them like Solver's RAND() start; otherwise start at 0.
        fill_(self.user_bias, generator, scheme if scheme == "uniform" else "zeros", scale)
        fill_(self.movie_bias, generator, scheme if scheme == "uniform" else "zeros", scale)

    def raw(self, user_index, movie_index):
        dot = (self.user_factors.index_select(0, user_index) * self.movie_factors.index_select(0, movie_index)).sum(1)
        return dot + self.user_bias.index_select(0, user_index) + self.movie_bias.index_select(0, movie_index)

    def raw_safe(self, user_index, movie_index):
        u, m, ku, km = split_known(user_index, movie_index)
        dot = (self.user_factors.index_select(0, u) * self.movie_factors.index_select(0, m)).sum(1) * (ku & km)
        return dot + self.user_bias.index_select(0, u) * ku + self.movie_bias.index_select(0, m) * km

    def embedding_penalty(self, user_index, movie_index):
        return (
            super().embedding_penalty(user_index, movie_index)
            + self.user_bias.index_select(0, user_index).square()
            + self.movie_bias.index_select(0, movie_index).square()
        )

    def _raw_from(self, uf, mf, user_index, movie_index):
        return (
            (uf * mf).sum(1) + self.user_bias.index_select(0, user_index) + self.movie_bias.index_select(0, movie_index)
        )

    def _penalty_from(self, uf, mf, user_index, movie_index):
        return (
            uf.square().sum(1)
            + mf.square().sum(1)
            + self.user_bias.index_select(0, user_index).square()
            + self.movie_bias.index_select(0, movie_index).square()
        )

    def _bias_row_grads(self, g, c, user_index, movie_index):
        if not c:
            return g, g
        return (
            g + c * self.user_bias.index_select(0, user_index),
            g + c * self.movie_bias.index_select(0, movie_index),
        )

    def _add_bias_grads(self, gub, gmb, user_index, movie_index, sgd_lr=None):
        if sgd_lr is not None:
            self.user_bias.index_add_(0, user_index, gub, alpha=-sgd_lr)
            self.movie_bias.index_add_(0, movie_index, gmb, alpha=-sgd_lr)
            return
        _grad_buffer(self.user_bias).index_add_(0, user_index, gub)
        _grad_buffer(self.movie_bias).index_add_(0, movie_index, gmb)
