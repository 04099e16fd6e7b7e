"""``POST /xlcf/solve-sheet`` (the task pane's "Solve this sheet") on a real `xlcf serve` (uvicorn in a thread, its
worker a real process): workbooks of the Solver corpus, written by openpyxl/XlsxWriter, sent as Office.js reads
them (``Range.formulas``, ``Range.values``, every defined name with its formula, hidden Solver names included:
tests/helpers/office_payload.py). The answer's variable values must solve the model; bad models and bad payloads
are one line, naming sheet!cell or the bad place."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import copy
import re

import numpy as np
import pytest

from tests.helpers.office_payload import solve_payload
from tests.helpers.solver_corpus import BAD, CF_VARIANTS, MODELS, colnum
from tests.server.test_server import RunningServer, _free_port
from xlcf.ooxml.refs import col_letter as _col

httpx = pytest.importorskip("httpx")
PATH = "/xlcf/solve-sheet"


@pytest.fixture(scope="module")
def server():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    from xlcf.server.app import ServerSettings

    # no token: loopback mode, where Host and Origin are checked; a generous cap for a loaded machine
    settings = ServerSettings(host="127.0.0.1", port=_free_port(), time_limit=120, max_bytes=4 * 1024 * 1024)
    with RunningServer(settings) as running:
        yield running


def post(server, payload=None, *, content=None, headers=None):
    with httpx.Client(timeout=180) as client:
        if content is not None:
            return client.post(server.url + PATH, content=content, headers=headers or {})
        return client.post(server.url + PATH, json=payload, headers=headers or {})


def _one_line(response) -> str:
    text = response.text
    assert "\n" not in text.strip() and text.startswith("xlcf serve: "), text
    assert "Traceback" not in text
    return text


def _cells(address: str):
    """``B26:F40`` -> (top, left, bottom, right), 1-based."""
    first, _, last = address.partition(":")
    (c1, r1), (c2, r2) = (re.match(r"([A-Z]+)(\d+)", a).groups() for a in (first, last or first))
    return int(r1), colnum(c1), int(r2), colnum(c2)


def _grid(payload, sheet, address, key="values"):
    (s,) = [s for s in payload["sheets"] if s["name"] == sheet]
    top, left, bottom, right = _cells(address)
    rows = s[key][top - s["row"] : bottom - s["row"] + 1]
    return [row[left - s["column"] : right - s["column"] + 1] for row in rows]


@pytest.mark.parametrize("key", ["if_outside", "other_sheet"])
def test_the_lesson_written_another_way_reaches_the_floor(server, key, tmp_path):
    """Bias with the biases outside the IF; dot with the factors on a sheet whose name needs quoting."""
    book = CF_VARIANTS[key](tmp_path / f"{key}.xlsx")
    payload = solve_payload(book.path, book.sheet)
    response = post(server, payload)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["sheet"] == book.sheet and answer["objective"] == f"{book.sheet}!{book.objective}"
    assert answer["objective_after"] < answer["objective_before"]
    assert answer["status"].startswith("Solved: ") and " -> " in answer["status"]
    # the predictions the evaluator recomputed downstream, over the rated cells, are at the lesson's floor
    sheet, address = book.predictions
    top, left, bottom, right = _cells(address)
    downstream = answer["downstream"][sheet]
    ratings = np.array(_grid(payload, book.ratings[0], book.ratings[1]), dtype=object)
    predicted = np.array(
        [[downstream[f"{_col(c)}{r}"] for c in range(left, right + 1)] for r in range(top, bottom + 1)], dtype=float
    )
    rated = np.array([[isinstance(v, (int, float)) for v in row] for row in ratings])
    truth = np.where(rated, ratings, 0).astype(float)
    rmse = float(np.sqrt(np.mean((truth[rated] - predicted[rated]) ** 2)))
    assert rmse == pytest.approx(book.floor, rel=1e-3)
    # the variable blocks are exactly the Solver model's areas, numbers, shaped as their ranges
    written = {(v["sheet"], v["address"]) for v in answer["variables"]}
    adj = {"if_outside": ["B26:F40", "H20:V24", "A26:A40", "H19:V19"], "other_sheet": ["B26:F40", "H20:V24"]}[key]
    assert written == {(book.sheet, a) for a in adj}
    for v in answer["variables"]:
        top, left, bottom, right = _cells(v["address"])
        assert np.array(v["values"]).shape == (bottom - top + 1, right - left + 1)


@pytest.mark.parametrize("key", ["rosenbrock", "bounds", "logistic"])
def test_models_that_are_not_collaborative_filtering_reach_their_optimum(server, key, tmp_path):
    book = MODELS[key](tmp_path / f"{key}.xlsx")
    response = post(server, solve_payload(book.path, book.sheet))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["sense"] == book.sense
    assert answer["objective_after"] == pytest.approx(book.optimum, rel=1e-5, abs=1e-5)
    got = {}
    for v in answer["variables"]:
        top, left, _, _ = _cells(v["address"])
        for i, row in enumerate(v["values"]):
            for j, value in enumerate(row):
                got[f"{_col(left + j)}{top + i}"] = value
    for ref, value in book.solution.items():
        assert got[ref] == pytest.approx(value, rel=1e-4, abs=1e-4)
    assert answer["downstream"][book.sheet][book.objective] == pytest.approx(answer["objective_after"])


@pytest.mark.parametrize("key", ["unsupported_function", "ref_objective", "variable_formula", "integer"])
def test_a_model_that_cannot_be_solved_is_one_line_naming_the_cell(server, key, tmp_path):
    book = BAD[key](tmp_path / f"{key}.xlsx")
    response = post(server, solve_payload(book.path, book.sheet))
    assert response.status_code == 422
    text = _one_line(response).lower()
    assert any(w.lower() in text for w in book.where), text
    assert all(w in text for w in book.words), text


def test_a_sheet_without_a_solver_model_is_one_line(server, tmp_path):
    book = MODELS["rosenbrock"](tmp_path / "r.xlsx")
    payload = solve_payload(book.path, book.sheet)
    payload["names"] = [n for n in payload["names"] if not n["name"].lower().startswith("solver_")]
    response = post(server, payload)
    assert response.status_code == 422
    text = _one_line(response)
    assert "rosenbrock" in text and "no Solver model" in text


def test_a_formula_that_does_not_parse_names_its_cell(server, tmp_path):
    book = MODELS["rosenbrock"](tmp_path / "r.xlsx")
    payload = solve_payload(book.path, book.sheet)
    (sheet,) = payload["sheets"]
    top, left = sheet["row"], sheet["column"]
    sheet["formulas"][2 - top][4 - left] = "=(1-A2)^2+100*(B2-A2^2)^2+"  # D2 ends in an operator
    response = post(server, payload)
    assert response.status_code == 422
    assert "rosenbrock!D2" in _one_line(response)


@pytest.mark.parametrize(
    "change, place",
    [
        (lambda p: p.pop("sheets"), "sheets"),
        (lambda p: p["sheets"][0]["values"].append([1.0]), "sheets[0]"),
        (lambda p: p["sheets"][0]["formulas"][0].append("=A1"), "sheets[0].formulas"),
        (lambda p: p["sheets"][0].update(row=0), "sheets[0].row"),
        (lambda p: p["sheets"][0]["values"][0].__setitem__(0, {"x": 1}), "sheets[0].values[0][0]"),
        (lambda p: p["names"][0].update(scope="no such sheet"), "names[0].scope"),
        (lambda p: p.update(sheet="elsewhere"), "sheet"),
        (lambda p: p["sheets"].append(copy.deepcopy(p["sheets"][0])), "twice"),
    ],
)
def test_a_malformed_request_is_400_naming_the_place(server, tmp_path, change, place):
    book = MODELS["rosenbrock"](tmp_path / "r.xlsx")
    payload = solve_payload(book.path, book.sheet)
    change(payload)
    response = post(server, payload)
    assert response.status_code == 400
    assert place in _one_line(response)


def test_not_json_nan_and_wrong_content_type_are_refused(server):
    headers = {"Content-Type": "application/json"}
    assert post(server, content=b"{not json", headers=headers).status_code == 400
    response = post(server, content=b'{"sheet": NaN}', headers=headers)
    assert response.status_code == 400 and "NaN" in response.text
    assert post(server, content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415


def test_too_many_bytes_are_refused_before_any_work(server):
    wide = [[0.0] * 16_384]
    payload = {"sheet": "s", "sheets": [{"name": "s", "formulas": wide * 64, "values": wide * 64}]}
    response = post(server, payload)  # about 10 MB of JSON, over this server's 4 MiB
    assert response.status_code == 413
    assert "xlcf solve BOOK" in _one_line(response)


def test_too_many_cells_are_refused_before_the_shapes_are_checked():
    from xlcf.errors import BadPayload
    from xlcf.server.sheet_solve import MAX_CELLS, validate_solve_payload

    wide = [[0.0] * 16_384]
    rows = MAX_CELLS // 16_384 // 2 + 1
    sheets = [{"name": name, "formulas": wide * rows, "values": wide * rows} for name in ("a", "b")]
    with pytest.raises(BadPayload, match="more than"):
        validate_solve_payload({"sheet": "a", "sheets": sheets})
    sheets[1]["values"] = sheets[1]["formulas"] = [[0.0]]
    assert validate_solve_payload({"sheet": "a", "sheets": sheets})["sheet"] == "a"


def test_another_origin_or_host_is_refused_without_a_token(server, tmp_path):
    book = MODELS["rosenbrock"](tmp_path / "r.xlsx")
    payload = solve_payload(book.path, book.sheet)
    response = post(server, payload, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and "cross-origin" in response.text
    with httpx.Client(timeout=60) as client:
        response = client.post(server.url + PATH, json=payload, headers={"Host": "evil.example"})
    assert response.status_code == 403


def test_with_a_token_the_route_needs_it():
    import anyio

    from xlcf.server.app import ServerSettings, create_app

    app = create_app(ServerSettings(host="0.0.0.0", token="solve-token-1234"))  # its workers never start here

    async def call(headers):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            return await client.post(PATH, json={"sheet": "s", "sheets": []}, headers=headers)

    response = anyio.run(call, {})
    assert response.status_code == 401 and "token" in response.text
    response = anyio.run(call, {"Authorization": "solve-token-1234"})
    assert response.status_code == 400 and "sheets" in response.text  # through the guard, refused by the check


def _tiny(formulas, values, **names):
    return {
        "sheet": "s",
        "sheets": [{"name": "s", "row": 3, "column": 2, "formulas": formulas, "values": values}],
        "names": [{"name": k, "scope": "s", "formula": v} for k, v in names.items()],
    }


def test_downstream_errors_come_back_as_their_code_and_blocks_off_a1_keep_their_place():
    """In the worker's code itself (no server): the used range starts at B3, C3 divides by zero once solved."""
    from xlcf.server.sheet_solve import solve_sheet, validate_solve_payload

    payload = _tiny(
        [[0.5, "=(B3-3)^2", "=1/(B3-3)", "text"]],
        [[0.5, 6.25, -0.4, "text"]],
        solver_opt="=s!$C$3",
        solver_adj="=s!$B$3",
    )
    answer = solve_sheet(validate_solve_payload(payload))
    assert answer["variables"] == [{"sheet": "s", "address": "B3", "values": [[pytest.approx(3.0, abs=1e-6)]]}]
    assert answer["downstream"]["s"]["C3"] == pytest.approx(0.0, abs=1e-9)
    d3 = answer["downstream"]["s"]["D3"]
    assert d3 == "#DIV/0!" or abs(d3) > 1e3  # 1/(x-3) at the solved x: an error or a huge number, never NaN


def test_a_solve_that_reaches_the_time_cap_says_so_and_keeps_its_progress(tmp_path):
    from xlcf.server.sheet_solve import solve_sheet, validate_solve_payload

    book = CF_VARIANTS["if_outside"](tmp_path / "bias.xlsx")
    answer = solve_sheet(validate_solve_payload(solve_payload(book.path, book.sheet)), time_limit=0.01)
    assert answer["stopped_reason"] == "time limit"
    assert "time cap; press again to continue" in answer["status"]
    assert answer["objective_after"] <= answer["objective_before"]
