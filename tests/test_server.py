"""`xlcf serve` on 127.0.0.1 (uvicorn in a thread, a free port): real HTTP requests on xlwings Server's
routes, auth refusals, oversized payloads, ratings paths outside --data-dir, a version mismatch."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import socket
import threading
import time

import pytest

from tests.test_excel_macros import action_box, maybe_box, name_box
from tests.test_excel_payload import payload_from_xlsx

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
    boxes = {action_box(a): a for a in actions}
    assert boxes[name_box(payload, "rmsprop", "slope")]["values"][0][0] == pytest.approx(after["slope"], rel=1e-12)
    assert boxes[name_box(payload, "rmsprop", "const")]["values"][0][0] == pytest.approx(after["const"], rel=1e-12)


def test_scripts_call_main_fits_a_collab_sheet_over_http(server, tmp_path):
    pytest.importorskip("xlcf.actions.fit", reason="fit_sheet_arrays (helper 'fit') is not there yet")
    from tests.test_excel_payload import collab_computed
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
    with httpx.Client() as client:
        headers = {"Authorization": sent} if sent else {}
        assert client.get(server.url + "/xlwings/custom-functions-meta", headers=headers).status_code == 401


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
