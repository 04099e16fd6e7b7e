"""`xlcf fit`: fit workbooks made by other tools in place, losing nothing; bad input leaves the file unchanged."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from tests.helpers.fit_books import excel_like, lesson_book, lesson_ratings, zip_members
from xlcf.actions.blocks import find_blocks
from xlcf.actions.fit import fit_sheet_arrays, rated_rmse
from xlcf.cli import main
from xlcf.errors import DataError
from xlcf.ooxml import ErrorValue, Package

JSON_KEYS = {
    "sheet",
    "model",
    "optimizer",
    "epochs",
    "device",
    "rmse_before",
    "rmse_after",
    "fit_seconds",
    "cells_written",
}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def fit_json(capsys, *args) -> dict:
    rc, out, err = run_cli(capsys, "fit", *args, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert set(data) >= JSON_KEYS
    return data


def assert_only_sheet_changed(
    before: dict[str, bytes], after: dict[str, bytes], sheet_part: str, also: tuple[str, ...] = ()
) -> None:
    """Every member byte-identical except the fitted sheet, workbook.xml's calc flag and the calc chain (and the
    parts in ``also``: sheets whose formulas read the fitted cells get new cached values)."""
    assert list(after) == [n for n in before if n in after]  # same order, nothing added
    assert set(before) - set(after) <= {"xl/calcChain.xml"}
    changed = {n for n in after if before[n] != after[n]}
    assert changed <= {sheet_part, "xl/workbook.xml", "xl/calcChain.xml", *also}, changed
    assert sheet_part in changed
    if "xl/workbook.xml" in changed:
        strip = lambda b: re.sub(rb"<calcPr[^>]*/>", b"", b)
        assert strip(before["xl/workbook.xml"]) == strip(after["xl/workbook.xml"])
        assert b'fullCalcOnLoad="1"' in after["xl/workbook.xml"]


def sheet_arrays(pkg: Package, sheet: str, blocks):
    num = lambda ref: np.array(
        [[np.nan if c.value is None else c.value for c in row] for row in pkg.read_range(sheet, ref)], dtype=float
    )
    out = {"ratings": num(blocks.ratings), "uf": num(blocks.user_factors), "mf": num(blocks.movie_factors)}
    if blocks.user_bias is not None:
        out["ub"] = num(blocks.user_bias).reshape(-1)
        out["mb"] = num(blocks.movie_bias).reshape(-1)
    return out


@pytest.fixture(scope="session")
def collab_book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("collab") / "b.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


@pytest.fixture
def book(collab_book, tmp_path) -> Path:
    target = tmp_path / "b.xlsx"
    shutil.copy(collab_book, target)
    return target


# --------------------------------------------------------------------------------------------------------------
# The pure function


def test_fit_sheet_arrays_on_a_tiny_sheet():
    rng = np.random.default_rng(0)
    true_u, true_m = rng.normal(size=(6, 2)), rng.normal(size=(2, 5))
    ratings = np.clip(true_u @ true_m + 3, 0.5, 5)
    ratings[rng.random(ratings.shape) < 0.3] = np.nan
    uf, mf = rng.uniform(0, 1, (6, 2)), rng.uniform(0, 1, (2, 5))
    fit = fit_sheet_arrays(ratings, uf, mf, np.zeros(6), np.zeros(5), {"optimizer": "adam", "epochs": 300})
    assert fit.model == "bias" and fit.movie_factors.shape == (2, 5) and fit.epochs == 300
    pred = fit.user_factors @ fit.movie_factors + fit.user_bias[:, None] + fit.movie_bias[None, :]
    np.testing.assert_allclose(fit.predictions, pred)
    mask = ~np.isnan(ratings)
    assert fit.rmse_after == pytest.approx(np.sqrt(np.mean((ratings[mask] - pred[mask]) ** 2)), rel=1e-12)
    assert fit.rmse_before == pytest.approx(rated_rmse(ratings, uf @ mf))
    assert fit.rmse_after < 0.5 * fit.rmse_before and "adam 300 epochs" in fit.status_text
    with pytest.raises(DataError, match="1 rated cell"):
        fit_sheet_arrays(np.where(np.arange(30).reshape(6, 5) == 0, 3.0, np.nan), uf, mf)
    with pytest.raises(DataError, match="outside the scale"):
        fit_sheet_arrays(np.where(mask, 9.0, np.nan), uf, mf)
    off_scale = ratings.copy()
    off_scale[2, 3] = 7.0  # row 3, column 4 of the block: H3 + (2, 3) = K5
    with pytest.raises(DataError, match=r"row 3, column 4 of the ratings block is outside the scale"):
        fit_sheet_arrays(off_scale, uf, mf)
    with pytest.raises(DataError, match=r"^my sheet!K5: rating 7 is outside the scale \[0.5, 5\]$"):
        fit_sheet_arrays(off_scale, uf, mf, ratings_origin=("my sheet", "H3"))


# --------------------------------------------------------------------------------------------------------------
# Happy paths: xlcf's own workbook (names), the lesson layout (Solver), explicit ranges, .xlsm


@pytest.mark.parametrize("sheet,target", [("dotprod", 0.3933), ("bias", 0.3191)])
def test_fit_new_collab_reaches_the_target_and_caches_what_it_wrote(book, capsys, sheet, target):
    before = zip_members(book)
    data = fit_json(capsys, book, "--sheet", sheet)
    assert data["source"] == "names" and data["model"] == ("bias" if sheet == "bias" else "dot")
    assert data["rmse_after"] <= target and data["rmse_after"] < data["rmse_before"]
    pkg = Package.open(book)
    assert_only_sheet_changed(before, zip_members(book), pkg.sheet_part(sheet))
    blocks = find_blocks(pkg, sheet)
    a = sheet_arrays(pkg, sheet, blocks)
    pred = a["uf"] @ a["mf"] + ((a["ub"][:, None] + a["mb"][None, :]) if "ub" in a else 0)
    # the factors written reproduce the reported RMSE; cached predictions and RMSE are what Excel would show
    assert rated_rmse(a["ratings"], pred) == pytest.approx(data["rmse_after"], abs=1e-12)
    cached = np.array([[c.value for c in row] for row in pkg.read_range(sheet, blocks.predictions)], dtype=float)
    np.testing.assert_allclose(cached, pred, rtol=0, atol=1e-12)
    assert pkg.read_cell(sheet, blocks.rmse.ref).value == pytest.approx(data["rmse_after"], abs=1e-12)
    assert pkg.read_cell(sheet, blocks.rmse.ref).formula.startswith("=SQRT(")
    assert (
        data["cells_written"]
        == blocks.factors * (blocks.n_users + blocks.n_movies)
        + (blocks.n_users + blocks.n_movies if sheet == "bias" else 0)
        + 1
    )  # + status cell
    status = Package.open(book).read_cell(sheet, "Y7").value
    assert data["optimizer"] in status and f"{data['rmse_after']:.4f}" in status
    ws = openpyxl.load_workbook(book, data_only=True)[sheet]  # another reader of cached values agrees
    assert ws[blocks.rmse.ref].value == pytest.approx(data["rmse_after"], abs=1e-12)
    assert ws["H26"].value == pytest.approx(pred[0, 0], abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("model,minimum", [("dot", 0.3929), ("bias", 0.3187)])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam", "adamw", "lbfgs", "als"])
def test_every_optimizer_default_from_the_new_collab_start_is_within_one_percent(model, minimum, optimizer):
    """What `xlcf new collab` writes (uniform [0, 1) factors, seed 0) fitted with each optimizer's defaults."""
    from xlcf.data import lesson_crosstab
    from xlcf.lessons.collab import initial_parameters

    start = initial_parameters(15, 15, 5, 0)
    biases = (start.user_bias, start.movie_bias) if model == "bias" else (None, None)
    fit = fit_sheet_arrays(
        lesson_crosstab().to_numpy(dtype=float),
        start.user_factors,
        start.movie_factors,
        *biases,
        {"optimizer": optimizer},
    )
    assert fit.rmse_after <= minimum * 1.01, (optimizer, fit.rmse_after, fit.result.runs)


