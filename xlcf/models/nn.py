"""``nn``: the lesson's EmbeddingNet — concatenated user and movie embeddings -> Dropout -> Linear -> ReLU
-> Dropout -> Linear, plus a user bias, a movie bias (and the global mean offset) -> sigmoid range.

Two changes from the lesson's net, both needed to get past the bias-only level (~0.866 on ml-latest-small
2018, where the lesson's net stopped):

- **Bias terms.** ``raw = net(concat(u, m)) + b_u + b_m`` (the engine adds the global mean as ``offset``),
  the standard improvement (fastai's later collab tabular model, NCF-style): the net only has to learn the
  interaction, and an unknown user or movie still gets the known side's bias + the global mean.
- **An SGD-friendly parametrisation.** The embedding rows are touched by a few ratings of each batch, the
  dense layers by all of them, so one learning rate does not suit both; and adaptive optimizers (Adam,
  RMSprop) give rare rows full-size steps and overfit them. So the model is trained with plain SGD, and
  two constant scales set the relative step sizes (a reparametrisation; the function is the lesson's):
  the net reads ``FACTOR_SCALE x`` the stored factors (their per-rating L2 is on the stored values, i.e.
  ``wd / FACTOR_SCALE**2`` on what the net sees, and their SGD steps are ``FACTOR_SCALE**2`` larger), and the
  dense layers' weights are ``LAYER_SCALE x`` the stored ones (SGD steps ``LAYER_SCALE**2`` smaller).
  ``dense()`` gives the effective layer weights (factor scale folded into the hidden layer), which is what a
  ``FitResult`` stores, so its numpy forward pass reads the stored factors unchanged.

Dropout draws from the model's explicit generator (set by the trainer) so a seed reproduces a run bit for
bit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xlcf.models.base import RatingModel, fill_, split_known

# See the module docstring. Tuned with BEST["nn"] (sgd, lr 20) on ml-latest-small; flat optimum around these.
FACTOR_SCALE = 5.0
LAYER_SCALE = 0.05


def _dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not training or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)


class EmbeddingNet(RatingModel):
    name = "nn"

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        factors: int,
        *,
        y_range=None,
        offset: float = 0.0,
        hidden: int = 10,
        dropout: tuple[float, float] = (0.05, 0.5),
    ):
        super().__init__(n_users, n_movies, factors, y_range=y_range, offset=offset)
        self.user_factors = nn.Parameter(torch.zeros(self.n_users, self.factors))
        self.movie_factors = nn.Parameter(torch.zeros(self.n_movies, self.factors))
        self.user_bias = nn.Parameter(torch.zeros(self.n_users))
        self.movie_bias = nn.Parameter(torch.zeros(self.n_movies))
        # Stored weights; the effective ones are dense() (LAYER_SCALE x these).
        self.layers = nn.ModuleDict({"hidden": nn.Linear(2 * self.factors, hidden), "out": nn.Linear(hidden, 1)})
        self.dropout = (float(dropout[0]), float(dropout[1]))
        self.generator: torch.Generator | None = None  # set by the trainer (same device as the data)

    def init_random(self, generator, *, scheme, scale):
        fill_(self.user_factors, generator, scheme, scale)
        fill_(self.movie_factors, generator, scheme, scale)
        fill_(self.user_bias, generator, "zeros", scale)  # biases start at 0: the start is mean + net
        fill_(self.movie_bias, generator, "zeros", scale)
        with torch.no_grad():  # torch's default Linear init for the effective weights, from our generator
            for layer in self.layers.values():
                bound = 1.0 / math.sqrt(layer.in_features) / LAYER_SCALE
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    @staticmethod
    def dense(named: dict) -> dict:
        """Effective layer weights from the stored parameters (``named``: name -> tensor, as in
        ``named_parameters()``): the net computes ``out(relu(hidden(concat(u, m))))`` with these."""
        return {
            "hidden_weight": named["layers.hidden.weight"] * (LAYER_SCALE * FACTOR_SCALE),
            "hidden_bias": named["layers.hidden.bias"] * LAYER_SCALE,
            "out_weight": named["layers.out.weight"] * LAYER_SCALE,
            "out_bias": named["layers.out.bias"] * LAYER_SCALE,
        }

    def _net(self, user_index, movie_index):
        w = self.dense(dict(self.layers.named_parameters(prefix="layers")))
        x = torch.cat([self.user_factors[user_index], self.movie_factors[movie_index]], dim=1)
        x = _dropout(x, self.dropout[0], self.training, self.generator)
        x = torch.relu(F.linear(x, w["hidden_weight"], w["hidden_bias"]))
        x = _dropout(x, self.dropout[1], self.training, self.generator)
        return F.linear(x, w["out_weight"], w["out_bias"]).squeeze(1)

    def raw(self, user_index, movie_index):
        return self._net(user_index, movie_index) + self.user_bias[user_index] + self.movie_bias[movie_index]

    def raw_safe(self, user_index, movie_index):
        u, m, ku, km = split_known(user_index, movie_index)
        # The net needs both embeddings: with either side unknown it contributes nothing, and the answer is
        # the known side's bias + the global mean (as in the bias model).
        return self._net(u, m) * (ku & km) + self.user_bias[u] * ku + self.movie_bias[m] * km

    def embedding_penalty(self, user_index, movie_index):
        return (
            self.user_factors[user_index].square().sum(1)
            + self.movie_factors[movie_index].square().sum(1)
            + self.user_bias[user_index].square()
            + self.movie_bias[movie_index].square()
        )
