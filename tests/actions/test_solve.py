"""`xlcf solve`: Solver models that are not collaborative filtering reach their known optimum, bad input is refused
with one line naming sheet!cell (file byte-identical), the flags, and what is written back."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.protect import protect_sheet
from tests.helpers.solver_corpus import BAD, MODELS, logistic_data
from xlcf.cli import main
from xlcf.ooxml.package import Package

TOL = {
    "line_fit": 1e-5,
    "line_noisy": 1e-6,
    "rosenbrock": 1e-5,
    "logistic": 1e-5,
    "value_of": 1e-7,
    "nonnegative": 1e-7,
    "bounds": 1e-7,
}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    books = {}
    for group in (MODELS, BAD):
        for key, build in group.items():
            books[key] = build(folder / f"{key}.xlsx")
    return books


def fresh(corpus, key: str, tmp_path: Path) -> tuple[Path, object]:
    book = corpus[key]
    path = tmp_path / book.path.name
    shutil.copy(book.path, path)
    return path, book


@pytest.mark.parametrize("key", list(MODELS))
def test_models_reach_their_optimum(corpus, key, tmp_path, capsys):
    path, book = fresh(corpus, key, tmp_path)
    before = members(path)
    code, out, err = run_cli(capsys, "solve", path, "--sheet", book.sheet, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["objective"] == f"{book.sheet}!{book.objective}" and data["sense"] == book.sense
    tol = TOL[key]
    assert data["objective_after"] == pytest.approx(book.optimum, rel=tol, abs=tol)
    pkg = Package.open(path)
    for ref, value in book.solution.items():
        assert pkg.read_cell(book.sheet, ref).value == pytest.approx(value, rel=10 * tol, abs=10 * tol), ref
    # the objective's cached value is what the run reports; other members are untouched
    assert pkg.read_cell(book.sheet, book.objective).value == pytest.approx(data["objective_after"], rel=1e-12)
    after = members(path)
    sheet_part = pkg.sheet_part(book.sheet)
    assert {n for n in after if after[n] != before[n]} <= {sheet_part, "xl/workbook.xml"}
    assert data["cells_written"] == data["variables"] + data["formulas_evaluated"]


def test_bounds_are_honoured_exactly(corpus, tmp_path, capsys):
    path, book = fresh(corpus, "bounds", tmp_path)
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", book.sheet, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["constraints"] == ["A2:C2 >= 0", "B2 <= 1.5", "C2 <= bounds!F2"]
    pkg = Package.open(path)
    a, b, c = (pkg.read_cell("bounds", r).value for r in ("A2", "B2", "C2"))
    assert a >= 0 and b <= 1.5 and c <= 2.5  # never outside, not even by rounding
    assert (a, b, c) == pytest.approx((0.0, 1.5, 2.5), abs=1e-9)


def test_every_downstream_cell_gets_its_cached_value(corpus, tmp_path, capsys):
    """Logistic regression: the p and log-likelihood columns (200 formula cells) are recomputed, checked here with
    numpy from the written coefficients."""
    path, book = fresh(corpus, "logistic", tmp_path)
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", "logit", "--json")
    assert code == 0
    assert json.loads(out)["formulas_evaluated"] == 201
    pkg = Package.open(path)
    w = [pkg.read_cell("logit", r).value for r in ("H2", "H3", "H4")]
    x, y = logistic_data()
    p = 1 / (1 + np.exp(-(w[0] + x @ np.array(w[1:]))))
    cached_p = np.array([pkg.read_cell("logit", f"D{2 + i}").value for i in range(len(y))])
    cached_ll = np.array([pkg.read_cell("logit", f"E{2 + i}").value for i in range(len(y))])
    np.testing.assert_allclose(cached_p, p, rtol=1e-12)
    np.testing.assert_allclose(cached_ll, y * np.log(p) + (1 - y) * np.log(1 - p), rtol=1e-10)


@pytest.mark.parametrize("key", list(BAD))
def test_bad_input_is_one_line_naming_the_cell(corpus, key, tmp_path, capsys):
    path, book = fresh(corpus, key, tmp_path)
    before = path.read_bytes()
    code, out, err = run_cli(capsys, "solve", path, "--sheet", "bad")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert any(f" {w}:" in lines[0] or f" {w}" in lines[0] for w in book.where), (book.where, lines[0])
    assert all(word in lines[0].lower() for word in book.words), (book.words, lines[0])
    assert path.read_bytes() == before


def test_bad_input_through_the_command_line_exit_code(corpus, tmp_path):
    path, _ = fresh(corpus, "integer", tmp_path)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "xlcf", "solve", str(path), "--sheet", "bad"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bad!A2" in proc.stderr and "integer" in proc.stderr
    assert path.read_bytes() == before


def test_flags_instead_of_the_stored_model(corpus, tmp_path, capsys):
    """Rosenbrock with x, y <= 0.5: the constrained minimum is 0.25 at (0.5, 0.25)."""
    path, _ = fresh(corpus, "rosenbrock", tmp_path)
    code, out, err = run_cli(
        capsys,
        "solve",
        path,
        "--sheet",
        "rosenbrock",
        "--objective",
        "D2",
        "--vars",
        "A2:B2",
        "--bound",
        "A2:B2<=0.5",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["model_source"] == "flags" and data["objective_after"] == pytest.approx(0.25, abs=1e-8)
    pkg = Package.open(path)
    assert pkg.read_cell("rosenbrock", "A2").value == pytest.approx(0.5, abs=1e-7)
    assert pkg.read_cell("rosenbrock", "B2").value == pytest.approx(0.25, abs=1e-6)


def test_max_and_value_flags_override_the_stored_sense(corpus, tmp_path, capsys):
    path, _ = fresh(corpus, "value_of", tmp_path)
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", "target", "--value", "33", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["sense"] == "value" and data["objective_after"] == pytest.approx(33, abs=1e-7)  # x = 3
    assert Package.open(path).read_cell("target", "A2").value == pytest.approx(3.0, abs=1e-8)
    path, _ = fresh(corpus, "nonnegative", tmp_path)
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", "bounds", "--max", "--bound", "A2:B2<=3", "--json")
    data = json.loads(out)
    # (a+1)^2 + (b-2)^2 on [0, 3]^2 (solver_neg: a, b >= 0): largest at a = 3, b = 0 -> 16 + 4
    assert code == 0 and data["objective_after"] == pytest.approx(20.0, abs=1e-9)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "momentum", "rmsprop", "adamw"])
def test_the_engines_first_order_optimizers(corpus, tmp_path, capsys, optimizer):
    path, _ = fresh(corpus, "nonnegative", tmp_path)
    code, out, err = run_cli(
        capsys,
        "solve",
        path,
        "--sheet",
        "bounds",
        "--optimizer",
        optimizer,
        "--json",
        "--lr",
        "0.05",
        "--epochs",
        "2000",
        "--restarts",
        "0",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["optimizer"] == optimizer and data["objective_after"] == pytest.approx(1.0, abs=1e-3)
    assert Package.open(path).read_cell("bounds", "A2").value >= 0  # projected


@pytest.mark.parametrize("optimizer", ["als", "gibbs"])
def test_solvers_that_do_not_apply_are_refused(corpus, tmp_path, capsys, optimizer):
    path, _ = fresh(corpus, "rosenbrock", tmp_path)
    before = path.read_bytes()
    code, _, err = run_cli(capsys, "solve", path, "--sheet", "rosenbrock", "--optimizer", optimizer)
    assert code == 2 and "does not apply" in err and "lbfgs" in err
    assert path.read_bytes() == before


def test_dry_run_and_backup(corpus, tmp_path, capsys):
    path, _ = fresh(corpus, "rosenbrock", tmp_path)
    before = path.read_bytes()
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", "rosenbrock", "--dry-run", "--json")
    data = json.loads(out)
    assert code == 0 and data["dry_run"] and data["saved"] is None and data["objective_after"] < 1e-8
    assert path.read_bytes() == before
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", "rosenbrock", "--backup", "--json")
    data = json.loads(out)
    assert code == 0 and Path(data["backup"]).read_bytes() == before
    for key in (
        "sheet",
        "objective",
        "objective_before",
        "objective_after",
        "variables",
        "optimizer",
        "device",
        "seconds",
        "cells_written",
        "formulas_evaluated",
    ):
        assert key in data
    assert math.isfinite(data["seconds"]) and data["device"] == "cpu"


def test_plain_output(corpus, tmp_path, capsys):
    path, _ = fresh(corpus, "rosenbrock", tmp_path)
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", "rosenbrock")
    assert code == 0 and "rosenbrock!D2" in out and "24.2 ->" in out and "2 variable cells" in out


def test_same_seed_same_result(corpus, tmp_path, capsys):
    results = []
    for i in range(2):
        folder = tmp_path / str(i)
        folder.mkdir()
        path, _ = fresh(corpus, "logistic", folder)
        run_cli(capsys, "solve", path, "--sheet", "logit", "--seed", "3")
        results.append(members(path)["xl/worksheets/sheet1.xml"])
    assert results[0] == results[1]


@pytest.mark.libreoffice
@pytest.mark.slow
def test_cached_values_written_equal_libreoffices_recalculation(corpus, tmp_path, capsys, libreoffice):
    """What a solve writes is what a spreadsheet computes from the written variables: LibreOffice recalculates
    the solved books and agrees on every formula cell."""
    paths = []
    for key in ("logistic", "line_noisy", "bounds"):
        path, book = fresh(corpus, key, tmp_path)
        assert run_cli(capsys, "solve", path, "--sheet", book.sheet)[0] == 0
        paths.append((path, book))
    results = libreoffice(*[p for p, _ in paths])
    for (path, book), lo in zip(paths, results):
        pkg = Package.open(path)
        checked = 0
        for ref, cell in lo.sheets[book.sheet].items():
            if cell.get("t") == "formula":
                assert pkg.read_cell(book.sheet, ref).value == pytest.approx(cell["v"], rel=1e-9, abs=1e-12), ref
                checked += 1
        assert checked >= 1


def test_locked_variable_cells_of_a_protected_sheet_are_refused_unless_forced(corpus, tmp_path, capsys):
    path, book = fresh(corpus, "bounds", tmp_path)
    protect_sheet(path, book.sheet)
    before = path.read_bytes()
    code, _, err = run_cli(capsys, "solve", path, "--sheet", book.sheet)
    assert code == 2 and f"sheet '{book.sheet}' is protected" in err and "A2" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and path.read_bytes() == before
    code, out, _ = run_cli(capsys, "solve", path, "--sheet", book.sheet, "--force", "--json")
    assert code == 0
    pkg = Package.open(path)
    assert pkg.read_cell(book.sheet, "B2").value == pytest.approx(1.5, abs=1e-9)
    with zipfile.ZipFile(path) as zf:
        assert b'<sheetProtection sheet="1"' in zf.read(pkg.sheet_part(book.sheet))