def test_lesson_layout_made_elsewhere_fits_with_no_edits(tmp_path, capsys):
    """XlsxWriter book with a chart, an image and a second sheet; Solver names only (like Excel's own file)."""
    book = lesson_book(tmp_path / "lesson.xlsx", bias=True, sheet="bias")
    before = zip_members(book)
    assert any(n.startswith("xl/media/") for n in before) and any(n.startswith("xl/charts/") for n in before)
    data = fit_json(capsys, book, "--sheet", "bias", "--epochs", "300")
    assert data["source"] == "solver" and data["model"] == "bias" and data["epochs"] == 300
    assert data["blocks"]["user_bias"] == "A25:A39" and data["blocks"]["movie_bias"] == "H18:V18"
    pkg = Package.open(book)
    # notes!A2 (='bias'!V41*2) reads the RMSE cell: its cached value is recomputed too
    assert_only_sheet_changed(before, zip_members(book), pkg.sheet_part("bias"), also=(pkg.sheet_part("notes"),))
    assert pkg.read_cell("notes", "A2").value == pytest.approx(2 * data["rmse_after"], abs=1e-12)
    r, _, _ = lesson_ratings()
    a = sheet_arrays(pkg, "bias", find_blocks(pkg, "bias"))
    pred = a["uf"] @ a["mf"] + a["ub"][:, None] + a["mb"][None, :]
    assert rated_rmse(r, pred) == pytest.approx(data["rmse_after"], abs=1e-12)
    # IF(H2="",0,...) cells: 0 where unrated, the model elsewhere
    cached = np.array(pkg.read_values("bias", "H25:V39"), dtype=float)
    np.testing.assert_allclose(cached, np.where(np.isnan(r), 0.0, pred), atol=1e-12)
    assert pkg.read_cell("bias", "V41").value == pytest.approx(data["rmse_after"], abs=1e-12)
    assert pkg.read_cell("notes", "A3").value == 42.0


