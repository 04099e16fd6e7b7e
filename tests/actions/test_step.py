"""`xlcf step`: pure step logic, the zip-level write (only owned cells change), reset, bad input."""

from __future__ import annotations

import json
import zipfile

import pytest

from xlcf.actions.step import (
    history_rows,
    leading_history,
    plan_reset,
    plan_step,
    reset_values,
    step_values,
    step_workbook,
)
from xlcf.cli import main
from xlcf.errors import ConfigError, DivergenceError, WorkbookError
from xlcf.lessons import graddesc_ref as ref
from xlcf.lessons.graddesc import build_graddesc
from xlcf.ooxml.package import Package


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "graddesc.xlsx"
    build_graddesc(path, seed=3)
    return path


def test_step_values_is_repeated_passes():
    x, y = ref.make_data(2)
    state = dict(ref.START["adam_ann"])
    new, rmses = step_values("adam_ann", x, y, state, ref.HYPER["adam_ann"], passes=3)
    s = state
    for i in range(3):
        res = ref.run_pass("adam_ann", x, y, s, ref.HYPER["adam_ann"])
        assert rmses[i] == res.rmse
        s = res.after
    assert new == s
    assert set(new) == set(ref.state_names("adam_ann"))


def test_step_values_bad_input():
    x, y = ref.make_data(0)
    with pytest.raises(ConfigError, match="passes"):
        step_values("basic", x, y, {"slope": 1, "const": 1}, {"lr": 1e-4}, passes=0)
    with pytest.raises(DivergenceError, match="smaller lr"):
        step_values("basic", x, y, {"slope": 1, "const": 1}, {"lr": 1.0}, passes=50)


def test_history_rows_append_and_keep_the_newest():
    rows = history_rows([(0, 9.0), (1, 8.0)], [7.0, 6.0], capacity=5)
    assert rows == [(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0), (None, None)]
    rows = history_rows([(0, 9.0), (1, 8.0)], [7.0, 6.0, 5.0, 4.0], capacity=3)
    assert rows == [(3, 6.0), (4, 5.0), (5, 4.0)]


def test_plans_continue_the_history_and_say_what_they_did():
    x, y = ref.make_data(0)
    state, hyper = dict(ref.START["momentum"]), ref.HYPER["momentum"]
    start_rmse = ref.rmse_of(state["slope"], state["const"], x, y)
    plan = plan_step("momentum", x, y, state, hyper, 2, [], capacity=4)
    assert plan.history[0] == (0, start_rmse) and plan.history[1:3] == [(1, plan.rmses[0]), (2, plan.rmses[1])]
    assert plan.history[3] == (None, None) and plan.rmse_after == plan.rmses[-1]
    assert plan.status.startswith("2 passes of momentum: a = ") and f"{start_rmse:.4f} ->" in plan.status
    assert plan_step("momentum", x, y, state, hyper, 1, [(0, 9.0), (1, 8.0)], capacity=None).history is None
    reset = plan_reset("momentum", x, y, plan.state, {"slope": 2.0}, capacity=3)
    assert reset.state == dict(ref.START["momentum"], slope=2.0) and reset.rmses == []
    assert reset.history == [(0, reset.rmse_after), (None, None), (None, None)]
    assert reset.status.startswith("Reset: a = 2, b = ")
    assert leading_history([0, 1, None, 3], [9.0, 8.0, 7.0, 6.0]) == [(0, 9.0), (1, 8.0)]
    assert leading_history([True, 1], [9.0, 8.0]) == []


def test_reset_values():
    assert reset_values("momentum") == ref.START["momentum"]
    assert reset_values("basic", {"slope": 5.0, "const": 2.0}) == {"slope": 5.0, "const": 2.0}


