"""The movielens workbook trained on the synthetic ratings of tests/data and, where it is here, the real
ml-latest-small (few epochs, 3 factors to keep it quick):
every sheet checked against Python, a second run updates in place, LibreOffice recalculates the embeddings."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from xlcf.actions import train_book
from xlcf.data import crosstab
from xlcf.lessons.movielens import build as mlbuild
from xlcf.lessons.movielens import layout as mlay
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import cell_ref, col_letter

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]
K = 3


def values(pkg: Package, sheet: str, ref: str) -> list[list]:
    return [[c.value for c in row] for row in pkg.read_range(sheet, ref)]


def col(pkg: Package, sheet: str, ref: str) -> list:
    return [row[0] for row in values(pkg, sheet, ref)]


@pytest.fixture(scope="module", params=["synthetic", "ml-latest-small"])
def trained(request, tmp_path_factory):
    # a heavy rater of each data set
    source, user = (
        (request.getfixturevalue("synthetic_data"), 202)
        if request.param == "synthetic"
        else (request.getfixturevalue("ml2018"), 414)
    )
    folder = tmp_path_factory.mktemp("movielens")
    book = mlbuild.build_movielens(
        folder / "ml.xlsx",
        settings={
            "ratings_source": str(source),
            "factors": K,
            "epochs": 2,
            "user_id": user,
            "min_ratings": 20,
            "device": "cpu",
        },
    )
    summary, result, prep = train_book.train_workbook_result(book)
    return book, summary, result, prep


def test_every_sheet_matches_python(trained):
    book, summary, result, prep = trained
    user = prep.settings["user_id"]
    pkg = Package.open(book)
    train, valid, titles = prep.train_df, prep.valid_df, prep.titles
    assert summary["embeddings_relaid"]  # laid out for 50 factors / 225 rows, trained with 3
    # movielens: metrics and status
    assert pkg.read_cell("movielens", mlay.METRIC_REF["valid_rmse"]).value == pytest.approx(result.valid_rmse)
    assert pkg.read_cell("movielens", mlay.METRIC_REF["n_ratings"]).value == len(train) + len(valid)
    assert pkg.read_cell("movielens", mlay.STATUS_REF).value.startswith("ok: bias/")
    # history: one row per epoch
    hist = values(pkg, "history", "A4:E6")
    assert [r[0] for r in hist] == [1, 2, None]
    np.testing.assert_allclose([r[3] for r in hist[:2]], [h.valid_rmse for h in result.history])
    assert "$D$4:$D$5" in pkg.read_member(pkg.chart_parts("history")[0]).decode()
    for sheet, n in (("history", 1), ("movie_bias", 2), ("movie_pca", 1), ("pred_vs_actual", 1)):
        assert len(pkg.chart_parts(sheet)) == n

    # movie_bias: sorted, >= N training ratings, values are the model's biases and the training counts
    counts = train.groupby("movieId").size()
    bias_of = dict(zip(result.movies.ids.tolist(), result.movie_bias.tolist()))
    for left, descending in (("A", True), ("H", False)):
        c0 = 1 if left == "A" else 8
        rows = values(pkg, "movie_bias", f"{left}{mlay.BIAS_TOP}:{col_letter(c0 + 5)}{mlay.BIAS_TOP + 14}")
        biases = [r[3] for r in rows]
        assert biases == sorted(biases, reverse=descending)
        for _rank, movie, title, b, n, _mean in rows:
            assert n == counts[int(movie)] >= 20
            assert b == pytest.approx(bias_of[int(movie)])
            assert title == titles[int(movie)]
    eligible = [m for m in result.movies.ids if counts.get(m, 0) >= 20]
    top = sorted(eligible, key=lambda m: (-bias_of[m], m))[:15]
    assert col(pkg, "movie_bias", f"B{mlay.BIAS_TOP}:B{mlay.BIAS_TOP + 14}") == top

    # movie_pca: explained variance matches numpy, sums to <= 1
    idx = result.movies.index(np.array(eligible))
    factors = result.movie_factors[idx]
    eig = np.sort(np.linalg.eigvalsh(np.cov(factors, rowvar=False)))[::-1]
    ratio = col(pkg, "movie_pca", "B5:B7")
    np.testing.assert_allclose(ratio, (eig / eig.sum())[:3], rtol=1e-9)
    assert sum(ratio) <= 1 + 1e-12
    assert pkg.read_cell("movie_pca", "F5").value == len(eligible)
    scores = [r[3] for r in values(pkg, "movie_pca", "A12:D21")]
    assert scores == sorted(scores, reverse=True)

    # recommend: the unrated movies with the highest predictions
    rated = set(pd.concat([train, valid]).query("userId == @user")["movieId"])
    candidates = np.array([m for m in result.movies.ids if m not in rated])
    pred = result.predict(np.full(len(candidates), user), candidates)
    expected = candidates[np.argsort(-pred, kind="stable")][:10]
    rec = values(pkg, "recommend", f"A{mlay.REC_TOP}:F{mlay.REC_TOP + 9}")
    assert [r[1] for r in rec] == expected.tolist()
    np.testing.assert_allclose([r[3] for r in rec], result.predict(np.full(10, user), expected))
    assert result.optimizer == "gibbs"  # the book's default: the ± column is its predictive std
    np.testing.assert_allclose([r[4] for r in rec], result.predict_std(np.full(10, user), expected))
    assert not rated & {r[1] for r in rec}
    assert pkg.read_cell("recommend", "B3").value == len(rated)

    # pred_vs_actual: counts cover the validation set; mean prediction per actual rating
    table = values(pkg, "pred_vs_actual", f"A{mlay.PVA_TOP}:M{mlay.PVA_TOP + 9}")
    assert sum(sum(r[1:11]) for r in table) == len(valid)
    vpred = result.predict(valid["userId"].to_numpy(), valid["movieId"].to_numpy())
    means = pd.Series(vpred).groupby(valid["rating"].to_numpy()).mean()
    for row in table:
        if row[0] in means.index:
            assert row[12] == pytest.approx(means[row[0]])

    # crosstab: the training data's 15x15 next to the model's predictions
    ct = crosstab(train, 15)
    block = values(pkg, "crosstab", f"A{mlay.CT_TOP}:P{mlay.CT_TOP + 14}")
    assert [r[0] for r in block] == ct.index.tolist()
    got = np.array([[np.nan if v is None else v for v in r[1:]] for r in block])
    np.testing.assert_array_equal(got, ct.to_numpy())
    preds = np.array(values(pkg, "crosstab", f"S{mlay.CT_TOP}:AG{mlay.CT_TOP + 14}"), dtype=float)
    uu, mm = np.meshgrid(ct.index, ct.columns, indexing="ij")
    np.testing.assert_allclose(preds, result.predict(uu.ravel(), mm.ravel()).reshape(15, 15))


def test_second_run_updates_in_place_and_libreoffice_agrees(trained, libreoffice):
    book, first_summary, first, _ = trained
    with zipfile.ZipFile(book) as zf:
        before = {n: zf.read(n) for n in zf.namelist()}
    # same split (seed): the 15x15 long table keeps its rated cells, so the embeddings sheet stays laid out
    summary, result, prep = train_book.train_workbook_result(book, overrides={"epochs": 3})
    assert not summary["embeddings_relaid"]
    with zipfile.ZipFile(book) as zf:
        after = {n: zf.read(n) for n in zf.namelist()}
    assert list(after) == list(before)  # nothing duplicated
    pkg = Package.open(book)
    assert pkg.sheet_names == ["movielens", *mlay.OUTPUT_SHEETS]
    assert col(pkg, "history", "A4:A7") == [1, 2, 3, None]
    assert "$D$4:$D$6" in pkg.read_member(pkg.chart_parts("history")[0]).decode()
    assert pkg.read_cell("movielens", mlay.METRIC_REF["valid_rmse"]).value == pytest.approx(result.valid_rmse)
    assert result.valid_rmse != first.valid_rmse

    (lo,) = libreoffice(book)
    ct = crosstab(prep.train_df, 15)
    users, movies = ct.index.to_numpy(), ct.columns.to_numpy()
    uf = result.user_factors[result.users.index(users)]
    mf = result.movie_factors[result.movies.index(movies)]
    lay = mlay.EmbeddingsLayout(K, int(ct.notna().to_numpy().sum()))
    assert lo.value("embeddings", mlay.EMB_ROWS_REF) == lay.rows
    for i in range(lay.rows):
        r = mlay.EMB_LONG_TOP + i
        u, m = int(lo.value("embeddings", f"A{r}")), int(lo.value("embeddings", f"B{r}"))
        uvec, mvec = uf[list(users).index(u)], mf[list(movies).index(m)]
        look_u = [lo.value("embeddings", cell_ref(r, lay.uvec + j)) for j in range(K)]
        look_m = [lo.value("embeddings", cell_ref(r, lay.mvec + j)) for j in range(K)]
        hot_u = [lo.value("embeddings", cell_ref(r, lay.umm + j)) for j in range(K)]
        hot_m = [lo.value("embeddings", cell_ref(r, lay.mmm + j)) for j in range(K)]
        np.testing.assert_allclose(look_u, uvec, rtol=1e-9)
        np.testing.assert_allclose(hot_u, uvec, rtol=1e-9)
        np.testing.assert_allclose(look_m, mvec, rtol=1e-9)
        np.testing.assert_allclose(hot_m, mvec, rtol=1e-9)
        dot = float(uvec @ mvec)
        assert lo.value("embeddings", cell_ref(r, lay.dot_lookup)) == pytest.approx(dot, rel=1e-9, abs=1e-12)
        assert lo.value("embeddings", cell_ref(r, lay.dot_hot)) == pytest.approx(dot, rel=1e-9, abs=1e-12)
        assert sum(lo.value("embeddings", cell_ref(r, lay.uhot + j)) for j in range(15)) == 1
        assert lo.value("embeddings", f"C{r}") == ct.loc[u, m]
