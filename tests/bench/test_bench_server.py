"""The second-press benchmark (xlcf.bench.server): its payload builder and action replay behave like an
xlwings client, and one short run against a real `xlcf serve` reports figures from the server's own timing."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import pytest

from xlcf.bench.server import apply_actions, bench_second_press, book_payload, server_ms, set_named_cell


@pytest.fixture(scope="module")
def collab(tmp_path_factory):
    from xlcf.cli import main

    path = tmp_path_factory.mktemp("bench-server") / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


def test_book_payload_matches_the_test_suites_client_payload(collab):
    from tests.excel.test_excel_payload import payload_from_xlsx

    ours = book_payload(collab, "bias", version="9.9.9", client="Microsoft Office Scripts")
    theirs = payload_from_xlsx(collab, "bias", client="Microsoft Office Scripts", version="9.9.9")
    key = lambda n: (n["name"], n["scope_sheet_name"] or "")
    assert sorted(ours["names"], key=key) == sorted(theirs["names"], key=key)
    for mine, other in zip(ours["sheets"], theirs["sheets"], strict=True):
        assert mine["name"] == other["name"] and len(mine["values"]) == len(other["values"])
        # constants agree everywhere; formula cells are empty in ours (the fit reads constants only)
        for row_a, row_b in zip(mine["values"], other["values"], strict=True):
            assert all(a == b for a, b in zip(row_a, row_b, strict=True) if a is not None)


def test_apply_actions_and_set_named_cell(collab):
    payload = book_payload(collab, "dotprod", version="1")
    set_named_cell(payload, "dotprod", "optimizer", "als")
    values = payload["sheets"][0]["values"]
    assert "als" in [v for row in values for v in row]
    apply_actions(
        payload,
        [
            {
                "func": "setValues",
                "sheet_position": 0,
                "start_row": 1,
                "start_column": 1,
                "row_count": 2,
                "column_count": 2,
                "values": [[1, 2], [3, 4]],
            },
            {"func": "alert", "args": ["x"]},
        ],
    )
    assert [row[1:3] for row in values[1:3]] == [[1, 2], [3, 4]]
    with pytest.raises(KeyError):
        set_named_cell(payload, "dotprod", "no_such_name", 1)


def test_server_ms_reads_server_timing():
    assert server_ms({"Server-Timing": "app;dur=12.5"}) == 12.5
    with pytest.raises(ValueError):
        server_ms({})


@pytest.mark.slow
def test_a_short_run_reports_both_sheets():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    result = bench_second_press(repeats=1, optimizer="als", server_args=("--threads", "1"))
    assert [p.sheet for p in result.presses] == ["dotprod", "bias"]
    for press in result.presses:
        assert press.second_server_ms > 0 and press.second_roundtrip_ms >= press.second_server_ms * 0.5
        assert press.status.startswith("Fitted: als") and "press took" in press.status
    assert result.startup_s > 0 and len(result.lines()) == 5
