"""collab_filter generation: layout, names, Solver model, validation, bad input (no LibreOffice needed)."""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from lxml import etree

from xlcf.data import lesson_crosstab, lesson_titles
from xlcf.errors import ConfigError, DataError, WorkbookError
from xlcf.lessons.collab import SHEETS, build_collab, initial_parameters

NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


def small_crosstab(n_users=4, n_movies=6, seed=3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 11, size=(n_users, n_movies)) / 2.0
    values[rng.random((n_users, n_movies)) < 0.3] = np.nan
    return pd.DataFrame(
        values,
        index=pd.Index([10 * i + 1 for i in range(n_users)], name="userId"),
        columns=pd.Index([100 + j for j in range(n_movies)], name="movieId"),
    )


def defined_names(path) -> list[dict]:
    with zipfile.ZipFile(path) as z:
        root = etree.fromstring(z.read("xl/workbook.xml"))
    sheets = [s.get("name") for s in root.find("m:sheets", NS)]
    out = []
    for el in root.find("m:definedNames", NS):
        local = el.get("localSheetId")
        out.append(
            {
                "name": el.get("name"),
                "value": el.text,
                "hidden": el.get("hidden") in ("1", "true"),
                "sheet": None if local is None else sheets[int(local)],
            }
        )
    return out


@pytest.fixture(scope="module")
def lesson_book(tmp_path_factory):
    path = tmp_path_factory.mktemp("collab") / "collab_filter.xlsx"
    layout = build_collab(path, lesson_crosstab(), lesson_titles())
    return path, layout


def test_layout_of_the_lesson_table(lesson_book):
    _path, layout = lesson_book
    refs = layout.refs("bias")
    assert refs["ratings"] == "H3:V17"
    assert refs["movie_bias"] == "H19:V19"
    assert refs["movie_factors"] == "H20:V24"
    assert refs["user_factors"] == "B26:F40"
    assert refs["user_bias"] == "A26:A40"
    assert refs["predictions"] == "H26:V40"
    assert refs["rmse"] == "V42"
    assert "user_bias" not in layout.refs("dotprod")


def test_names_are_sheet_scoped_and_solver_names_hidden(lesson_book):
    path, layout = lesson_book
    names = defined_names(path)
    assert all(n["sheet"] in SHEETS for n in names), "every name must be sheet-scoped"
    for sheet in SHEETS:
        mine = {n["name"]: n for n in names if n["sheet"] == sheet}
        expected = {
            "ratings",
            "user_factors",
            "movie_factors",
            "predictions",
            "rmse",
            "optimizer",
            "lr",
            "epochs",
            "seed",
            "device",
            "status",
        } | ({"user_bias", "movie_bias"} if sheet == "bias" else set())
        assert expected <= set(mine)
        for name in expected:
            assert not mine[name]["hidden"]
            assert mine[name]["value"].startswith(f"'{sheet}'!$")
        solver = {k: v for k, v in mine.items() if k.startswith("solver_")}
        assert all(v["hidden"] for v in solver.values())
        assert solver["solver_typ"]["value"] == "2"
        assert solver["solver_eng"]["value"] == "1"
        assert solver["solver_neg"]["value"] == "2"
        assert solver["solver_ver"]["value"] == "3"
        assert solver["solver_num"]["value"] == "0"
        assert {
            "solver_cvg",
            "solver_drv",
            "solver_est",
            "solver_itr",
            "solver_lin",
            "solver_mip",
            "solver_nod",
            "solver_pre",
            "solver_scl",
            "solver_sho",
            "solver_tim",
            "solver_tol",
            "solver_val",
        } <= set(solver)
        rmse_ref = "$" + re.sub(r"(\d+)", r"$\1", layout.refs(sheet)["rmse"])
        assert solver["solver_opt"]["value"] == f"'{sheet}'!{rmse_ref}"
        adj = solver["solver_adj"]["value"].split(",")
        assert f"'{sheet}'!$B$26:$F$40" in adj and f"'{sheet}'!$H$20:$V$24" in adj
        assert len(adj) == (4 if sheet == "bias" else 2)


