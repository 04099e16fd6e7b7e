"""Loading ratings: every source kind, the schema, and one clear line for every ordinary mistake."""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlcf.cli import main
from xlcf.data import DataWarning, load_ratings, load_titles, resolve_source
from xlcf.errors import ConfigError, DataError

HEADER = "userId,movieId,rating,timestamp\n"
GOOD = HEADER + "1,10,4.0,100\n1,20,3.5,101\n2,10,5.0,102\n3,30,0.5,103\n"


def write(folder: Path, text: str | bytes, name: str = "ratings.csv") -> Path:
    path = folder / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def make_zip(
    folder: Path,
    ratings: str,
    movies: str | None = None,
    name: str = "ml-latest-small.zip",
    inner: str = "ml-latest-small",
) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{inner}/README.txt", "readme")
        archive.writestr(f"{inner}/ratings.csv", ratings)
        if movies is not None:
            archive.writestr(f"{inner}/movies.csv", movies)
    return path


# --- the sources -------------------------------------------------------------------------------


def test_csv_path_gives_the_schema_in_file_order(tmp_path):
    df = load_ratings(write(tmp_path, GOOD))
    assert list(df.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float64", "int64"]
    assert df["userId"].tolist() == [1, 1, 2, 3]
    assert df["movieId"].tolist() == [10, 20, 10, 30]
    assert df["rating"].tolist() == [4.0, 3.5, 5.0, 0.5]
    assert df["timestamp"].tolist() == [100, 101, 102, 103]
    assert isinstance(df.index, pd.RangeIndex)


def test_timestamp_is_optional_and_extra_columns_are_ignored(tmp_path):
    df = load_ratings(write(tmp_path, "movieId,extra,userId,rating\n7,x,1,2.5\n8,y,2,3\n"))
    assert list(df.columns) == ["userId", "movieId", "rating"]
    assert df.to_numpy().tolist() == [[1, 7, 2.5], [2, 8, 3.0]]
    assert df["rating"].dtype == np.float64


def test_folder_holding_ratings_csv(tmp_path):
    write(tmp_path, GOOD)
    assert len(load_ratings(tmp_path)) == 4
    assert len(load_ratings(str(tmp_path))) == 4


def test_grouplens_zip(tmp_path):
    path = make_zip(tmp_path, GOOD, "movieId,title,genres\n10,Ten (1990),Drama\n")
    df = load_ratings(path)
    assert df["movieId"].tolist() == [10, 20, 10, 30]
    assert load_titles(path) == {10: "Ten (1990)"}


def test_crlf_and_bom_as_excel_writes_them(tmp_path):
    text = "\ufeff" + GOOD.replace("\n", "\r\n")
    df = load_ratings(write(tmp_path, text))
    assert df["rating"].tolist() == [4.0, 3.5, 5.0, 0.5]


def test_blank_lines_are_skipped(tmp_path):
    df = load_ratings(write(tmp_path, HEADER + "1,10,4.0,1\n\n2,10,3.0,2\n\n"))
    assert df["userId"].tolist() == [1, 2]


def test_titles_beside_csv_folder_and_none(tmp_path):
    write(tmp_path, GOOD)
    assert load_titles(tmp_path / "ratings.csv") == {}
    write(tmp_path, 'movieId,title,genres\n10,"Matrix, The (1999)",Action\n20,Heat (1995),Crime\n', "movies.csv")
    expected = {10: "Matrix, The (1999)", 20: "Heat (1995)"}
    assert load_titles(tmp_path / "ratings.csv") == expected
    assert load_titles(tmp_path) == expected
    assert load_titles(tmp_path / "movies.csv") == expected
    assert resolve_source(tmp_path).movies_path == tmp_path / "movies.csv"


def test_real_2016_release(ml2016):
    df = load_ratings(ml2016 / "ratings.csv")
    assert len(df) == 100_004
    assert df["userId"].nunique() == 671 and df["movieId"].nunique() == 9066
    assert df["rating"].between(0.5, 5.0).all()
    assert len(load_titles(ml2016)) == 9125


def test_real_2018_release_warns_about_its_one_bad_timestamp(ml2018):
    # ratings.csv:522 of the copy in ../shared/data reads "84743496 https://..." in the timestamp column.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_ratings(ml2018)
    assert len(df) == 100_836
    assert df["userId"].nunique() == 610 and df["movieId"].nunique() == 9724
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    if "timestamp" not in df:  # the known bad line is there: it is named, and ratings are complete
        assert len(messages) == 1 and "ratings.csv:522:4" in messages[0]


def test_malformed_timestamp_drops_timestamps_with_a_warning(tmp_path):
    with pytest.warns(DataWarning, match=r"ratings\.csv:3:4: timestamp 'soon' is not an integer"):
        df = load_ratings(write(tmp_path, HEADER + "1,10,4.0,1\n1,11,4.0,soon\n"))
    assert list(df.columns) == ["userId", "movieId", "rating"]
    assert df["movieId"].tolist() == [10, 11]


# --- duplicates --------------------------------------------------------------------------------

DUPES = HEADER + "1,10,4.0,1\n2,10,1.0,2\n1,10,2.0,3\n1,20,3.0,4\n1,10,3.0,5\n"


def test_duplicates_error_by_default_naming_both_lines(tmp_path):
    with pytest.raises(DataError) as err:
        load_ratings(write(tmp_path, DUPES))
    message = str(err.value)
    assert "ratings.csv:4:" in message and "first at line 2" in message
    assert "userId 1, movieId 10" in message and "2 duplicates" in message and "\n" not in message


def test_duplicates_last_keeps_the_last_occurrence(tmp_path):
    df = load_ratings(write(tmp_path, DUPES), duplicates="last")
    assert df[["userId", "movieId", "rating", "timestamp"]].to_numpy().tolist() == [
        [2, 10, 1.0, 2],
        [1, 20, 3.0, 4],
        [1, 10, 3.0, 5],
    ]


def test_duplicates_mean_averages_at_the_first_position(tmp_path):
    df = load_ratings(write(tmp_path, DUPES), duplicates="mean")
    assert df["userId"].tolist() == [1, 2, 1]
    assert df["movieId"].tolist() == [10, 10, 20]
    assert df["rating"].tolist() == [3.0, 1.0, 3.0]  # (4 + 2 + 3) / 3
    assert df["timestamp"].tolist() == [5, 2, 4]
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float64", "int64"]


def test_bad_options_are_config_errors(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="duplicates='first': expected one of error, last, mean"):
        load_ratings(path, duplicates="first")
    with pytest.raises(ConfigError, match="lowest < highest"):
        load_ratings(path, scale=(5, 1))


def test_declared_scale(tmp_path):
    path = write(tmp_path, "userId,movieId,rating\n1,2,1\n1,3,10\n")
    assert load_ratings(path, scale=(1, 10))["rating"].tolist() == [1.0, 10.0]


# --- bad input: one line, file:line:column, and the CLI exits non-zero with the same message -----

BAD_INPUTS = {
    "empty file": ("", r"ratings\.csv: file is empty"),
    "only whitespace": ("\n\n  \n", r"ratings\.csv: file is empty"),
    "header only": (HEADER, r"ratings\.csv: no ratings, only the header line"),
    "missing column": (
        "userId,movieId,score\n1,2,3\n",
        r"ratings\.csv:1: missing column rating; found columns: 'userId', 'movieId', 'score'",
    ),
    "missing two columns": (
        "user,movieId\n1,2\n",
        r"ratings\.csv:1: missing columns userId, rating; found columns: "
        r"'user', 'movieId'",
    ),
    "no header": ("1,10,4.0,5\n2,10,3.0,6\n", r"ratings\.csv:1: no header line: expected userId,movieId,rating"),
    "non-numeric rating": (
        HEADER + "1,10,4.0,1\n1,11,four,2\n",
        r"ratings\.csv:3:3: rating 'four' is not a number \(column 3 'rating'\)",
    ),
    "empty rating": (
        HEADER + "1,10,4.0,1\n1,11,4.0,2\n1,12,,3\n",
        r"ratings\.csv:4:3: empty rating \(column 3 'rating'\), expected a number from 0.5 to 5",
    ),
    "nan rating": (HEADER + "1,10,nan,1\n", r"ratings\.csv:2:3: rating 'nan' is not a number"),
    "rating above scale": (
        HEADER + "1,10,4.0,1\n1,11,5.5,2\n1,12,7,2\n",
        r"ratings\.csv:3:3: rating 5.5 is outside the scale 0.5 to 5 \(column 3 'rating'; 2 rows outside in all",
    ),
    "rating below scale": (HEADER + "1,10,0,1\n", r"ratings\.csv:2:3: rating 0 is outside the scale 0.5 to 5"),
    "infinite rating": (HEADER + "1,10,inf,1\n", r"ratings\.csv:2:3: rating inf is outside the scale"),
    "rating column elsewhere": (
        "rating,userId,movieId\n4,1,2\nx,1,3\n",
        r"ratings\.csv:3:1: rating 'x' is not a number \(column 1 'rating'\)",
    ),
    "bad user id": (HEADER + "1,10,4.0,1\nbob,11,4.0,2\n", r"ratings\.csv:3:1: userId 'bob' is not an integer id"),
    "fractional movie id": (HEADER + "1,10.5,4.0,1\n", r"ratings\.csv:2:2: movieId '10.5' is not an integer id"),
    "empty movie id": (HEADER + "1,,4.0,1\n", r"ratings\.csv:2:2: empty movieId"),
    "duplicate pair": (
        HEADER + "1,10,4.0,1\n1,10,3.0,2\n",
        r"ratings\.csv:3: duplicate rating for userId 1, movieId 10 \(first at line 2",
    ),
    "semicolons": (
        "userId;movieId;rating;timestamp\n1;10;4.0;1\n",
        r"ratings\.csv:1: expected comma-separated values, but the header is semicolon-separated",
    ),
    "tabs": (
        "userId\tmovieId\trating\n1\t10\t4.0\n",
        r"ratings\.csv:1: expected comma-separated values, but the header is tab-separated",
    ),
    "extra field": (HEADER + "1,10,4.0,1\n1,11,4.0,2,9\n", r"ratings\.csv:3: 5 fields, expected 4 as in the header"),
    "blank lines keep line numbers": (HEADER + "1,10,4.0,1\n\n\n1,11,x,2\n", r"ratings\.csv:5:3: rating 'x'"),
    "commas only": (HEADER + "1,10,4.0,1\n,,,\n", r"ratings\.csv:3:1: empty userId"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", r"ratings\.csv:1: not UTF-8 text"),
    "latin-1 further down": (
        (HEADER + "1,10,4.0,1\n" * 3000).encode() + b"1,\xe9,4.0,1\n",
        r"ratings\.csv:3002: not UTF-8 text \(save it as CSV UTF-8",
    ),
    "blank first line": ("\n" + GOOD, r"ratings\.csv:1: the first line is blank; expected the header"),
    "trailing comma everywhere": ("userId,movieId,rating,\n1,2,3,\n1,3,x,\n", r"ratings\.csv:3:3: rating 'x'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line(case, tmp_path, capsys):
    text, pattern = BAD_INPUTS[case]
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as err:
        load_ratings(path)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(str(path))

    assert main(["crosstab", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlcf crosstab: error: ")
    assert "Traceback" not in captured.err
    assert re.search(pattern, lines[0])


def test_errors_inside_a_zip_name_the_member(tmp_path):
    path = make_zip(tmp_path, HEADER + "1,10,4.0,1\n1,11,9,2\n")
    with pytest.raises(DataError, match=r"ml-latest-small\.zip/ml-latest-small/ratings\.csv:3:3: rating 9 is outside"):
        load_ratings(path)


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    with pytest.raises(
        DataError,
        match=r"nope\.csv: file not found \(expected a ratings CSV, a folder holding "
        r"ratings\.csv, a GroupLens zip, or one of the names: ml-latest-small\)",
    ):
        load_ratings(missing)
    assert main(["crosstab", str(missing)]) == 2
    assert "nope.csv: file not found" in capsys.readouterr().err


def test_folder_without_ratings_csv(tmp_path, capsys):
    write(tmp_path, "x", "other.csv")
    with pytest.raises(DataError, match=r"no ratings\.csv in this folder \(found: other\.csv\)"):
        load_ratings(tmp_path)
    assert main(["crosstab", str(tmp_path)]) == 2


def test_zip_without_ratings_and_damaged_zip(tmp_path, capsys):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data/links.csv", "a,b\n")
    with pytest.raises(
        DataError,
        match=r"other\.zip: the zip holds no ratings\.csv \(it holds 1 files, e\.g\. "
        r"data/links\.csv\)",
    ):
        load_ratings(path)
    assert main(["crosstab", str(path)]) == 2
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(path.read_bytes()[:-30])  # central directory cut off
    with pytest.raises(DataError):
        load_ratings(damaged)


def test_bad_movies_csv_is_named(tmp_path):
    write(tmp_path, GOOD)
    write(tmp_path, "movieId,title\n10,Ten\nten,Eleven\n", "movies.csv")
    with pytest.raises(DataError, match=r"movies\.csv:3:1: movieId 'ten' is not an integer id"):
        load_titles(tmp_path)
    write(tmp_path, "id,name\n10,Ten\n", "movies.csv")
    with pytest.raises(DataError, match=r"movies\.csv:1: missing column movieId, title; found columns: id, name"):
        load_titles(tmp_path)


@pytest.mark.parametrize("text", [HEADER + "1,10,4.0,1,9\n1,11,4.0,2\n", HEADER + "1,10,4.0,1,9\n1,11,4.0,2,9\n"])
def test_extra_field_on_the_first_data_line(text, tmp_path):
    # pandas would silently take the first column as an index here; the loader must not.
    with pytest.raises(DataError, match=r"ratings\.csv:2: 5 fields, expected 4 as in the header"):
        load_ratings(write(tmp_path, text))


def test_header_names_with_spaces_and_quotes(tmp_path):
    df = load_ratings(write(tmp_path, ' userId , "movieId",rating\n1,2,3\n'))
    assert df.to_numpy().tolist() == [[1, 2, 3.0]]
