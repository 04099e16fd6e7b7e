"""The second press through ``xlcf serve``: how long a warm fit of the lesson's 15x15 sheet takes on the server.

What is measured, on this machine over loopback:

1. ``xlcf serve`` is started in its own process and waited for until its worker is warm (torch imported, one
   tiny fit done): that is the server's start-up, paid once, before any press.
2. A fresh ``xlcf new collab`` workbook is turned into the JSON an xlwings client sends (the ``dotprod`` and
   ``bias`` sheets active in turn) and POSTed to ``/xlwings/custom-scripts-call/fit``: the first press.
3. The returned actions are applied to the payload, as Excel would (the sheet now holds the fitted factors), and
   the same button is pressed again: the second press. Reported: the server's own time (its ``Server-Timing``
   header: request in to answer out, payload parsing and the worker round trip included) and the client's round
   trip, medians of ``repeats`` presses.

The HTTP client is the standard library's (no test dependency); xlwings' remote engine needs a license key in
the environment (``XLWINGS_LICENSE_KEY``), which this module never sets.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SHEETS = ("dotprod", "bias")


@dataclass(frozen=True)
class PressTiming:
    sheet: str
    first_server_ms: float
    second_server_ms: float  # median of the warm presses
    second_roundtrip_ms: float  # median, as the client saw it (loopback)
    presses: int
    status: str  # the status cell after the last press


@dataclass(frozen=True)
class ServerBench:
    startup_s: float  # `xlcf serve` started -> worker warm
    presses: list[PressTiming]

    def lines(self) -> list[str]:
        out = [f"xlcf serve start-up (process + warm worker): {self.startup_s:.1f} s"]
        for p in self.presses:
            out.append(
                f"  {p.sheet:8s} fit: first press {p.first_server_ms:7.1f} ms, second press "
                f"{p.second_server_ms:7.1f} ms server time ({p.second_roundtrip_ms:.1f} ms round trip; "
                f"median of {p.presses})"
            )
            out.append(f"           status: {p.status}")
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``python -m xlcf serve`` on 127.0.0.1 and a free port, as a context manager (stopped with SIGTERM).
    ``https``: the args include ``--certfile/--keyfile`` (the URL is https; its certificate is not checked);
    ``token``: sent with the readiness checks."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        env: dict | None = None,
        log=None,
        https: bool = False,
        token: str | None = None,
    ):
        self.port = port or free_port()
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        self.token = token
        self.args = [sys.executable, "-m", "xlcf", "serve", "--port", str(self.port), "--log-level", "warning", *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log if log is not None else subprocess.DEVNULL
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServeProcess:
        self.process = subprocess.Popen(self.args, env=self.env, stdout=self.log, stderr=self.log)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def wait_ready(self, timeout: float = 180.0) -> dict:
        """GET / until every worker is warm; its JSON."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": self.token} if self.token else None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"xlcf serve exited with code {self.process.returncode}")
            try:
                status, _, body = request("GET", self.url + "/", headers=headers, timeout=5)
            except OSError:
                status, body = 0, b""
            if status == 200:
                info = json.loads(body)
                workers = info["workers"]
                if workers["ready"] + workers["busy"] >= workers["size"]:
                    return info
            time.sleep(0.2)
        raise TimeoutError(f"xlcf serve at {self.url} was not ready within {timeout:g} s")


def request(method: str, url: str, payload=None, *, headers: dict | None = None, timeout: float = 60.0):
    """(status, headers, body bytes) of one HTTP request (errors are answers too)."""
    data = None if payload is None else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    context = None
    if url.startswith("https://127.0.0.1:"):  # our own loopback server with a self-signed certificate
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def server_ms(headers: dict) -> float:
    """The app's own time from its ``Server-Timing: app;dur=<ms>`` header."""
    for key, value in headers.items():
        if key.lower() == "server-timing":
            match = re.search(r"dur=([0-9.]+)", value)
            if match:
                return float(match.group(1))
    raise ValueError("the answer has no Server-Timing header")


# ------------------------------------------------------------------------------------------ the payload


def book_payload(path: str | os.PathLike, active_sheet: str, *, version: str, client: str = "Office.js") -> dict:
    """What an xlwings client sends for this workbook with ``active_sheet`` active: each sheet's values from A1 to
    its last used cell (formula cells empty: the fit reads only constants), the defined names with their sheet
    index and address (sheet-scoped names without the sheet prefix, as the Office.js and Office Scripts clients
    send them)."""
    import openpyxl

    wb = openpyxl.load_workbook(path)  # read only: the book is never saved
    index = {ws.title: i for i, ws in enumerate(wb.worksheets)}
    sheets = []
    for ws in wb.worksheets:
        values = [
            [None if (isinstance(v, str) and v.startswith("=")) or hasattr(v, "text") else v for v in row]
            for row in ws.iter_rows(values_only=True)
        ]
        sheets.append({"name": ws.title, "values": values or [[]], "pictures": [], "tables": []})
    names = []

    def add(name: str, destinations, scope: str | None) -> None:
        areas = list(destinations)  # a name of several areas (Solver's variables) keeps them all, comma-joined
        if not areas or areas[0][0] not in index:
            return  # constants are not ranges: clients skip them
        names.append(
            {
                "name": name,
                "sheet_index": index[areas[0][0]],
                "address": ",".join(ref.replace("$", "") for _, ref in areas),
                "book_scope": scope is None,
                "scope_sheet_name": scope,
                "scope_sheet_index": None if scope is None else index[scope],
            }
        )

    for name, defined in wb.defined_names.items():
        add(name, defined.destinations, None)
    for ws in wb.worksheets:
        for name, defined in ws.defined_names.items():
            add(name, defined.destinations, ws.title)
    return {
        "client": client,
        "version": version,
        "book": {"name": Path(path).name, "active_sheet_index": index[active_sheet], "selection": "A1"},
        "names": names,
        "sheets": sheets,
    }


