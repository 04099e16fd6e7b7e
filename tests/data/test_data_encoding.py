"""Vocabulary (raw ids <-> indices), encoding and the seeded validation split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from xlcf.data import EncodedRatings, Vocabulary, encode_ratings, load_ratings, split_ratings
from xlcf.errors import DataError


def frame(users, movies, ratings=None) -> pd.DataFrame:
    ratings = ratings if ratings is not None else [3.0] * len(users)
    return pd.DataFrame(
        {
            "userId": np.asarray(users, dtype=np.int64),
            "movieId": np.asarray(movies, dtype=np.int64),
            "rating": np.asarray(ratings, dtype=np.float64),
        }
    )


def test_vocabulary_from_ids_is_sorted_unique_and_maps_both_ways():
    vocab = Vocabulary.from_ids([30, 10, 20, 10, 30])
    assert vocab.ids.tolist() == [10, 20, 30] and len(vocab) == 3
    assert vocab.index([20, 30, 10, 99, -5]).tolist() == [1, 2, 0, -1, -1]
    assert vocab.index(np.array([], dtype=np.int64)).tolist() == []
    assert vocab.index(30).tolist() == [2]
    assert vocab.index([20]).dtype == np.int64
    assert vocab.to_ids([2, 0]).tolist() == [30, 10]
    assert 20 in vocab and 21 not in vocab


def test_vocabulary_in_order_of_appearance():
    vocab = Vocabulary.from_ids([30, 10, 30, 20], sort=False)
    assert vocab.ids.tolist() == [30, 10, 20]
    assert vocab.index([10, 20, 30]).tolist() == [1, 2, 0]


def test_vocabulary_is_frozen_and_compares_by_content():
    vocab = Vocabulary.from_ids([1, 2, 3])
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.ids = np.array([4])
    with pytest.raises(ValueError):
        vocab.ids[0] = 7  # the array itself is read-only
    assert vocab == Vocabulary(np.array([1, 2, 3])) and vocab != Vocabulary.from_ids([1, 2])
    with pytest.raises(DataError, match="unique"):
        Vocabulary(np.array([1, 1]))
    with pytest.raises(DataError, match="integer ids"):
        Vocabulary.from_ids([1.5, 2])


def test_encode_builds_sorted_vocabularies_and_maps_back():
    df = frame([7, 3, 7, 5], [100, 100, 42, 7], [1.0, 2.5, 4.0, 5.0])
    enc = encode_ratings(df)
    assert isinstance(enc, EncodedRatings) and len(enc) == 4
    assert enc.users.ids.tolist() == [3, 5, 7] and enc.movies.ids.tolist() == [7, 42, 100]
    assert enc.user_index.tolist() == [2, 0, 2, 1] and enc.movie_index.tolist() == [2, 2, 1, 0]
    assert enc.user_index.dtype == np.int64 and enc.movie_index.dtype == np.int64
    assert enc.rating.dtype == np.float32 and enc.rating.tolist() == [1.0, 2.5, 4.0, 5.0]
    assert enc.known.all()


def test_encode_with_given_vocabularies_marks_unknown_ids():
    train = encode_ratings(frame([1, 2], [10, 20]))
    valid = encode_ratings(frame([2, 3, 1], [10, 10, 30]), users=train.users, movies=train.movies)
    assert valid.users is train.users
    assert valid.user_index.tolist() == [1, -1, 0]
    assert valid.movie_index.tolist() == [0, 0, -1]
    assert valid.known.tolist() == [True, False, False]


def test_encode_round_trips_on_synthetic_data(synthetic_data):
    df = load_ratings(synthetic_data)
    enc = encode_ratings(df)
    assert len(enc.users) == df["userId"].nunique() and len(enc.movies) == df["movieId"].nunique()
    np.testing.assert_array_equal(enc.users.to_ids(enc.user_index), df["userId"].to_numpy())
    np.testing.assert_array_equal(enc.movies.to_ids(enc.movie_index), df["movieId"].to_numpy())
    codes, _ = pd.factorize(df["movieId"], sort=True)
    np.testing.assert_array_equal(codes, enc.movie_index)


def test_encode_round_trips_on_real_data(ml2016):
    df = load_ratings(ml2016)
    enc = encode_ratings(df)
    assert len(enc.users) == 671 and len(enc.movies) == 9066
    np.testing.assert_array_equal(enc.users.to_ids(enc.user_index), df["userId"].to_numpy())
    np.testing.assert_array_equal(enc.movies.to_ids(enc.movie_index), df["movieId"].to_numpy())
    # Same grouping as pandas' own factorize: indices are a relabelling of the ids.
    codes, _ = pd.factorize(df["movieId"], sort=True)
    np.testing.assert_array_equal(codes, enc.movie_index)


def test_encode_needs_the_columns():
    with pytest.raises(DataError, match="encode_ratings: missing column rating; found columns: userId, movieId"):
        encode_ratings(pd.DataFrame({"userId": [1], "movieId": [2]}))


def test_split_is_seeded_reproducible_and_a_partition():
    df = frame(np.arange(1000) % 37, np.arange(1000) % 91)
    train, valid = split_ratings(df)  # defaults: 20%, seed 0
    assert len(valid) == 200 and len(train) == 800
    assert sorted(train.index.tolist() + valid.index.tolist()) == list(range(1000))
    assert train.index.is_monotonic_increasing and valid.index.is_monotonic_increasing  # file order kept
    again_train, again_valid = split_ratings(df, 0.2, seed=0)
    assert valid.index.equals(again_valid.index) and train.index.equals(again_train.index)
    _, other = split_ratings(df, 0.2, seed=1)
    assert not valid.index.equals(other.index)
    # The documented recipe, computed independently: rows of the first round(pct*n) of a seeded permutation.
    expected = np.sort(np.random.default_rng(0).permutation(1000)[:200])
    assert valid.index.tolist() == expected.tolist()


def test_split_sizes_and_limits():
    df = frame(range(10), range(10))
    assert [len(p) for p in split_ratings(df, 0.0)] == [10, 0]
    assert [len(p) for p in split_ratings(df, 0.9)] == [1, 9]
    assert [len(p) for p in split_ratings(df, 0.25)] == [7, 3]  # 2.5 rows round half up
    for bad in (-0.1, 0.95, 1, float("nan"), "x"):
        with pytest.raises(DataError, match="valid_pct=.*expected a fraction from 0 to 0.9"):
            split_ratings(df, bad)