def test_cells_formulas_styles_and_validation(lesson_book):
    from openpyxl import load_workbook

    path, layout = lesson_book
    wb = load_workbook(path)
    table = lesson_crosstab()
    init = initial_parameters(15, 15, 5, 0)
    for sheet in SHEETS:
        ws = wb[sheet]
        assert ws.freeze_panes == "H3"
        # ratings block: values where rated, empty where not
        for i in range(15):
            for j in range(15):
                value = ws.cell(row=3 + i, column=8 + j).value
                expected = table.iat[i, j]
                assert (value is None) if np.isnan(expected) else value == expected
        assert [ws.cell(row=2, column=8 + j).value for j in range(15)] == list(table.columns)
        assert [ws.cell(row=25, column=8 + j).value for j in range(15)] == list(table.columns)
        assert [ws.cell(row=26 + i, column=7).value for i in range(15)] == list(table.index)
        assert ws["H1"].value == "Toy Story (1995)"
        # factors uniform [0, 1) from the seed, same draw on both sheets
        uf = np.array([[ws.cell(row=26 + i, column=2 + f).value for f in range(5)] for i in range(15)])
        mf = np.array([[ws.cell(row=20 + f, column=8 + j).value for j in range(15)] for f in range(5)])
        np.testing.assert_array_equal(uf, init.user_factors)
        np.testing.assert_array_equal(mf, init.movie_factors)
        assert ((uf >= 0) & (uf < 1)).all()
        # every prediction cell, rated or not, is a formula of its row and column
        for i in range(15):
            for j in range(15):
                f = ws.cell(row=26 + i, column=8 + j).value
                col = ws.cell(row=1, column=8 + j).column_letter
                expected = f"=MMULT($B{26 + i}:$F{26 + i},{col}$20:{col}$24)"
                if sheet == "bias":
                    expected += f"+{col}$19+$A{26 + i}"
                assert f == expected
        assert ws["V42"].value == '=SQRT(SUMPRODUCT((H3:V17<>"")*(H3:V17-H26:V40)^2)/COUNT(H3:V17))'
        assert "SUMXMY2" not in ws["V42"].value
        assert ws["H26"].number_format == "0.00" and ws["B26"].number_format == "0.00"
        assert ws["H3"].fill.start_color.rgb.endswith("DDEBF7")  # ratings blue
        assert ws["H26"].fill.start_color.rgb.endswith("E4DFEC")  # predictions purple
        assert ws["V42"].font.color.rgb.endswith("C00000")  # RMSE red
        assert ws.column_dimensions["H"].width >= 8
        # settings block with defaults; optimizer dropdown lists the engine's names
        assert ws["X2"].value == "optimizer" and ws["Y2"].value == "adam"
        assert isinstance(ws["Y3"].value, float) and ws["Y3"].value > 0
        assert isinstance(ws["Y4"].value, int) and ws["Y4"].value >= 1
        assert ws["Y6"].value == "auto" and ws["Y7"].value
        lists = {str(dv.sqref): dv.formula1 for dv in ws.data_validations.dataValidation if dv.type == "list"}
        names = lists["Y2"].strip('"').split(",")
        assert {"sgd", "momentum", "rmsprop", "adam", "adamw", "lbfgs"} <= set(names)
        assert "Y6" in lists
        if sheet == "bias":
            ub = np.array([ws.cell(row=26 + i, column=1).value for i in range(15)])
            np.testing.assert_array_equal(ub, init.user_bias)
        else:
            assert ws["A26"].value is None and ws["H19"].value is None


def test_other_sizes_and_seeds(tmp_path):
    table = small_crosstab(4, 6)
    layout = build_collab(tmp_path / "s.xlsx", table, {}, factors=3, seed=9)
    refs = layout.refs("bias")
    # 4 users, 6 movies, 3 factors: labels column E, movies F..K
    assert refs["ratings"] == "F3:K6"
    assert refs["movie_bias"] == "F8:K8"
    assert refs["movie_factors"] == "F9:K11"
    assert refs["user_factors"] == "B13:D16"
    assert refs["predictions"] == "F13:K16"
    assert refs["rmse"] == "K18"
    from openpyxl import load_workbook

    ws = load_workbook(tmp_path / "s.xlsx")["bias"]
    assert ws["F13"].value == "=MMULT($B13:$D13,F$9:F$11)+F$8+$A13"
    a = initial_parameters(4, 6, 3, 9).user_factors
    b = initial_parameters(4, 6, 3, 10).user_factors
    assert ws["B13"].value == a[0, 0] and not np.allclose(a, b)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: small_crosstab().map(lambda v: np.nan), DataError),  # nothing rated
        (lambda: small_crosstab().iloc[:1, :1].fillna(3.0), DataError),  # a single rated cell
        (lambda: small_crosstab().iloc[:0, :0], DataError),  # empty
        (lambda: small_crosstab().astype(object).where(lambda d: d.notna(), "x"), DataError),  # text
    ],
)
def test_bad_crosstab_writes_nothing(tmp_path, make, error):
    path = tmp_path / "bad.xlsx"
    with pytest.raises(error):
        build_collab(path, make(), {})
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_and_paths(tmp_path):
    table = small_crosstab()
    with pytest.raises(ConfigError, match="factors"):
        build_collab(tmp_path / "a.xlsx", table, factors=0)
    with pytest.raises(WorkbookError, match="does not exist"):
        build_collab(tmp_path / "missing" / "a.xlsx", table)
    path = tmp_path / "a.xlsx"
    path.write_bytes(b"keep me")
    with pytest.raises(WorkbookError, match="--force"):
        build_collab(path, table)
    assert path.read_bytes() == b"keep me"
    build_collab(path, table, force=True)
    assert zipfile.is_zipfile(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xlsx"]  # no temp file left behind


def test_unwritable_folder(tmp_path, monkeypatch):
    import os

    real_access = os.access
    folder = tmp_path / "ro"
    folder.mkdir()
    # chmod does not stop root (CI containers), so the permission answer is simulated for this folder
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(folder) else real_access(p, mode))
    with pytest.raises(WorkbookError, match="not writable"):
        build_collab(folder / "a.xlsx", small_crosstab())
    assert list(folder.iterdir()) == []


def test_new_file_gets_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        build_collab(tmp_path / "p.xlsx", small_crosstab())
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "p.xlsx").st_mode) == 0o644
