"""Fitted workbooks checked by a real spreadsheet engine: LibreOffice's recalculation gives the RMSE `xlcf fit
--json` reported, and so do the cached values. Also fits workbooks LibreOffice wrote (a round trip, and one with a
pivot table made through UNO). Two soffice starts in all: one to make the books, one to recalculate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from tests.actions.test_fit import _quickstart_xlsm, assert_only_sheet_changed, fit_json
from tests.helpers.fit_books import excel_like, lesson_book, zip_members
from tests.helpers.libreoffice import SYSTEM_PYTHON
from xlcf.actions.blocks import find_blocks
from xlcf.cli import main
from xlcf.ooxml.package import Package

pytestmark = [pytest.mark.libreoffice, pytest.mark.slow]
LO_PIVOT = Path(__file__).parents[1] / "helpers" / "lo_pivot.py"


def libreoffice_make(jobs: list[dict], tmp_path: Path) -> None:
    jobs_file = tmp_path / "lo_jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(LO_PIVOT), str(jobs_file)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fitted_workbooks_recalculate_to_the_reported_rmse(libreoffice, tmp_path, capsys):
    # --- books made by LibreOffice: a plain round trip (dot) and one with a pivot table (bias)
    src_dot = lesson_book(tmp_path / "src_dot.xlsx", sheet="dotprod")
    src_bias = lesson_book(tmp_path / "src_bias.xlsx", sheet="bias", bias=True)
    lo_dot, lo_pivot = tmp_path / "lo_roundtrip.xlsx", tmp_path / "lo_pivot.xlsx"
    libreoffice_make(
        [
            {"input": str(src_dot), "output": str(lo_dot), "pivot": False},
            {"input": str(src_bias), "output": str(lo_pivot), "pivot": True},
        ],
        tmp_path,
    )
    assert any(n.startswith("xl/pivotTables/") for n in zip_members(lo_pivot))

    # --- xlcf's own workbook, both sheets
    collab = tmp_path / "collab.xlsx"
    assert main(["new", "collab", "-o", str(collab)]) == 0
    collab_dot, collab_bias = tmp_path / "collab_dot.xlsx", tmp_path / "collab_bias.xlsx"
    shutil.copy(collab, collab_dot)
    shutil.copy(collab, collab_bias)

    excel_book = excel_like(lesson_book(tmp_path / "excel_like.xlsx", sheet="bias", bias=True))
    cases = [
        (collab_dot, "dotprod", []),
        (collab_bias, "bias", []),
        (lo_dot, "dotprod", ["--epochs", "300"]),
        (lo_pivot, "bias", ["--optimizer", "lbfgs"]),
        (excel_book, "bias", ["--epochs", "200"]),
    ]
    reports = []
    for path, sheet, extra in cases:
        before = zip_members(path)
        data = fit_json(capsys, path, "--sheet", sheet, *extra)
        assert_only_sheet_changed(
            before, zip_members(path), Package.open(path).sheet_part(sheet), _readers(path, sheet)
        )
        reports.append(data)
    # a second fit with --history adds the fit_log sheet and its chart; LibreOffice must open that too
    history = fit_json(capsys, collab_bias, "--sheet", "dotprod", "--epochs", "25", "--history")
    xlsm = _quickstart_xlsm(tmp_path)
    fit_json(
        capsys,
        xlsm,
        "--sheet",
        "ratings",
        "--ratings",
        "B2:P16",
        "--user-factors",
        "B20:D34",
        "--movie-factors",
        "F20:T22",
        "--epochs",
        "50",
    )
    assert reports[0]["rmse_after"] <= 0.3933 and reports[1]["rmse_after"] <= 0.3191
    assert reports[2]["source"] == "solver" and reports[3]["source"] == "solver"

    recalculated = libreoffice(*[c[0] for c in cases], xlsm)
    xlsm_lo = recalculated.pop(5)
    bias_rmse_cell = find_blocks(Package.open(collab_bias), "bias").rmse.ref
    assert recalculated[1].value("bias", bias_rmse_cell) == pytest.approx(reports[1]["rmse_after"], abs=1e-6)
    reports[1] = history  # collab_bias was fitted again on dotprod; its bias sheet is unchanged since
    cases[1] = (collab_bias, "dotprod", [])
    fit_log = recalculated[1].sheets["fit_log"]
    assert fit_log["A1"]["v"] == "epoch" and fit_log["A26"]["v"] == 25
    assert xlsm_lo.value("ratings", "B2") == 2.0
    for (path, sheet, _), data, lo in zip(cases, reports, recalculated):
        pkg = Package.open(path)
        blocks = find_blocks(pkg, sheet)
        rmse_ref = blocks.rmse.ref
        # LibreOffice's own recalculation of the saved file
        assert lo.value(sheet, rmse_ref) == pytest.approx(data["rmse_after"], abs=1e-6), path.name
        # the cached values xlcf wrote: through the Package and through openpyxl
        assert pkg.read_cell(sheet, rmse_ref).value == pytest.approx(data["rmse_after"], abs=1e-6)
        ws = openpyxl.load_workbook(path, data_only=True)[sheet]
        assert ws[rmse_ref].value == pytest.approx(data["rmse_after"], abs=1e-6)
        cached = np.array(pkg.read_values(sheet, blocks.predictions), dtype=float)
        lo_pred = np.array([[lo.value(sheet, ref) for ref in row] for row in blocks.predictions.cells()], dtype=float)
        np.testing.assert_allclose(cached, lo_pred, rtol=0, atol=1e-9)
    assert "pivot" in recalculated[3].sheets and recalculated[3].value("pivot_data", "C2") is not None


def _readers(path, sheet: str) -> tuple[str, ...]:
    """Parts of the other sheets whose formulas read ``sheet``: a fit updates their cached values too."""
    pkg = Package.open(path)
    parts = []
    for other in pkg.sheet_names:
        if other == sheet:
            continue
        xml = pkg.read_member(pkg.sheet_part(other)).decode("utf-8", "replace")
        if f"{sheet}!" in xml or f"'{sheet}'!" in xml:
            parts.append(pkg.sheet_part(other))
    return tuple(parts)
