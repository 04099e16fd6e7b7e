"""graddesc workbooks recalculated by real headless LibreOffice: lastslope, lastconst and rmse of every sheet
equal the numpy reference (`xlcf new graddesc --json`) to 1e-9 relative -- fresh, and after `xlcf step`."""

from __future__ import annotations

import json
import shutil

import pytest

from xlcf.actions.step import step_workbook
from xlcf.cli import main
from xlcf.lessons import graddesc_ref as ref

pytestmark = [pytest.mark.libreoffice, pytest.mark.slow]

REL = 1e-9
STEPS = {"basic": 2, "momentum": 1, "rmsprop": 3, "adam": 3, "adam_ann": 4}


@pytest.fixture(scope="module")
def recalculated(tmp_path_factory, libreoffice):
    folder = tmp_path_factory.mktemp("graddesc_lo")
    references = {}
    for seed in (0, 5):
        path = folder / f"g{seed}.xlsx"
        assert main(["new", "graddesc", "-o", str(path), "--seed", str(seed)]) == 0
        references[seed] = ref.reference(seed)
    stepped = folder / "stepped.xlsx"
    shutil.copy(folder / "g5.xlsx", stepped)
    for sheet, passes in STEPS.items():
        step_workbook(stepped, sheet, passes)
    # seed 5 is checked through its stepped copy (the fresh file is the same formulas with other x)
    results = libreoffice(folder / "g0.xlsx", stepped)
    return references, dict(zip((0, "stepped"), results))


@pytest.mark.parametrize("seed", [0])
def test_every_sheet_matches_the_reference(recalculated, seed):
    from xlcf.lessons.graddesc import sheet_cells

    references, results = recalculated
    res = results[seed]
    for sheet, expected in references[seed].items():
        cells = sheet_cells(sheet, ref.N_POINTS)
        for key in ("slope", "const", "lastslope", "lastconst", "rmse"):
            got = res.value(sheet, cells[key])
            assert got == pytest.approx(expected[key], rel=REL), (sheet, key)
        assert [r for r, c in res.sheets[sheet].items() if c.get("err")] == []
    x, y = ref.make_data(seed)
    assert [res.value("data", f"A{5 + i}") for i in range(len(x))] == list(x)
    assert [res.value("data", f"B{5 + i}") for i in range(len(x))] == pytest.approx(list(y), rel=REL)


def test_json_is_the_reference(tmp_path, capsys):
    assert main(["new", "graddesc", "-o", str(tmp_path / "g.xlsx"), "--seed", "5", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ref.reference(5)
    assert set(printed) == set(ref.KINDS)


def test_stepped_workbook_shows_the_next_pass(recalculated):
    """After N steps the start cells hold pass N's result, so the live sheet shows pass N+1."""
    from xlcf.lessons.graddesc import sheet_cells

    _references, results = recalculated
    res = results["stepped"]
    x, y = ref.make_data(5)
    for sheet, passes in STEPS.items():
        runs = ref.run_passes(sheet, x, y, passes=passes + 1)
        cells = sheet_cells(sheet, ref.N_POINTS)
        assert res.value(sheet, cells["slope"]) == pytest.approx(runs[-2].after["slope"], rel=1e-12)
        assert res.value(sheet, cells["lastslope"]) == pytest.approx(runs[-1].after["slope"], rel=REL)
        assert res.value(sheet, cells["lastconst"]) == pytest.approx(runs[-1].after["const"], rel=REL)
        assert res.value(sheet, cells["rmse"]) == pytest.approx(runs[-1].rmse, rel=REL)
        assert res.value(sheet, cells["rmse_start"]) == pytest.approx(runs[-2].rmse, rel=REL)
        first = cells["history_rmse"].split(":")[0]
        col, row = first[0], int(first[1:])
        history = [res.value(sheet, f"{col}{row + i}") for i in range(passes + 1)]
        assert history == pytest.approx([runs[0].rmse_start] + [r.rmse for r in runs[:-1]], rel=REL)
