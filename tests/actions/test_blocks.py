"""Finding the blocks: sheet names, the Solver model read from formulas, explicit ranges; shape checks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.fit_books import lesson_book
from xlcf.actions.blocks import (
    find_blocks,
    formula_refs,
    parse_prediction_formula,
    rmse_formula_understood,
    understand_predictions,
)
from xlcf.errors import WorkbookError
from xlcf.ooxml import Area, Package


def test_parse_prediction_formula_variants():
    p = parse_prediction_formula('=IF(H2="",0,MMULT($B25:$F25,H$19:H$23))', "s")
    assert p.user_row == Area("s", 25, 2, 25, 6) and p.movie_col == Area("s", 19, 8, 23, 8)
    assert p.rating_cell == Area("s", 2, 8, 2, 8) and p.blank_value == 0.0 and p.bias_cells == []
    p = parse_prediction_formula("= $A25 + MMULT( $B25:$F25 , H$19:H$23 ) + H$18", "s")
    assert {(c.top, c.left) for c in p.bias_cells} == {(25, 1), (18, 8)} and p.rating_cell is None
    p = parse_prediction_formula('=IF(ISBLANK(H2),"",SUMPRODUCT($B25:$F25,TRANSPOSE(H$19:H$23))+H$18+$A25)', "s")
    assert p.blank_value == "" and len(p.bias_cells) == 2
    p = parse_prediction_formula("='my sheet'!A1+MMULT('my sheet'!$B25:$F25,'my sheet'!H$19:H$23)", "x")
    assert p.user_row.sheet == "my sheet" and p.bias_cells[0].sheet == "my sheet"
    for bad in [
        "=H25*2",
        "=MMULT($B25:$F25,H$19:H$22)",
        "=MMULT($B25:$F26,H$19:H$23)",
        "=MMULT($B25:$F25,H$19:H$23)*2",
        "=MMULT($B25:$F25,H$19:H$23)+A1:A2",
        "=1+2",
        "",
    ]:
        assert parse_prediction_formula(bad, "s") is None, bad


def test_formula_refs_skip_strings_and_functions():
    refs = formula_refs('=IF(A1="B2",LOG10(C3),Sheet2!D4:E5)', "s")
    assert [(r.area.sheet, r.area.ref) for r in refs] == [("s", "A1"), ("s", "C3"), ("Sheet2", "D4:E5")]


@pytest.mark.parametrize("bias", [False, True])
def test_solver_model_read_from_formulas(tmp_path, bias):
    sheet = "bias" if bias else "dotprod"
    book = lesson_book(tmp_path / "l.xlsx", bias=bias, sheet=sheet)
    pkg = Package.open(book)
    b = find_blocks(pkg, sheet)
    assert b.source == "solver"
    assert (b.ratings.ref, b.user_factors.ref, b.movie_factors.ref, b.predictions.ref, b.rmse.ref) == (
        "H2:V16",
        "B25:F39",
        "H19:V23",
        "H25:V39",
        "V41",
    )
    if bias:
        assert (b.user_bias.ref, b.movie_bias.ref, b.model) == ("A25:A39", "H18:V18", "bias")
    else:
        assert b.user_bias is None and b.model == "dot"
    understood = understand_predictions(pkg, b)
    assert len(understood) == 225 and understood["J27"] == (2, 2, 0.0)
    assert rmse_formula_understood(pkg, b)


def test_solver_model_with_other_size_and_factor_count(tmp_path):
    rng = np.random.default_rng(3)
    r = rng.choice([np.nan, 1.0, 2.5, 4.0, 5.0], size=(6, 4))
    r[0, 0], r[1, 1] = 3.0, 4.0
    book = lesson_book(tmp_path / "small.xlsx", ratings=(r, list(range(6)), list(range(4))), factors=3, bias=True)
    b = find_blocks(Package.open(book), "dotprod")
    assert (b.ratings.ref, b.user_factors.ref, b.movie_factors.ref, b.user_bias.ref, b.movie_bias.ref) == (
        "H2:K7",
        "B23:D28",
        "H19:K21",
        "A23:A28",
        "H18:K18",
    )
    assert b.factors == 3 and b.n_users == 6 and b.n_movies == 4


def test_solver_adj_must_cover_what_the_fit_writes(tmp_path):
    book = lesson_book(tmp_path / "l.xlsx")
    pkg = Package.open(book)
    pkg.set_defined_name("solver_adj", "dotprod!$B$25:$F$39", sheet="dotprod", hidden=True)
    with pytest.raises(WorkbookError, match=r"movie factors H19:V23 .*not among Solver's adjustable cells"):
        find_blocks(pkg, "dotprod")


def test_a_cell_with_another_formula_is_not_understood(tmp_path):
    book = lesson_book(tmp_path / "l.xlsx")
    pkg = Package.open(book)
    pkg.write_values("dotprod", {"J27": 1.0}, overwrite_formulas=True)
    pkg.save()
    pkg = Package.open(book)
    b = find_blocks(pkg, "dotprod")
    understood = understand_predictions(pkg, b)
    assert len(understood) == 224 and "J27" not in understood


def test_explicit_ranges_and_shape_errors(tmp_path):
    book = lesson_book(tmp_path / "l.xlsx", solver=False)
    pkg = Package.open(book)
    with pytest.raises(WorkbookError, match="no xlcf names .* and no Solver model .*--ratings"):
        find_blocks(pkg, "dotprod")
    b = find_blocks(pkg, "dotprod", ratings="H2:V16", user_factors="B25:F39", movie_factors="H19:V23", rmse="V41")
    assert b.source == "ranges" and b.predictions.ref == "H25:V39"  # found through the RMSE formula
    assert len(understand_predictions(pkg, b)) == 225
    cases = [
        (dict(user_factors="B25:F38"), r"user factors B25:F38 have 14 rows but the ratings H2:V16"),
        (dict(movie_factors="H19:U23"), r"movie factors H19:U23 have 14 columns"),
        (dict(movie_factors="H19:V22"), r"have 5 factors \(columns\) but movie factors H19:V22 have 4"),
        (dict(user_bias="A25:A39"), "needs both user bias and movie bias"),
        (dict(user_bias="A25:B39", movie_bias="H18:V18"), r"user bias A25:B39 is 15x2"),
        (dict(user_bias="A25:A39", movie_bias="H18:U18"), r"movie bias H18:U18 is 1x14"),
        (dict(user_factors="H2:L16"), "overlap"),
    ]
    for change, message in cases:
        ranges = dict(ratings="H2:V16", user_factors="B25:F39", movie_factors="H19:V23") | change
        with pytest.raises(WorkbookError, match=message):
            find_blocks(pkg, "dotprod", **ranges)
    with pytest.raises(WorkbookError, match="missing: --movie-factors"):
        find_blocks(pkg, "dotprod", ratings="H2:V16", user_factors="B25:F39")
    with pytest.raises(WorkbookError, match="not a cell range"):
        find_blocks(pkg, "dotprod", ratings="H2:banana", user_factors="B25:F39", movie_factors="H19:V23")
    with pytest.raises(WorkbookError, match="no sheet 'nope'"):
        find_blocks(pkg, "nope")


def test_sheet_names_win_over_solver(tmp_path):
    book = lesson_book(tmp_path / "l.xlsx")
    pkg = Package.open(book)
    for name, ref in [
        ("ratings", "$H$2:$V$16"),
        ("user_factors", "$B$25:$F$39"),
        ("movie_factors", "$H$19:$V$23"),
        ("predictions", "$H$25:$V$39"),
        ("rmse", "$V$41"),
    ]:
        pkg.set_defined_name(name, f"dotprod!{ref}", sheet="dotprod")
    b = find_blocks(pkg, "dotprod")
    assert b.source == "names" and b.predictions.ref == "H25:V39" and b.rmse.ref == "V41"
    pkg.set_defined_name("ratings", "notes!$A$1:$O$15", sheet="dotprod")
    with pytest.raises(WorkbookError, match="refers to sheet 'notes'"):
        find_blocks(pkg, "dotprod")
