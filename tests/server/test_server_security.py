"""The server's checks on their own (no server): loopback Host and Origin rules, the token, the payload
validator against payloads of every client format, and the scrubbing of server paths from answers."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import pytest

from xlcf.errors import BadPayload
from xlcf.server import security


@pytest.mark.parametrize(
    "host, name",
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8000", "::1"),
        ("::1", "::1"),
        ("evil.example:80", "evil.example"),
    ],
)
def test_host_name(host, name):
    assert security.host_name(host) == name


def _refusal(headers, method="POST", path="/xlwings/custom-functions-call", scheme="http"):
    return security.loopback_refusal({k.lower(): v for k, v in headers.items()}, scheme, path, method)


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "127.0.0.1:8000"},
        {"Host": "localhost:8000", "Origin": "http://localhost:8000"},
        {"Host": "[::1]:8000", "Origin": "http://[::1]:8000", "Sec-Fetch-Site": "same-origin"},
        {"Host": "localhost", "Origin": "http://localhost:80"},
    ],
)
def test_loopback_requests_of_the_servers_own_pages_pass(headers):
    assert _refusal(headers) is None


@pytest.mark.parametrize(
    "headers, why",
    [
        ({}, "no Host"),
        ({"Host": "evil.example:8000"}, "not a loopback name"),
        ({"Host": "127.0.0.1.evil.example"}, "not a loopback name"),
        ({"Host": "127.0.0.1:8000", "Origin": "https://evil.example"}, "cross-origin"),
        ({"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:9999"}, "cross-origin"),
        ({"Host": "127.0.0.1:8000", "Origin": "https://127.0.0.1:8000"}, "cross-origin"),  # scheme differs
        ({"Host": "127.0.0.1:8000", "Origin": "null"}, "cross-origin"),
        ({"Host": "127.0.0.1:8000", "Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({"Host": "127.0.0.1:8000", "Sec-Fetch-Site": "same-site"}, "cross-site"),
    ],
)
def test_foreign_hosts_and_origins_are_refused(headers, why):
    assert why in _refusal(headers)


def test_add_in_files_may_be_fetched_from_office_but_nothing_that_computes():
    office = {"Host": "localhost:8000", "Origin": "https://excel.officeapps.live.com"}
    assert _refusal(office, "GET", "/taskpane.html", "https") is None
    assert _refusal(office, "GET", "/xlwings/custom-functions-meta", "https") is None
    assert "cross-origin" in _refusal(office, "GET", "/", "https")
    assert "cross-origin" in _refusal(office, "POST", "/xlwings/custom-functions-call", "https")


def test_token_raw_or_bearer():
    assert security.token_matches("s3cret-token", "s3cret-token")
    assert security.token_matches("s3cret-token", "Bearer s3cret-token")
    assert security.token_matches("s3cret-token", "bearer  s3cret-token ")
    assert not security.token_matches("s3cret-token", "s3cret-toke")
    assert not security.token_matches("s3cret-token", None)


def test_json_content_type():
    assert security.is_json_content("application/json; charset=utf-8")
    assert not security.is_json_content("text/plain")
    assert not security.is_json_content(None)


def test_parse_json_refuses_nan_and_garbage():
    assert security.parse_json(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    for body in (b'{"a": NaN}', b"[Infinity]", b"{", b"\xff\xfe", b"[" * 50000):
        with pytest.raises(BadPayload):
            security.parse_json(body)


@pytest.fixture(scope="module")
def collab_book(tmp_path_factory):
    from xlcf.cli import main

    path = tmp_path_factory.mktemp("security") / "collab.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("client", ["VBA", "Microsoft Office Scripts", "Office.js"])
def test_payloads_of_every_client_format_pass_unchanged(collab_book, client):
    import copy

    from tests.excel.test_excel_payload import payload_from_xlsx

    payload = payload_from_xlsx(collab_book, "dotprod", client=client)
    before = copy.deepcopy(payload)
    assert security.validate_book_payload(payload) == before


def test_the_benchmarks_payload_builder_passes(collab_book):
    from xlcf.bench.server import book_payload

    payload = book_payload(collab_book, "bias", version="0.0.0")
    assert security.validate_book_payload(payload) is payload
    assert {n["name"] for n in payload["names"]} >= {"ratings", "user_factors", "movie_factors"}


def test_a_bad_place_is_named():
    payload = {
        "client": "VBA",
        "version": "1",
        "book": {"name": "b", "active_sheet_index": 0},
        "sheets": [{"name": "s", "values": [[1, 2], [3, {"x": 1}]]}],
    }
    with pytest.raises(BadPayload, match=r"sheets\[0\]\.values\[1\]\[1\]"):
        security.validate_book_payload(payload)


def test_function_calls_are_checked():
    ok = {"func_name": "cf_rmse", "args": [[[1, None]], 2.5, None, "x"], "version": "1"}
    assert security.validate_function_call(ok)["client"] == "Office.js"
    for bad in (
        [],
        {"func_name": "x"},
        {"func_name": "x", "args": {}, "version": "1"},
        {"func_name": "x", "args": [[[[1]]]], "version": "1"},
        {"func_name": "x", "args": []},
    ):
        with pytest.raises(BadPayload):
            security.validate_function_call(bad)


def test_server_paths_are_scrubbed_from_every_string(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    folders = security.server_paths(data)
    answer = {
        "actions": [{"values": [[f"Error: cannot open {data.resolve()}/x.csv", 1.5, None]]}],
        "note": f"{os.getcwd()}/y and {os.path.expanduser('~')}/z",
    }
    scrubbed = security.scrub_paths(answer, folders)
    text = repr(scrubbed)
    assert str(data.resolve()) not in text and os.getcwd() not in text
    assert "<data-dir>/x.csv" in text
    assert scrubbed["actions"][0]["values"][0][1:] == [1.5, None]


@pytest.mark.parametrize(
    "origin, office",
    [
        ("https://excel.officeapps.live.com", True),
        ("https://inc-excel.officeapps.live.com", True),
        ("https://excel.cloud.microsoft", True),
        ("http://excel.officeapps.live.com", False),
        ("https://officeapps.live.com.evil.example", False),
        ("https://evil.example", False),
        (None, False),
        ("null", False),
    ],
)
def test_office_origins(origin, office):
    assert security.office_origin(origin) is office
