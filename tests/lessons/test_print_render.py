"""What a learner sees and prints: every generated and every fitted workbook, rendered to PDF by LibreOffice,
shows no ``###`` (a value wider than its column); each collab sheet prints on one page; every sheet is set up
landscape, one page wide at >= 50%; every line in every chart is drawn straight (``smooth=0``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from lxml import etree

from tests.helpers.render import pdf_pages, pdf_text, render_missing_reason, to_pdf
from xlcf.lessons.page import MIN_SCALE, content_px, plan_page

pytestmark = [pytest.mark.libreoffice, pytest.mark.slow]

C = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"


def xlcf(*args: str, cwd=None) -> str:
    done = subprocess.run([sys.executable, "-m", "xlcf", *args], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def synthetic_ratings(path, n_users=80, n_movies=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    u, m = rng.normal(size=(n_users, k)), rng.normal(size=(n_movies, k))
    pairs = [(i, j) for i in range(n_users) for j in range(n_movies) if rng.random() < 0.3]
    rating = np.clip(np.round((3.2 + 0.6 * np.array([u[i] @ m[j] for i, j in pairs])) * 2) / 2, 0.5, 5.0)
    pd.DataFrame(
        {"userId": [i + 1 for i, _ in pairs], "movieId": [10 * (j + 1) for _, j in pairs], "rating": rating}
    ).to_csv(path, index=False)
    (path.parent / "movies.csv").write_text(
        "movieId,title\n"
        + "".join(f"{10 * (j + 1)},A movie with a rather long title number {j + 1} (1999)\n" for j in range(n_movies))
    )
    return path


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """Every kind of book `xlcf` makes, as made and after the commands that fill it."""
    d = tmp_path_factory.mktemp("books")
    xlcf("new", "collab", "-o", str(d / "collab.xlsx"))
    xlcf("new", "collab", "-o", str(d / "collab3.xlsx"), "--factors", "3", "--seed", "4")
    xlcf("new", "graddesc", "-o", str(d / "graddesc.xlsx"))
    ratings = synthetic_ratings(d / "ratings.csv")
    xlcf("new", "movielens", "-o", str(d / "movielens.xlsx"), "--ratings", str(ratings))
    made = {p.stem: p for p in d.glob("*.xlsx")}
    fitted = d / "fitted"
    fitted.mkdir()
    for name in ("collab", "collab3", "graddesc", "movielens"):
        (fitted / f"{name}.xlsx").write_bytes(made[name].read_bytes())
    (fitted / "collab_gibbs.xlsx").write_bytes(made["collab"].read_bytes())  # + the ± block under the predictions
    for sheet in ("dotprod", "bias"):
        xlcf("fit", str(fitted / "collab.xlsx"), "--sheet", sheet)
        xlcf("fit", str(fitted / "collab_gibbs.xlsx"), "--sheet", sheet, "--optimizer", "gibbs", "--epochs", "40")
        xlcf("fit", str(fitted / "collab3.xlsx"), "--sheet", sheet, "--history")  # + the fit_log sheet
    for sheet in ("basic", "momentum", "rmsprop", "adam", "adam_ann"):
        xlcf("step", str(fitted / "graddesc.xlsx"), "--sheet", sheet, "--passes", "50")
    xlcf(
        "train",
        str(ratings),
        "--out",
        str(fitted / "movielens.xlsx"),
        "--factors",
        "8",
        "--epochs",
        "3",
        "--optimizer",
        "adam",
        "--quiet",
    )
    return {"made": made, "fitted": {p.stem: p for p in fitted.glob("*.xlsx")}, "dir": d}


@pytest.fixture(scope="module")
def pdfs(books):
    reason = render_missing_reason()
    if reason:
        pytest.skip(reason)
    out = books["dir"] / "pdf"
    out.mkdir()
    result = {}
    for stage in ("made", "fitted"):
        (out / stage).mkdir()
        for name, book in books[stage].items():
            result[(stage, name)] = to_pdf(book, out / stage)
    return result


def test_no_value_is_too_wide_for_its_column(pdfs):
    hashes = {key: pdf_text(pdf).count("###") for key, pdf in pdfs.items()}
    assert hashes and all(n == 0 for n in hashes.values()), hashes


def test_each_collab_sheet_prints_on_one_page(pdfs):
    for stage in ("made", "fitted"):
        assert pdf_pages(pdfs[(stage, "collab")]) == 2  # dotprod + bias
    assert pdf_pages(pdfs[("made", "collab3")]) == 2
    assert pdf_pages(pdfs[("fitted", "collab_gibbs")]) == 2
    text = " ".join(pdf_text(pdfs[("fitted", "collab_gibbs")]).split())
    assert text.count("± posterior predictive std of each prediction") == 2  # one block per sheet, on its page


def test_the_fitted_collab_sheet_shows_its_notes_and_status_in_full(pdfs):
    text = " ".join(pdf_text(pdfs[("fitted", "collab")]).split())
    assert "rmse befor " not in text
    assert "Solver" in text and "optimises" in text


def test_every_sheet_is_landscape_and_one_page_wide_at_a_readable_scale(books):
    import openpyxl

    for stage in ("made", "fitted"):
        for name, path in books[stage].items():
            wb = openpyxl.load_workbook(path)
            for ws in wb.worksheets:
                where = f"{stage}/{name}!{ws.title}"
                assert ws.page_setup.orientation == "landscape", where
                if ws.page_setup.fitToWidth == 1 and ws.sheet_properties.pageSetUpPr.fitToPage:
                    area = ws.print_area
                    if area and ws.title == "embeddings":
                        continue  # prints its first screen only, checked below
                    w, h = content_px(ws, ws.max_column, ws.max_row)
                    assert plan_page(w, h, one_page=False).scale_wide >= MIN_SCALE * 0.9, where
                else:
                    assert ws.page_setup.scale and ws.page_setup.scale >= MIN_SCALE * 100, where


def test_the_embeddings_sheet_prints_its_first_screen_only(books):
    import openpyxl

    ws = openpyxl.load_workbook(books["fitted"]["movielens"])["embeddings"]
    assert ws.print_area, "no print area"
    assert "first screen" in ws["A2"].value


def _chart_parts(path):
    with zipfile.ZipFile(path) as zf:
        return {n: etree.fromstring(zf.read(n)) for n in zf.namelist() if n.startswith("xl/charts/chart")}


def test_every_line_is_straight_and_every_value_axis_has_its_own_format(books):
    checked = 0
    for stage in ("made", "fitted"):
        for name, path in books[stage].items():
            for part, root in _chart_parts(path).items():
                for kind in ("lineChart", "scatterChart"):
                    for ser in root.iter(f"{C}{kind}"):
                        for s in ser.iter(f"{C}ser"):
                            smooth = s.find(f"{C}smooth")
                            assert smooth is not None and smooth.get("val") in ("0", "false"), f"{name}:{part}"
                            checked += 1
                    for chart in root.iter(f"{C}{kind}"):
                        plot = chart.getparent()
                        for ax in plot.iter(f"{C}valAx"):
                            fmt = ax.find(f"{C}numFmt")
                            assert fmt is not None and fmt.get("sourceLinked") in ("0", "false"), f"{name}:{part}"
    assert checked >= 20  # graddesc (11 series), fit logs, movielens history and scatter
