"""`xlcf new collab|graddesc|movielens` from the command line: sources, options, bad input (nothing written)."""

from __future__ import annotations

import json
import sys
import types
import zipfile

import pytest

from xlcf.cli import main
from xlcf.data import lesson_crosstab


def write_ratings(folder, rows, titles=None):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r},{1000 + i}" for i, (u, m, r) in enumerate(rows)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    if titles:
        movie_lines = ["movieId,title,genres"] + [f'{m},"{t}",Drama' for m, t in titles.items()]
        (folder / "movies.csv").write_text("\n".join(movie_lines) + "\n")
    return folder


SMALL = [(u, m, ((u * m) % 9 + 1) / 2) for u in range(1, 6) for m in range(10, 16) if (u + m) % 4]


def test_default_collab_is_the_lesson_table(tmp_path, capsys):
    from openpyxl import load_workbook

    out = tmp_path / "collab_filter.xlsx"
    assert main(["new", "collab", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["users"] == 15 and info["movies"] == 15 and info["factors"] == 5
    assert info["sheets"]["bias"]["user_bias"] == "A26:A40"
    ws = load_workbook(out)["dotprod"]
    table = lesson_crosstab()
    assert [ws.cell(row=3 + i, column=7).value for i in range(15)] == list(table.index)
    assert ws["H3"].value == table.iat[0, 0]


def test_collab_from_a_ratings_file(tmp_path, capsys):
    src = write_ratings(tmp_path / "ml", SMALL, {m: f"Movie {m} (2001)" for m in range(10, 16)})
    out = tmp_path / "small.xlsx"
    assert (
        main(["new", "collab", "-o", str(out), "--ratings", str(src), "--top", "3", "--factors", "2", "--seed", "4"])
        == 0
    )
    assert "3 users x 3 movies, 2 factors" in capsys.readouterr().out
    from openpyxl import load_workbook

    ws = load_workbook(out)["bias"]
    # 2 factors: labels in D, movies from E; the titles row carries movies.csv titles
    assert ws["E1"].value.startswith("Movie ") and isinstance(ws["E2"].value, int)
    # 3 users: ratings rows 3-5, movie bias row 7, factors 8-9, ids 10, predictions from row 11
    assert ws["E11"].value == "=MMULT($B11:$C11,E$8:E$9)+E$7+$A11"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--top", "9"], "larger than"),
        (["--factors", "0"], "factors"),
    ],
)
def test_bad_collab_options_write_nothing(tmp_path, capsys, argv, message):
    src = write_ratings(tmp_path / "ml", SMALL)
    out = tmp_path / "out" / "c.xlsx"
    out.parent.mkdir()
    assert main(["new", "collab", "-o", str(out), "--ratings", str(src), *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_fewer_than_two_rated_cells(tmp_path, capsys):
    src = write_ratings(tmp_path / "ml", [(1, 10, 4.0)])
    out = tmp_path / "c.xlsx"
    assert main(["new", "collab", "-o", str(out), "--ratings", str(src), "--top", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert not out.exists()


def test_output_paths(tmp_path, capsys):
    assert main(["new", "collab", "-o", str(tmp_path / "missing" / "c.xlsx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["new", "graddesc", "-o", str(tmp_path / "g.csv")]) == 2
    assert ".xlsx" in capsys.readouterr().err
    out = tmp_path / "g.xlsx"
    out.write_bytes(b"precious")
    assert main(["new", "graddesc", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["new", "graddesc", "-o", str(out), "--force"]) == 0
    assert zipfile.is_zipfile(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.xlsx"]


def test_xlsm_goes_through_the_excel_layer(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_make_macro_workbook(xlsx_path, out_path, kind):
        assert zipfile.is_zipfile(xlsx_path)  # the xlsx was fully built first
        calls.append((kind, out_path))
        with open(out_path, "wb") as fh:
            fh.write(b"xlsm")

    fake = types.ModuleType("xlcf.lessons.xlsm")
    fake.make_macro_workbook = fake_make_macro_workbook
    monkeypatch.setitem(sys.modules, "xlcf.lessons.xlsm", fake)
    assert main(["new", "graddesc", "-o", str(tmp_path / "g.xlsm"), "--xlsm"]) == 0
    assert main(["new", "collab", "-o", str(tmp_path / "c.xlsm"), "--xlsm"]) == 0
    assert [k for k, _ in calls] == ["graddesc", "collab"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.xlsm", "g.xlsm"]  # temp xlsx removed
    assert main(["new", "collab", "-o", str(tmp_path / "c2.xlsx"), "--xlsm"]) == 2
    assert ".xlsm" in capsys.readouterr().err
    # The file name alone says "macro workbook": no --xlsm needed.
    assert main(["new", "graddesc", "-o", str(tmp_path / "g2.xlsm")]) == 0
    assert calls[-1] == ("graddesc", str(tmp_path / "g2.xlsm"))


def test_movielens_calls_its_generator(tmp_path, monkeypatch):
    seen = {}

    def fake_build(path, ratings_source=None, force=False):
        seen.update(path=str(path), source=ratings_source, force=force)
        with open(path, "wb") as fh:
            fh.write(b"x")

    fake = types.ModuleType("xlcf.lessons.movielens.build")
    fake.build_movielens = fake_build
    monkeypatch.setitem(sys.modules, "xlcf.lessons.movielens.build", fake)
    out = tmp_path / "ml.xlsx"
    assert main(["new", "movielens", "-o", str(out), "--ratings", "somewhere"]) == 0
    assert seen == {"path": str(out), "source": "somewhere", "force": True}