def test_excel_style_shared_formulas_calc_chain_and_hidden_solver_names(tmp_path, capsys):
    """Excel fills the prediction grid as one shared formula and keeps a calcChain; both must survive."""
    book = excel_like(lesson_book(tmp_path / "excel.xlsx", bias=True, sheet="bias"))
    before = zip_members(book)
    assert b't="shared"' in before["xl/worksheets/sheet1.xml"] and b"fullCalcOnLoad" not in before["xl/workbook.xml"]
    data = fit_json(capsys, book, "--sheet", "bias", "--epochs", "200")
    # 225 predictions, the RMSE cell and notes!A2 (which reads it)
    assert data["source"] == "solver" and data["cached_values_updated"] == 227
    after = zip_members(book)
    assert_only_sheet_changed(before, after, "xl/worksheets/sheet1.xml", also=("xl/worksheets/sheet2.xml",))
    assert after["xl/calcChain.xml"] == before["xl/calcChain.xml"]
    assert b'<calcPr calcId="191029" fullCalcOnLoad="1"/>' in after["xl/workbook.xml"]
    pkg = Package.open(book)
    cell = pkg.read_cell("bias", "J27")
    assert cell.formula == '=IF(J4="",0,MMULT($B27:$F27,J$19:J$23)+J$18+$A27)' and cell.formula_type == "shared"
    r, _, _ = lesson_ratings()
    a = sheet_arrays(pkg, "bias", find_blocks(pkg, "bias"))
    pred = a["uf"] @ a["mf"] + a["ub"][:, None] + a["mb"][None, :]
    cached = np.array(pkg.read_values("bias", "H25:V39"), dtype=float)
    np.testing.assert_allclose(cached, np.where(np.isnan(r), 0.0, pred), atol=1e-12)
    assert b'<f t="shared" si="0"/>' in after["xl/worksheets/sheet1.xml"]  # dependents still share the master


