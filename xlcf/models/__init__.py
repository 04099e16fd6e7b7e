"""Rating models (``torch.nn.Module``s), kept separate from training (``xlcf.train``).

- ``dot``  : the lesson's EmbeddingDot,     pred = u . m
- ``bias`` : the lesson's EmbeddingDotBias, pred = u . m + b_u + b_m (+ global mean) [sigmoid range]
- ``nn``   : the lesson's EmbeddingNet,     concat -> Linear -> ReLU -> Dropout -> Linear + b_u + b_m [sigmoid range]
"""

from __future__ import annotations

from xlcf.models.base import RatingModel, offset_for
from xlcf.models.bias import BiasModel
from xlcf.models.dot import DotModel
from xlcf.models.nn import EmbeddingNet

MODELS: dict[str, type[RatingModel]] = {"dot": DotModel, "bias": BiasModel, "nn": EmbeddingNet}


def build_model(
    name: str,
    n_users: int,
    n_movies: int,
    factors: int,
    *,
    y_range=None,
    offset: float = 0.0,
    hidden: int = 10,
    dropout: tuple[float, float] = (0.05, 0.5),
) -> RatingModel:
    """A fresh (zero-filled) model; the trainer initialises it from its generator or the sheet."""
    if name == "nn":
        return EmbeddingNet(n_users, n_movies, factors, y_range=y_range, offset=offset, hidden=hidden, dropout=dropout)
    return MODELS[name](n_users, n_movies, factors, y_range=y_range, offset=offset)


__all__ = ["MODELS", "BiasModel", "DotModel", "EmbeddingNet", "RatingModel", "build_model", "offset_for"]
