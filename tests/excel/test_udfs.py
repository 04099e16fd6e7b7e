"""Worksheet functions called as xlwings calls them: 2-D lists (ndim=2) with None for blanks, text in
ranges, scalars as plain values, numpy arrays too. Bad input gives readable text, never an exception."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xlcf import udfs
from xlcf.excel import udfs as impl

LESSON_LIKE = [
    [4.0, None, 3.5, 5.0],
    [None, 2.0, 3.0, None],
    [5.0, 4.5, None, 4.0],
    [1.0, None, 2.0, 1.5],
]


def _flat(result):
    return [v for row in result for v in row]


def test_udf_module_reexports_the_functions():
    for name in ("cf_fit", "cf_predict", "cf_rmse", "cf_recommend"):
        assert getattr(udfs, name) is getattr(impl, name)


def test_cf_predict_matches_numpy_with_biases_and_both_orientations():
    rng = np.random.default_rng(1)
    users, movies = rng.random((4, 3)), rng.random((3, 5))
    ub, mb = rng.random(4), rng.random(5)
    expected = users @ movies + ub[:, None] + mb[None, :]
    got = udfs.cf_predict(users.tolist(), movies.tolist(), [[v] for v in ub], [mb.tolist()])
    assert np.allclose(got, expected)
    # movie factors given as movies x k (the other orientation) and numpy arrays in
    assert np.allclose(udfs.cf_predict(users, movies.T), users @ movies)
    assert isinstance(got, list) and all(isinstance(v, float) for v in _flat(got))


def test_cf_rmse_counts_only_rated_cells():
    actual = [[4.0, None, ""], [2.0, 3.0, None]]
    predicted = [[3.0, 100.0, -50.0], [2.0, 5.0, 7.0]]
    expected = math.sqrt(((4 - 3) ** 2 + 0 + (3 - 5) ** 2) / 3)
    assert udfs.cf_rmse(actual, predicted) == pytest.approx(expected)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: udfs.cf_predict([[1.0, "x"]], [[1.0], [2.0]]), "user_factors row 1 column 2 holds 'x'"),
        (lambda: udfs.cf_predict([[1.0, True]], [[1.0], [2.0]]), "holds 'True'"),
        (lambda: udfs.cf_predict([[1.0, 2.0]], [[1.0, 2.0, 3.0]]), "expected 2 rows"),
        (lambda: udfs.cf_predict([[1.0, None]], [[1.0], [2.0]]), "is empty"),
        (lambda: udfs.cf_rmse([[1.0, 2.0]], [[1.0]]), "actual is 1x2 but predicted is 1x1"),
        (lambda: udfs.cf_rmse([[None, None]], [[1.0, 2.0]]), "no rated cells"),
        (lambda: udfs.cf_rmse([[1.0, "#N/A"]], [[1.0, 2.0]]), "'#N/A'"),
        (lambda: udfs.cf_fit([["a", 1.0]]), "ratings row 1 column 1 holds 'a'"),
        (lambda: udfs.cf_fit(LESSON_LIKE, "five"), "factors must be a number"),
        (lambda: udfs.cf_fit(LESSON_LIKE, 2.5), "factors must be a whole number"),
        (lambda: udfs.cf_fit([[1.0, None], [None, None]]), "at least 2 rated"),
        (lambda: udfs.cf_recommend(LESSON_LIKE, 9), "user must be a row number between 1 and 4"),
    ],
)
def test_bad_input_is_readable_text_in_the_cell(call, fragment):
    result = call()
    assert isinstance(result, list) and len(result) == 1 and len(result[0]) == 1
    text = result[0][0]
    assert isinstance(text, str) and fragment in text, text
    assert text.split(":")[0] in {"CF_FIT", "CF_PREDICT", "CF_RMSE", "CF_RECOMMEND"}


def test_cf_fit_refuses_more_than_100k_cells_before_training():
    big = [[None] * 400 for _ in range(300)]  # 120,000 cells
    big[0][0], big[1][1] = 3.0, 4.0
    text = udfs.cf_fit(big)[0][0]
    assert "120000 cells" in text and "100000" in text and "macro" in text


def test_never_nan_or_inf_out():
    text = udfs.cf_predict([[1e308, 1e308]], [[1e308], [1e308]])[0][0]
    assert isinstance(text, str) and "NaN or infinite" in text


def test_cf_fit_returns_same_shape_finite_and_caches():
    impl.clear_cache()
    before = impl.fit_count()
    first = udfs.cf_fit(LESSON_LIKE, 2, "adam", 50, None, 0)
    assert np.array(first).shape == (4, 4), first
    assert all(isinstance(v, float) and math.isfinite(v) for v in _flat(first))
    again = udfs.cf_fit([list(r) for r in LESSON_LIKE], 2, "adam", 50, None, 0)  # a recalculation
    assert again == first and impl.fit_count() == before + 1  # no retraining
    udfs.cf_fit(LESSON_LIKE, 2, "adam", 50, None, 1)  # a changed input trains again
    assert impl.fit_count() == before + 2
    # the fit improves on the rated cells over a constant guess
    truth = np.array([[np.nan if v is None else v for v in r] for r in LESSON_LIKE])
    rated = np.isfinite(truth)
    assert udfs.cf_rmse(LESSON_LIKE, first) < np.std(truth[rated])


def test_cf_recommend_lists_unrated_movies_best_first():
    labels = [["Alien", "Brazil", "Casablanca", "Dune"]]
    out = udfs.cf_recommend(LESSON_LIKE, 2, 5, labels, 2, "adam", 50, None, 0)
    assert {row[0] for row in out} == {"Alien", "Dune"}  # user 2's unrated movies, no more
    scores = [row[1] for row in out]
    assert scores == sorted(scores, reverse=True)
    predicted = udfs.cf_fit(LESSON_LIKE, 2, "adam", 50, None, 0)  # same inputs: the cached model
    assert scores[0] == pytest.approx(max(predicted[1][0], predicted[1][3]))


def test_decorated_copies_carry_xlwings_metadata():
    """build() decorates fresh copies (the server uses xlwings.server's decorators)."""
    calls = []

    def func(f):
        f.__registered__ = True
        return f

    def arg(name, **options):
        def inner(f):
            calls.append((f.__name__, name, options))
            return f

        return inner

    def ret(**options):
        return lambda f: f

    built = impl.build(func, arg, ret)
    assert set(built) == {"cf_fit", "cf_predict", "cf_rmse", "cf_recommend"}
    assert all(getattr(f, "__registered__", False) for f in built.values())
    assert not hasattr(impl.cf_fit, "__registered__")  # the module's functions are untouched
    assert ("cf_predict", "user_factors", {"ndim": 2}) in calls
    assert built["cf_rmse"]([[1.0]], [[3.0]]) == pytest.approx(2.0)
