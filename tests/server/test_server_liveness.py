"""`xlcf serve` as a user starts it (`python -m xlcf serve`, its own process, tokenless on 127.0.0.1) under load:
a runaway fit is stopped at the time cap while cheap calls keep answering, 200 concurrent requests all succeed,
a full queue answers 503 with Retry-After, SIGTERM during a fit stops the server and its workers, and a browser
request from another origin or for another Host is refused.

The time bounds are liveness guarantees with generous margins (a call returns, a server stops), not speed
targets: those are in `xlcf bench`."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import asyncio
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from xlcf.bench.server import ServeProcess

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow

TIME_CAP = 4.0


def _version() -> str:
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    return xlwings.__version__


def call(name, args):
    return {
        "func_name": name,
        "args": args,
        "caller_address": "Sheet1!A1",
        "version": _version(),
        "client": "Office.js",
        "runtime": "1.4",
        "culture_info_name": "en-US",
        "date_format": "M/d/yyyy",
    }


def runaway_fit():
    """CF_FIT on a 300x300 block, rmsprop, 10^9 epochs: without a cap it would never end."""
    rng = np.random.default_rng(0)
    ratings = rng.integers(1, 6, (300, 300)).astype(float)
    ratings[rng.random((300, 300)) < 0.5] = np.nan
    block = [[None if np.isnan(v) else float(v) for v in row] for row in ratings]
    return call("cf_fit", [block, None, [["rmsprop"]], [[1e9]], None, None, None])


RMSE_CALL = ("cf_rmse", [[[1.0, 2.0, None]], [[1.5, 2.0, 3.0]]])


def small_fit(seed: int):
    ratings = [[5.0, 4.0, None, 1.0], [4.0, None, 2.0, 1.0], [None, 2.0, 1.0, 5.0], [1.0, 1.0, None, 4.0]]
    return call("cf_fit", [ratings, [[2]], [["adam"]], [[30]], None, [[seed]], None])


def wait_busy(server: ServeProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/").json()["workers"]["busy"] >= 1:
            return
        time.sleep(0.05)
    raise AssertionError("the fit never reached the worker")


def started_server(*args: str, log: Path) -> ServeProcess:
    server = ServeProcess(*args, log=log.open("wb"))
    server.__enter__()
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise AssertionError(f"xlcf serve did not start: {log.read_text()[-2000:]}") from None
    return server


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    _version()
    log = tmp_path_factory.mktemp("live") / "serve.log"
    server = started_server("--time-limit", str(TIME_CAP), "--queue", "16", "--threads", "1", log=log)
    yield server
    server.stop()


def test_a_runaway_fit_returns_within_the_cap_while_cheap_calls_answer(live):
    answer = {}

    def fit():
        begun = time.monotonic()
        response = httpx.post(live.url + "/xlwings/custom-functions-call", json=runaway_fit(), timeout=60)
        answer.update(seconds=time.monotonic() - begun, response=response)

    runner = threading.Thread(target=fit)
    runner.start()
    wait_busy(live)
    cheap = []
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for _ in range(5):
            for request in (
                lambda: client.post("/xlwings/custom-functions-call", json=call(*RMSE_CALL)),
                lambda: client.get("/xlwings/custom-functions-meta"),
                lambda: client.get("/xlwings/custom-scripts-meta"),
                lambda: client.get("/"),
            ):
                begun = time.monotonic()
                response = request()
                cheap.append((time.monotonic() - begun, response.status_code))
            time.sleep(0.1)
    fit_still_running = runner.is_alive()
    runner.join(60)
    assert all(status == 200 for _, status in cheap)
    assert max(seconds for seconds, _ in cheap) < 0.5, cheap
    assert fit_still_running  # the cheap calls were answered while the fit ran
    assert answer["seconds"] < TIME_CAP + 2, answer["seconds"]
    assert answer["response"].status_code == 200
    message = answer["response"].json()["result"][0][0]
    assert message.startswith("CF_FIT: stopped") and "time cap" in message
    # the worker (stopped itself or replaced) takes the next fit
    live.wait_ready(120)
    response = httpx.post(live.url + "/xlwings/custom-functions-call", json=small_fit(1), timeout=60)
    assert response.status_code == 200 and isinstance(response.json()["result"][0][0], float)


def test_200_concurrent_requests_none_fails_and_cheap_calls_stay_fast(live):
    from tests.helpers.rawhttp import request

    live.wait_ready(120)
    # A latency bound holds for this server on its machine, not for a machine whose cores other programs already
    # oversubscribe (the requests then queue for the CPU, not for the server): say so instead of failing.
    load = os.getloadavg()[0]
    if load > 2 * (os.cpu_count() or 1):
        pytest.skip(f"the machine is overloaded by other programs (load average {load:.1f} on {os.cpu_count()} cores)")
    kinds = ["fit"] * 10 + ["rmse"] * 70 + ["predict"] * 50 + ["functions-meta"] * 30 + ["root"] * 40
    predict = call("cf_predict", [[[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], None, None])
    routes = {
        "fit": None,
        "rmse": ("POST", call(*RMSE_CALL)),
        "predict": ("POST", predict),
        "functions-meta": ("GET", None),
        "root": ("GET", None),
    }
    paths = {"functions-meta": "/xlwings/custom-functions-meta", "root": "/"}

    async def one(kind, index):
        method, payload = routes[kind] or ("POST", small_fit(index))
        answer = await request(
            "127.0.0.1", live.port, method, paths.get(kind, "/xlwings/custom-functions-call"), payload
        )
        return kind, answer

    async def all_at_once():
        return await asyncio.gather(*(one(kind, i) for i, kind in enumerate(kinds)))

    results = asyncio.run(all_at_once())
    failed = [(kind, answer.status, answer.body[:200]) for kind, answer in results if answer.status != 200]
    assert not failed, failed
    fits = [answer.json()["result"] for kind, answer in results if kind == "fit"]
    assert all(isinstance(result[0][0], float) for result in fits), fits
    assert len({result[0][0] for result in fits}) > 1  # ten different seeds: ten fits, not one cached answer
    cheap = sorted(answer.seconds for kind, answer in results if kind != "fit")
    p95 = cheap[int(0.95 * (len(cheap) - 1))]
    assert p95 <= 1.0, (p95, statistics.median(cheap))


def test_cross_origin_and_foreign_host_are_refused_without_a_token(live):
    url = live.url + "/xlwings/custom-functions-call"
    rmse = call(*RMSE_CALL)
    # a page on another site posting to the server (a CORS "simple" request, and a JSON one)
    text_plain = httpx.post(
        url,
        content=b'{"func_name": "cf_rmse"}',
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    assert text_plain.status_code == 403 and "cross-origin" in text_plain.text
    as_json = httpx.post(url, json=rmse, headers={"Origin": "http://localhost:1"})
    assert as_json.status_code == 403
    assert httpx.post(url, json=rmse, headers={"Origin": "null"}).status_code == 403
    assert httpx.post(url, json=rmse, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # DNS rebinding: a foreign name that resolves to 127.0.0.1
    assert httpx.get(live.url + "/", headers={"Host": "evil.example"}).status_code == 403
    assert httpx.post(url, json=rmse, headers={"Host": f"evil.example:{live.port}"}).status_code == 403
    # no CORS headers are ever sent
    refused = httpx.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in refused.headers
    # its own pages (same origin, a loopback name) are served
    own = httpx.post(url, json=rmse, headers={"Origin": live.url, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200, own.text
    by_name = httpx.post(
        f"http://localhost:{live.port}/xlwings/custom-functions-call",
        json=rmse,
        headers={"Origin": f"http://localhost:{live.port}"},
    )
    assert by_name.status_code == 200
    # Office fetches the add-in's files from its own origin
    assert (
        httpx.get(live.url + "/taskpane.html", headers={"Origin": "https://excel.officeapps.live.com"}).status_code
        == 200
    )


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_a_full_queue_is_503_and_sigterm_during_a_fit_stops_everything(tmp_path):
    _version()
    server = started_server("--time-limit", "60", "--queue", "0", "--threads", "1", log=tmp_path / "serve.log")
    try:
        workers = [pid for pid in _children(server.process.pid) if _running(pid)]
        assert workers, "no worker process"
        answer = {}

        def fit():
            try:
                answer["response"] = httpx.post(
                    server.url + "/xlwings/custom-functions-call", json=runaway_fit(), timeout=60
                )
            except httpx.HTTPError as err:  # the connection may close instead of an answer
                answer["error"] = err
            answer["at"] = time.monotonic()

        runner = threading.Thread(target=fit)
        runner.start()
        wait_busy(server)
        refused = httpx.post(server.url + "/xlwings/custom-functions-call", json=small_fit(2), timeout=10)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.text
        assert httpx.post(server.url + "/xlwings/custom-functions-call", json=call(*RMSE_CALL)).status_code == 200

        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=15)
        stopped = time.monotonic() - sent
        runner.join(15)
        assert stopped < 5.0, stopped
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its orderly shutdown
        assert answer["at"] - sent < 5.0
        if "response" in answer:
            assert answer["response"].status_code == 503
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers), "a worker outlived the server"
    finally:
        server.stop()
