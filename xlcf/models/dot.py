"""``dot``: the lesson's EmbeddingDot — a rating is the dot product of a user and a movie factor vector."""

from __future__ import annotations

import torch
from torch import nn

from xlcf.models.base import RatingModel, _grad_buffer, fill_, split_known


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
        return (self.user_factors.index_select(0, user_index) * self.movie_factors.index_select(0, movie_index)).sum(1)

    def raw_safe(self, user_index, movie_index):
        u, m, ku, km = split_known(user_index, movie_index)
        return self.raw(u, m) * (ku & km)

    def embedding_penalty(self, user_index, movie_index):
        return self.user_factors.index_select(0, user_index).square().sum(1) + self.movie_factors.index_select(
            0, movie_index
        ).square().sum(1)

    @torch.no_grad()
    def loss_and_grads(self, user_index, movie_index, rating, l2: float, sgd_lr: float | None = None):
        """Analytic gradient. With ``sgd_lr`` the plain-SGD step is applied in place to the rows the batch
        touches (the same arithmetic as torch.optim.SGD on the dense gradient, whose other rows are zero)
        instead of filling ``.grad``: no dense zeroing or update of whole tables per step.

        Rows are gathered with ``index_select`` and scattered back with ``scatter_add_`` on a broadcast
        index: on CPU both are several times faster than advanced indexing and a 2-D ``index_add_``, and
        they are deterministic on CPU."""
        loss, mse, gu, gm, gub, gmb = self.row_grads(user_index, movie_index, rating, l2)
        user_rows = user_index.long()[:, None].expand_as(gu)
        movie_rows = movie_index.long()[:, None].expand_as(gm)
        if sgd_lr is not None:
            self.user_factors.scatter_add_(0, user_rows, gu.mul_(-sgd_lr))
            self.movie_factors.scatter_add_(0, movie_rows, gm.mul_(-sgd_lr))
        else:
            _grad_buffer(self.user_factors).scatter_add_(0, user_rows, gu)
            _grad_buffer(self.movie_factors).scatter_add_(0, movie_rows, gm)
        self._add_bias_grads(gub, gmb, user_index, movie_index, sgd_lr)
        return loss, mse

    @torch.no_grad()
    def row_grads(self, user_index, movie_index, rating, l2: float):
        """The batch's loss (MSE + l2 * mean per-rating penalty), its MSE, and the gradient per rating and table
        row: (loss, mse, gu, gm, gub, gmb), ``gu[i]`` = d loss / d (user row of rating i), (b, k); ``gub[i]`` that
        of the user's bias, (b,) (None without biases). Summed per row they are the tables' gradients."""
        uf = self.user_factors.index_select(0, user_index)
        mf = self.movie_factors.index_select(0, movie_index)
        pred, dpred = self._activation_grad(self._raw_from(uf, mf, user_index, movie_index))
        err = pred - rating
        n = rating.shape[0]
        mse = err.square().mean()
        g = err * (2.0 / n) if dpred is None else err * dpred * (2.0 / n)  # d loss / d raw
        c = 2.0 * l2 / n  # d (l2 * mean penalty) / d row, per occurrence
        loss = mse + l2 * self._penalty_from(uf, mf, user_index, movie_index).mean() if l2 else mse
        gu = g[:, None] * mf
        gm = g[:, None] * uf
        if l2:
            gu.add_(uf, alpha=c)
            gm.add_(mf, alpha=c)
        gub, gmb = self._bias_row_grads(g, c, user_index, movie_index)
        return loss, mse, gu, gm, gub, gmb

    def _raw_from(self, uf, mf, user_index, movie_index):
        return (uf * mf).sum(1)

    def _penalty_from(self, uf, mf, user_index, movie_index):
        return uf.square().sum(1) + mf.square().sum(1)

    def _bias_row_grads(self, g, c, user_index, movie_index):
        return None, None

    def _add_bias_grads(self, gub, gmb, user_index, movie_index, sgd_lr=None):
        pass