def test_explicit_ranges(tmp_path, capsys):
    book = lesson_book(tmp_path / "plain.xlsx", solver=False)
    before = zip_members(book)
    data = fit_json(
        capsys,
        book,
        "--sheet",
        "dotprod",
        "--ratings",
        "H2:V16",
        "--user-factors",
        "B25:F39",
        "--movie-factors",
        "H19:V23",
        "--rmse",
        "V41",
        "--epochs",
        "200",
        "--optimizer",
        "adam",
    )
    assert data["source"] == "ranges" and data["cached_values_updated"] == 227
    pkg = Package.open(book)
    assert_only_sheet_changed(before, zip_members(book), pkg.sheet_part("dotprod"), also=(pkg.sheet_part("notes"),))


def _quickstart_xlsm(tmp_path: Path) -> Path:
    """xlwings' quickstart.xlsm (a real VBA project) with a ratings sheet added by zip editing."""
    folder = Path(importlib.util.find_spec("xlwings").submodule_search_locations[0])
    src = folder / "quickstart.xlsm"
    if not src.exists():
        pytest.skip(f"{src} not shipped by this xlwings")
    book = tmp_path / "quick.xlsm"
    shutil.copy(src, book)
    r, _, _ = lesson_ratings()
    rng = np.random.default_rng(1)
    pkg = Package.open(book)
    pkg.add_sheet("ratings")
    pkg.write_block("ratings", "B2", [[None if np.isnan(v) else float(v) for v in row] for row in r])
    pkg.write_block("ratings", "B20", rng.uniform(0, 1, (15, 3)).tolist())  # user factors B20:D34
    pkg.write_block("ratings", "F20", rng.uniform(0, 1, (3, 15)).tolist())  # movie factors F20:T22
    pkg.save()
    return book


def test_xlsm_with_vba_project(tmp_path, capsys):
    book = _quickstart_xlsm(tmp_path)
    before = zip_members(book)
    assert "xl/vbaProject.bin" in before
    data = fit_json(
        capsys,
        book,
        "--sheet",
        "ratings",
        "--ratings",
        "B2:P16",
        "--user-factors",
        "B20:D34",
        "--movie-factors",
        "F20:T22",
        "--epochs",
        "200",
    )
    assert data["factors"] == 3 and data["rmse_after"] < data["rmse_before"]
    after = zip_members(book)
    assert_only_sheet_changed(before, after, Package.open(book).sheet_part("ratings"))
    assert after["xl/vbaProject.bin"] == before["xl/vbaProject.bin"]


def test_dry_run_backup_and_history(book, capsys):
    original = book.read_bytes()
    data = fit_json(capsys, book, "--sheet", "dotprod", "--epochs", "50", "--dry-run")
    assert data["dry_run"] and book.read_bytes() == original and not data["saved"]
    data = fit_json(capsys, book, "--sheet", "dotprod", "--epochs", "40", "--backup", "--history")
    assert Path(data["backup"]).read_bytes() == original and data["history_rows"] == 40
    pkg = Package.open(book)
    assert pkg.sheet_names[-1] == "fit_log" and len(pkg.chart_parts("fit_log")) == 1
    assert pkg.read_values("fit_log", "A1:B2")[0] == ["epoch", "rmse"]
    data = fit_json(capsys, book, "--sheet", "bias", "--epochs", "30", "--history")
    pkg = Package.open(book)
    assert pkg.sheet_names.count("fit_log") == 1 and len(pkg.chart_parts("fit_log")) == 1  # updated, not duplicated
    assert pkg.read_cell("fit_log", "A31").value == 30.0 and pkg.read_cell("fit_log", "A32").value is None
    assert pkg.read_cell("fit_log", "G1").value == "bias"
    wb = openpyxl.load_workbook(book)
    assert len(wb["fit_log"]._charts) == 1


def test_second_fit_never_makes_it_worse(book, capsys):
    first = fit_json(capsys, book, "--sheet", "dotprod")
    second = fit_json(capsys, book, "--sheet", "dotprod", "--optimizer", "sgd", "--epochs", "5", "--lr", "0.5")
    assert second["rmse_before"] == pytest.approx(first["rmse_after"], abs=1e-12)
    assert second["rmse_after"] <= second["rmse_before"]


