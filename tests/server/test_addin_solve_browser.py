"""The task pane's "Solve this sheet" in a real headless Chromium against a real `xlcf serve`: only Office.js is
replaced, by tests/helpers/office_stub.js serving a Solver-corpus workbook (written by XlsxWriter/openpyxl) with
its formulas (``Range.formulas``), shown values and names, hidden Solver names included.

Checked: a press reads the sheets and names through the Office.js API, the server solves the model, and the pane
writes back exactly the variable cells — with the solved values (the lesson's floor, Rosenbrock's (1, 1)) — and
shows the status line; a model that cannot be solved shows the server's one line and writes nothing."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import re

import numpy as np
import pytest

from tests.helpers.office_payload import solve_payload, stub_book
from tests.helpers.solver_corpus import BAD, CF_VARIANTS, MODELS, colnum
from tests.server.test_addin_browser import browser, open_pane, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def press_solve(page):
    page.click("#solve-sheet")
    page.wait_for_function(
        "() => document.querySelector('#message').className !== '' && !document.querySelector('#solve-sheet').disabled",
        timeout=120_000,
    )
    return page.locator("#message").get_attribute("class"), page.locator("#message").inner_text()


def _writes(page, before=0):
    return {c["address"]: c["values"] for c in page.evaluate("window.__officeCalls")[before:] if c["op"] == "setValues"}


def _box(address):
    first, _, last = address.split("!")[-1].partition(":")
    (c1, r1), (c2, r2) = (re.match(r"([A-Z]+)(\d+)", a).groups() for a in (first, last or first))
    return int(r1), colnum(c1), int(r2), colnum(c2)


def _block(book, sheet, address):
    (s,) = [s for s in book["sheets"] if s["name"] == sheet]
    top, left, bottom, right = _box(address)
    return np.array([row[left - 1 : right] for row in s["values"][top - 1 : bottom]], dtype=object)


def test_solve_this_sheet_writes_the_solved_variable_cells_of_the_lesson(browser, server, tmp_path):  # noqa: F811
    corpus = CF_VARIANTS["if_outside"](tmp_path / "bias.xlsx")
    book = stub_book(solve_payload(corpus.path, corpus.sheet), "bias.xlsx")
    # a workbook-scoped name too, listed on every sheet as some Excel versions do: it must stay the workbook's
    book["names"].append({"name": "all_ratings", "scope": None, "formula": "=bias!$H$2:$V$16"})
    book["namesListedOnSheets"] = True
    context, page, problems = open_pane(browser, server.url, book)
    try:
        sent = []
        page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/xlcf/solve-sheet") else None)
        kind, text = press_solve(page)
        assert kind == "ok", text
        assert text.startswith("Solved: bias!V42 (min) ") and " -> " in text and "press took" in text
        writes = _writes(page)
        assert set(writes) == {f"bias!{a}" for a in ("B26:F40", "H20:V24", "A26:A40", "H19:V19")}
        # the lesson's bias model from the written blocks: RMSE over the rated cells at the floor
        users, movies = np.array(writes["bias!B26:F40"]), np.array(writes["bias!H20:V24"])
        user_bias, movie_bias = np.array(writes["bias!A26:A40"]), np.array(writes["bias!H19:V19"])
        ratings = _block(book, "bias", "H2:V16")
        rated = np.array([[isinstance(v, (int, float)) and not isinstance(v, bool) for v in r] for r in ratings])
        predicted = users @ movies + user_bias + movie_bias
        rmse = float(np.sqrt(np.mean((ratings[rated].astype(float) - predicted[rated]) ** 2)))
        assert rmse == pytest.approx(corpus.floor, rel=1e-3)
        # what the pane sent: formulas from Range.formulas, the hidden Solver names with their sheet, the
        # workbook's name once, as the workbook's
        (payload,) = sent
        assert payload["sheet"] == "bias"
        (sheet,) = payload["sheets"]
        assert sheet["formulas"][42 - sheet["row"]][22 - sheet["column"]].startswith("=SQRT(SUMXMY2(")
        scopes = {(n["name"], n["scope"]) for n in payload["names"]}
        assert ("solver_opt", "bias") in scopes and ("solver_adj", "bias") in scopes
        assert [n["scope"] for n in payload["names"] if n["name"] == "all_ratings"] == [None]
        assert problems == []
    finally:
        context.close()


def test_solve_this_sheet_on_rosenbrock(browser, server, tmp_path):  # noqa: F811
    corpus = MODELS["rosenbrock"](tmp_path / "r.xlsx")
    book = stub_book(solve_payload(corpus.path, corpus.sheet))
    context, page, problems = open_pane(browser, server.url, book)
    try:
        kind, text = press_solve(page)
        assert kind == "ok", text
        writes = _writes(page)
        assert list(writes) == ["rosenbrock!A2:B2"]
        assert writes["rosenbrock!A2:B2"][0] == pytest.approx([1.0, 1.0], abs=1e-4)
        assert "24.2 -> " in text  # the objective before, as the cell shows it
        assert problems == []
    finally:
        context.close()


@pytest.mark.parametrize("key", ["unsupported_function", "ref_objective"])
def test_a_bad_model_shows_the_servers_line_and_writes_nothing(browser, server, tmp_path, key):  # noqa: F811
    corpus = BAD[key](tmp_path / f"{key}.xlsx")
    book = stub_book(solve_payload(corpus.path, corpus.sheet))
    context, page, problems = open_pane(browser, server.url, book)
    try:
        kind, text = press_solve(page)
        assert kind == "error"
        assert text.startswith("xlcf serve: ") and "\n" not in text
        assert any(w in text for w in corpus.where) and all(w in text.lower() for w in corpus.words), text
        assert _writes(page) == {}
        assert all("422" in p for p in problems), problems  # the refused request, and nothing else
    finally:
        context.close()
