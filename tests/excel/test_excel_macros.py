"""Macros against xlwings' remote engine, with payloads in the exact format of xlwings' clients built from
workbooks that `xlcf new` generated. The returned actions must write the right ranges with the right values
and nothing else."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import re

import numpy as np
import pytest

from tests.excel.test_excel_payload import _split_ref, collab_computed, payload_from_xlsx


@pytest.fixture(scope="module")
def xw():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    return xlwings


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    from xlcf.cli import main

    folder = tmp_path_factory.mktemp("macros")
    paths = {"collab": folder / "collab.xlsx", "graddesc": folder / "graddesc.xlsx"}
    assert main(["new", "collab", "-o", str(paths["collab"])]) == 0
    assert main(["new", "graddesc", "-o", str(paths["graddesc"])]) == 0
    return paths


def _col(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def name_box(payload, sheet: str, name: str):
    """(sheet_position, start_row, start_column, rows, cols) of a sheet-scoped name, 0-based like actions."""
    sheet_index = [s["name"] for s in payload["sheets"]].index(sheet)
    for item in payload["names"]:
        if item["name"].split("!")[-1] == name and item["scope_sheet_index"] == sheet_index:
            a, _, b = item["address"].partition(":")
            (r1, c1), (r2, c2) = _split_ref(a), _split_ref(b or a)
            return item["sheet_index"], r1 - 1, c1 - 1, r2 - r1 + 1, c2 - c1 + 1
    raise KeyError(name)


def maybe_box(payload, sheet, name):
    try:
        return name_box(payload, sheet, name)
    except KeyError:
        return None


def action_box(action):
    return (
        action["sheet_position"],
        action["start_row"],
        action["start_column"],
        action["row_count"],
        action["column_count"],
    )


def written(payload, actions) -> dict[tuple[str, int, int], object]:
    """(sheet, row, column), 1-based, -> value of every cell the ``setValues`` actions write."""
    sheets = [s["name"] for s in payload["sheets"]]
    out = {}
    for a in actions:
        if a["func"] == "setValues":
            for i, row in enumerate(a["values"]):
                for j, value in enumerate(row):
                    out[(sheets[a["sheet_position"]], a["start_row"] + i + 1, a["start_column"] + j + 1)] = value
    return out


def cells_after(payload, actions) -> dict[tuple[str, int, int], object]:
    """Every cell of the payload after the actions' writes (what the client's sheet shows), keyed as
    :func:`written`; empty cells are None."""
    out = {
        (sheet["name"], i + 1, j + 1): (None if value == "" else value)
        for sheet in payload["sheets"]
        for i, row in enumerate(sheet["values"])
        for j, value in enumerate(row)
    }
    out.update({k: (None if v == "" else v) for k, v in written(payload, actions).items()})
    return out


def name_cells(payload, sheet: str, name: str) -> list[tuple[str, int, int]]:
    """The cells of a sheet-scoped name, row by row, as keys of :func:`written`."""
    pos, r, c, n, m = name_box(payload, sheet, name)
    target = payload["sheets"][pos]["name"]
    return [(target, r + i + 1, c + j + 1) for i in range(n) for j in range(m)]


def run_macro(xw, payload, macro, **kwargs):
    book = xw.Book(json=payload)
    try:
        result = macro(book, **kwargs)
        return result, book.json()["actions"]
    finally:
        book.close()


def _ratings(payload, sheet):
    pos, r, c, n, m = name_box(payload, sheet, "ratings")
    values = payload["sheets"][pos]["values"]
    return np.array(
        [[np.nan if values[r + i][c + j] in (None, "") else values[r + i][c + j] for j in range(m)] for i in range(n)],
        dtype=float,
    )


# ---------------------------------------------------------------------------------------------- fit


@pytest.mark.parametrize("sheet", ["dotprod", "bias"])
def test_main_fits_the_active_sheet_and_writes_only_its_blocks(xw, books, sheet):
    from xlcf.excel import macros

    path = books["collab"]
    payload = payload_from_xlsx(path, sheet, computed=collab_computed(path, sheet))
    # Few epochs keep the test fast; the settings cells are what the macro reads.
    pos, r, c, _, _ = name_box(payload, sheet, "epochs")
    payload["sheets"][pos]["values"][r][c] = 60
    result, actions = run_macro(xw, payload, macros.main)
    assert result.ok, result.status
    boxes = {action_box(a): a for a in actions}
    expected = ["user_factors", "movie_factors", "status"] + (["user_bias", "movie_bias"] if sheet == "bias" else [])
    assert sorted(boxes) == sorted(name_box(payload, sheet, n) for n in expected)  # nothing else written
    assert all(a["func"] == "setValues" for a in actions)
    uf = np.array(boxes[name_box(payload, sheet, "user_factors")]["values"], dtype=float)
    mf = np.array(boxes[name_box(payload, sheet, "movie_factors")]["values"], dtype=float)
    pred = uf @ mf
    if sheet == "bias":
        ub = np.array(boxes[name_box(payload, sheet, "user_bias")]["values"], dtype=float).reshape(-1, 1)
        mb = np.array(boxes[name_box(payload, sheet, "movie_bias")]["values"], dtype=float).reshape(1, -1)
        pred = pred + ub + mb
    ratings = _ratings(payload, sheet)
    rated = np.isfinite(ratings)
    rmse = float(np.sqrt(np.mean((pred[rated] - ratings[rated]) ** 2)))
    status = boxes[name_box(payload, sheet, "status")]["values"][0][0]
    reported = re.search(r"RMSE ([0-9.]+) -> ([0-9.]+)", status)
    assert reported, status
    assert abs(float(reported.group(2)) - rmse) < 5e-4  # the written factors give the reported RMSE
    assert abs(result.details["rmse_after"] - rmse) < 1e-6
    assert result.details["rmse_after"] < result.details["rmse_before"]
    assert status.startswith("Fitted: ") and " epochs" in status and " s on " in status
    assert re.search(r"\(best of [234] runs\)", status), status  # multistart: the warm start + 1-3 restarts


def test_fit_with_text_in_ratings_writes_only_status_and_alert(xw, books):
    from xlcf.excel import macros

    path = books["collab"]
    payload = payload_from_xlsx(path, "dotprod", computed=collab_computed(path, "dotprod"))
    pos, r, c, _, _ = name_box(payload, "dotprod", "ratings")
    payload["sheets"][pos]["values"][r + 1][c + 2] = "five"
    result, actions = run_macro(xw, payload, macros.fit)
    assert not result.ok
    status_actions = [a for a in actions if a["func"] == "setValues"]
    assert [action_box(a) for a in status_actions] == [name_box(payload, "dotprod", "status")]
    text = status_actions[0]["values"][0][0]
    cell = f"{chr(64 + c + 3)}{r + 2}"
    assert text.startswith("Error: ") and f"dotprod!{cell}" in text and "'five'" in text
    alerts = [a for a in actions if a["func"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["args"][1] == "xlcf" and "five" in alerts[0]["args"][0]


def test_main_on_a_sheet_without_blocks_explains(xw, books):
    from xlcf.excel import macros

    payload = payload_from_xlsx(books["graddesc"], "data")
    result, actions = run_macro(xw, payload, macros.main)
    assert not result.ok and "nothing xlcf can fit" in result.status
    assert [a["func"] for a in actions] == ["alert"]  # the data sheet has no status cell: nothing written


# ---------------------------------------------------------------------------------------------- graddesc


def _state_cells(payload, sheet):
    from xlcf.lessons import graddesc_ref as ref

    return {name: name_cells(payload, sheet, name)[0] for name in ref.state_names(sheet)}


@pytest.mark.parametrize("sheet", ["basic", "adam_ann"])
def test_one_step_matches_the_reference_and_writes_start_cells_history_status(xw, books, sheet):
    from xlcf.excel import macros
    from xlcf.lessons import graddesc_ref as ref

    payload = payload_from_xlsx(books["graddesc"], sheet)
    result, actions = run_macro(xw, payload, macros.main)
    assert result.ok, result.status
    x, y = ref.make_data(0)
    expected = ref.run_pass(sheet, x, y).after  # the generator's start values, one pass
    cells = written(payload, actions)
    states = _state_cells(payload, sheet)
    for name, cell in states.items():
        assert cells[cell] == pytest.approx(expected[name], rel=1e-12)
    history = [name_cells(payload, sheet, n) for n in ("history_pass", "history_rmse") if maybe_box(payload, sheet, n)]
    allowed = set(states.values()) | {c for block in history for c in block} | set(name_cells(payload, sheet, "status"))
    assert set(cells) <= allowed  # nothing else
    after = cells_after(payload, actions)
    rmse_col = [after.get(c) for c in name_cells(payload, sheet, "history_rmse")]
    assert rmse_col[:2] == [
        pytest.approx(ref.run_pass(sheet, x, y).rmse_start),
        pytest.approx(ref.run_pass(sheet, x, y).rmse),
    ]
    assert cells[name_cells(payload, sheet, "status")[0]] == result.status and "1 pass of" in result.status


def test_five_steps_and_reset(xw, books):
    from xlcf.excel import macros
    from xlcf.lessons import graddesc_ref as ref

    payload = payload_from_xlsx(books["graddesc"], "momentum")
    _, actions = run_macro(xw, payload, macros.step5)
    x, y = ref.make_data(0)
    after5 = ref.run_passes("momentum", x, y, passes=5)[-1].after
    cells = written(payload, actions)
    for name, cell in _state_cells(payload, "momentum").items():
        assert cells[cell] == pytest.approx(after5[name], rel=1e-12)
    # Reset from a moved state: back to the init cells (the generator's start values)
    pos, r, c, _, _ = name_box(payload, "momentum", "slope")
    payload["sheets"][pos]["values"][r][c] = 1.9
    _, actions = run_macro(xw, payload, macros.reset)
    cells = written(payload, actions)
    for name, cell in _state_cells(payload, "momentum").items():
        assert cells[cell] == pytest.approx(ref.START["momentum"][name])


def test_step_with_text_in_lr_is_an_error_and_writes_nothing_but_status(xw, books):
    from xlcf.excel import macros

    payload = payload_from_xlsx(books["graddesc"], "basic")
    pos, r, c, _, _ = name_box(payload, "basic", "lr")
    payload["sheets"][pos]["values"][r][c] = "abc"
    result, actions = run_macro(xw, payload, macros.step)
    assert not result.ok and "lr must be a number" in result.status
    written = [action_box(a) for a in actions if a["func"] == "setValues"]
    assert written == [b for b in [maybe_box(payload, "basic", "status")] if b]  # no start cell touched
    assert [a["args"][0] for a in actions if a["func"] == "alert"] == [result.status[len("Error: ") :]]


def test_fit_is_capped_by_time_and_says_so(xw, books):
    from xlcf.excel import macros

    path = books["collab"]
    payload = payload_from_xlsx(path, "dotprod", computed=collab_computed(path, "dotprod"))
    # rmsprop's sheet default is a one-cycle schedule, which has no plateau stop: a million epochs cannot end
    # before the cap on any machine.
    for name, value in (("epochs", 1_000_000), ("optimizer", "rmsprop"), ("lr", 0.03)):
        pos, r, c, _, _ = name_box(payload, "dotprod", name)
        payload["sheets"][pos]["values"][r][c] = value
    result, actions = run_macro(xw, payload, macros.fit, time_limit=0.3)
    assert result.ok, result.status
    assert "time cap" in result.status and result.details["epochs"] < 1_000_000
    status = [a for a in actions if action_box(a) == name_box(payload, "dotprod", "status")][0]
    assert status["values"][0][0] == result.status


def test_rating_outside_the_scale_names_the_cell(xw, books):
    from xlcf.excel import macros

    path = books["collab"]
    payload = payload_from_xlsx(path, "bias", computed=collab_computed(path, "bias"))
    pos, r, c, _, _ = name_box(payload, "bias", "ratings")
    payload["sheets"][pos]["values"][r][c] = 7.0
    result, actions = run_macro(xw, payload, macros.fit)
    assert not result.ok
    assert f"bias!{chr(65 + c)}{r + 1}" in result.status and "scale" in result.status
    assert [action_box(a) for a in actions if a["func"] == "setValues"] == [name_box(payload, "bias", "status")]


# ---------------------------------------------------------------------------------------------- movielens


@pytest.mark.slow
def test_train_on_full_ratings_writes_the_output_blocks(xw, synthetic_data, tmp_path):
    import json

    from xlcf.cli import main
    from xlcf.excel import macros
    from xlcf.lessons.movielens import layout as mlay

    path = tmp_path / "ml.xlsx"
    assert main(["new", "movielens", "-o", str(path)]) == 0
    payload = payload_from_xlsx(path, "movielens")
    for name, value in (("ratings_source", f"{synthetic_data.name}/ratings.csv"), ("epochs", 1), ("factors", 4)):
        pos, r, c, _, _ = name_box(payload, "movielens", name)
        payload["sheets"][pos]["values"][r][c] = value
    sheets = [s["name"] for s in payload["sheets"]]
    history = payload["sheets"][sheets.index("history")]["values"]
    hr, hc = _split_ref(mlay.HISTORY_COUNT_REF)
    while len(history) < hr:
        history.append([None] * len(history[0]))
    history[hr - 1] += [None] * max(0, hc - len(history[hr - 1]))
    history[hr - 1][hc - 1] = 30.0  # a previous run wrote 30 history rows
    result, actions = run_macro(xw, payload, macros.train, data_dir=str(synthetic_data.parent), time_limit=60)
    assert result.ok, result.status
    json.dumps(actions, allow_nan=False)  # no NaN/inf anywhere
    written_sheets = {sheets[a["sheet_position"]] for a in actions}
    assert {
        "movielens",
        "history",
        "movie_bias",
        "movie_pca",
        "recommend",
        "pred_vs_actual",
        "crosstab",
    } <= written_sheets
    # the embeddings sheet is laid out for the generator's k (50), this model has 4: left alone, and said so
    assert "embeddings" not in written_sheets and "embeddings sheet left as it was" in result.status
    status = [a for a in actions if action_box(a) == name_box(payload, "movielens", "status")]
    assert status and status[0]["values"][0][0] == result.status and result.status.startswith("ok: ")
    # the 29 history rows the previous run left below the new one are cleared (the history block is padded
    # with blank rows down to the previous run's 30)
    block = [a for a in actions if sheets[a["sheet_position"]] == "history" and a["start_row"] == mlay.HISTORY_TOP - 1]
    assert block and block[0]["row_count"] == 30
    clear = block[0]["values"][1:]  # 0-based rows HISTORY_TOP .. : the 29 below the one epoch of this run
    assert len(clear) == 29 and all(v in (None, "") for row in clear for v in row)
    assert block[0]["values"][0][0] == 1  # the new run's epoch row is written above them


def _gibbs_payload(path, sheet, sweeps):
    payload = payload_from_xlsx(path, sheet, computed=collab_computed(path, sheet))
    for name, value in (("optimizer", "gibbs"), ("epochs", sweeps)):
        pos, r, c, _, _ = name_box(payload, sheet, name)
        payload["sheets"][pos]["values"][r][c] = value
    return payload


def test_a_gibbs_fit_writes_the_std_block_names_and_formats_it(xw, books):
    from xlcf.excel import macros

    payload = _gibbs_payload(books["collab"], "bias", 40)
    result, actions = run_macro(xw, payload, macros.fit)
    assert result.ok, result.status
    assert "(posterior means; averaged predictions " in result.status and result.details["rmse_avg"] > 0
    pos = name_box(payload, "bias", "ratings")[0]
    block = [a for a in actions if action_box(a) == (pos, 43, 6, 17, 16)]  # G44:V60, under the RMSE row
    assert len(block) == 1 and block[0]["func"] == "setValues"
    rows = block[0]["values"]
    assert rows[0][0].startswith("± posterior predictive std") and rows[1][0] == "userId \\ movieId"
    values = payload["sheets"][pos]["values"]
    assert rows[1][1:] == values[24][7:22] and [row[0] for row in rows[2:]] == [row[6] for row in values[25:40]]
    std = np.array([row[1:] for row in rows[2:]], dtype=float)
    assert std.shape == (15, 15) and np.all(std > 0) and np.all(np.isfinite(std))
    assert [a["args"] for a in actions if a["func"] == "setNumberFormat"] == [["0.00"]]
    names = [a for a in actions if a["func"] == "namesAdd"]
    assert len(names) == 1 and names[0]["args"][0] == "prediction_std" and "$H$46:$V$60" in names[0]["args"][1]
    # the next press sees the name: it rewrites the title and the numbers only, and another optimizer blanks them
    payload["names"].append(
        {
            "name": "bias!prediction_std",
            "sheet_index": pos,
            "address": "H46:V60",
            "book_scope": False,
            "scope_sheet_name": "bias",
            "scope_sheet_index": pos,
        }
    )
    width = len(values[0])  # the used range grows to row 60: the block as the client would send it
    values.extend([None] * width for _ in range(60 - len(values)))
    for r, row in enumerate(rows):
        values[43 + r][6:22] = row
    for name, value in (("optimizer", "als"), ("epochs", 20)):
        p, r, c, _, _ = name_box(payload, "bias", name)
        values[r][c] = value
    result, actions = run_macro(xw, payload, macros.fit)
    assert result.ok and result.details["std_block"]["cleared"], result.status
    boxes = {action_box(a): a for a in actions}
    assert "not Bayesian" in boxes[(pos, 43, 6, 1, 1)]["values"][0][0]
    assert all(v in (None, "") for row in boxes[(pos, 45, 7, 15, 15)]["values"] for v in row)
    assert not [a for a in actions if a["func"] in ("namesAdd", "setNumberFormat")]


def test_a_gibbs_fit_reports_every_sweep_to_the_time_cap(xw, books):
    from xlcf.excel import macros

    payload = _gibbs_payload(books["collab"], "dotprod", 1_000_000)
    result, _ = run_macro(xw, payload, macros.fit, time_limit=0.5)
    assert result.ok, result.status
    assert "time cap" in result.status and 1 <= result.details["epochs"] < 1_000_000
