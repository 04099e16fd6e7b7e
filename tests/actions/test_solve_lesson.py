"""The lesson's model written in many ways (tests/helpers/solver_corpus.py): `xlcf solve` and `xlcf fit`, with no
flags, reach the floor — the RMSE of the sheet's predictions over the rated cells within 0.1% of dot 0.3929 /
bias 0.3187 — whatever the objective cell computes (RMSE, SSE, MSE)."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest

from tests.helpers.solver_corpus import CF_VARIANTS, lesson
from xlcf.cli import main
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import parse_range

# The headline case (biases outside the IF, which the fast path refused) runs always; the rest are slow.
QUICK = {"if_outside"}


def rated_rmse_of_file(path, book) -> float:
    """RMSE over the rated cells, from the cached values of the prediction block the file now holds."""
    pkg = Package.open(path)
    sheet, ref = book.predictions
    area = parse_range(ref, sheet)
    pred = np.array([[c.value for c in row] for row in pkg.read_range(sheet, area)], dtype=float)
    r, _, _ = lesson()
    mask = ~np.isnan(r)
    return math.sqrt(float(((r[mask] - pred[mask]) ** 2).sum()) / mask.sum())


def variants():
    return [pytest.param(k, marks=() if k in QUICK else pytest.mark.slow) for k in CF_VARIANTS]


@pytest.mark.parametrize("key", variants())
@pytest.mark.parametrize("command", ["solve", "fit"])
def test_reaches_the_floor_with_no_flags(key, command, tmp_path, capsys):
    path = tmp_path / f"{key}.xlsx"
    book = CF_VARIANTS[key](path)
    original = zipfile.ZipFile(path).namelist()
    code = main([command, str(path), "--sheet", book.sheet, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    rmse = rated_rmse_of_file(path, book)
    assert rmse == pytest.approx(book.floor, rel=1e-3), (key, command, rmse, data.get("runs"))
    assert zipfile.ZipFile(path).namelist() == original
    # the objective cell's cached value is consistent with the predictions the file holds
    pkg = Package.open(path)
    objective = pkg.read_cell(book.sheet, book.objective).value
    n = int((~np.isnan(lesson()[0])).sum())
    assert any(objective == pytest.approx(v, rel=1e-9) for v in (rmse, rmse**2 * n, rmse**2)), (objective, rmse)


def test_fit_solves_through_the_formulas_when_the_fast_path_refuses(tmp_path, capsys):
    """The biases-outside-the-IF sheet: the fast path cannot read it; fit says so in a note and solves anyway."""
    path = tmp_path / "b.xlsx"
    book = CF_VARIANTS["if_outside"](path)
    code = main(["fit", str(path), "--sheet", book.sheet, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0 and "through the sheet's formulas" in out and "fast path does not know" in err


def test_fast_path_layout_reports_the_sheets_own_rmse(tmp_path, capsys):
    """On a layout the fast path knows, the RMSE fit reports is the sheet's RMSE cell as the evaluator computes
    it (Excel's SUMXMY2 semantics), equal to the cached value written there."""
    from tests.helpers.fit_books import lesson_book

    path = lesson_book(tmp_path / "l.xlsx", bias=True, sheet="bias")
    code = main(["fit", str(path), "--sheet", "bias", "--json", "--epochs", "300"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["source"] == "solver"
    cell = Package.open(path).read_cell("bias", "V41").value
    assert data["rmse_after"] == cell and data["rmse_after"] == pytest.approx(data["rmse_rated"], rel=1e-12)
