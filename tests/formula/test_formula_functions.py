"""Each function and operator against Excel's documented behaviour (blank cells, text, booleans, errors)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from tests.formula.conftest import book_of, evaluate
from xlcf.errors import FormulaError
from xlcf.ooxml import ErrorValue

# A1:A4 = 1, blank, "x", TRUE; B1:B4 = 2, 3, 4, 5; C1 = "2"
MIXED = {"A1": 1.0, "A3": "x", "A4": True, "B1": 2.0, "B2": 3.0, "B3": 4.0, "B4": 5.0, "C1": "2"}


def err(code):
    return ErrorValue(code)


CASES = [
    # arithmetic and coercion
    ('="abc"+1', {}, err("#VALUE!")),
    ('="2"+1', {}, 3.0),
    ("=C1*1", MIXED, 2.0),
    ("=A2+1", MIXED, 1.0),
    ("=TRUE+1", {}, 2.0),
    ("=1/0", {}, err("#DIV/0!")),
    ("=0/0", {}, err("#DIV/0!")),
    ("=0^0", {}, err("#NUM!")),
    ("=0^-1", {}, err("#DIV/0!")),
    ("=(-8)^(1/3)", {}, err("#NUM!")),
    ("=(-2)^3", {}, -8.0),
    ('="1,000"+0', {}, 1000.0),
    ('="50%"+0', {}, 0.5),
    ('=" 2 "+0', {}, 2.0),
    ('="$5"+0', {}, 5.0),
    ("=#N/A+1", {}, err("#N/A")),
    ("=1/0+#N/A", {}, err("#DIV/0!")),
    ("=-A3", MIXED, err("#VALUE!")),
    ("=10^400", {}, err("#NUM!")),
    # text
    ('=1/3&""', {}, "0.333333333333333"),
    ('="a"&TRUE', {}, "aTRUE"),
    ('=A2&"b"', MIXED, "b"),
    ('=1E+20&""', {}, "1E+20"),
    ('=0.00001&""', {}, "0.00001"),
    ('=1/0&"x"', {}, err("#DIV/0!")),
    # comparisons
    ('="a"<"B"', {}, True),
    ("=TRUE>5", {}, True),
    ('="10"<5', {}, False),
    ('=A2=""', MIXED, True),
    ("=A2=0", MIXED, True),
    ("=A2=FALSE", MIXED, True),
    ("=0.1+0.2=0.3", {}, True),
    ('="abc"="ABC"', {}, True),
    ("=1<>1", {}, False),
    ("=#N/A=1", {}, err("#N/A")),
    # logic
    ('=IF(1,"")', {}, ""),
    ("=IF(0,1)", {}, False),
    ("=IF(1,,2)", {}, 0.0),
    ('=IF("x",1,2)', {}, err("#VALUE!")),
    ("=IF(1/0,1,2)", {}, err("#DIV/0!")),
    ("=IF(A2,1,2)", MIXED, 2.0),
    ('=IF("true",1,2)', {}, 1.0),
    ("=IFERROR(1/0,7)", {}, 7.0),
    ('=IFERROR(#N/A,"x")', {}, "x"),
    ("=IFERROR(3,7)", {}, 3.0),
    ("=IFNA(#N/A,1)", {}, 1.0),
    ("=IFNA(1/0,1)", {}, err("#DIV/0!")),
    ("=AND(A1:A4)", MIXED, True),
    ("=AND(A2:A3)", MIXED, err("#VALUE!")),
    ("=AND(1,0)", {}, False),
    ('=AND("x")', {}, err("#VALUE!")),
    ("=OR(0,0)", {}, False),
    ("=OR(0,1/0)", {}, err("#DIV/0!")),
    ("=NOT(0)", {}, True),
    ("=NOT(2)", {}, False),
    ("=XOR(1,1,1)", {}, True),
    # information
    ("=ISBLANK(A2)", MIXED, True),
    ("=ISBLANK(A3)", MIXED, False),
    ('=ISNUMBER("1")', {}, False),
    ("=ISNUMBER(A1)", MIXED, True),
    ("=ISNUMBER(A4)", MIXED, False),
    ("=ISTEXT(A3)", MIXED, True),
    ("=ISERROR(1/0)", {}, True),
    ("=ISERR(#N/A)", {}, False),
    ("=ISNA(#N/A)", {}, True),
    ("=ISLOGICAL(A4)", MIXED, True),
    # aggregates: ranges count numbers only; typed arguments are converted
    ("=SUM(A1:A4)", MIXED, 1.0),
    ('=SUM("2",1)', {}, 3.0),
    ("=SUM(TRUE,1)", {}, 2.0),
    ('=SUM("x",1)', {}, err("#VALUE!")),
    ("=SUM(A1:B4)", MIXED, 15.0),
    ("=SUM(A1:A2,#N/A)", MIXED, err("#N/A")),
    ("=SUM(A:A)", MIXED, 1.0),
    ("=SUMSQ(A1:A4,3)", MIXED, 10.0),
    ('=SUMSQ(2,"3")', {}, 13.0),
    ("=COUNT(A1:A4)", MIXED, 1.0),
    ('=COUNT("2",1,"x",#N/A)', {}, 2.0),
    ("=COUNTA(A1:A4)", MIXED, 3.0),
    ('=COUNTA(1,"",#N/A)', {}, 3.0),
    ("=COUNTBLANK(A1:A4)", MIXED, 1.0),
    ("=COUNTBLANK(D1:D5)", MIXED, 5.0),
    ("=AVERAGE(A1:B4)", MIXED, 3.0),
    ("=AVERAGE(A2:A3)", MIXED, err("#DIV/0!")),
    ("=MIN(B1:B4)", MIXED, 2.0),
    ("=MAX(A3:A4)", MIXED, 0.0),
    ("=MAX(A3:A4,-1)", MIXED, -1.0),
    ("=MIN(5,3)", {}, 3.0),
    # array functions
    ("=SUMPRODUCT(A1:A4,B1:B4)", MIXED, 2.0),
    ("=SUMPRODUCT(B1:B4)", MIXED, 14.0),
    ("=SUMPRODUCT(A1:A4,B1:B3)", MIXED, err("#VALUE!")),
    ("=SUMPRODUCT((B1:B4>2)*B1:B4)", MIXED, 12.0),
    ('=SUMPRODUCT((A1:A4<>"")*(B1:B4))', MIXED, 11.0),
    ("=SUMPRODUCT({1,2},{3,4})", {}, 11.0),
    ("=SUMXMY2({2,3,9,1,8,7,5},{6,5,11,7,5,4,4})", {}, 79.0),
    ("=SUMX2MY2({2,3,9,1,8,7,5},{6,5,11,7,5,4,4})", {}, -55.0),
    ("=SUMX2PY2({2,3,9,1,8,7,5},{6,5,11,7,5,4,4})", {}, 521.0),
    ("=SUMXMY2(A1:A4,B1:B4)", MIXED, 1.0),
    ("=SUMXMY2(A1:A3,B1:B4)", MIXED, err("#N/A")),
    ("=SUMXMY2({1;2},{3,4})", {}, 8.0),
    ("=MMULT({1,2},{3;4})", {}, 11.0),
    ("=MMULT(A1:A2,B1)", MIXED, err("#VALUE!")),
    ("=MMULT({1,2},{3,4})", {}, err("#VALUE!")),
    ("=SUM(TRANSPOSE({1,2;3,4}))", {}, 10.0),
    # lookup
    ("=INDEX(B1:B4,2)", MIXED, 3.0),
    ("=INDEX(A1:B1,2)", MIXED, 2.0),
    ("=INDEX({1,2;3,4},2,1)", {}, 3.0),
    ("=INDEX(B1:B4,5)", MIXED, err("#REF!")),
    ("=SUM(INDEX(A1:B4,0,2))", MIXED, 14.0),
    ("=INDEX(A1:B4,3,0)", MIXED, err("#VALUE!")),
    ("=SUM(INDEX(A1:B4,4,0))", MIXED, 5.0),
    ("=MATCH(39,{25,38,40,41},1)", {}, 2.0),
    ("=MATCH(40,{41,40,38,25},-1)", {}, 2.0),
    ("=MATCH(41,{25,38,40,41},0)", {}, 4.0),
    ("=MATCH(24,{25,38,40,41})", {}, err("#N/A")),
    ('=MATCH("B*",{"apple","banana"},0)', {}, 2.0),
    ('=MATCH("X",A1:A4,0)', MIXED, 3.0),
    ("=MATCH(2,{1,2,2,3},1)", {}, 3.0),
    ("=MATCH(5,B1:B4,0)", MIXED, 4.0),
    ("=MATCH(9,B1:B4,0)", MIXED, err("#N/A")),
    ('=MATCH("a?c",{"abc","ac"},0)', {}, 1.0),
    ('=MATCH("a~*",{"ab","a*"},0)', {}, 2.0),
    ("=OFFSET(A1,1,1)", MIXED, 3.0),
    ("=SUM(OFFSET(A1,1,1,2,1))", MIXED, 7.0),
    ("=OFFSET(A1,-1,0)", MIXED, err("#REF!")),
    ("=OFFSET(A1,1,1,2,1)", MIXED, err("#VALUE!")),
    ('=COUNTIF(B1:B4,">2")', MIXED, 3.0),
    ('=COUNTIF(A1:A4,"")', MIXED, 1.0),
    ('=COUNTIF(A1:A4,"<>")', MIXED, 3.0),
    ('=COUNTIF(A1:A4,"X")', MIXED, 1.0),
    ("=COUNTIF(B1:B4,3)", MIXED, 1.0),
    ('=COUNTIF(B1:B4,"<=3")', MIXED, 2.0),
    ('=COUNTIF(A1:A4,"<>1")', MIXED, 3.0),
    ("=COUNTIF(A1:A4,TRUE)", MIXED, 1.0),
    ('=COUNTIF(A3:B4,"?")', MIXED, 1.0),
    ('=SUMIF(B1:B4,">2")', MIXED, 12.0),
    ('=SUMIF(A1:A4,"x",B1:B4)', MIXED, 4.0),
    ('=AVERAGEIF(B1:B4,">2")', MIXED, 4.0),
    ("=ROW()", {}, 100.0),
    ("=COLUMN(C7)", {}, 3.0),
    ("=ROWS(A1:B4)", {}, 4.0),
    ("=COLUMNS({1,2,3})", {}, 3.0),
    # maths
    ("=ABS(-2)", {}, 2.0),
    ("=SQRT(16)", {}, 4.0),
    ("=SQRT(-1)", {}, err("#NUM!")),
    ("=EXP(1)", {}, math.e),
    ("=LN(0)", {}, err("#NUM!")),
    ("=LN(EXP(2))", {}, 2.0),
    ("=LOG(8,2)", {}, 3.0),
    ("=LOG(100)", {}, 2.0),
    ("=LOG(8,1)", {}, err("#DIV/0!")),
    ("=LOG10(1000)", {}, 3.0),
    ("=POWER(2,10)", {}, 1024.0),
    ("=POWER(0,0)", {}, err("#NUM!")),
    ("=SIGN(-3)", {}, -1.0),
    ("=SIGN(0)", {}, 0.0),
    ("=PI()", {}, math.pi),
    ("=ROUND(2.675,2)", {}, 2.68),
    ("=ROUND(-2.5,0)", {}, -3.0),
    ("=ROUND(1234.5678,-2)", {}, 1200.0),
    ("=ROUNDUP(3.2,0)", {}, 4.0),
    ("=ROUNDDOWN(-3.7,0)", {}, -3.0),
    ("=TRUNC(-8.9)", {}, -8.0),
    ("=INT(-2.5)", {}, -3.0),
    ("=INT(2.5)", {}, 2.0),
    ("=MOD(-3,2)", {}, 1.0),
    ("=MOD(3,-2)", {}, -1.0),
    ("=MOD(1,0)", {}, err("#DIV/0!")),
    ("=SIN(0)+COS(0)", {}, 1.0),
]


@pytest.mark.parametrize("formula, cells, expected", CASES, ids=[c[0] for c in CASES])
def test_function(formula, cells, expected):
    got = evaluate(formula, cells)
    if isinstance(expected, float):
        assert isinstance(got, float) and got == pytest.approx(expected, rel=1e-12, abs=1e-15), got
    else:
        assert type(got) is type(expected) and got == expected, got


def test_empty_text_from_if_is_text_not_blank():
    values = book_of(
        {
            "A1": '=IF(1,"")',
            "B1": "=ISBLANK(A1)",
            "C1": "=ISTEXT(A1)",
            "D1": "=COUNTBLANK(A1)",
            "E1": "=COUNTA(A1)",
            "F1": "=A1+1",
        }
    ).recalc()
    assert values["s!A1"] == "" and values["s!B1"] is False and values["s!C1"] is True
    assert values["s!D1"] == 1.0 and values["s!E1"] == 1.0  # COUNTBLANK counts "", COUNTA counts it too
    assert values["s!F1"] == ErrorValue("#VALUE!")


def test_a_formula_that_shows_a_blank_cell_shows_0():
    assert book_of({"A1": "=B1"}).recalc()["s!A1"] == 0.0


def test_implicit_intersection_outside_array_formulas():
    cells = {
        "B1": 2.0,
        "B2": 3.0,
        "B3": 4.0,
        "D2": "=B1:B3*2",
        "D9": "=B1:B3*2",
        "E1": "=SUM(B1:B3*2)",
        "A5": 1.0,
        "B5": 2.0,
        "C5": 3.0,
        "B8": "=A5:C5+1",
        "B7": "=SINGLE(A5:C5)",
        "F9": "=@B1:B3",
    }
    values = book_of(cells).recalc()
    assert values["s!D2"] == 6.0  # the row of the formula picks B2
    assert values["s!D9"] == ErrorValue("#VALUE!")  # row 9 is outside B1:B3
    assert values["s!E1"] == 4.0  # SUM(B1:B3*2) in row 1 intersects to B1
    assert values["s!B8"] == 3.0  # a one-row range: the formula's column (B)
    assert values["s!B7"] == 2.0 and values["s!F9"] == ErrorValue("#VALUE!")


def test_names_sheet_scope_first_then_workbook():
    names = {
        None: {"rate": "0.5", "data": "s!$A$1:$A$3", "twice": "rate*2"},
        "s": {"rate": "0.25"},
        "t": {"rate": "=t!$B$1"},
    }
    book = book_of(
        {"A1": 1.0, "A2": 2.0, "A3": 3.0, "C1": "=rate", "C2": "=SUM(data)*twice", "C3": "=nope", "C4": "=t!rate"},
        names=names,
        more={"t": {"B1": 7.0, "C1": "=rate"}},
    )
    values = book.recalc()
    assert values["s!C1"] == 0.25  # the sheet's own name wins
    assert values["t!C1"] == 7.0  # the other sheet's name is a reference to its B1
    assert values["s!C2"] == pytest.approx(6.0 * 0.5)  # twice = rate*2 resolved on sheet s: 0.25*2
    assert values["s!C3"] == ErrorValue("#NAME?")
    assert values["s!C4"] == 7.0


def test_volatile_functions():
    book = book_of(
        {
            "A1": "=RAND()",
            "A2": "=RANDBETWEEN(1,6)",
            "A3": "=NOW()",
            "A4": "=TODAY()",
            "B1": "=RAND()",
            "B2": "=RANDBETWEEN(5,4)",
        }
    )
    run = book.recalc_full(seed=1)
    v = run.values
    assert 0.0 <= v["s!A1"] < 1.0 and v["s!A1"] != v["s!B1"]
    assert v["s!A2"] in {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}
    assert v["s!B2"] == ErrorValue("#NUM!")
    serial_today = (dt.date.today() - dt.date(1899, 12, 30)).days
    assert v["s!A4"] == serial_today and serial_today <= v["s!A3"] < serial_today + 1.001
    assert set(run.volatile) == {"s!A1", "s!A2", "s!A3", "s!A4", "s!B1", "s!B2"}
    assert book.recalc_full(seed=1).values["s!A1"] == v["s!A1"]  # a seed makes it reproducible


def test_array_formula_results_fill_their_range():
    book = book_of({"A1": 1.0, "A2": 2.0, "B1": 3.0, "B2": 4.0})
    view = book.view
    from xlcf.formula._pkg import RawFormula
    from xlcf.formula.book import _sheet_view

    raw = {
        (1, 4): RawFormula("MMULT(A1:B2,A1:B2)", "array", None, "D1:E2"),
        (4, 4): RawFormula("TRANSPOSE(A1:B1)", "array", None, "D4:D6"),
        (8, 4): RawFormula("SUM(A1:A2*B1:B2)", "array", None, "D8"),
    }
    values = dict(view.sheets["s"].values)
    view.sheets["s"] = _sheet_view("s", values, raw)
    out = book.recalc()
    assert [out[f"s!{c}"] for c in ("D1", "E1", "D2", "E2")] == [7.0, 15.0, 10.0, 22.0]  # [[1,3],[2,4]] squared
    assert [out[f"s!{c}"] for c in ("D4", "D5", "D6")] == [1.0, 3.0, ErrorValue("#N/A")]
    assert out["s!D8"] == 11.0  # an array formula multiplies whole ranges


def test_unsupported_function_names_cell_formula_function_and_the_supported_list():
    book = book_of({"A1": 1.0, "B2": "=BESSELJ(A1:A3,1)+1"})
    run = book.recalc_full()
    ((_cell, error),) = run.problems
    assert error.where == "s!B2" and error.field == "BESSELJ"
    assert "=BESSELJ(A1:A3,1)+1" in error.message and "BESSELJ is not supported" in error.message
    assert "supported: ABS, AND" in error.message and "SUMXMY2" in error.message
    with pytest.raises(FormulaError) as raised:
        book.compile("s!B2", ["s!A1"])
    assert raised.value.where == "s!B2"


TABLE = {
    "A1": 1.0,
    "A2": 3.0,
    "A3": 5.0,
    "B1": "one",
    "B2": "three",
    "B3": "five",
    "C1": 10.0,
    "C2": 30.0,
    "C3": 50.0,
    "E1": "x",
    "F1": "y",
    "E2": 1.0,
    "F2": 2.0,
}
MORE = [
    ("=VLOOKUP(3,A1:C3,2,FALSE)", TABLE, "three"),
    ("=VLOOKUP(4,A1:C3,3)", TABLE, 30.0),
    ("=VLOOKUP(4,A1:C3,3,FALSE)", TABLE, err("#N/A")),
    ("=VLOOKUP(0,A1:C3,2)", TABLE, err("#N/A")),
    ("=VLOOKUP(5,A1:C3,4,FALSE)", TABLE, err("#REF!")),
    ("=VLOOKUP(5,A1:C3,0,FALSE)", TABLE, err("#VALUE!")),
    ('=HLOOKUP("y",E1:F2,2,FALSE)', TABLE, 2.0),
    ('=VLOOKUP("T*",B1:C3,2,FALSE)', TABLE, 30.0),
    ('=COUNTIFS(A1:A3,">1",C1:C3,"<50")', TABLE, 1.0),
    ('=SUMIFS(C1:C3,A1:A3,">1")', TABLE, 80.0),
    ('=SUMIFS(C1:C3,A1:A3,">1",B1:B3,"f*")', TABLE, 50.0),
    ('=AVERAGEIFS(C1:C3,A1:A3,"<=3")', TABLE, 20.0),
    ('=COUNTIFS(A1:A3,">1",C1:C2,"<50")', TABLE, err("#VALUE!")),
    ('=AVERAGEIFS(C1:C3,A1:A3,">9")', TABLE, err("#DIV/0!")),
]


@pytest.mark.parametrize("formula, cells, expected", MORE, ids=[c[0] for c in MORE])
def test_lookup_and_multi_criteria_functions(formula, cells, expected):
    test_function(formula, cells, expected)