def test_step_workbook_writes_only_owned_cells(book):
    before = members(book)
    result = step_workbook(book, "rmsprop", passes=4)
    after = members(book)
    changed = {n for n in before if before[n] != after.get(n)}
    pkg = Package.open(book)
    rmsprop_part = pkg.sheet_part("rmsprop")
    assert changed <= {rmsprop_part, "xl/workbook.xml", "xl/calcChain.xml"}, changed
    assert set(after) == set(before)
    x, y = ref.make_data(3)
    expected = ref.run_passes("rmsprop", x, y, passes=4)
    assert result.after == expected[-1].after
    assert result.history == [r.rmse for r in expected]
    names = pkg.defined_names("rmsprop")
    for name, value in expected[-1].after.items():
        ref_ = names[name].split("!")[1].replace("$", "")
        assert pkg.read_cell("rmsprop", ref_).value == pytest.approx(value, rel=1e-15)
    hist_p = [row[0].value for row in pkg.read_range("rmsprop", names["history_pass"].split("!")[1])]
    hist_r = [row[0].value for row in pkg.read_range("rmsprop", names["history_rmse"].split("!")[1])]
    assert hist_p[:6] == [0, 1, 2, 3, 4, None]
    assert hist_r[0] == pytest.approx(expected[0].rmse_start)
    assert hist_r[1:5] == pytest.approx([r.rmse for r in expected])
    assert pkg.read_cell("rmsprop", "A2").value.startswith("4 passes of rmsprop: a = ")  # the status cell
    # formulas untouched: the after-pass cells are still formulas
    assert pkg.read_cell("rmsprop", names["lastslope"].split("!")[1].replace("$", "")).formula
    # a second step numbers passes on
    step_workbook(book, "rmsprop", passes=1)
    pkg = Package.open(book)
    assert pkg.read_cell("rmsprop", "N9").value == 5  # history pass column N (12 table columns + 2), row 4 + 5


def test_cli_step_and_reset(book, capsys):
    assert main(["step", str(book), "--sheet", "basic", "--passes", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    x, y = ref.make_data(3)
    expected = ref.run_passes("basic", x, y, passes=2)
    assert out["slope"] == expected[-1].after["slope"] and out["rmse_after"] == expected[-1].rmse
    assert out["rmse_before"] == pytest.approx(expected[0].rmse_start)
    assert main(["step", str(book), "--sheet", "basic", "--reset", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == ref.START["basic"]
    pkg = Package.open(book)
    assert pkg.read_cell("basic", "B4").value == 1 and pkg.read_cell("basic", "B5").value == 1
    hist = [row[0].value for row in pkg.read_range("basic", "P4:P8")]  # 14 table columns + 2
    assert hist == [0, None, None, None, None]


def test_dry_run_and_errors_leave_the_file_unchanged(book, capsys):
    original = book.read_bytes()
    assert main(["step", str(book), "--sheet", "adam", "--dry-run"]) == 0
    assert book.read_bytes() == original
    step_workbook(book, "adam", passes=2)
    stepped = book.read_bytes()
    assert main(["step", str(book), "--sheet", "adam", "--reset", "--dry-run"]) == 0
    assert "would reset" in capsys.readouterr().out
    assert book.read_bytes() == stepped
    book.write_bytes(original)
    assert main(["step", str(book), "--sheet", "nosuch"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["step", str(book), "--sheet", "adam", "--passes", "0"]) == 2
    assert book.read_bytes() == original
    # a diverging lr: nothing written, the message suggests a smaller lr
    pkg = Package.open(book)
    pkg.write_values("basic", {"B6": 0.5})
    pkg.save()
    diverging = book.read_bytes()
    assert main(["step", str(book), "--sheet", "basic", "--passes", "30"]) == 2
    assert "smaller lr" in capsys.readouterr().err
    assert book.read_bytes() == diverging
    # text in a start cell names the cell
    pkg = Package.open(book)
    pkg.write_values("basic", {"B4": "abc"})
    pkg.save()
    with pytest.raises(WorkbookError, match=r"basic!B4"):
        step_workbook(book, "basic")
    # not a graddesc workbook
    other = book.with_name("other.xlsx")
    from xlcf.data import lesson_crosstab
    from xlcf.lessons.collab import build_collab

    build_collab(other, lesson_crosstab())
    with pytest.raises(WorkbookError):
        step_workbook(other, "basic")
