"""The rough edges a first run hits: each answered with one clear line (or the human summary), nothing written."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from xlcf.catalog import suggested_lr


def xlcf(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "xlcf", *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def test_an_ods_file_is_named_and_the_user_told_to_save_as_xlsx(tmp_path):
    ods = tmp_path / "lesson.ods"
    with zipfile.ZipFile(ods, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        zf.writestr("content.xml", "<office:document-content/>")
    before = ods.read_bytes()
    done = xlcf("fit", ods, "--sheet", "dotprod")
    assert done.returncode == 2
    assert "OpenDocument spreadsheet (.ods)" in done.stderr and "save it as .xlsx" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert ods.read_bytes() == before


def test_a_gradient_descent_sheet_given_to_fit_points_to_step(tmp_path):
    book = tmp_path / "gd.xlsx"
    assert xlcf("new", "graddesc", "-o", book).returncode == 0
    before = book.read_bytes()
    done = xlcf("fit", book, "--sheet", "adam")
    assert done.returncode == 2, done.stderr
    assert "gradient-descent sheet" in done.stderr and "xlcf step gd.xlsx --sheet adam" in done.stderr
    assert book.read_bytes() == before


def test_a_sheet_already_at_its_minimum_says_so(tmp_path):
    book = tmp_path / "lesson.xlsx"
    assert xlcf("new", "collab", "-o", book).returncode == 0
    first = xlcf("fit", book, "--sheet", "dotprod")
    assert first.returncode == 0, first.stderr
    again = xlcf("fit", book, "--sheet", "dotprod", "--json")
    assert again.returncode == 0, again.stderr
    import json

    summary = json.loads(again.stdout)
    if summary["improved"]:  # a refit from the minimum may still shave off rounding; it must not move the RMSE
        assert summary["rmse_after"] == pytest.approx(summary["rmse_before"], abs=1e-5)
    else:
        assert any("already at the minimum" in note for note in summary["notes"])
        assert not any("try more epochs" in note for note in summary["notes"])


def test_the_kept_factors_note_tells_a_minimum_from_a_short_run():
    from types import SimpleNamespace

    from xlcf.actions.fit import already_at_minimum_note

    at_minimum = SimpleNamespace(
        runs=[{"train_rmse": 0.39291, "stopped": "converged"}, {"train_rmse": 0.39300, "stopped": "converged"}]
    )
    assert "already at the minimum" in already_at_minimum_note(0.3929, at_minimum)
    cut_short = SimpleNamespace(runs=[{"train_rmse": 0.5, "stopped": "callback"}])
    note = already_at_minimum_note(0.45, cut_short)
    assert "already at the minimum" not in note and "try more epochs" in note


def test_divergence_advice_starts_from_the_optimizers_default():
    assert suggested_lr("sgd", 100.0, full_batch=True) == 1.5  # the full-batch default, known to work
    assert suggested_lr("sgd", 1.0, full_batch=True) == pytest.approx(0.1)  # already below it: a tenth
    assert suggested_lr("adam", 10.0, full_batch=False) < 10.0
