"""collab_filter workbooks recalculated by real headless LibreOffice: every prediction cell and the RMSE
agree with numpy to 1e-9 relative (one soffice start for all the workbooks of this module)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlcf.data import lesson_crosstab, lesson_titles
from xlcf.lessons.collab import SHEETS, build_collab, col_letter, initial_parameters

pytestmark = [pytest.mark.libreoffice, pytest.mark.slow]

REL = 1e-9


def ragged_crosstab() -> pd.DataFrame:
    """5 users x 7 movies with blanks in whole rows/columns' worth of places, incl. a user with one rating."""
    rng = np.random.default_rng(11)
    values = rng.integers(1, 11, size=(5, 7)) / 2.0
    values[rng.random((5, 7)) < 0.4] = np.nan
    values[0, :] = np.nan
    values[0, 3] = 4.5
    return pd.DataFrame(
        values,
        index=pd.Index([3, 8, 21, 22, 40], name="userId"),
        columns=pd.Index([5, 6, 7, 50, 51, 60, 99], name="movieId"),
    )


CASES = {
    "lesson": dict(table=lesson_crosstab, titles=lesson_titles, factors=5, seed=0),
    "ragged_k3": dict(table=ragged_crosstab, titles=dict, factors=3, seed=4),
    "ragged_k1": dict(table=ragged_crosstab, titles=dict, factors=1, seed=5),
}


def real_cases(request) -> dict:
    """The real MovieLens crosstab (8 x 8, titles from movies.csv) when the shared copy is here."""
    try:
        folder = request.getfixturevalue("ml2018")
    except pytest.skip.Exception:
        return {}
    import warnings

    from xlcf.data import crosstab, load_ratings, load_titles

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 2018 file has one known malformed timestamp
        table = crosstab(load_ratings(folder), 8)
    titles = load_titles(folder)
    return {"movielens_top8": dict(table=lambda: table, titles=lambda: titles, factors=2, seed=1)}


@pytest.fixture(scope="module")
def recalculated(request, tmp_path_factory, libreoffice):
    folder = tmp_path_factory.mktemp("collab_lo")
    books = {}
    for name, case in {**CASES, **real_cases(request)}.items():
        path = folder / f"{name}.xlsx"
        layout = build_collab(path, case["table"](), case["titles"](), factors=case["factors"], seed=case["seed"])
        books[name] = (path, layout, case["table"]())
    results = libreoffice(
        *(p for p, _l, _t in books.values()), save_as=[folder / "lesson_roundtrip.xlsx"] + [None] * (len(books) - 1)
    )
    return {name: (books[name][1], books[name][2], res) for name, res in zip(books, results)}, folder


def block(res, sheet, top, left, bottom, right) -> np.ndarray:
    out = np.full((bottom - top + 1, right - left + 1), np.nan)
    for r in range(top, bottom + 1):
        for c in range(left, right + 1):
            v = res.value(sheet, f"{col_letter(c)}{r}")
            out[r - top, c - left] = np.nan if v in (None, "") else v
    return out


@pytest.mark.parametrize("case", list(CASES) + ["movielens_top8"])
@pytest.mark.parametrize("sheet", SHEETS)
def test_predictions_and_rmse_match_numpy(recalculated, case, sheet):
    books, _folder = recalculated
    if case not in books:
        pytest.skip("real MovieLens copy not found (../shared/data is absent on this machine)")
    layout, table, res = books[case]
    uf = block(res, sheet, *layout.user_factors_box())
    mf = block(res, sheet, *layout.movie_factors_box())
    init = initial_parameters(layout.n_users, layout.n_movies, layout.factors, layout.seed)
    np.testing.assert_array_equal(uf, init.user_factors)  # LibreOffice reads the factors we wrote
    expected = uf @ mf
    if sheet == "bias":
        ub = block(res, sheet, *layout.user_bias_box())[:, 0]
        mb = block(res, sheet, *layout.movie_bias_box())[0]
        expected = expected + ub[:, None] + mb[None, :]
    predictions = block(res, sheet, *layout.predictions_box())
    assert not np.isnan(predictions).any(), "every cell, rated or not, gets a prediction"
    np.testing.assert_allclose(predictions, expected, rtol=REL, atol=0)
    ratings = table.to_numpy(dtype=float)
    np.testing.assert_array_equal(block(res, sheet, *layout.ratings_box()), ratings)
    rated = ~np.isnan(ratings)
    rmse = np.sqrt(np.mean((ratings[rated] - expected[rated]) ** 2))
    got = res.value(sheet, layout.refs(sheet)["rmse"])
    assert got == pytest.approx(rmse, rel=REL)
    # the lesson's SUMXMY2 would count blanks as 0 in LibreOffice; ours must not
    if rated.sum() < rated.size:
        wrong = np.sqrt(np.sum((np.nan_to_num(ratings) - expected) ** 2 * rated) / rated.sum())
        zeros = np.sqrt(np.mean((np.nan_to_num(ratings) - expected) ** 2))
        assert got == pytest.approx(wrong, rel=REL) and abs(got - zeros) > 1e-6
    errors = [ref for ref, cell in res.sheets[sheet].items() if cell.get("err")]
    assert errors == []


def test_libreoffice_round_trip_keeps_the_model(recalculated):
    """Stored again by LibreOffice, the workbook keeps its sheet-scoped names and the Solver model."""
    from xlcf.ooxml.package import Package

    _books, folder = recalculated
    pkg = Package.open(folder / "lesson_roundtrip.xlsx")
    for sheet in SHEETS:
        names = {n.name: n for n in pkg.names() if n.sheet == sheet}
        for name in ("ratings", "user_factors", "movie_factors", "predictions", "rmse", "optimizer", "status"):
            assert name in names, (sheet, name)
        assert "solver_opt" in names and "$V$42" in names["solver_opt"].value
    prediction = pkg.read_cell("bias", "H26")
    assert prediction.formula and "MMULT" in prediction.formula.upper()
    assert isinstance(prediction.value, float)


def test_real_titles_in_header(recalculated):
    books, _folder = recalculated
    if "movielens_top8" not in books:
        pytest.skip("real MovieLens copy not found (../shared/data is absent on this machine)")
    layout, table, res = books["movielens_top8"]
    assert all(res.value("dotprod", f"{col_letter(layout.first_movie_col + j)}1") for j in range(layout.n_movies))
