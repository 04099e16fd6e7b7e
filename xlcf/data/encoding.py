"""Raw ids <-> contiguous indices, and the seeded validation split.

Vectorised throughout: ``np.unique(..., return_inverse=True)`` builds a vocabulary and encodes in one
pass, ``pd.Index.get_indexer`` maps ids through an existing vocabulary (unknown -> -1). The lesson's
per-row ``.apply(lambda)`` is what this replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xlcf.errors import DataError


def _as_int64(values, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False).reshape(-1) if array.ndim else array.astype(np.int64).reshape(1)
    try:
        as_float = array.astype(np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{what}: expected integer ids, got values of type {array.dtype}") from None
    if not (np.isfinite(as_float) & (np.floor(as_float) == as_float)).all():
        raise DataError(f"{what}: expected integer ids, got non-integer values")
    return as_float.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Immutable map between raw ids (``ids[i]``) and indices ``0..n-1``."""

    ids: np.ndarray
    _lookup: pd.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        ids = _as_int64(self.ids, "Vocabulary").copy()
        ids.setflags(write=False)
        lookup = pd.Index(ids)
        if not lookup.is_unique:
            raise DataError("Vocabulary: ids must be unique")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def from_ids(cls, raw_ids, *, sort: bool = True) -> Vocabulary:
        """The distinct ids, sorted (default) or in order of first appearance."""
        ids = _as_int64(raw_ids, "Vocabulary.from_ids")
        return cls(np.unique(ids) if sort else pd.unique(ids))

    def index(self, raw_ids) -> np.ndarray:
        """int64 index of each raw id; -1 for ids not in the vocabulary (never raises for unknown ids)."""
        if np.isscalar(raw_ids):
            raw_ids = [raw_ids]
        ids = np.asarray(raw_ids).reshape(-1)
        return self._lookup.get_indexer(ids).astype(np.int64, copy=False)  # type: ignore[arg-type]

    def to_ids(self, indices) -> np.ndarray:
        """Raw ids of indices (the inverse of :meth:`index`); IndexError for indices out of range."""
        return self.ids[np.asarray(indices, dtype=np.int64)]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __contains__(self, raw_id) -> bool:
        return bool(self.index([raw_id])[0] >= 0)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]  # equality is by content of an array

    def __repr__(self) -> str:
        head = ", ".join(map(str, self.ids[:5].tolist())) + (", ..." if len(self) > 5 else "")
        return f"Vocabulary(n={len(self)}, ids=[{head}])"


@dataclass(frozen=True)
class EncodedRatings:
    """Ratings as parallel arrays of indices into ``users`` and ``movies`` (-1 where an id is unknown)."""

    users: Vocabulary
    movies: Vocabulary
    user_index: np.ndarray  # int64
    movie_index: np.ndarray  # int64
    rating: np.ndarray  # float32

    def __len__(self) -> int:
        return int(self.rating.shape[0])

    @property
    def known(self) -> np.ndarray:
        """True where both the user and the movie are in the vocabularies."""
        return (self.user_index >= 0) & (self.movie_index >= 0)


def _require_columns(ratings_df: pd.DataFrame, what: str) -> None:
    missing = [c for c in ("userId", "movieId", "rating") if c not in ratings_df.columns]
    if missing:
        raise DataError(
            f"{what}: missing column {', '.join(missing)}; found columns: {', '.join(map(str, ratings_df.columns))}"
        )


def encode_ratings(
    ratings_df: pd.DataFrame, users: Vocabulary | None = None, movies: Vocabulary | None = None
) -> EncodedRatings:
    """Encode a ratings frame. Without vocabularies they are built from the frame (sorted ids);
    with them (e.g. the training set's, for a validation set) unknown ids get index -1."""
    _require_columns(ratings_df, "encode_ratings")

    def encode(column: str, vocab: Vocabulary | None) -> tuple[Vocabulary, np.ndarray]:
        raw = _as_int64(ratings_df[column].to_numpy(), f"encode_ratings: {column}")
        if vocab is None:
            ids, inverse = np.unique(raw, return_inverse=True)
            return Vocabulary(ids), inverse.astype(np.int64).reshape(-1)
        return vocab, vocab.index(raw)

    users, user_index = encode("userId", users)
    movies, movie_index = encode("movieId", movies)
    rating = ratings_df["rating"].to_numpy(dtype=np.float32, na_value=np.nan)
    return EncodedRatings(users, movies, user_index, movie_index, rating)


def split_ratings(
    ratings_df: pd.DataFrame, valid_pct: float = 0.2, seed: int | None = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random (train, valid) split of rows, ``valid_pct * n`` rows (rounded half up) in valid. Reproducible: the same
    seed and frame give the same split on any machine (``np.random.default_rng(seed)``). Both parts keep
    the original row order and index labels (so rows can be traced back to file lines)."""
    try:
        pct = float(valid_pct)
    except (TypeError, ValueError):
        raise DataError(f"valid_pct={valid_pct!r}: expected a fraction from 0 to 0.9") from None
    if not (0.0 <= pct <= 0.9):
        raise DataError(f"valid_pct={valid_pct!r}: expected a fraction from 0 to 0.9 (e.g. 0.2 for 20%)")
    n = len(ratings_df)
    n_valid = min(n, int(np.floor(pct * n + 0.5)))  # round half up: 2.5 rows -> 3
    rng = np.random.default_rng(seed)
    in_valid = np.zeros(n, dtype=bool)
    in_valid[rng.permutation(n)[:n_valid]] = True
    return ratings_df.iloc[~in_valid], ratings_df.iloc[in_valid]
