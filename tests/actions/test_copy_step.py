"""`xlcf step --copy FROM=TO`: a hand-made gradient-descent sheet stepped pass after pass, in Excel's automatic and
manual calculation modes, gives the values LibreOffice computes when the same copies are made through UNO."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.helpers.lo_steps import lo_copy_steps
from tests.helpers.protect import protect_sheet
from tests.helpers.solver_corpus import GD_SHEET, graddesc_book, graddesc_data, graddesc_pass
from xlcf.cli import main
from xlcf.ooxml.package import Package

NAMES = ["lastslope=slope", "lastconst=const"]
CELLS = [((GD_SHEET, "C2"), (GD_SHEET, "B2")), ((GD_SHEET, "C3"), (GD_SHEET, "B3"))]
WATCH = [(GD_SHEET, "B2"), (GD_SHEET, "B3")]


def copy_args(specs) -> list[str]:
    return [arg for spec in specs for arg in ("--copy", spec)]


def step(capsys, path, *args) -> tuple[int, dict | str]:
    code = main(["step", str(path), "--sheet", GD_SHEET, *args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


def expected(passes: int, manual: bool) -> list[tuple[float, float]]:
    """The copies done by hand with the sheet's own pass (tests/helpers/solver_corpus.graddesc_pass)."""
    x, y = graddesc_data(0)
    slope, const, out = 1.0, 1.0, []
    for _ in range(passes):
        res = graddesc_pass(slope, const, 1e-4, x, y)
        slope = res["new_a"][-1]
        if manual:  # both copies read the same calculation
            const = res["new_b"][-1]
        else:  # automatic: the sheet recalculated with the new slope before const is copied
            const = graddesc_pass(slope, const, 1e-4, x, y)["new_b"][-1]
        out.append((slope, const))
    return out


@pytest.mark.parametrize("manual", [False, True])
def test_copy_pairs_by_name_follow_the_calculation_mode(tmp_path, capsys, manual):
    path = graddesc_book(tmp_path / "gd.xlsx").path
    code, data = step(capsys, path, *copy_args(NAMES), "--passes", "4", *(["--manual"] if manual else []))
    assert code == 0, data
    assert data["mode"] == ("manual" if manual else "automatic")
    got = [(h["sgd!B2"], h["sgd!B3"]) for h in data["history"]]
    want = expected(4, manual)
    assert len(got) == len(want)
    # flat lists: pytest.approx compares numbers in a sequence, not nested tuples
    assert [v for pair in got for v in pair] == pytest.approx([v for pair in want for v in pair], rel=1e-12)
    pkg = Package.open(path)
    assert (pkg.read_cell(GD_SHEET, "B2").value, pkg.read_cell(GD_SHEET, "B3").value) == pytest.approx(got[-1])


def test_the_two_modes_differ(tmp_path, capsys):
    a, b = expected(2, False), expected(2, True)
    assert a[0][0] == b[0][0] and a[0][1] != pytest.approx(b[0][1], rel=1e-6)


@pytest.mark.libreoffice
@pytest.mark.slow
@pytest.mark.parametrize("manual", [False, True])
@pytest.mark.parametrize("how", ["names", "ranges", "one_range"])
def test_steps_equal_libreoffice_doing_the_same_copies(tmp_path, capsys, libreoffice, manual, how):
    path = graddesc_book(tmp_path / "gd.xlsx").path
    lo = lo_copy_steps(
        path,
        CELLS if how != "one_range" else [((GD_SHEET, "C2:C3"), (GD_SHEET, "B2:B3"))],
        3,
        manual=manual,
        watch=WATCH,
    )
    specs = {"names": NAMES, "ranges": ["C2=B2", "C3=B3"], "one_range": ["C2:C3=B2:B3"]}[how]
    code, data = step(capsys, path, *copy_args(specs), "--passes", "3", *(["--manual"] if manual else []))
    assert code == 0, data
    for ours, theirs in zip(data["history"], lo["passes"]):
        for cell, value in theirs.items():
            assert ours[cell] == pytest.approx(value, rel=1e-9), (cell, ours[cell], value)
    # every cached value in the file equals LibreOffice's recalculated value
    pkg = Package.open(path)
    checked = 0
    for ref, cell in lo["final"][GD_SHEET].items():
        if cell.get("t") != "formula":
            continue
        assert pkg.read_cell(GD_SHEET, ref).value == pytest.approx(cell["v"], rel=1e-9, abs=1e-12), ref
        checked += 1
    assert checked > 200


def test_bad_copies_name_what_is_wrong(tmp_path, capsys):
    path = graddesc_book(tmp_path / "gd.xlsx").path
    before = path.read_bytes()
    for args, words in (
        (["--copy", "lastslope=B2:B3"], "1x1"),
        (["--copy", "nosuchname=slope"], "nosuchname"),
        (["--copy", "slope=lastslope"], "sgd!C2"),
        (["--copy", "slope"], "FROM=TO"),
        (["--copy", "C2=B2", "--passes", "0"], "--passes"),
    ):
        code, err = step(capsys, path, *args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
    assert path.read_bytes() == before


def test_dry_run_writes_nothing_and_only_changed_cells_are_written(tmp_path, capsys):
    path = graddesc_book(tmp_path / "gd.xlsx").path
    before = path.read_bytes()
    code, data = step(capsys, path, "--copy", "lastslope=slope", "--dry-run")
    assert code == 0 and data["dry_run"] and path.read_bytes() == before
    members = zipfile.ZipFile(path).namelist()
    code, data = step(capsys, path, "--copy", "lastslope=slope")
    assert code == 0 and zipfile.ZipFile(path).namelist() == members
    assert data["cells_written"] == 1 + data["formulas_changed"]


def test_locked_targets_of_a_protected_sheet_are_refused_unless_forced(tmp_path, capsys):
    path = protect_sheet(graddesc_book(tmp_path / "gd.xlsx").path, GD_SHEET)
    before = path.read_bytes()
    code, err = step(capsys, path, *copy_args(NAMES))
    assert code == 2 and f"sheet '{GD_SHEET}' is protected" in err and "B2" in err and "--force" in err
    assert path.read_bytes() == before
    code, data = step(capsys, path, *copy_args(NAMES), "--force")
    assert code == 0, data
    pkg = Package.open(path)
    assert pkg.read_cell(GD_SHEET, "B2").value == pytest.approx(data["values"][f"{GD_SHEET}!B2"], rel=1e-12)
    with zipfile.ZipFile(path) as zf:
        assert b'<sheetProtection sheet="1"' in zf.read(pkg.sheet_part(GD_SHEET))
