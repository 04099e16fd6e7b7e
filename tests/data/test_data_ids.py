"""Ids are read exactly: as integers from the text, never through a float; what is not an int64 integer is an
error naming file:line:column."""

from __future__ import annotations

import numpy as np
import pytest

from xlcf.cli import main
from xlcf.data import load_ratings, load_titles
from xlcf.data.ratings import parse_integer_texts, parse_ratings
from xlcf.errors import DataError

HEADER = "userId,movieId,rating\n"
INT64_MAX = 2**63 - 1


def parse(text: str):
    return parse_ratings(text.encode(), label="r.csv")


def test_an_id_of_2_to_the_63_is_refused_not_wrapped():
    with pytest.raises(DataError) as info:
        parse(HEADER + "1,1,4\n9223372036854775808,1,3\n")
    err = info.value
    assert err.where == "r.csv:3:1" and err.field == "userId"
    assert "outside the range of 64-bit integers" in str(err) and "9223372036854775808" in str(err)
    assert str(err).count("r.csv:3:1") == 1


def test_the_int64_extremes_are_exact():
    df = parse(HEADER + f"{INT64_MAX},1,4\n{-INT64_MAX - 1},1,3\n")
    assert df["userId"].tolist() == [INT64_MAX, -INT64_MAX - 1]
    assert df["userId"].dtype == np.int64


def test_ids_above_2_to_the_53_beside_a_2_point_0_stay_distinct():
    # As floats, 2**53 + 1 would round onto 2**53 and the two users would merge.
    df = parse(HEADER + f"{2**53 + 1},1,4\n{2**53},1,3\n2.0,1,3\n")
    assert df["userId"].tolist() == [2**53 + 1, 2**53, 2]
    assert df["userId"].nunique() == 3


def test_a_fractional_id_names_its_cell():
    with pytest.raises(DataError) as info:
        parse(HEADER + "1,1,4\n1,2.5,3\n")
    assert info.value.where == "r.csv:3:2" and info.value.field == "movieId"
    assert "'2.5' is not an integer id (not a whole number)" in str(info.value)


@pytest.mark.parametrize("text", ["1e3", "1.5E+2", "2.000001", "0x10", "12abc", "1 2", "inf", "nan"])
def test_what_is_not_an_integer_is_refused(text):
    with pytest.raises(DataError, match=r"r\.csv:3:1: userId .* is not an integer id"):
        parse(HEADER + f"1,1,4\n{text},1,3\n")


def test_minus_zero_is_zero_and_whitespace_is_ignored():
    df = parse(HEADER + "-0,1,4\n 12 ,1,3\n+7,  3  ,2\n007,4,1\n")
    assert df["userId"].tolist() == [0, 12, 7, 7]
    assert df["movieId"].tolist() == [1, 1, 3, 4]
    with pytest.raises(DataError, match="duplicate rating for userId 0, movieId 1"):
        parse(HEADER + "-0,1,4\n0,1,3\n")  # the same id twice


def test_parse_integer_texts_directly():
    values, bad, out_of_range = parse_integer_texts(
        ["3", "-3", "3.00", "3.5", str(2**63), str(-(2**63) - 1), "99999999999999999999", ""]
    )
    assert values[:3].tolist() == [3, -3, 3]
    assert bad.tolist() == [False, False, False, True, True, True, True, True]
    assert out_of_range.tolist() == [False, False, False, False, True, True, True, False]


def test_timestamps_beyond_int64_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4,5\n2,1,4,9223372036854775808\n")
    with pytest.warns(UserWarning, match=r"ratings\.csv:3:4: timestamp .* outside the range"):
        df = load_ratings(path)
    assert "timestamp" not in df and df["userId"].tolist() == [1, 2]


def test_movie_titles_with_huge_ids_are_exact(tmp_path):
    (tmp_path / "ratings.csv").write_text(HEADER + f"1,{2**53 + 1},4\n")
    (tmp_path / "movies.csv").write_text(f"movieId,title\n{2**53 + 1},A\n{2**53},B\n")
    assert load_titles(tmp_path) == {2**53 + 1: "A", 2**53: "B"}
    (tmp_path / "movies.csv").write_text("movieId,title\n1,A\n2.5,B\n")
    with pytest.raises(DataError, match=r"movies\.csv:3:1: movieId '2\.5' is not an integer id"):
        load_titles(tmp_path)


def test_the_cli_reports_a_bad_id_in_one_line(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    path.write_text(HEADER + "1,1,4\n9223372036854775808,1,3\n")
    assert main(["crosstab", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{path}:3:1: userId '9223372036854775808' is outside the range of 64-bit integers" in err
