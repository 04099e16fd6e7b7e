"""`xlcf check` and `xlcf recalc` on real files: exit codes, JSON keys, what changes in the file and what not."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from openpyxl.worksheet.formula import ArrayFormula

from tests.helpers.fit_books import zip_members
from tests.helpers.solver_corpus import build_all
from xlcf.formula import FormulaBook
from xlcf.ooxml import ErrorValue, Package

CHECK_KEYS = {"cells_checked", "mismatches", "volatile", "unsupported", "excel_vs_libreoffice"}


def xlcf(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xlcf", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def collab(tmp_path) -> Path:
    path = tmp_path / "collab.xlsx"
    out = xlcf("new", "collab", "-o", path)
    assert out.returncode == 0, out.stderr
    return path


def only_sheets_changed(before: dict, after: dict, sheets: set[str]) -> None:
    assert list(after) == [n for n in before if n in after]
    changed = {n for n in after if before[n] != after[n]}
    assert changed <= sheets | {"xl/workbook.xml"}, changed
    if "xl/workbook.xml" in changed:
        strip = lambda b: re.sub(rb"<calcPr[^>]*/>", b"", b)
        assert strip(before["xl/workbook.xml"]) == strip(after["xl/workbook.xml"])


def test_recalc_fills_every_cached_value_and_check_then_agrees(collab, tmp_path):
    before = zip_members(collab)
    out = xlcf("check", collab, "--json")
    assert out.returncode == 0
    report = json.loads(out.stdout)
    assert report.keys() >= CHECK_KEYS and report["cells_checked"] == 0  # openpyxl wrote no cached values
    out = xlcf("recalc", collab, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["cells_written"] == summary["cells_evaluated"] == 452 and summary["unsupported"] == []
    after = zip_members(collab)
    only_sheets_changed(before, after, {"xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"})
    pkg = Package.open(collab)
    rmse = pkg.read_cell("dotprod", "V42")
    assert rmse.formula.startswith("=SQRT(") and isinstance(rmse.value, float) and 0 < rmse.value < 5
    out = xlcf("check", collab, "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["cells_checked"] == 452 and report["mismatches"] == []
    text = xlcf("check", collab)
    assert text.returncode == 0 and "452 formula cells checked, 0 mismatches" in text.stdout


def test_recalc_dry_run_and_backup(collab):
    original = collab.read_bytes()
    out = xlcf("recalc", collab, "--dry-run")
    assert out.returncode == 0 and "would write 452" in out.stdout
    assert collab.read_bytes() == original
    out = xlcf("recalc", collab, "--backup", "--sheet", "bias")
    assert out.returncode == 0, out.stderr
    assert Path(str(collab) + ".bak").read_bytes() == original
    pkg = Package.open(collab)
    assert pkg.read_cell("dotprod", "V42").value is None  # only the bias sheet was recalculated
    assert isinstance(pkg.read_cell("bias", "V42").value, float)


def test_check_reports_a_mismatch_with_exit_1(corpus, tmp_path):
    path = tmp_path / "tampered.xlsx"
    shutil.copy(corpus["sumproduct_mask"].path, path)
    pkg = Package.open(path)
    pkg.set_cached_values("bias", {"J30": 123.0})
    pkg.save()
    out = xlcf("check", path, "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    by_cell = {m["cell"]: m for m in report["mismatches"]}
    # J30 itself, and V42 evaluated one step from the tampered J30; nothing further cascades
    assert set(by_cell) == {"bias!J30", "bias!V42"}
    m = by_cell["bias!J30"]
    assert m["cached"] == 123.0 and m["formula"] == FormulaBook.open(path).formula("bias", "J30")
    assert isinstance(m["evaluated"], float) and m["evaluated"] != 123.0
    assert report["cells_checked"] == 226
    text = xlcf("check", path)
    assert text.returncode == 1 and "mismatch bias!J30" in text.stdout


def test_check_lists_unsupported_volatile_and_excel_vs_libreoffice(corpus, tmp_path):
    out = xlcf("check", corpus["if_outside"].path, "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["mismatches"] == []
    (diff,) = report["excel_vs_libreoffice"]
    assert diff["cell"] == "bias!V42" and "SUMXMY2" in diff["formula"] and diff["excel"] != diff["libreoffice"]
    out = xlcf("check", corpus["unsupported_function"].path, "--json")
    (u,) = json.loads(out.stdout)["unsupported"]
    assert u["cell"] == "bad!C2" and u["function"] == "BESSELJ"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"], ws["A2"], ws["A3"] = "=RAND()", "=NOW()", "=1+1"
    path = tmp_path / "volatile.xlsx"
    wb.save(path)
    xlcf("recalc", path)
    report = json.loads(xlcf("check", path, "--json").stdout)
    assert report["volatile"] == ["Sheet!A1", "Sheet!A2"] and report["cells_checked"] == 1


def test_recalc_writes_array_formula_ranges(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "a"
    for r in range(1, 4):
        ws.cell(r, 1, float(r))
    ws["C1"] = ArrayFormula("C1:C3", "=A1:A3*10")
    ws["D1"] = '=IF(C2>15,"big","small")'
    path = tmp_path / "arr.xlsx"
    wb.save(path)
    assert xlcf("recalc", path).returncode == 0
    pkg = Package.open(path)
    assert [pkg.read_cell("a", f"C{r}").value for r in (1, 2, 3)] == [10.0, 20.0, 30.0]
    assert pkg.read_cell("a", "D1").value == "big"
    assert json.loads(xlcf("check", path, "--json").stdout)["cells_checked"] == 4


def test_bad_input_is_one_line_and_the_file_is_unchanged(corpus, tmp_path):
    path = tmp_path / "circular.xlsx"
    shutil.copy(corpus["circular"].path, path)
    original = path.read_bytes()
    out = xlcf("recalc", path)
    assert out.returncode == 2 and path.read_bytes() == original
    line = out.stderr.strip()
    assert "\n" not in line and "bad!C2" in line and "circular reference" in line
    out = xlcf("check", path, "--sheet", "nope")
    assert out.returncode == 2 and "no sheet 'nope'" in out.stderr
    missing = xlcf("check", tmp_path / "missing.xlsx")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_recalc_keeps_the_cache_of_an_unsupported_formula(corpus, tmp_path):
    path = tmp_path / "unsupported.xlsx"
    shutil.copy(corpus["unsupported_function"].path, path)
    before = Package.open(path).read_cell("bad", "C2").value
    out = xlcf("recalc", path)
    assert out.returncode == 0 and "bad!C2 kept its cached value" in out.stderr and "BESSELJ" in out.stderr
    assert Package.open(path).read_cell("bad", "C2").value == before
    assert not isinstance(before, ErrorValue) or before.code
