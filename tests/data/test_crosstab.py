"""The lesson's crosstab: selection rule, the exact 15x15 table of the lesson, and `xlcf crosstab`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlcf.cli import main
from xlcf.data import crosstab, lesson_crosstab, load_ratings
from xlcf.errors import DataError

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent / "shared" / "seed" / "000_bed403e63abe39be.txt"


def lesson_table_from_seed() -> pd.DataFrame:
    """The 15x15 table as printed in the lesson text (tab-separated, 'NaN' for unrated)."""
    if not SEED.exists():
        pytest.skip(f"lesson text not found at {SEED}")
    lines = SEED.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("movield\t1\t110"))
    movies = [int(x) for x in lines[start].split("\t")[1:]]
    assert lines[start + 1].startswith("userld")
    rows = {}
    for line in lines[start + 2 : start + 17]:
        fields = line.split("\t")
        assert len(fields) == 16, line
        rows[int(fields[0])] = [np.nan if v == "NaN" else float(v) for v in fields[1:]]
    return pd.DataFrame.from_dict(rows, orient="index", columns=movies)


def assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert actual.index.tolist() == expected.index.tolist()
    assert [int(c) for c in actual.columns] == [int(c) for c in expected.columns]
    for user in expected.index:  # cell by cell, so a failure names the cell
        for movie in expected.columns:
            want, got = expected.at[user, movie], actual.at[user, movie]
            assert (np.isnan(want) and np.isnan(got)) or want == got, f"user {user}, movie {movie}: {got} != {want}"


# --- selection rule on tiny data ----------------------------------------------------------------


def ratings_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["userId", "movieId", "rating"]).astype(
        {"userId": "int64", "movieId": "int64", "rating": "float64"}
    )


def test_ties_go_to_the_smaller_id_and_output_is_sorted_by_id():
    # users 9 and 4 tie with 2 ratings each (user 4 wins), user 8 has 3; movies 50 and 20 tie at 2 (20 wins).
    df = ratings_frame(
        [
            (9, 50, 1.0),
            (9, 20, 2.0),
            (8, 50, 3.0),
            (8, 20, 3.5),
            (8, 70, 4.0),
            (4, 70, 4.5),
            (4, 80, 5.0),
            (7, 70, 0.5),
            (7, 90, 1.5),
        ]
    )
    table = crosstab(df, top=2)
    assert table.index.tolist() == [4, 8] and table.index.name == "userId"
    assert table.columns.tolist() == [20, 70] and table.columns.name == "movieId"
    assert table.dtypes.tolist() == [np.float64, np.float64]
    assert np.isnan(table.at[4, 20]) and table.at[4, 70] == 4.5
    assert table.at[8, 20] == 3.5 and table.at[8, 70] == 4.0
    # Row order of the input does not matter (the order is total, not "first seen").
    assert crosstab(df.iloc[::-1], top=2).equals(table)


def test_a_top_movie_nobody_in_the_top_users_rated_is_an_empty_column():
    df = ratings_frame(
        [(1, 10, 4.0), (1, 11, 4.0), (1, 12, 4.0), (2, 10, 3.0), (2, 11, 3.0), (3, 99, 1.0), (4, 99, 2.0), (5, 99, 3.0)]
    )
    table = crosstab(df, top=2)
    assert table.index.tolist() == [1, 2] and table.columns.tolist() == [10, 99]
    assert table[99].isna().all()


def test_top_larger_than_the_data_keeps_everything():
    df = ratings_frame([(2, 5, 1.0), (1, 6, 2.0)])
    table = crosstab(df, top=15)
    assert table.shape == (2, 2) and int(table.notna().to_numpy().sum()) == 2


def test_bad_arguments():
    df = ratings_frame([(1, 1, 1.0)])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="top=.*expected a whole number >= 1"):
            crosstab(df, top=bad)
    with pytest.raises(DataError, match="duplicate"):
        crosstab(ratings_frame([(1, 1, 1.0), (1, 1, 2.0)]))
    with pytest.raises(DataError, match="missing column rating"):
        crosstab(df[["userId", "movieId"]])


# --- the lesson's table ------------------------------------------------------------------------


def test_2016_release_gives_the_lessons_table_cell_by_cell(ml2016):
    expected = lesson_table_from_seed()
    ratings = load_ratings(ml2016 / "ratings.csv")
    table = crosstab(ratings, top=15)
    assert table.index.tolist() == [15, 30, 73, 212, 213, 294, 311, 380, 452, 468, 509, 547, 564, 580, 624]
    assert table.columns.tolist() == [1, 110, 260, 296, 318, 356, 480, 527, 589, 593, 608, 1196, 1198, 1270, 2571]
    assert int(table.notna().to_numpy().sum()) == 206
    assert_same_table(table, expected)
    # The tie the lesson resolved towards 1198: both have 220 ratings, 2858 is left out.
    counts = ratings["movieId"].value_counts()
    assert counts[1198] == counts[2858] == 220
    assert (counts > 220).sum() == 14


def test_embedded_table_is_the_lessons_and_the_2016_crosstab(ml2016):
    embedded = lesson_crosstab()
    assert_same_table(embedded, lesson_table_from_seed())
    assert embedded.equals(crosstab(load_ratings(ml2016), top=15))


# --- the command ---------------------------------------------------------------------------------


def test_cli_csv_is_exactly_the_lesson_table(ml2016, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(["crosstab", str(ml2016 / "ratings.csv"), "--top", "15", "--csv", str(out)]) == 0
    assert "206 rated cells" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0] == "userId,1,110,260,296,318,356,480,527,589,593,608,1196,1198,1270,2571"
    assert lines[1] == "15,2.0,3.0,5.0,5.0,2.0,1.0,3.0,4.0,4.0,5.0,5.0,5.0,4.0,5.0,5.0"
    assert lines[4] == "212,3.0,5.0,4.0,4.0,4.5,4.0,3.0,5.0,3.0,4.0,,,3.0,3.0,5.0"
    assert len(lines) == 16
    written = pd.read_csv(out, index_col=0)
    written.columns = written.columns.astype(int)
    assert_same_table(written, lesson_table_from_seed())
    assert out.read_bytes() == (REPO / "data" / "lesson_crosstab.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temp file left


def test_cli_prints_ids_and_titles_when_movies_csv_is_beside(ml2016, capsys):
    assert main(["crosstab", str(ml2016 / "ratings.csv"), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["userId", "296", "318", "356"]
    assert out[1].split()[0] == "547"
    assert "3 users x 3 movies" in out[4]
    assert any(line.split(None, 1) == ["318", "Shawshank Redemption, The (1994)"] for line in out)


def test_cli_prints_no_titles_without_movies_csv(tmp_path, capsys):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating\n1,10,4.0\n1,20,2.5\n2,10,5.0\n")
    assert main(["crosstab", str(tmp_path / "ratings.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["userId", "10", "20"]
    assert lines[1].split() == ["1", "4.0", "2.5"]
    assert lines[2].split() == ["2", "5.0"]  # the unrated cell is blank
    assert lines[3] == "2 users x 2 movies, 3 rated cells" and len(lines) == 4


def test_cli_json_and_csv_to_stdout(tmp_path, capsys):
    folder = tmp_path
    (folder / "ratings.csv").write_text("userId,movieId,rating\n1,10,4.0\n1,20,2.5\n2,10,5.0\n")
    (folder / "movies.csv").write_text("movieId,title\n10,Ten\n20,Twenty\n")
    assert main(["crosstab", str(folder), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["users"] == [1, 2] and payload["movies"] == [10, 20]
    assert payload["ratings"] == [[4.0, 2.5], [5.0, None]] and payload["rated_cells"] == 3
    assert payload["titles"] == {"10": "Ten", "20": "Twenty"}
    assert main(["crosstab", str(folder), "--csv", "-"]) == 0
    assert capsys.readouterr().out == "userId,10,20\n1,4.0,2.5\n2,5.0,\n"


def test_cli_duplicates_and_scale_options(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating\n1,10,4.0\n1,10,8.0\n")
    assert main(["crosstab", str(path), "--csv", "-", "--scale", "1", "10"]) == 2
    assert "ratings.csv:3: duplicate rating for userId 1, movieId 10 (first at line 2" in capsys.readouterr().err
    assert main(["crosstab", str(path), "--csv", "-", "--duplicates", "mean"]) == 2
    assert "rating 8.0 is outside the scale 0.5 to 5" in capsys.readouterr().err
    assert main(["crosstab", str(path), "--csv", "-", "--duplicates", "mean", "--scale", "1", "10"]) == 0
    assert capsys.readouterr().out == "userId,10\n1,6.0\n"


def test_cli_rejects_a_bad_top(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["crosstab", "x.csv", "--top", "0"])
    assert exc.value.code == 2
    assert "expected a whole number >= 1" in capsys.readouterr().err


def test_cli_csv_into_a_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating\n1,10,4.0\n")
    assert main(["crosstab", str(tmp_path), "--csv", str(tmp_path)]) == 2
    assert "is a folder; give a file name for --csv" in capsys.readouterr().err


def test_python_dash_m_xlcf_crosstab_in_a_real_process(ml2016, tmp_path):
    out = tmp_path / "lesson.csv"
    done = subprocess.run(
        [sys.executable, "-m", "xlcf", "crosstab", str(ml2016 / "ratings.csv"), "--top", "15", "--csv", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (REPO / "data" / "lesson_crosstab.csv").read_bytes()

    bad = tmp_path / "bad.csv"
    bad.write_text("userId;movieId;rating\n1;2;3\n")
    done = subprocess.run(
        [sys.executable, "-m", "xlcf", "crosstab", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.startswith("xlcf crosstab: error: ") and "expected comma-separated values" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def _many_ratings(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    users = rng.integers(1, n + 1, size=20 * n)
    movies = rng.integers(1, n + 1, size=20 * n)
    frame = pd.DataFrame({"userId": users, "movieId": movies, "rating": 3.0}).drop_duplicates(["userId", "movieId"])
    frame.to_csv(path, index=False)
    return path


def test_cli_refuses_a_table_too_wide_to_print_but_writes_it_as_csv(tmp_path, capsys):
    path = _many_ratings(tmp_path / "ratings.csv", 60)
    assert main(["crosstab", str(path), "--top", "50"]) == 2
    err = capsys.readouterr().err
    assert "--top 50 prints a table 50 columns wide" in err and "--csv" in err and err.count("\n") == 1
    assert main(["crosstab", str(path), "--top", "50", "--csv", "-"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 51  # header + 50 users


def test_cli_refuses_a_top_beyond_the_data(tmp_path, capsys):
    path = _many_ratings(tmp_path / "ratings.csv", 30)
    assert main(["crosstab", str(path), "--top", "100000", "--csv", "-"]) == 2
    err = capsys.readouterr().err
    assert "--top 100000 is beyond the data: it has 30 users and 30 movies" in err
    assert capsys.readouterr().out == ""
