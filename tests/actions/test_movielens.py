"""The movielens workbook: interpretation logic, generator, outputs, in-place writes and bad input.

Pure logic runs on tiny synthetic data and a FitResult built from numpy (no training). The real-data tests
(ml-latest-small, a few epochs) are in test_movielens_real.py.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlcf.actions import movielens_outputs as mlout
from xlcf.actions import movielens_settings as mlset
from xlcf.actions import train_book
from xlcf.data import Vocabulary, split_ratings
from xlcf.errors import ConfigError, DataError, WorkbookError, XlcfError
from xlcf.lessons.movielens import build as mlbuild
from xlcf.lessons.movielens import layout as mlay
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import col_letter
from xlcf.train.config import TrainConfig
from xlcf.train.interpret import (
    bias_extremes,
    binned_pred_vs_actual,
    movie_pca,
    rating_counts,
    recommend_unrated,
    to_half_star,
)
from xlcf.train.result import EpochStats, FitResult

# ------------------------------------------------------------------------------------------------------------
# tiny synthetic data and a FitResult made from numpy


def synthetic_ratings(n_users: int = 30, n_movies: int = 40, seed: int = 0, density: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u, m = rng.normal(size=(n_users, 3)), rng.normal(size=(n_movies, 3))
    keep = rng.random((n_users, n_movies)) < density
    users, movies = np.nonzero(keep)
    rating = np.clip(np.round((3 + 0.6 * np.einsum("ij,ij->i", u[users], m[movies])) * 2) / 2, 0.5, 5.0)
    return pd.DataFrame(
        {
            "userId": users.astype(np.int64) + 1,
            "movieId": movies.astype(np.int64) + 100,
            "rating": rating.astype(np.float64),
        }
    )


def fake_result(
    train_df: pd.DataFrame,
    *,
    k: int = 4,
    epochs: int = 3,
    model: str = "bias",
    seed: int = 1,
    valid_rmse: float | None = 0.9,
) -> FitResult:
    rng = np.random.default_rng(seed)
    users = Vocabulary.from_ids(train_df["userId"].to_numpy())
    movies = Vocabulary.from_ids(train_df["movieId"].to_numpy())
    history = [
        EpochStats(e + 1, 1.0 / (e + 1), 0.9 / (e + 1), None if valid_rmse is None else 1.0 / (e + 1), 0.01 * (e + 1))
        for e in range(epochs)
    ]
    return FitResult(
        config=TrainConfig(model=model, factors=k, epochs=epochs),
        users=users,
        movies=movies,
        user_factors=rng.normal(size=(len(users), k)) * 0.3,
        movie_factors=rng.normal(size=(len(movies), k)) * 0.3,
        user_bias=rng.normal(size=len(users)) * 0.1 if model == "bias" else None,
        movie_bias=rng.normal(size=len(movies)) * 0.3 if model == "bias" else None,
        global_mean=float(train_df["rating"].mean()),
        history=history,
        device="cpu",
        fit_seconds=0.05,
        train_rmse=0.8,
        valid_rmse=valid_rmse,
    )


@pytest.fixture(scope="module")
def split():
    return split_ratings(synthetic_ratings(), 0.2, 0)


def block_map(outputs: mlay.MovielensOutputs, sheet: str) -> dict[str, object]:
    return {
        ref: value
        for top_left, rows in outputs.blocks[sheet]
        for ref, value in train_book._block_values(top_left, rows).items()
    }


def column(pkg: Package, sheet: str, ref: str) -> list:
    return [row[0].value for row in pkg.read_range(sheet, ref)]


# ------------------------------------------------------------------------------------------------------------
# interpretation (pure)


def test_bias_extremes_sorted_and_filtered_by_count():
    train = pd.DataFrame(
        {
            "userId": [1, 2, 3, 1, 2, 1, 1, 2, 3, 4],
            "movieId": [10, 10, 10, 11, 11, 12, 13, 13, 13, 13],
            "rating": [4.0, 5, 3, 2, 2, 5, 1, 2, 3, 4],
        }
    )
    counts = rating_counts(train)
    ids = np.array([10, 11, 12, 13])
    bias = np.array([0.5, -1.0, 3.0, -0.2])
    ext = bias_extremes(ids, bias, counts, n=2, min_ratings=2)
    assert ext.eligible == 3  # movie 12 has one rating
    assert ext.highest["movieId"].tolist() == [10, 13]
    assert ext.lowest["movieId"].tolist() == [11, 13]
    assert ext.highest["count"].tolist() == [3, 4]
    assert ext.lowest["mean"].tolist() == [2.0, 2.5]


def test_movie_pca_matches_numpy_eigendecomposition():
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(60, 5)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1])
    pca = movie_pca(np.arange(60) + 1, factors, n_components=3)
    cov = np.cov(factors, rowvar=False)
    eigenvalues = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(pca.explained_variance_ratio, eigenvalues[:3] / eigenvalues.sum(), rtol=1e-10)
    assert pca.explained_variance_ratio.sum() <= 1.0
    # scores are the centred factors projected on orthonormal components, uncorrelated
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(3), atol=1e-12)
    gram = pca.scores.T @ pca.scores
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-9)
    top, bottom = pca.extremes(0, 5)
    assert top["score"].is_monotonic_decreasing and bottom["score"].is_monotonic_increasing
    assert top["score"].iloc[0] == pytest.approx(np.abs(pca.scores[:, 0]).max())  # sign convention


def test_movie_pca_with_fewer_factors_than_components():
    pca = movie_pca(np.arange(10), np.random.default_rng(0).normal(size=(10, 2)), n_components=3)
    assert pca.scores.shape == (10, 2)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0)


def test_recommend_unrated_excludes_rated_and_sorts():
    table = {5: 4.0, 6: 4.5, 7: 3.0, 8: 4.5, 9: 1.0}

    def predict(users, movies):
        return np.array([table[int(m)] for m in movies])

    recs = recommend_unrated(predict, 1, np.array([5, 6, 7, 8, 9]), [6], n=3)
    assert recs["movieId"].tolist() == [8, 5, 7]
    assert recs["prediction"].tolist() == [4.5, 4.0, 3.0]


def test_binned_pred_vs_actual_counts_and_means():
    rng = np.random.default_rng(0)
    actual = rng.integers(1, 11, size=500) * 0.5
    pred = np.clip(actual + rng.normal(scale=0.7, size=500), -1, 7)
    binned = binned_pred_vs_actual(pred, actual)
    assert binned.counts.sum() == 500
    np.testing.assert_array_equal(binned.counts.sum(axis=1), binned.n_per_actual)
    means = pd.Series(pred).groupby(actual).mean()
    for level, mean in means.items():
        assert binned.mean_prediction[int(round(level * 2)) - 1] == pytest.approx(mean)
    assert binned.rmse == pytest.approx(np.sqrt(np.mean((pred - actual) ** 2)))
    assert to_half_star(np.array([-3, 0.74, 0.76, 9])).tolist() == [0, 0, 1, 9]


# ------------------------------------------------------------------------------------------------------------
# compute_outputs (pure)


def test_compute_outputs_values_are_cells_and_match_python(split):
    train, valid = split
    result = fake_result(train)
    titles = {100: "Movie 100", 101: "Movie 101"}
    out = mlout.compute_outputs(result, train, valid, titles, {"user_id": 3, "min_ratings": 5})
    for _sheet, blocks in out.blocks.items():
        for _, rows in blocks:
            for row in rows:
                for value in row:
                    assert value is None or isinstance(value, (int, float, str, bool))
                    if isinstance(value, float):
                        assert math.isfinite(value)
    # history: one row per epoch
    hist = block_map(out, "history")
    assert [hist[f"A{4 + i}"] for i in range(3)] == [1, 2, 3]
    assert hist["H2"] == 3 and out.history_rows == 3
    # recommend: unrated movies by prediction
    rec = block_map(out, "recommend")
    ids = [rec[f"B{mlay.REC_TOP + i}"] for i in range(10)]
    rated = set(pd.concat([train, valid]).query("userId == 3")["movieId"])
    assert not rated & set(ids)
    candidates = np.array(sorted(set(result.movies.ids) - rated))
    expected = candidates[np.argsort(-result.predict(np.full(len(candidates), 3), candidates), kind="stable")][:10]
    assert ids == expected.tolist()
    preds = [rec[f"D{mlay.REC_TOP + i}"] for i in range(10)]
    np.testing.assert_allclose(preds, result.predict(np.full(10, 3), np.array(ids)))
    # bias lists: sorted, every movie with >= 5 ratings
    bias = block_map(out, "movie_bias")
    high = [bias[f"D{mlay.BIAS_TOP + i}"] for i in range(15) if bias[f"D{mlay.BIAS_TOP + i}"] is not None]
    assert high == sorted(high, reverse=True)
    assert all(bias[f"E{mlay.BIAS_TOP + i}"] >= 5 for i in range(len(high)))
    # pred_vs_actual counts cover the validation set
    pva = block_map(out, "pred_vs_actual")
    assert sum(pva[f"{col_letter(c)}{mlay.PVA_TOP + r}"] for r in range(10) for c in range(2, 12)) == len(valid)
    # embeddings long table: one row per rated crosstab cell
    emb = block_map(out, "embeddings")
    n_rows = emb[mlay.EMB_ROWS_REF]
    assert n_rows == out.embedding_rows
    ct = ml_crosstab(train)
    assert n_rows == int(ct.notna().to_numpy().sum())
    assert out.summary["user_id"] == 3


def ml_crosstab(train):
    from xlcf.data import crosstab

    return crosstab(train, top=15)


def test_history_block_clears_rows_of_a_longer_previous_run(split):
    train, valid = split
    out = mlout.compute_outputs(fake_result(train, epochs=2), train, valid, {}, {"user_id": 1}, previous_history_rows=5)
    hist = block_map(out, "history")
    assert [hist[f"A{4 + i}"] for i in range(5)] == [1, 2, None, None, None]
    assert f"A{4 + 5}" not in hist and hist["H2"] == 2


def test_train_in_book_is_the_shared_seam(tmp_path):
    """Settings -> ratings -> training -> blocks through a BookIO, nothing written: the code every front end runs."""
    from xlcf.actions.sheetio import ZipBookIO

    book = small_book(tmp_path, epochs=1, factors=2, device="cpu")
    before = book.read_bytes()
    run = train_book.train_in_book(ZipBookIO(Package.open(book)))
    assert len(run.result.history) == 1 and len(run.train_df) + len(run.valid_df) == len(synthetic_ratings())
    assert run.titles == {} and run.source == str(tmp_path / "ratings.csv")
    assert run.relayout and "embeddings sheet left as it was" in run.status  # laid out for 3 factors, trained 2
    again = train_book.train_in_book(ZipBookIO(Package.open(book)), can_relayout=True)
    assert again.relayout and again.status == again.outputs.status  # the file path lays the sheet out again
    assert book.read_bytes() == before


def test_compute_outputs_without_biases_or_validation(split):
    train, _ = split
    result = fake_result(train, model="dot", valid_rmse=None)
    out = mlout.compute_outputs(result, train, None, {}, {"user_id": 1})
    bias = block_map(out, "movie_bias")
    assert "no movie biases" in bias["A4"]
    assert bias[f"B{mlay.BIAS_TOP}"] is None
    assert "valid RMSE -" in out.status


def test_too_many_factors_for_a_worksheet(split):
    train, valid = split
    with pytest.raises(ConfigError, match="16,384"):
        mlout.compute_outputs(fake_result(train, k=mlay.MAX_FACTORS + 1), train, valid, {}, {"user_id": 1})
    good = {s.name: s.default for s in mlay.SETTINGS}
    with pytest.raises(ConfigError, match="<= 4000"):
        mlset.parse_settings({**good, "factors": 5000})


def test_write_results_stores_the_source_relative_to_the_book(tmp_path, split, monkeypatch):
    train, valid = split
    (tmp_path / "data").mkdir()
    (tmp_path / "books").mkdir()
    (tmp_path / "data" / "ratings.csv").write_text("userId,movieId,rating\n1,100,4\n")
    monkeypatch.chdir(tmp_path)
    train_book.write_results("books/b.xlsx", fake_result(train), train, valid, {}, {"ratings": "data/ratings.csv"})
    source = Package.open(tmp_path / "books" / "b.xlsx").read_cell("movielens", mlay.SETTING_REF["ratings_source"])
    assert source.value == "../data/ratings.csv"
    far = tmp_path / "a" / "b"
    far.mkdir(parents=True)
    train_book.write_results(far / "c.xlsx", fake_result(train), train, valid, {}, {"ratings": "data/ratings.csv"})
    source = Package.open(far / "c.xlsx").read_cell("movielens", mlay.SETTING_REF["ratings_source"])
    assert source.value == str((tmp_path / "data" / "ratings.csv").resolve())


def test_compute_outputs_unknown_user(split):
    train, valid = split
    with pytest.raises(ConfigError, match="user id 999 is not in the training data"):
        mlout.compute_outputs(fake_result(train), train, valid, {}, {"user_id": 999})


# ------------------------------------------------------------------------------------------------------------
# generator


def test_build_movielens_layout_names_and_charts(tmp_path):
    path = mlbuild.build_movielens(tmp_path / "ml.xlsx", ratings_source="ratings.csv")
    pkg = Package.open(path)
    assert pkg.sheet_names == ["movielens", *mlay.OUTPUT_SHEETS]
    names = {n.name: n.value for n in pkg.names() if n.sheet == "movielens"}
    for setting in mlay.SETTINGS:
        ref = mlay.SETTING_REF[setting.name]
        assert names[setting.name] == f"'movielens'!${ref[0]}${ref[1:]}"
    assert "status" in names and "valid_rmse" in names
    assert pkg.read_cell("movielens", mlay.SETTING_REF["ratings_source"]).value == "ratings.csv"
    assert pkg.read_cell("movielens", mlay.SETTING_REF["factors"]).value is None  # blank: the optimizer's own
    assert pkg.read_cell("movielens", mlay.SETTING_REF["optimizer"]).value == "gibbs"
    assert pkg.read_cell("embeddings", mlay.EMB_FACTORS_REF).value == 32  # laid out for gibbs's k
    assert [c.value for c in pkg.read_range("recommend", f"A{mlay.REC_TOP - 1}:F{mlay.REC_TOP - 1}")[0]] == list(
        mlay.REC_COLUMNS
    )
    for sheet, n in (("history", 1), ("movie_bias", 2), ("movie_pca", 1), ("pred_vs_actual", 1)):
        assert len(pkg.chart_parts(sheet)) == n, sheet
    chart = pkg.read_member(pkg.chart_parts("history")[0]).decode()
    assert "$C$4:$C$13" in chart  # 10 rows laid out before any training
    from xlcf.actions.sheetio import ZipSheetIO

    settings = mlset.read_settings(ZipSheetIO(Package.open(path), "movielens"))
    assert settings["model"] == "bias" and settings["valid_pct"] == 0.2 and settings["epochs"] is None
    with pytest.raises(WorkbookError, match="already exists"):
        mlbuild.build_movielens(path)
    mlbuild.build_movielens(path, force=True)


# ------------------------------------------------------------------------------------------------------------
# writing into a workbook (zip Package)


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_write_results_creates_then_updates_in_place(tmp_path, split):
    train, valid = split
    book = tmp_path / "book.xlsx"
    first = fake_result(train, k=4, epochs=6)
    info = train_book.write_results(book, first, train, valid, {}, {"ratings": "r.csv", "user_id": 2})
    assert info["created"]
    pkg = Package.open(book)
    assert pkg.read_cell("movielens", mlay.SETTING_REF["ratings_source"]).value == "r.csv"
    assert pkg.read_cell("movielens", mlay.SETTING_REF["factors"]).value == 4
    assert column(pkg, "history", "A4:A9") == [1, 2, 3, 4, 5, 6]
    assert "$C$4:$C$9" in pkg.read_member(pkg.chart_parts("history")[0]).decode()
    before = members(book)

    # second run: fewer epochs, same k -> values updated, stale history rows cleared, chart range shrunk
    second = fake_result(train, k=4, epochs=3, seed=7)
    info = train_book.write_results(book, second, train, valid, {}, {})
    assert not info["created"] and not info["embeddings_relaid"]
    after = members(book)
    assert list(after) == list(before)  # no sheet or part duplicated
    changed = {n for n in after if after[n] != before[n]}
    assert changed <= {"xl/workbook.xml"} | {f"xl/worksheets/sheet{i}.xml" for i in range(1, 9)} | {
        "xl/charts/chart1.xml"
    }
    pkg = Package.open(book)
    assert column(pkg, "history", "A4:A9") == [1, 2, 3, None, None, None]
    assert "$C$4:$C$6" in pkg.read_member(pkg.chart_parts("history")[0]).decode()
    assert pkg.read_cell("recommend", "B2").value == 2  # user id kept from the book
    u_row = second.users.index(np.array([int(pkg.read_cell("embeddings", "A6").value)]))[0]
    np.testing.assert_allclose([c.value for c in pkg.read_range("embeddings", "B6:E6")[0]], second.user_factors[u_row])

    # third run with another k: the embeddings sheet is laid out again, still one sheet of that name
    third = fake_result(train, k=6, epochs=3, seed=8)
    info = train_book.write_results(book, third, train, valid, {}, {})
    assert info["embeddings_relaid"]
    again = members(book)
    assert list(again) == list(before)
    pkg = Package.open(book)
    assert pkg.sheet_names.count("embeddings") == 1
    assert pkg.read_cell("embeddings", mlay.EMB_FACTORS_REF).value == 6
    lay = mlay.EmbeddingsLayout(6)
    f = pkg.read_cell("embeddings", f"{col_letter(lay.umm)}{mlay.EMB_LONG_TOP}")
    assert f.formula is not None and f.formula.startswith("=MMULT(") and "$G$20" in f.formula


def add_calc_chain(book: Path) -> None:
    """What Excel saves: xl/calcChain.xml + its relationship + content type."""
    import re

    parts = members(book)
    parts["xl/calcChain.xml"] = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<calcChain xmlns='
        b'"http://schemas.openxmlformats.org/spreadsheetml/2006/main"><c r="F42" i="8"/>'
        b"</calcChain>"
    )
    rel = (
        '<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'calcChain" Target="calcChain.xml"/></Relationships>'
    )
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(b"</Relationships>", rel.encode())
    ct = (
        '<Override PartName="/xl/calcChain.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'spreadsheetml.calcChain+xml"/></Types>'
    )
    parts["[Content_Types].xml"] = re.sub(b"</Types>", ct.encode(), parts["[Content_Types].xml"])
    with zipfile.ZipFile(book, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)


def test_relayout_drops_the_calculation_chain(tmp_path, split):
    train, valid = split
    book = tmp_path / "book.xlsx"
    mlbuild.build_movielens(book, ratings_source="r.csv", settings={"factors": 4})
    add_calc_chain(book)
    info = train_book.write_results(book, fake_result(train, k=3), train, valid, {}, {"user_id": 1})
    assert info["embeddings_relaid"]
    after = members(book)
    assert "xl/calcChain.xml" not in after
    assert b"calcChain" not in after["xl/_rels/workbook.xml.rels"]
    assert b"calcChain" not in after["[Content_Types].xml"]


def test_write_keeps_user_sheets_and_charts(tmp_path, split):
    """A workbook someone extended (another sheet with a value) keeps it byte-for-byte."""
    import openpyxl

    train, valid = split
    book = tmp_path / "book.xlsx"
    mlbuild.build_movielens(book, ratings_source="r.csv", settings={"factors": 4})
    wb = openpyxl.load_workbook(book)
    wb.create_sheet("notes")["A1"] = "my notes"
    wb.save(book)
    before = members(book)
    info = train_book.write_results(book, fake_result(train), train, valid, {}, {"user_id": 1})
    assert info["embeddings_relaid"]  # 225 template rows -> the rated cells of this crosstab
    after = members(book)
    notes_part = f"xl/worksheets/sheet{len(mlay.OUTPUT_SHEETS) + 2}.xml"
    assert after[notes_part] == before[notes_part]
    assert after["xl/styles.xml"] == before["xl/styles.xml"]


# ------------------------------------------------------------------------------------------------------------
# settings and bad input (nothing written)


def test_embeddings_formulas_are_the_generators(tmp_path, split):
    train, valid = split
    book = tmp_path / "book.xlsx"
    train_book.write_results(book, fake_result(train, k=2), train, valid, {}, {"user_id": 1})
    pkg = Package.open(book)
    rows = int(pkg.read_cell("embeddings", mlay.EMB_ROWS_REF).value)
    formulas = mlbuild.embeddings_formulas(2, rows)
    assert len(formulas) == rows * (2 * 2 + 2 * 15 + 3) + 2
    for ref, formula, array_ref, _ in formulas:
        cell = pkg.read_cell("embeddings", ref)
        assert cell.formula == formula, ref
        assert (cell.formula_type == "array") == (array_ref is not None)


def test_parse_settings_errors_name_the_cell():
    good = {s.name: s.default for s in mlay.SETTINGS}
    assert mlset.parse_settings(good)["factors"] is None  # the optimizer's default
    assert mlset.parse_settings(good)["optimizer"] == "gibbs"
    assert mlset.parse_settings({**good, "valid_pct": "20%"})["valid_pct"] == pytest.approx(0.2)
    cases = [
        ({"valid_pct": 0}, "movielens!B12: validation %"),
        ({"valid_pct": 0.95}, r"\(0, 0.9\]"),
        ({"factors": 0}, "movielens!B11: factors is 0"),
        ({"factors": 2.5}, "whole number"),
        ({"epochs": "abc"}, "movielens!B8: epochs is 'abc'"),
        ({"model": "svd"}, "dot, bias, nn"),
        ({"ratings_source": "  "}, "ratings source is empty"),
        ({"lr": -1}, "learning rate"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            mlset.parse_settings({**good, **change})
    with pytest.raises(ConfigError, match="--factors"):
        mlset.parse_settings(good, {"factors": 0})
    with pytest.raises(ConfigError, match="unknown movielens setting 'colour'"):
        mlset.parse_settings(good, {"colour": "red"})


def small_book(tmp_path: Path, **settings) -> Path:
    data = tmp_path / "ratings.csv"
    synthetic_ratings().to_csv(data, index=False)
    return mlbuild.build_movielens(
        tmp_path / "book.xlsx", settings={"ratings_source": "ratings.csv", "factors": 3, **settings}
    )


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"ratings_source": "missing.csv"}, DataError, "movielens!B5: ratings source 'missing.csv' not found"),
        ({"ratings_source": "not_ratings.csv"}, DataError, "movielens!B5: .*not_ratings.csv"),
        ({"user_id": 12345}, ConfigError, "movielens!B15: user id 12345 is not in ratings.csv"),
        ({"valid_pct": 1.5}, ConfigError, r"validation % is 1.5; expected a share in \(0, 0.9\]"),
        ({"valid_pct": 0}, ConfigError, "validation %"),
        ({"factors": 0}, ConfigError, "movielens!B11: factors is 0; expected >= 1"),
        ({"optimizer": "nadam"}, ConfigError, "movielens!B7: unknown optimizer 'nadam'"),
        ({"device": "cuda:99"}, ConfigError, "movielens!B14: device 'cuda:99'"),
    ],
)
def test_bad_input_leaves_the_workbook_unchanged(tmp_path, overrides, error, message):
    book = small_book(tmp_path, **overrides)  # the bad value sits in its settings cell
    (tmp_path / "not_ratings.csv").write_text("name,colour\nann,red\n")
    before = book.read_bytes()
    with pytest.raises(error, match=message) as info:
        train_book.train_workbook(book)
    assert isinstance(info.value, XlcfError)
    assert book.read_bytes() == before


def test_bad_override_names_the_flag(tmp_path):
    book = small_book(tmp_path)
    before = book.read_bytes()
    with pytest.raises(ConfigError, match="--valid-pct: validation % is 2"):
        train_book.train_workbook(book, overrides={"valid_pct": 2})
    assert book.read_bytes() == before


def test_bad_setting_cell_in_the_workbook(tmp_path):
    book = small_book(tmp_path)
    pkg = Package.open(book)
    pkg.write_values("movielens", {mlay.SETTING_REF["factors"]: "many"})
    pkg.save()
    before = book.read_bytes()
    with pytest.raises(ConfigError, match="movielens!B11: factors is 'many'; expected a number"):
        train_book.train_workbook(book)
    assert book.read_bytes() == before


def test_not_a_movielens_workbook(tmp_path):
    import openpyxl

    path = tmp_path / "other.xlsx"
    openpyxl.Workbook().save(path)
    with pytest.raises(WorkbookError, match="no 'movielens' sheet"):
        train_book.train_workbook(path)


# ------------------------------------------------------------------------------------------------------------
# training through the engine on tiny data (all three models; the nn settings reach TrainConfig)


@pytest.mark.parametrize("model", ["dot", "bias", "nn"])
def test_train_workbook_each_model(tmp_path, model):
    book = small_book(
        tmp_path,
        model=model,
        optimizer="adam",
        epochs=2,
        hidden=7,
        dropout_emb=0.1,
        dropout_hidden=0.3,
        device="cpu",
        min_ratings=3,
    )
    seen = []
    summary, result, prep = train_book.train_workbook_result(
        book, callback=lambda stats: seen.append((stats.run, stats.epoch))
    )
    # Tiny data trains full batch, where the optimizers' defaults include multistart: each run reports epochs 1, 2.
    runs = max(len(result.runs), 1)
    assert seen == [(run, epoch) for run in range(runs) for epoch in (1, 2)]
    assert result.config.model == model and summary["epochs_run"] == 2
    if model == "nn":
        assert result.config.hidden == 7 and tuple(result.config.dropout) == (0.1, 0.3)
    pkg = Package.open(book)
    assert pkg.read_cell("movielens", mlay.METRIC_REF["model_used"]).value == model
    note = pkg.read_cell("movie_bias", "A4").value
    assert ("no movie biases" in note) == (model == "dot")  # bias and nn (EmbeddingNet + biases) have them
    assert pkg.read_cell("movielens", mlay.STATUS_REF).value == summary["status"]


def test_cli_new_and_fit_movielens(tmp_path, capsys):
    import json

    from xlcf.cli import main

    synthetic_ratings().to_csv(tmp_path / "ratings.csv", index=False)
    book = tmp_path / "cli.xlsx"
    assert main(["new", "movielens", "-o", str(book), "--ratings", "ratings.csv"]) == 0
    capsys.readouterr()
    assert main(["fit", str(book), "--sheet", "movielens", "--epochs", "2", "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2 and summary["sheet"] == "movielens"
    assert Package.open(book).read_cell("history", "A5").value == 2
    before = book.read_bytes()
    summary = train_book.train_workbook(book, overrides={"epochs": 1}, dry_run=True)
    assert summary["dry_run"] and summary["epochs_run"] == 1
    assert book.read_bytes() == before
    # `xlcf fit --dry-run` on the movielens sheet trains and reports, writes nothing (a read-only book is fine)
    book.chmod(0o444)
    try:
        assert (
            main(["fit", str(book), "--sheet", "movielens", "--epochs", "1", "--device", "cpu", "--dry-run", "--json"])
            == 0
        )
    finally:
        book.chmod(0o644)
    summary = json.loads(capsys.readouterr().out)
    assert summary["dry_run"] and summary["cells_written"] == 0 and summary["epochs_run"] == 1
    assert book.read_bytes() == before
    assert main(["fit", str(book), "--sheet", "movielens", "--lr", "-1"]) == 2
    assert "learning rate" in capsys.readouterr().err
    assert book.read_bytes() == before


def test_divergence_writes_nothing(tmp_path):
    from xlcf.errors import DivergenceError

    book = small_book(tmp_path, optimizer="sgd", lr=1e12, epochs=3, device="cpu")
    before = book.read_bytes()
    with pytest.raises(DivergenceError, match="lr"):
        train_book.train_workbook(book)
    assert book.read_bytes() == before


@pytest.mark.parametrize("optimizer", ["gibbs", "adam"])
def test_recommend_sheet_shows_the_predictive_std_of_a_gibbs_fit(tmp_path, optimizer):
    """With gibbs the ± column holds each recommendation's posterior predictive std; other optimizers leave it blank."""
    book = small_book(tmp_path, optimizer=optimizer, epochs=12, device="cpu", user_id=3)
    summary, result, _run = train_book.train_workbook_result(book)
    rows = [
        [c.value for c in row]
        for row in Package.open(book).read_range("recommend", f"A{mlay.REC_TOP}:F{mlay.REC_TOP + 9}")
    ]
    ids = np.array([r[1] for r in rows if r[1] is not None], dtype=np.int64)
    assert len(ids) == 10 and summary["optimizer_used"] == optimizer
    shown = [r[4] for r in rows]
    if optimizer == "gibbs":
        np.testing.assert_allclose(shown, result.predict_std(np.full(10, 3), ids), rtol=1e-12)
        assert all(0.05 < v < 3 for v in shown)  # a rating's spread, in stars
    else:
        assert shown == [None] * 10