def apply_actions(payload: dict, actions: list[dict]) -> None:
    """Write the ``setValues`` actions into the payload's sheets, as a client writes them into the workbook."""
    for action in actions:
        if action.get("func") != "setValues":
            continue
        values = payload["sheets"][action["sheet_position"]]["values"]
        top, left = action["start_row"], action["start_column"]
        for i, row in enumerate(action["values"]):
            while len(values) <= top + i:
                values.append([None] * len(values[0]))
            for j, value in enumerate(row):
                target = values[top + i]
                if len(target) <= left + j:
                    for other in values:
                        other.extend([None] * (left + j + 1 - len(other)))
                target[left + j] = value


# ------------------------------------------------------------------------------------------ the bench


def set_named_cell(payload: dict, sheet: str, name: str, value) -> None:
    """Write ``value`` into the (top-left) cell of the sheet-scoped name ``name`` of ``payload``."""
    for item in payload["names"]:
        if item["name"] == name and item["scope_sheet_name"] == sheet:
            match = re.match(r"([A-Z]+)(\d+)", item["address"].split(":")[0])
            if match is None:
                raise KeyError(f"{sheet}!{name}: {item['address']!r} is not a cell address")
            column = 0
            for ch in match.group(1):
                column = column * 26 + ord(ch) - 64
            row = int(match.group(2)) - 1
            values = payload["sheets"][item["sheet_index"]]["values"]
            values[row][column - 1] = value
            return
    raise KeyError(f"{sheet}!{name}")


def bench_second_press(
    repeats: int = 5, *, optimizer: str | None = None, epochs: int | None = None, server_args: tuple[str, ...] = ()
) -> ServerBench:
    """Start ``xlcf serve``, press Fit on each collab sheet once, then ``repeats`` more times (warm).
    ``optimizer``, ``epochs``: written into the sheet's cells first (None: the sheet's default)."""
    if not os.environ.get("XLWINGS_LICENSE_KEY"):
        raise RuntimeError(
            "xlwings' remote engine needs XLWINGS_LICENSE_KEY in the environment (noncommercial for non-commercial use)"
        )
    from xlcf.data import lesson_crosstab, lesson_titles
    from xlcf.excel.remote import xlwings_status
    from xlcf.lessons.collab import build_collab

    presses = []
    with tempfile.TemporaryDirectory() as folder:
        book = Path(folder) / "collab.xlsx"
        build_collab(book, lesson_crosstab(), lesson_titles())  # the book `xlcf new collab` writes
        xlwings_version = xlwings_status()[0]  # the client's version in the payload, as an add-in sends it
        started = time.perf_counter()
        with ServeProcess(*server_args) as server:
            server.wait_ready()
            startup = time.perf_counter() - started
            for sheet in SHEETS:
                payload = book_payload(book, sheet, version=xlwings_version)
                if optimizer is not None:
                    set_named_cell(payload, sheet, "optimizer", optimizer)
                if epochs is not None:
                    set_named_cell(payload, sheet, "epochs", epochs)
                url = f"{server.url}/xlwings/custom-scripts-call/fit"
                first = 0.0
                warm_server, warm_trip = [], []
                status_text = ""
                for press in range(repeats + 1):
                    begun = time.perf_counter()
                    status, headers, body = request("POST", url, payload)
                    trip = 1000 * (time.perf_counter() - begun)
                    if status != 200:
                        raise RuntimeError(f"fit on {sheet}: HTTP {status}: {body[:200]!r}")
                    actions = json.loads(body)["actions"]
                    apply_actions(payload, actions)
                    texts = [
                        v
                        for a in actions
                        if a.get("func") == "setValues"
                        for row in a["values"]
                        for v in row
                        if isinstance(v, str)
                    ]
                    status_text = texts[-1] if texts else ""
                    if press == 0:
                        first = server_ms(headers)
                    else:
                        warm_server.append(server_ms(headers))
                        warm_trip.append(trip)
                presses.append(
                    PressTiming(
                        sheet, first, statistics.median(warm_server), statistics.median(warm_trip), repeats, status_text
                    )
                )
    return ServerBench(startup, presses)


def main(argv: list[str] | None = None) -> int:
    """``python -m xlcf.bench.server [default|OPTIMIZER[:EPOCHS] ...]``: one server run per argument."""
    for arg in (argv if argv is not None else sys.argv[1:]) or ["default"]:
        name, _, epochs = arg.partition(":")
        optimizer = None if name == "default" else name
        print(f"optimizer: {optimizer or 'the sheet default'}" + (f", {epochs} epochs" if epochs else ""))
        for line in bench_second_press(optimizer=optimizer, epochs=int(epochs) if epochs else None).lines():
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
