"""One sheet, three front ends, one fit: ``xlcf fit`` (the zip path), the Fit button through xlwings' remote
engine (``xw.Book(json=...)``) and the CF_FIT worksheet function read the same settings cells — ``wd`` included —
and give the same factors."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import numpy as np
import pytest

from tests.excel.test_excel_macros import action_box, name_box, run_macro
from tests.excel.test_excel_payload import collab_computed, payload_from_xlsx
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import cell_ref, col_letter, split_ref

EPOCHS, WD = 150, 0.05


@pytest.fixture(scope="module")
def xw():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    return xlwings


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A generated collab book whose sheets carry a ``wd`` settings cell (and fewer epochs, for speed)."""
    from xlcf.cli import main

    path = tmp_path_factory.mktemp("contract") / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    pkg = Package.open(path)
    for sheet in ("dotprod", "bias"):
        free = col_letter(2 + max(split_ref(ref)[1] for ref in pkg.used_cells(sheet)))  # right of everything
        pkg.write_values(sheet, {f"{free}1": WD})
        pkg.set_defined_name("wd", f"{sheet}!${free}$1", sheet=sheet)
        epochs = pkg.name_areas(sheet, "epochs")[0]
        pkg.write_values(sheet, {cell_ref(epochs.top, epochs.left): EPOCHS})
    pkg.save()
    return path


def _block(pkg: Package, sheet: str, name: str) -> np.ndarray:
    area = pkg.name_areas(sheet, name)[0]
    return np.array(pkg.read_values(sheet, area), dtype=float)


def _zip_fit(book, tmp_path, sheet, **options):
    from xlcf.actions.fit import FitOptions, fit_workbook

    copy = tmp_path / f"{sheet}-{len(options)}.xlsx"
    shutil.copy(book, copy)
    summary = fit_workbook(copy, sheet, FitOptions(**options))
    pkg = Package.open(copy)
    blocks = {n: _block(pkg, sheet, n) for n in ("user_factors", "movie_factors")}
    if sheet == "bias":
        blocks.update({n: _block(pkg, sheet, n).reshape(-1) for n in ("user_bias", "movie_bias")})
    return summary, blocks


def _predictions(blocks) -> np.ndarray:
    pred = blocks["user_factors"] @ blocks["movie_factors"]
    if "user_bias" in blocks:
        pred = pred + blocks["user_bias"].reshape(-1, 1) + blocks["movie_bias"].reshape(1, -1)
    return pred


@pytest.mark.parametrize("sheet", ["dotprod", "bias"])
def test_zip_path_macro_and_udf_give_the_same_fit(xw, book, tmp_path, sheet):
    from xlcf.excel import macros, udfs

    summary, zipped = _zip_fit(book, tmp_path, sheet)
    assert summary["weight_decay"] == WD and summary["epochs"] == EPOCHS
    assert summary["settings_from_sheet"]["weight_decay"].startswith(f"{sheet}!")

    # The Fit button through xlwings' remote engine, on the same cells.
    payload = payload_from_xlsx(book, sheet, computed=collab_computed(book, sheet))
    result, actions = run_macro(xw, payload, macros.fit)
    assert result.ok, result.status
    boxes = {
        action_box(a): np.array(a["values"], dtype=float)
        for a in actions
        if action_box(a) != name_box(payload, sheet, "status")
    }
    macro = {n: boxes[name_box(payload, sheet, n)] for n in ("user_factors", "movie_factors")}
    if sheet == "bias":
        macro.update({n: boxes[name_box(payload, sheet, n)].reshape(-1) for n in ("user_bias", "movie_bias")})
    for name, values in zipped.items():
        np.testing.assert_allclose(macro[name], values, rtol=0, atol=1e-9, err_msg=name)

    # CF_FIT with the sheet's settings as arguments predicts what the fitted sheet predicts.
    pkg = Package.open(book)
    ratings = pkg.read_values(sheet, pkg.name_areas(sheet, "ratings")[0])
    k = zipped["user_factors"].shape[1]
    predicted = np.array(udfs.cf_fit(ratings, k, "adam", EPOCHS, 0.05, 0, sheet == "bias", WD), dtype=float)
    np.testing.assert_allclose(predicted, _predictions(zipped), rtol=0, atol=1e-9)


def test_the_wd_cell_changes_the_fit(book, tmp_path):
    """The sheet's wd is used: overriding it with 0 gives other factors (so the agreement above means something)."""
    with_wd = _zip_fit(book, tmp_path, "dotprod")[1]
    summary, without = _zip_fit(book, tmp_path, "dotprod", overrides={"weight_decay": 0.0})
    assert summary["weight_decay"] == 0.0
    assert np.abs(with_wd["user_factors"] - without["user_factors"]).max() > 1e-3
