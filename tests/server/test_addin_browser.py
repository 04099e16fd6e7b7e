"""The task pane in a real headless Chromium against a real `xlcf serve`: only Office.js is replaced, by
tests/helpers/office_stub.js (a workbook in memory, built from a generated collab book, that records every write).
The page's own code (taskpane.js, functions.js) and the server are what users get.

Checked: the page loads without console errors; pressing "Fit" reads the workbook through the Office.js API,
reaches the server and writes the fitted factors and the status cell back into the workbook; the worksheet
functions are registered and answer through the server; over HTTPS with a token, the token typed into the pane
is what lets the press through."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import datetime
import ipaddress
import shutil
from pathlib import Path

import pytest

from xlcf.bench.server import ServeProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("XLCF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and Path("/usr/bin/chromium").exists():
    CHROMIUM = "/usr/bin/chromium"
STUB = Path(__file__).resolve().parents[1] / "helpers" / "office_stub.js"
OFFICE_JS = "https://appsforoffice.microsoft.com/lib/1/hosted/office.js"
TOKEN = "pane-token-for-tests"

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _remote():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")


@pytest.fixture(scope="module")
def stub_book(tmp_path_factory):
    """The workbook the stub serves: a fresh `xlcf new collab`, dotprod active, formula cells as Excel shows them."""
    _remote()
    from tests.excel.test_excel_payload import collab_computed, payload_from_xlsx
    from xlcf.cli import main

    path = tmp_path_factory.mktemp("pane") / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    payload = payload_from_xlsx(path, "dotprod", client="Office.js", computed=collab_computed(path, "dotprod"))
    pos, r, c = _name_cell(payload, "dotprod", "epochs")
    payload["sheets"][pos]["values"][r][c] = 40  # a short fit: the test is about the round trip
    sheets = [s["name"] for s in payload["sheets"]]
    names = [
        {"name": n["name"], "sheet": sheets[n["sheet_index"]], "address": n["address"], "scope": n["scope_sheet_name"]}
        for n in payload["names"]
    ]
    return {
        "name": "collab.xlsx",
        "active": payload["book"]["active_sheet_index"],
        "selection": "A1",
        "sheets": [{"name": s["name"], "values": s["values"]} for s in payload["sheets"]],
        "names": names,
    }


def _name_cell(payload, sheet, name):
    import re

    for n in payload["names"]:
        if n["name"] == name and n["scope_sheet_name"] == sheet:
            col, row = re.match(r"([A-Z]+)(\d+)", n["address"].split(":")[0]).groups()
            number = 0
            for ch in col:
                number = number * 26 + ord(ch) - 64
            return n["sheet_index"], int(row) - 1, number - 1
    raise KeyError(name)


def _address(book, name, sheet="dotprod"):
    (spec,) = [n for n in book["names"] if n["name"] == name and n["scope"] == sheet]
    return f"{sheet}!{spec['address']}"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_pane(browser, url, book, *, https=False):
    context = browser.new_context(ignore_https_errors=https)
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.add_init_script(f"window.__xlcfBook = {__import__('json').dumps(book)};")
    page.route(OFFICE_JS, lambda route: route.fulfill(body=STUB.read_text(), content_type="text/javascript"))
    page.goto(url + "/taskpane.html")
    page.wait_for_load_state("networkidle")
    return context, page, problems


def press(page, script):
    page.click(f"button[data-script='{script}']")
    page.wait_for_function(
        "() => document.querySelector('#message').className !== ''"
        " && !document.querySelector('button[data-script]').disabled",
        timeout=120_000,
    )
    return page.locator("#message").get_attribute("class"), page.locator("#message").inner_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _remote()
    log = (tmp_path_factory.mktemp("pane-server") / "serve.log").open("wb")
    with ServeProcess("--threads", "1", log=log) as running:
        running.wait_ready()
        yield running


def test_pane_loads_and_registers_the_functions_without_console_errors(browser, server, stub_book):
    context, page, problems = open_pane(browser, server.url, stub_book)
    try:
        assert page.title() == "xlcf"
        registered = {c["id"] for c in page.evaluate("window.__officeCalls") if c["op"] == "associate"}
        assert registered == {"CF_FIT", "CF_PREDICT", "CF_RMSE", "CF_RECOMMEND"}
        # a registered function answers through the server (Office passes an invocation object last)
        result = page.evaluate(
            "window.__customFunctions['CF_RMSE']([[1, 2, '']], [[1.5, 2, 9]], "
            "{address: 'Sheet1!A1', functionName: 'CF_RMSE'})"
        )
        assert result == [[pytest.approx(0.125**0.5)]]  # errors 0.5 and 0 over the two rated cells
        error = page.evaluate("window.__customFunctions['CF_RMSE']([[1]], [[1, 2]], {address: 'A1'})")
        assert "1x1" in error[0][0]  # a message in the cell, not an exception
        assert problems == []
    finally:
        context.close()


def test_fit_button_reaches_the_server_and_writes_the_workbook(browser, server, stub_book):
    context, page, problems = open_pane(browser, server.url, stub_book)
    try:
        before = page.evaluate("window.__officeCalls.length")
        kind, text = press(page, "fit")
        assert kind == "ok", text
        writes = {
            c["address"]: c["values"] for c in page.evaluate("window.__officeCalls")[before:] if c["op"] == "setValues"
        }
        status = writes[_address(stub_book, "status")][0][0]
        assert status.startswith("Fitted: ") and "press took" in status  # written by the server's macro
        factors = writes[_address(stub_book, "user_factors")]
        old = _block(stub_book, _address(stub_book, "user_factors"))
        assert len(factors) == len(old) and factors != old
        assert problems == []
    finally:
        context.close()


def _block(book, address):
    import re

    sheet_name, cells = address.split("!")
    (sheet,) = [s for s in book["sheets"] if s["name"] == sheet_name]
    first, last = cells.split(":")

    def cell(ref):
        col, row = re.match(r"([A-Z]+)(\d+)", ref).groups()
        number = 0
        for ch in col:
            number = number * 26 + ord(ch) - 64
        return int(row) - 1, number - 1

    (r1, c1), (r2, c2) = cell(first), cell(last)
    return [row[c1 : c2 + 1] for row in sheet["values"][r1 : r2 + 1]]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certfile, keyfile


def test_over_https_the_token_typed_into_the_pane_lets_the_press_through(browser, stub_book, tmp_path):
    certfile, keyfile = _self_signed(tmp_path)
    with ServeProcess(
        "--threads",
        "1",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        "--token",
        TOKEN,
        https=True,
        token=TOKEN,
        log=(tmp_path / "serve.log").open("wb"),
    ) as server:
        server.wait_ready()
        context, page, problems = open_pane(browser, server.url, stub_book, https=True)
        try:
            assert page.evaluate("location.protocol") == "https:"
            kind, text = press(page, "main")
            assert kind == "error" and "token" in text
            page.click("#token-box summary")
            page.fill("#token", TOKEN)
            page.click("#save-token")
            kind, text = press(page, "main")
            assert kind == "ok", text
            writes = [c for c in page.evaluate("window.__officeCalls") if c["op"] == "setValues"]
            assert any(
                c["address"] == _address(stub_book, "status") and c["values"][0][0].startswith("Fitted: ")
                for c in writes
            )
            # the 401 of the first press is a network error in the console; nothing else is
            assert all("401" in p for p in problems), problems
        finally:
            context.close()
