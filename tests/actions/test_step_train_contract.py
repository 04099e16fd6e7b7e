"""One sheet, two front ends, the same cells: ``xlcf step`` / ``xlcf fit --sheet movielens`` (the zip path) and
the Step / Train buttons through xlwings' remote engine (``xw.Book(json=...)``, payloads as the clients send them)
read the same cells with one settings schema and write the same cells with the same values."""

from __future__ import annotations

import os
import re
import shutil

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import pytest

from tests.excel.test_excel_macros import cells_after, run_macro
from tests.excel.test_excel_payload import payload_from_xlsx
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import cell_ref

PRESS = re.compile(r"; press took [0-9.]+ s end to end$")  # the button's own addition to the status line


@pytest.fixture(scope="module")
def xw():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    return xlwings


def zip_cells(path, sheet: str) -> dict[str, object]:
    """ref -> value of every non-empty cell of a sheet of a file."""
    return {ref: cell.value for ref, cell in Package.open(path).used_cells(sheet).items() if cell.value is not None}


def changes(before: dict, after: dict) -> dict:
    """The cells whose value differs (a cleared cell maps to None)."""
    return {ref: after.get(ref) for ref in set(before) | set(after) if not _same(before.get(ref), after.get(ref))}


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool | str):
        return float(a) == float(b)
    return a == b


def payload_sheet(payload, actions, sheet: str) -> tuple[dict, dict]:
    """(ref -> value before, ref -> value after the actions) of one sheet of a payload, non-empty cells only."""
    before = cells_after(payload, [])
    after = cells_after(payload, actions)

    def one(cells):
        return {cell_ref(r, c): v for (s, r, c), v in cells.items() if s == sheet and v is not None}

    return one(before), one(after)


def assert_same_changes(zipped: dict, remote: dict, volatile=()) -> None:
    """Both front ends changed the same cells to the same values. ``volatile`` cells (clock times) are left out:
    a time written within the same second as the one before it does not change the cell."""
    volatile = set(volatile)
    assert set(zipped) - volatile == set(remote) - volatile, sorted((set(zipped) ^ set(remote)) - volatile)
    for ref in zipped:
        if ref in volatile:
            continue
        assert _same(zipped[ref], remote[ref]), (ref, zipped[ref], remote[ref])


# ---------------------------------------------------------------------------------------------- step / reset


@pytest.fixture(scope="module")
def graddesc(tmp_path_factory):
    from xlcf.cli import main

    path = tmp_path_factory.mktemp("contract") / "graddesc.xlsx"
    assert main(["new", "graddesc", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("sheet, passes", [("basic", 3), ("adam_ann", 4)])
def test_step_writes_the_same_cells_through_the_file_and_the_button(xw, graddesc, tmp_path, sheet, passes):
    from xlcf.actions.step import reset_workbook, step_workbook
    from xlcf.excel import macros

    copy = tmp_path / "book.xlsx"
    shutil.copy(graddesc, copy)
    before = zip_cells(copy, sheet)
    step_workbook(copy, sheet, passes)
    stepped = zip_cells(copy, sheet)
    zipped = changes(before, stepped)

    payload = payload_from_xlsx(graddesc, sheet)
    result, actions = run_macro(xw, payload, macros.step, passes=passes)
    assert result.ok, result.status
    remote = changes(*payload_sheet(payload, actions, sheet))
    status = Package.open(copy).name_areas(sheet, "status")[0].ref
    remote[status] = PRESS.sub("", remote[status])
    assert len(zipped) >= 2 + 2 * passes  # the start cells, the history rows and the status
    assert_same_changes(zipped, remote)

    # Reset from the stepped state: both back to the init cells, history to row 0.
    stepped_book = tmp_path / "stepped.xlsx"
    shutil.copy(copy, stepped_book)
    reset_workbook(copy, sheet)
    zipped = changes(stepped, zip_cells(copy, sheet))
    payload = payload_from_xlsx(stepped_book, sheet)
    result, actions = run_macro(xw, payload, macros.reset)
    assert result.ok, result.status
    remote = changes(*payload_sheet(payload, actions, sheet))
    remote[status] = PRESS.sub("", remote[status])
    assert len(zipped) >= 2 + passes  # the start cells and the history rows cleared
    assert_same_changes(zipped, remote)


# ---------------------------------------------------------------------------------------------- movielens


@pytest.mark.slow
def test_training_writes_the_same_cells_through_the_file_and_the_button(xw, synthetic_data, tmp_path):
    """The same settings, the same ratings, one training each way: every output cell equal but the clock's."""
    from xlcf.actions.train_book import train_workbook
    from xlcf.excel import macros
    from xlcf.lessons.movielens import build as mlbuild
    from xlcf.lessons.movielens import layout as mlay

    ratings = str(synthetic_data / "ratings.csv")
    book = mlbuild.build_movielens(
        tmp_path / "ml.xlsx",
        settings={"ratings_source": ratings, "optimizer": "adam", "epochs": 3, "factors": 4, "device": "cpu"},
    )
    train_workbook(book)  # a first training lays the embeddings sheet out for this data, so both can write it
    copy = tmp_path / "zip.xlsx"
    shutil.copy(book, copy)
    pkg = Package.open(copy)  # a second training with other settings cells: epochs and user (read by both)
    pkg.write_values("movielens", {mlay.SETTING_REF["epochs"]: 4, mlay.SETTING_REF["user_id"]: 3})
    pkg.save()
    shutil.copy(copy, book)
    befores = {sheet: zip_cells(copy, sheet) for sheet in ("movielens", *mlay.OUTPUT_SHEETS)}
    summary = train_workbook(copy)
    assert not summary["embeddings_relaid"]

    payload = payload_from_xlsx(book, "movielens")
    result, actions = run_macro(xw, payload, macros.train)
    assert result.ok, result.status
    assert result.details["valid_rmse"] == summary["valid_rmse"] and result.details["user_id"] == 3
    volatile = {
        "movielens": {mlay.METRIC_REF["fit_seconds"], mlay.METRIC_REF["trained_at"], mlay.STATUS_REF},
        "history": {f"E{mlay.HISTORY_TOP + i}" for i in range(4)},
    }
    for sheet, before in befores.items():
        zipped = changes(before, zip_cells(copy, sheet))
        remote = changes(*payload_sheet(payload, actions, sheet))
        assert zipped, sheet  # every output sheet changed (another training, another user)
        assert_same_changes(zipped, remote, volatile.get(sheet, ()))
    clock = re.compile(r"[0-9.]+ s on|\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)")
    zip_status = zip_cells(copy, "movielens")[mlay.STATUS_REF]
    remote_status = PRESS.sub("", payload_sheet(payload, actions, "movielens")[1][mlay.STATUS_REF])
    assert clock.sub("", zip_status) == clock.sub("", remote_status)
