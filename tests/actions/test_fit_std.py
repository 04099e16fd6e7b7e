"""The ± block: a gibbs fit of a collab sheet writes the posterior predictive std of each prediction under the
predictions (named ``prediction_std``), a later fit with another optimizer blanks it, a full sheet keeps every cell
it had. Through ``xlcf fit`` (the zip path); the Fit button's path is in tests/excel/test_excel_macros.py."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from lxml import etree

from tests.actions.test_fit import fit_json, run_cli
from tests.helpers.fit_books import zip_members
from xlcf.actions.fit import fit_sheet_arrays
from xlcf.actions.fit_outputs import STD_NAME
from xlcf.cli import main
from xlcf.lessons.collab import initial_parameters
from xlcf.ooxml.package import Package

SWEEPS = "60"


@pytest.fixture(scope="module")
def collab_book(tmp_path_factory):
    path = tmp_path_factory.mktemp("collab_std") / "c.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


@pytest.fixture
def book(collab_book, tmp_path):
    target = tmp_path / "c.xlsx"
    shutil.copy(collab_book, target)
    return target


def numbers(pkg: Package, sheet: str, ref: str) -> np.ndarray:
    return np.array(
        [[np.nan if c.value is None else c.value for c in row] for row in pkg.read_range(sheet, ref)], dtype=float
    )


def without_std_name(xml: bytes) -> bytes:
    """workbook.xml in canonical form without the name of the ± block."""
    root = etree.fromstring(xml)
    for el in root.iter("{*}definedName"):
        if el.get("name") == STD_NAME:
            el.getparent().remove(el)
    return etree.tostring(root, method="c14n")


def gibbs(capsys, book, sheet, *more):
    return fit_json(capsys, book, "--sheet", sheet, "--optimizer", "gibbs", "--epochs", SWEEPS, *more)


@pytest.mark.parametrize("sheet", ["dotprod", "bias"])
def test_a_gibbs_fit_writes_the_std_of_each_prediction_under_the_predictions(book, capsys, sheet):
    before = zip_members(book)
    pkg0 = Package.open(book)
    ratings = numbers(pkg0, sheet, "H3:V17")
    data = gibbs(capsys, book, sheet)
    assert data["optimizer"] == "gibbs" and data["std_block"] == {
        "range": f"{sheet}!H46:V60",
        "name": STD_NAME,
        "new": True,
        "cleared": False,
    }
    pkg = Package.open(book)
    assert pkg.defined_names(sheet)[STD_NAME] == f"'{sheet}'!$H$46:$V$60"
    # the same fit through the pure function (deterministic on CPU) gives the numbers written
    start = initial_parameters(15, 15, 5, 0)
    biases = (start.user_bias, start.movie_bias) if sheet == "bias" else (None, None)
    fit = fit_sheet_arrays(
        ratings, start.user_factors, start.movie_factors, *biases, {"optimizer": "gibbs", "epochs": int(SWEEPS)}
    )
    std = numbers(pkg, sheet, "H46:V60")
    np.testing.assert_allclose(std, fit.std, rtol=1e-12)
    assert np.all(std > 0) and np.all(std < 5)
    # labelled and formatted like the predictions above it
    assert pkg.read_cell(sheet, "G44").value.startswith("± posterior predictive std")
    assert pkg.read_values(sheet, "G45:V45") == pkg.read_values(sheet, "G25:V25")
    assert pkg.read_values(sheet, "G46:G60") == pkg.read_values(sheet, "G26:G40")
    assert pkg.read_cell(sheet, "H46").style == pkg.read_cell(sheet, "H26").style is not None
    assert pkg.read_cell(sheet, "G45").style == pkg.read_cell(sheet, "G25").style
    # both RMSEs: posterior means (what the sheet's formulas give) and averaged predictions
    assert data["rmse_avg"] == pytest.approx(fit.rmse_avg) and data["rmse_after"] == pytest.approx(fit.rmse_after)
    assert f"averaged predictions {data['rmse_avg']:.4f}" in data["status"]
    assert data["status"] == pkg.read_cell(sheet, "Y7").value
    # every other part byte-identical; workbook.xml gains the name (and the calc flag)
    after = zip_members(book)
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed <= {pkg.sheet_part(sheet), "xl/workbook.xml", "xl/calcChain.xml"}
    assert without_std_name(before["xl/workbook.xml"]) == without_std_name(after["xl/workbook.xml"])
    # the other sheet of the book is untouched, without a block
    other = "bias" if sheet == "dotprod" else "dotprod"
    assert STD_NAME not in pkg.defined_names(other) and pkg.read_cell(other, "H46").value is None


def test_another_optimizer_blanks_the_block_and_gibbs_fills_it_again(book, capsys):
    gibbs(capsys, book, "bias")
    pkg = Package.open(book)
    labels = pkg.read_values("bias", "G45:V45")
    first = numbers(pkg, "bias", "H46:V60")
    als = fit_json(capsys, book, "--sheet", "bias", "--optimizer", "als")
    assert als["improved"] and als["std_block"]["cleared"] and als["rmse_avg"] is None
    pkg = Package.open(book)
    assert np.isnan(numbers(pkg, "bias", "H46:V60")).all()  # no spread shown for factors it does not describe
    assert "not Bayesian" in pkg.read_cell("bias", "G44").value and "als" in pkg.read_cell("bias", "G44").value
    assert pkg.read_values("bias", "G45:V45") == labels and STD_NAME in pkg.defined_names("bias")
    # gibbs after a least-squares fit: the posterior means are written although their training RMSE is higher
    again = gibbs(capsys, book, "bias")
    assert again["improved"] and again["rmse_before"] == pytest.approx(als["rmse_after"])
    assert again["rmse_after"] > again["rmse_before"] and not again["notes"][1:]
    assert again["std_block"] == {"range": "bias!H46:V60", "name": STD_NAME, "new": False, "cleared": False}
    pkg = Package.open(book)
    refilled = numbers(pkg, "bias", "H46:V60")
    assert np.isfinite(refilled).all() and not np.array_equal(refilled, first)  # another chain, another start
    assert list(pkg.defined_names("bias")).count(STD_NAME) == 1
    assert pkg.read_cell("bias", "G44").value.startswith("± posterior")


def test_a_cell_in_the_way_keeps_its_value_and_the_fit_says_why(book, capsys):
    pkg = Package.open(book)
    pkg.write_values("bias", {"K52": "my note"})
    pkg.save()
    data = gibbs(capsys, book, "bias")
    assert data["std_block"] is None
    assert any("no room for the ± std" in n and "bias!K52" in n for n in data["notes"]), data["notes"]
    pkg = Package.open(book)
    assert pkg.read_cell("bias", "K52").value == "my note" and STD_NAME not in pkg.defined_names("bias")
    assert pkg.read_cell("bias", "H46").value is None and pkg.read_cell("bias", "G44").value is None


def test_a_dry_run_writes_nothing_and_other_optimizers_place_no_block(book, capsys):
    before = book.read_bytes()
    data = gibbs(capsys, book, "dotprod", "--dry-run")
    assert data["std_block"]["new"] and book.read_bytes() == before
    data = fit_json(capsys, book, "--sheet", "dotprod", "--optimizer", "adam", "--epochs", "50")
    assert data["std_block"] is None and STD_NAME not in Package.open(book).defined_names("dotprod")


def test_the_plain_status_line_reports_both_rmses(book, capsys):
    rc, out, err = run_cli(capsys, "fit", book, "--sheet", "bias", "--optimizer", "gibbs", "--epochs", SWEEPS)
    assert rc == 0, err
    assert re.search(r"RMSE over 206 rated cells: [0-9.]+ -> [0-9.]+; wrote", out), out
    assert re.search(
        r"\(posterior means; averaged predictions [0-9.]+\); ± std of each prediction in bias!H46:V60", out
    )
    rc, out, _ = run_cli(capsys, "fit", book, "--sheet", "bias", "--optimizer", "gibbs", "--json", "--epochs", "4")
    assert rc == 0 and json.loads(out)["std_block"]["new"] is False


def test_the_fit_callback_hears_every_sweep_and_can_stop_the_chain():
    start = initial_parameters(15, 15, 3, 1)
    rng = np.random.default_rng(1)
    ratings = np.where(rng.random((15, 15)) < 0.6, rng.integers(1, 11, (15, 15)) / 2, np.nan)
    seen = []
    fit = fit_sheet_arrays(
        ratings,
        start.user_factors,
        start.movie_factors,
        None,
        None,
        {"optimizer": "gibbs", "epochs": 30},
        callback=lambda stats: seen.append((stats.epoch, stats.train_rmse)),
    )
    assert [e for e, _ in seen] == list(range(1, 31)) and all(np.isfinite(r) for _, r in seen)
    assert fit.std is not None and fit.std.shape == (15, 15) and fit.rmse_avg is not None
    stopped = fit_sheet_arrays(
        ratings,
        start.user_factors,
        start.movie_factors,
        None,
        None,
        {"optimizer": "gibbs", "epochs": 30},
        callback=lambda stats: False if stats.epoch == 12 else None,
    )
    assert stopped.epochs == 12 and stopped.stopped_reason == "callback" and "(stopped early)" in stopped.status_text
    assert stopped.std is not None and np.isfinite(stopped.std).all()  # the draws so far still give a spread


@pytest.mark.libreoffice
@pytest.mark.slow
def test_libreoffice_recalculates_the_gibbs_sheet_to_the_reported_rmse_and_keeps_the_block(
    book, capsys, libreoffice, tmp_path
):
    data = gibbs(capsys, book, "bias")
    pkg = Package.open(book)
    cached = numbers(pkg, "bias", "H26:V40")
    std = numbers(pkg, "bias", "H46:V60")
    resaved = tmp_path / "resaved.xlsx"
    (lo,) = libreoffice(book, save_as=[resaved])
    # the sheet's own formulas over the posterior means give the RMSE the fit reported, and the cached predictions
    assert lo.value("bias", "V42") == pytest.approx(data["rmse_after"], abs=1e-9)
    recomputed = np.array([[lo.value("bias", f"{chr(72 + j)}{26 + i}") for j in range(15)] for i in range(15)])
    np.testing.assert_allclose(recomputed, cached, atol=1e-9)
    kept = np.array([[lo.value("bias", f"{chr(72 + j)}{46 + i}") for j in range(15)] for i in range(15)])
    np.testing.assert_allclose(kept, std, rtol=1e-12)
    assert lo.value("bias", "G44").startswith("± posterior predictive std")
    # LibreOffice reads the name as a range and writes it back
    areas = Package.open(resaved).name_areas("bias", STD_NAME)
    assert areas is not None and [a.ref for a in areas] == ["H46:V60"]


def test_gibbs_is_in_the_optimizer_drop_down_of_both_sheets(collab_book):
    import openpyxl

    wb = openpyxl.load_workbook(collab_book)
    for sheet in ("dotprod", "bias"):
        lists = [dv.formula1 for dv in wb[sheet].data_validations.dataValidation if dv.type == "list"]
        assert any("gibbs" in text.strip('"').split(",") for text in lists), lists


def test_the_lesson_layout_gets_the_block_under_its_rmse_without_invented_labels(tmp_path, capsys):
    from tests.helpers.fit_books import lesson_book

    path = lesson_book(tmp_path / "lesson.xlsx", sheet="bias", bias=True)  # Solver names only, RMSE in V41
    data = gibbs(capsys, path, "bias")
    assert data["source"] == "solver" and data["std_block"]["range"] == "bias!H45:V59", data["std_block"]
    pkg = Package.open(path)
    assert np.isfinite(numbers(pkg, "bias", "H45:V59")).all()
    assert pkg.read_cell("bias", "G43").value.startswith("± posterior")
    # nothing labels the lesson's prediction grid (row 24, column G are empty there): no labels are made up
    assert all(v is None for v in pkg.read_values("bias", "G44:V44")[0])
    assert all(row[0] is None for row in pkg.read_values("bias", "G45:G59"))


def test_cells_of_the_fitted_blocks_are_never_copied_as_labels(book):
    from xlcf.actions.fit_outputs import plan_std_block
    from xlcf.actions.sheetio import ZipSheetIO
    from xlcf.ooxml.refs import parse_range

    io = ZipSheetIO(Package.open(book), "bias")
    pred, rmse = parse_range("H26:V40", "bias"), parse_range("V42", "bias")
    std = np.full((15, 15), 0.5)
    plain, _ = plan_std_block(io, pred, rmse, std, "gibbs", 10)
    # as if the user ids and the movie ids were cells of fitted blocks
    guarded, _ = plan_std_block(io, pred, rmse, std, "gibbs", 10, [parse_range("G26:G40"), parse_range("H25:V25")])
    assert plain is not None and guarded is not None
    assert plain.values["G46"] == 15 and plain.values["H45"] == 1
    assert "G46" not in guarded.values and "H45" not in guarded.values and guarded.values["H46"] == 0.5
