"""`xlcf serve` on 127.0.0.1 (uvicorn in a thread, a free port, its fit worker a real process): real HTTP
requests on xlwings Server's routes, auth refusals, oversized and malformed payloads, ratings paths outside
--data-dir, a version mismatch, function names in any case, and no server path or exception text in answers."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import socket
import threading
import time

import pytest

from tests.excel.test_excel_macros import action_box, maybe_box, name_box
from tests.excel.test_excel_payload import payload_from_xlsx

httpx = pytest.importorskip("httpx")
TOKEN = "s3cret-token-for-tests"
SECRET = "TOP-SECRET-LINE-4242"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, settings):
        import uvicorn

        from xlcf.server.app import create_app

        self.app = create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host=settings.host, port=settings.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{settings.host}:{settings.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        if not self.app.state.pool.ready(180):
            raise RuntimeError("the fit worker did not start")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory):
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    from xlcf.cli import main

    folder = tmp_path_factory.mktemp("server")
    paths = {k: folder / f"{k}.xlsx" for k in ("graddesc", "movielens")}
    assert main(["new", "graddesc", "-o", str(paths["graddesc"])]) == 0
    assert main(["new", "movielens", "-o", str(paths["movielens"])]) == 0
    data = folder / "data"
    data.mkdir()
    (data / "notes.csv").write_text(f"this is not a ratings file\n{SECRET}\n")
    (folder / "outside.csv").write_text(f"userId,movieId,rating\n1,1,{SECRET}\n")
    paths["data"] = data
    paths["outside"] = folder / "outside.csv"
    return paths


@pytest.fixture(scope="module")
def server(workbooks):
    from xlcf.server.app import ServerSettings

    settings = ServerSettings(
        host="127.0.0.1",
        port=_free_port(),
        token=TOKEN,
        data_dir=workbooks["data"],
        time_limit=10,
        max_bytes=2 * 1024 * 1024,
    )
    with RunningServer(settings) as running:
        yield running


def post(server, path, payload=None, *, token=TOKEN, content=None, headers=None):
    sent = {"Authorization": token} if token is not None else {}
    sent.update(headers or {})
    with httpx.Client(timeout=60) as client:
        if content is not None:
            return client.post(server.url + path, content=content, headers=sent)
        return client.post(server.url + path, json=payload, headers=sent)


def test_scripts_call_main_steps_the_active_graddesc_sheet(server, workbooks):
    from xlcf.lessons import graddesc_ref as ref

    payload = payload_from_xlsx(workbooks["graddesc"], "rmsprop")
    response = post(server, "/xlwings/custom-scripts-call/main", payload)
    assert response.status_code == 200, response.text
    actions = response.json()["actions"]
    x, y = ref.make_data(0)
    after = ref.run_pass("rmsprop", x, y).after
    from tests.excel.test_excel_macros import name_cells, written

    cells = written(payload, actions)  # adjacent cells may come as one range
    assert cells[name_cells(payload, "rmsprop", "slope")[0]] == pytest.approx(after["slope"], rel=1e-12)
    assert cells[name_cells(payload, "rmsprop", "const")[0]] == pytest.approx(after["const"], rel=1e-12)


def test_scripts_call_main_fits_a_collab_sheet_over_http(server, tmp_path):
    from tests.excel.test_excel_payload import collab_computed
    from xlcf.cli import main

    path = tmp_path / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    payload = payload_from_xlsx(
        path, "dotprod", client="Microsoft Office Scripts", computed=collab_computed(path, "dotprod")
    )
    pos, r, c, _, _ = name_box(payload, "dotprod", "epochs")
    payload["sheets"][pos]["values"][r][c] = 40
    response = post(server, "/xlwings/custom-scripts-call/main", payload)
    assert response.status_code == 200, response.text
    boxes = {action_box(a): a for a in response.json()["actions"]}
    assert set(boxes) == {name_box(payload, "dotprod", n) for n in ("user_factors", "movie_factors", "status")}
    assert boxes[name_box(payload, "dotprod", "status")]["values"][0][0].startswith("Fitted: ")


def test_the_fit_script_runs_gibbs_from_the_optimizer_cell_and_writes_the_std_block(server, tmp_path):
    from tests.excel.test_excel_payload import collab_computed
    from xlcf.cli import main

    path = tmp_path / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    payload = payload_from_xlsx(path, "bias", client="Office.js", computed=collab_computed(path, "bias"))
    for name, value in (("optimizer", "gibbs"), ("epochs", 40)):
        pos, r, c, _, _ = name_box(payload, "bias", name)
        payload["sheets"][pos]["values"][r][c] = value
    response = post(server, "/xlwings/custom-scripts-call/fit", payload)
    assert response.status_code == 200, response.text
    actions = response.json()["actions"]
    boxes = {action_box(a): a for a in actions}
    status = boxes[name_box(payload, "bias", "status")]["values"][0][0]
    assert status.startswith("Fitted: gibbs, 40 epochs") and "averaged predictions" in status
    block = boxes[(pos, 43, 6, 17, 16)]["values"]  # the ± block under the predictions, G44:V60
    assert block[0][0].startswith("± posterior predictive std") and all(v > 0 for row in block[2:] for v in row[1:])
    assert [a["args"][0] for a in actions if a["func"] == "namesAdd"] == ["prediction_std"]


def test_cf_recommend_with_gibbs_gives_the_std_through_the_server(server):
    ratings = [[5.0, 4.0, None, 1.0], [4.0, None, 2.0, None], [None, 2.0, 1.0, 4.0]]
    args = [ratings, [[2]], [[2]], None, [[2]], [["gibbs"]], [[30]], None, None]
    response = post(server, "/xlwings/custom-functions-call", _call("CF_RECOMMEND", args))
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert [row[0] for row in result] == [2, 4] or [row[0] for row in result] == [4, 2]
    assert all(len(row) == 3 and row[2] > 0 for row in result)  # label, prediction, ±
    fitted = post(server, "/xlwings/custom-functions-call", _call("CF_FIT", [ratings, [[2]], [["gibbs"]], [[30]]]))
    assert fitted.status_code == 200, fitted.text
    grid = fitted.json()["result"]
    assert len(grid) == 3 and all(len(row) == 4 and all(0 < v < 7 for v in row) for row in grid)


def test_named_scripts_and_unknown_script(server, workbooks):
    payload = payload_from_xlsx(workbooks["graddesc"], "basic")
    response = post(server, "/xlwings/custom-scripts-call/reset", payload)
    assert response.status_code == 200 and response.json()["actions"]
    response = post(server, "/xlwings/custom-scripts-call/rm_rf", payload)
    assert response.status_code == 404 and "main" in response.text


@pytest.mark.parametrize("sent", [None, "wrong-token-wrong", f"Bearer {TOKEN}x"])
def test_wrong_or_missing_token_is_refused_on_every_route(server, workbooks, sent):
    payload = payload_from_xlsx(workbooks["graddesc"], "basic")
    assert post(server, "/xlwings/custom-scripts-call/main", payload, token=sent).status_code == 401
    call = {"func_name": "cf_rmse", "args": [[[1.0]], [[1.0]]], "version": "0"}
    assert post(server, "/xlwings/custom-functions-call", call, token=sent).status_code == 401
    with httpx.Client() as client:
        headers = {"Authorization": sent} if sent else {}
        for route in ("/", "/xlwings/custom-scripts-meta"):
            assert client.get(server.url + route, headers=headers).status_code == 401


def test_add_in_files_and_function_metadata_need_no_token(server):
    # Office fetches these itself (no Authorization header); none of them computes anything.
    with httpx.Client() as client:
        for route in (
            "/manifest.xml",
            "/taskpane.html",
            "/taskpane.js",
            "/functions.js",
            "/icon-32.png",
            "/xlwings/custom-functions-meta",
            "/xlwings/custom-functions-code",
        ):
            assert client.get(server.url + route).status_code == 200, route


def test_bearer_form_of_the_token_is_accepted(server):
    with httpx.Client() as client:
        response = client.get(
            server.url + "/xlwings/custom-functions-meta", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 200


def test_oversized_payload_is_refused_with_and_without_content_length(server):
    big = b"x" * (3 * 1024 * 1024)
    response = post(
        server, "/xlwings/custom-scripts-call/main", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "MiB" in response.text

    def chunks():
        for _ in range(48):
            yield b"y" * (64 * 1024)

    with httpx.Client(timeout=60) as client:
        response = client.post(
            server.url + "/xlwings/custom-scripts-call/main",
            content=chunks(),
            headers={"Authorization": TOKEN, "Content-Type": "application/json"},
        )
    assert response.status_code == 413


def test_version_mismatch_is_a_clear_error(server, workbooks):
    payload = payload_from_xlsx(workbooks["graddesc"], "basic", version="0.30.0")
    response = post(server, "/xlwings/custom-scripts-call/main", payload)
    assert response.status_code == 400
    assert "version mismatch" in response.text and "0.30.0" in response.text


def test_not_a_book_payload(server):
    response = post(server, "/xlwings/custom-scripts-call/main", {"hello": 1})
    assert response.status_code == 400 and "xlwings client" in response.text
    response = post(
        server, "/xlwings/custom-scripts-call/main", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


_PAYLOADS: dict = {}


def _movielens_payload(workbooks):
    import copy

    if "movielens" not in _PAYLOADS:  # the generated workbook is large: read it once
        _PAYLOADS["movielens"] = payload_from_xlsx(workbooks["movielens"], "movielens")
    return copy.deepcopy(_PAYLOADS["movielens"])


def _train_with_source(server, workbooks, source):
    payload = _movielens_payload(workbooks)
    pos, r, c, _, _ = name_box(payload, "movielens", "ratings_source")
    payload["sheets"][pos]["values"][r][c] = source
    response = post(server, "/xlwings/custom-scripts-call/train", payload)
    assert response.status_code == 200, response.text
    actions = response.json()["actions"]
    status_box = maybe_box(payload, "movielens", "status")
    written = [a for a in actions if a["func"] == "setValues"]
    assert [action_box(a) for a in written] == [status_box]  # nothing but the status cell
    return written[0]["values"][0][0], response.text


@pytest.mark.parametrize("source", ["../outside.csv", "OUTSIDE_ABSOLUTE", "data/../../outside.csv"])
def test_ratings_path_outside_the_data_dir_is_refused(server, workbooks, source):
    if source == "OUTSIDE_ABSOLUTE":
        source = str(workbooks["outside"])
    status, body = _train_with_source(server, workbooks, source)
    assert status.startswith("Error: ") and "inside the server's data folder" in status
    assert SECRET not in body


def test_a_file_that_is_not_ratings_does_not_echo_its_contents(server, workbooks):
    status, body = _train_with_source(server, workbooks, "notes.csv")
    assert status.startswith("Error: ") and "notes.csv" in status
    assert SECRET not in body and "not a ratings file" not in body


def test_custom_functions_routes(server):
    with httpx.Client() as client:
        meta = client.get(server.url + "/xlwings/custom-functions-meta", headers={"Authorization": TOKEN})
        code = client.get(server.url + "/xlwings/custom-functions-code", headers={"Authorization": TOKEN})
    assert meta.status_code == 200
    names = {f["name"] for f in meta.json()["functions"]}
    assert names == {"CF_FIT", "CF_PREDICT", "CF_RMSE", "CF_RECOMMEND"}
    assert code.status_code == 200 and "CF_PREDICT" in code.text
    import xlwings

    call = {
        "func_name": "cf_predict",
        "args": [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], None, None],
        "caller_address": "Sheet1!A1",
        "version": xlwings.__version__,
        "client": "Office.js",
        "runtime": "1.4",
        "culture_info_name": "en-US",
        "date_format": "M/d/yyyy",
    }
    response = post(server, "/xlwings/custom-functions-call", call)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == [[1.0, 2.0]]
    call["args"] = [[[1.0, "x"]], [[1.0], [2.0]], None, None]
    result = post(server, "/xlwings/custom-functions-call", call).json()["result"]
    assert "holds 'x'" in result[0][0]
    call["version"] = "0.1.0"
    assert post(server, "/xlwings/custom-functions-call", call).status_code == 400


def test_binding_beyond_loopback_requires_a_token(tmp_path):
    from xlcf.errors import ConfigError
    from xlcf.server.app import ServerSettings

    with pytest.raises(ConfigError, match="--token"):
        ServerSettings(host="0.0.0.0").check()
    assert ServerSettings(host="0.0.0.0", token="long-enough-token").check().token
    with pytest.raises(ConfigError, match="not a folder"):
        ServerSettings(data_dir=tmp_path / "missing").check()


def test_cli_refuses_public_bind_without_token(capsys):
    from xlcf.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", str(_free_port())]) == 2
    assert "--token" in capsys.readouterr().err


def _call(name, args):
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    return {
        "func_name": name,
        "args": args,
        "caller_address": "Sheet1!A1",
        "version": xlwings.__version__,
        "client": "Office.js",
        "runtime": "1.4",
        "culture_info_name": "en-US",
        "date_format": "M/d/yyyy",
    }


@pytest.mark.parametrize("name", ["CF_PREDICT", "Cf_Predict", "cf_predict"])
def test_function_names_match_in_any_case_as_in_excel(server, name):
    response = post(
        server, "/xlwings/custom-functions-call", _call(name, [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], None, None])
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == [[1.0, 2.0]]


def test_cf_fit_in_upper_case_fits_in_the_worker(server):
    ratings = [[5.0, 4.0, None], [4.0, None, 2.0], [None, 2.0, 1.0]]
    response = post(
        server, "/xlwings/custom-functions-call", _call("CF_FIT", [ratings, [[2]], [["als"]], [[20]], None, None, None])
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert len(result) == 3 and all(len(row) == 3 and all(isinstance(v, float) for v in row) for row in result)
    assert abs(result[0][0] - 5.0) < 1.0  # a fitted rated cell is near its rating


def test_an_unknown_function_is_404_with_the_names(server):
    response = post(server, "/xlwings/custom-functions-call", _call("cf_nope", []))
    assert response.status_code == 404 and "CF_FIT" in response.text


def _bad_shapes(payload):
    import copy

    def changed(path, value):
        out = copy.deepcopy(payload)
        target = out
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return out

    return {
        "sheets not a list": changed(["sheets"], {"a": 1}),
        "a sheet not an object": changed(["sheets", 0], "x"),
        "values not rows": changed(["sheets", 0, "values"], [1, 2, 3]),
        "a cell holding an object": changed(["sheets", 0, "values", 0], [{"x": 1}]),
        "ragged rows": changed(["sheets", 0, "values"], [[1, 2], [3]]),
        "book not an object": changed(["book"], []),
        "active sheet out of range": changed(["book", "active_sheet_index"], 999),
        "active sheet as text": changed(["book", "active_sheet_index"], "0"),
        "a name on a missing sheet": changed(["names", 0, "sheet_index"], 99),
        "a name with a bad address": changed(["names", 0, "address"], "not-a-range"),
        "names not a list": changed(["names"], "x"),
        "no sheets": changed(["sheets"], []),
    }


def test_valid_json_of_the_wrong_shape_is_400_with_one_line(server, workbooks):
    payload = payload_from_xlsx(workbooks["graddesc"], "basic", client="Microsoft Office Scripts")
    for label, bad in _bad_shapes(payload).items():
        response = post(server, "/xlwings/custom-scripts-call/main", bad)
        assert response.status_code == 400, (label, response.status_code, response.text)
        assert "\n" not in response.text.strip() and "Traceback" not in response.text, label
        assert response.text.startswith("xlcf serve: "), label
    for body in (b"[1, 2]", b'"text"', b"null", b'{"sheets": NaN}', b"[" * 100000):
        response = post(
            server, "/xlwings/custom-scripts-call/main", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (body[:20], response.text)
    bad_calls = [
        {"func_name": 5, "args": []},
        {"func_name": "cf_rmse", "args": "x", "version": "1"},
        {"func_name": "cf_rmse", "args": [[[{"a": 1}]]], "version": "1"},
        {"args": []},
    ]
    for call in bad_calls:
        response = post(server, "/xlwings/custom-functions-call", call)
        assert response.status_code == 400, (call, response.text)


def test_a_payload_that_is_not_json_typed_is_refused(server, workbooks):
    import json

    payload = payload_from_xlsx(workbooks["graddesc"], "basic")
    response = post(
        server,
        "/xlwings/custom-scripts-call/main",
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415


def _assert_no_server_path(text, *folders):
    import sys
    from pathlib import Path

    for folder in (os.getcwd(), sys.prefix, str(Path.home()), *map(str, folders)):
        assert folder not in text, folder
    assert "Traceback" not in text and "Errno" not in text


@pytest.mark.parametrize("source", ["LONG", "LOOP", "ZIP", "DIR"])
def test_no_absolute_path_or_exception_text_for_odd_ratings_paths(server, workbooks, source):
    data = workbooks["data"]
    if source == "LONG":
        source = "a" * 5000 + ".csv"
    elif source == "LOOP":
        loop = data / "loop.csv"
        if not loop.is_symlink():
            loop.symlink_to(loop)
        source = "loop.csv"
    elif source == "ZIP":
        (data / "bad.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 200)
        source = "bad.zip"
    else:
        (data / "folder.csv").mkdir(exist_ok=True)
        source = "folder.csv"
    status, body = _train_with_source(server, workbooks, source)
    assert status.startswith("Error: ") and ("server's data folder" in status or "not a readable" in status)
    assert len(status) < 400
    _assert_no_server_path(body, data, data.resolve())


def test_answers_carry_the_servers_own_time_and_the_status_the_press_time(server, workbooks):
    payload = payload_from_xlsx(workbooks["graddesc"], "adam")
    response = post(server, "/xlwings/custom-scripts-call/step", payload)
    assert response.status_code == 200
    assert response.headers["server-timing"].startswith("app;dur=")
    boxes = {action_box(a): a for a in response.json()["actions"]}
    status = boxes[name_box(payload, "adam", "status")]["values"][0][0]
    assert "press took " in status and status.endswith(" s end to end")


_DIRECT_CASES = [
    ("cf_rmse", [[[1.0, 2.0, ""]], [[1.5, 2.0, 3.0]]]),
    ("cf_rmse", [[[1.0, 2.0, None]], [[1.5, 2.0, 3.0]]]),
    ("cf_rmse", [5, 4]),
    ("cf_rmse", [[1, 2], [1, 3]]),
    ("cf_rmse", [[["#N/A", 1]], [[1, 1]]]),
    ("cf_rmse", [[[True, 1]], [[1, 1]]]),
    ("cf_rmse", [[[]], [[]]]),
    ("cf_rmse", [[[1]]]),
    ("cf_rmse", [[[1, 2]], [[1, 2]], None]),
    ("cf_rmse", [[["2026-01-01T00:00:00.000Z", 1]], [[1, 1]]]),
    ("cf_predict", [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]]]),
    ("cf_predict", [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], None, None]),
    ("cf_predict", [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], [[1]], [[1, 2]]]),
    ("cf_predict", [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], [1], [1, 2]]),
    ("cf_predict", [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], "", ""]),
    ("cf_predict", [[[1.0, 2.0]], [[1.0], [0.0], [3.0]]]),
]


@pytest.mark.parametrize("name, args", _DIRECT_CASES)
def test_cheap_functions_answer_as_through_xlwings(name, args):
    """The server answers CF_RMSE/CF_PREDICT without xlwings' call machinery: the answer must be the same."""
    _call("x", [])  # skips when the remote engine is unavailable
    from xlcf.errors import BadPayload
    from xlcf.excel.remote import RemoteExcel

    excel = RemoteExcel(server=True)
    data = _call(name.upper(), args)
    answers = []
    for route in (excel.call_function, excel.call_direct):
        try:
            answers.append(route(dict(data)))
        except BadPayload as err:
            answers.append(f"BadPayload: {err}")
    assert answers[0] == answers[1]


def test_only_the_function_metadata_is_shared_with_excel_on_the_web(server):
    # Excel on the web reads the manifest's Functions.Metadata.Url from its own origin (CORS); nothing else.
    office = {"Origin": "https://excel.officeapps.live.com"}
    with httpx.Client() as client:
        meta = client.get(server.url + "/xlwings/custom-functions-meta", headers=office)
        assert meta.headers["access-control-allow-origin"] == office["Origin"]
        other = client.get(server.url + "/xlwings/custom-functions-meta", headers={"Origin": "https://evil.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        for route in ("/xlwings/custom-functions-code", "/taskpane.html", "/manifest.xml"):
            assert "access-control-allow-origin" not in client.get(server.url + route, headers=office).headers
    call = post(server, "/xlwings/custom-functions-call", _call("cf_rmse", [[[1.0]], [[1.0]]]), headers=office)
    assert call.status_code == 200 and "access-control-allow-origin" not in call.headers