# --------------------------------------------------------------------------------------------------------------
# Bad input: clear message naming sheet!cell, non-zero exit, file byte-identical


def _plant(book: Path, sheet: str, values: dict) -> bytes:
    pkg = Package.open(book)
    pkg.write_values(sheet, values)
    pkg.save()
    return book.read_bytes()


@pytest.mark.parametrize(
    "values,message",
    [
        ({"J5": "abc"}, r"dotprod!J5: the ratings block holds the text 'abc'"),
        ({"J5": True}, r"dotprod!J5: the ratings block holds the boolean TRUE"),
        ({"J5": ErrorValue("#N/A")}, r"dotprod!J5: the ratings block holds the error value #N/A"),
        ({"K6": ErrorValue("#DIV/0!")}, r"dotprod!K6: .*#DIV/0!"),
        ({"H3": 7.0}, r"dotprod!H3: rating 7 is outside the scale \[0.5, 5\]"),
        ({"H3": 0.0}, r"dotprod!H3: rating 0 is outside the scale"),
        ({"Y3": "abc"}, r"dotprod!Y3: lr must be a number; got text 'abc'"),
        ({"Y3": -0.1}, r"dotprod!Y3: lr must be > 0"),
        ({"Y4": -5}, r"dotprod!Y4: epochs must be >= 1; got -5"),
        ({"Y4": 2.5}, r"dotprod!Y4: epochs must be a whole number"),
        ({"Y2": "newton"}, r"dotprod!Y2: unknown optimizer 'newton'; valid optimizers: .*adam"),
        ({"Y2": 3.0}, r"dotprod!Y2: optimizer must be a name"),
        ({"Y6": "banana"}, r"dotprod!Y6: .*device 'banana'"),
        ({"B26": "x"}, r"dotprod!B26: the user factors block holds 'x'"),
        ({"H20": None}, r"dotprod!H20: the movie factors block holds blank"),
    ],
)
def test_bad_cells_are_named_and_nothing_is_written(book, capsys, values, message):
    original = _plant(book, "dotprod", values)
    rc, out, err = run_cli(capsys, "fit", book, "--sheet", "dotprod")
    assert rc != 0 and out == ""
    assert re.search(message, err), err
    assert err.startswith("xlcf fit: error: ") and len(err.strip().splitlines()) == 1
    assert book.read_bytes() == original


def test_scale_option_accepts_other_rating_scales(book, capsys):
    _plant(book, "dotprod", {"H3": 7.0})
    data = fit_json(capsys, book, "--sheet", "dotprod", "--scale", "1 10", "--epochs", "20")
    assert data["n_rated"] == 206


def test_fewer_than_two_rated_cells(book, capsys):
    pkg = Package.open(book)
    blocks = find_blocks(pkg, "dotprod")
    cells = {ref: None for row in blocks.ratings.cells() for ref in row}
    cells["H3"] = 4.0
    original = _plant(book, "dotprod", cells)
    rc, _, err = run_cli(capsys, "fit", book, "--sheet", "dotprod")
    assert rc != 0 and "dotprod!H3:V17: the ratings block has 1 rated cell" in err
    assert book.read_bytes() == original


def test_formula_in_a_factor_block_is_refused(tmp_path, capsys):
    book = lesson_book(tmp_path / "l.xlsx", solver=False)
    original = book.read_bytes()
    rc, _, err = run_cli(
        capsys,
        "fit",
        book,
        "--sheet",
        "dotprod",
        "--ratings",
        "H2:V16",
        "--user-factors",
        "B25:F39",
        "--movie-factors",
        "H25:V29",
    )
    assert rc != 0 and re.search(r"dotprod!H25 holds a formula \(=IF\(H2=.*\) inside the movie factors", err), err
    rc, _, err = run_cli(
        capsys,
        "fit",
        book,
        "--sheet",
        "dotprod",
        "--ratings",
        "H2:V16",
        "--user-factors",
        "B25:F39",
        "--movie-factors",
        "H19:V22",
    )
    assert rc != 0 and "have 5 factors (columns) but movie factors H19:V22 have 4" in err
    assert book.read_bytes() == original


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sheet", "nope"], r"has no sheet 'nope' \(sheets: dotprod, bias"),
        (["--sheet", "dotprod", "--optimizer", "newton"], r"unknown optimizer 'newton'; valid optimizers"),
        (["--sheet", "dotprod", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "50"], r"diverged.*smaller lr"),
        (["--sheet", "dotprod", "--init", "random", "--epochs", "0"], r"epochs"),
    ],
)
def test_bad_arguments(book, capsys, args, message):
    original = book.read_bytes()
    rc, out, err = run_cli(capsys, "fit", book, *args)
    assert rc != 0 and re.search(message, err), err
    assert book.read_bytes() == original


def test_bad_files(tmp_path, capsys, collab_book):
    text = tmp_path / "notes.xlsx"
    text.write_text("not a workbook")
    ole = tmp_path / "locked.xlsx"
    ole.write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + bytes(1000))
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(collab_book.read_bytes()[:3000])
    cases = [
        (tmp_path / "missing.xlsx", "no such file"),
        (text, "not a workbook"),
        (ole, "password-protected or legacy .xls"),
        (cut, "truncated"),
    ]
    for path, message in cases:
        before = path.read_bytes() if path.exists() else None
        rc, _, err = run_cli(capsys, "fit", path, "--sheet", "dotprod")
        assert rc == 2 and message in err, err
        assert (path.read_bytes() if path.exists() else None) == before
    ro = tmp_path / "ro.xlsx"
    shutil.copy(collab_book, ro)
    os.chmod(ro, stat.S_IRUSR)
    try:
        rc, _, err = run_cli(capsys, "fit", ro, "--sheet", "dotprod")
        assert rc == 2 and "read-only" in err
    finally:
        os.chmod(ro, stat.S_IRUSR | stat.S_IWUSR)
    assert ro.read_bytes() == collab_book.read_bytes()
    locked = tmp_path / "open.xlsx"
    shutil.copy(collab_book, locked)
    (tmp_path / "~$open.xlsx").write_bytes(b"user")
    rc, _, err = run_cli(capsys, "fit", locked, "--sheet", "dotprod")
    assert rc == 2 and "close it in Excel first" in err
    assert locked.read_bytes() == collab_book.read_bytes()


def test_movielens_sheet_is_delegated(tmp_path, capsys, monkeypatch):
    import xlcf.actions.train_book as movielens

    book = tmp_path / "ml.xlsx"
    assert main(["new", "movielens", "-o", str(book)]) == 0
    calls = []

    def fake_train_workbook(path, **kwargs):
        calls.append((Path(path), kwargs))
        return {"sheet": "movielens", "train_rmse": 0.8}

    monkeypatch.setattr(movielens, "train_workbook", fake_train_workbook)
    rc, out, err = run_cli(capsys, "fit", book, "--sheet", "movielens", "--epochs", "3", "--wd", "0.01", "--json")
    assert rc == 0, err
    assert json.loads(out) == {"sheet": "movielens", "train_rmse": 0.8, "time_capped": False, "time_limit": 3600.0}
    assert calls[0][0] == book and calls[0][1]["overrides"] == {"epochs": 3, "wd": 0.01}


def test_macro_workbook_with_buttons_keeps_vba_and_controls(tmp_path, capsys):
    """`xlcf new collab --xlsm` (VBA project + form buttons on each fitting sheet) fits without touching them."""
    book = tmp_path / "collab_filter.xlsm"
    rc, _, err = run_cli(capsys, "new", "collab", "--xlsm", "-o", book)
    if rc != 0:
        pytest.skip(f"xlcf new collab --xlsm is not available here: {err.strip()}")
    before = zip_members(book)
    data = fit_json(capsys, book, "--sheet", "bias", "--epochs", "100")
    part = Package.open(book).sheet_part("bias")
    after = zip_members(book)
    assert_only_sheet_changed(before, after, part)
    assert "xl/vbaProject.bin" in after
    for tag in (b"<legacyDrawing", b"<dataValidations"):
        assert (tag in before[part]) == (tag in after[part])
    assert data["rmse_after"] < data["rmse_before"]
