"""Parsing: Excel's precedence, references, names, constants, templates; constructs refused with one line."""

from __future__ import annotations

import pytest

from xlcf.errors import FormulaError
from xlcf.formula.nodes import (
    Array,
    Binary,
    Bool,
    Bound,
    Call,
    Err,
    Missing,
    Name,
    Num,
    Percent,
    Ref,
    Str,
    Unary,
)
from xlcf.formula.parser import parse, render


def tree(text, row=1, col=1):
    return parse(text, row, col).tree


def test_unary_minus_binds_tighter_than_power(ev):
    assert tree("=-2^2") == Binary("^", Unary("-", Num(2.0)), Num(2.0))
    assert ev("=-2^2") == 4.0
    assert ev("=0-2^2") == -4.0


def test_power_is_left_associative_as_in_excel(ev):
    assert tree("=2^3^2") == Binary("^", Binary("^", Num(2.0), Num(3.0)), Num(2.0))
    assert ev("=2^3^2") == 64.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("=1+2*3", 7.0),
        ("=(1+2)*3", 9.0),
        ("=2*3^2", 18.0),
        ("=10-4-3", 3.0),
        ("=12/3/2", 2.0),
        ("=1+2&3", "33"),
        ("=1+1=2", True),
        ("=2&3=23", False),
        ('=1&2="12"', True),
        ("=50%", 0.5),
        ("=2^50%*4", 2.0**0.5 * 4),
        ("=-50%", -0.5),
        ("=1+-1", 0.0),
        ("=--3", 3.0),
        ('=+"a"', "a"),
        ("=3>2=TRUE", True),
    ],
)
def test_precedence(ev, text, expected):
    got = ev(text)
    assert got == pytest.approx(expected) if isinstance(expected, float) else got == expected


def test_percent_is_postfix():
    here = Bound(0, False)
    assert tree("=-A1%") == Percent(Unary("-", Ref(None, here, here, here, here)))


def test_references_are_relative_to_the_cell():
    # in H26: $B26 -> column B absolute, row offset 0; H$20 -> column offset 0, row 20 absolute
    t = tree("=MMULT($B26:$F26,H$20:H$24)", 26, 8)
    a, b = t.args
    assert a == Ref(None, Bound(0, False), Bound(2, True), Bound(0, False), Bound(6, True))
    assert b == Ref(None, Bound(20, True), Bound(0, False), Bound(24, True), Bound(0, False))
    # the same formula copied one cell right and down parses to the same tree
    assert tree("=MMULT($B27:$F27,I$20:I$24)", 27, 9) == t


def test_sheet_qualified_whole_column_and_row_references():
    t = tree("='My sheet'!A1:B2+Data!$C:$C+SUM(3:3)", 1, 1)
    left, third = t.left.left, t.right.args[0]
    assert left.sheet == "My sheet" and (left.bottom.value, left.right.value) == (1, 1)
    col = t.left.right
    assert col.sheet == "Data" and col.top == Bound(1, True) and col.bottom == Bound(1_048_576, True)
    assert col.left == Bound(3, True)
    assert third.left == Bound(1, True) and third.right == Bound(16_384, True) and third.top == Bound(2, False)
    assert tree("='it''s'!A1").sheet == "it's"


def test_reversed_range_is_normalised():
    assert tree("=SUM(B2:A1)") == tree("=SUM(A1:B2)")


def test_names_constants_errors_and_missing_arguments():
    assert tree("=ratings") == Name("ratings")
    assert tree("=dotprod!ratings") == Name("ratings", "dotprod")
    assert tree('={1,-2;3,"x"}') == Array(((1.0, -2.0), (3.0, "x")))
    assert tree("=#N/A") == Err("#N/A")
    assert tree("=IF(A1,,2)").args[1] == Missing()
    assert tree('="a""b"') == Str('a"b')
    assert tree("=TRUE") == Bool(True)
    assert tree("=_xlfn.IFNA(1,2)") == Call("IFNA", (Num(1.0), Num(2.0)))
    assert tree("=@A1:A3") == Call("SINGLE", (tree("=A1:A3"),))


def test_template_renders_the_copied_formula():
    text = '=IF($A42="","",INDEX(B$6:B$20,MATCH($A42,$A$6:$A$20,0)))'
    p = parse(text, 42, 6)
    assert render(p.template, 42, 6) == text
    assert render(p.template, 43, 7) == '=IF($A43="","",INDEX(C$6:C$20,MATCH($A43,$A$6:$A$20,0)))'
    assert render(parse("=A1", 1, 1).template, 1, 0) is None  # off the sheet


@pytest.mark.parametrize(
    "text, field",
    [
        ("=SUM(A1:B2 B1:C3)", "intersection"),
        ("=SUM((A1,B1))", ","),
        ("=[1]Sheet1!A1", "external reference"),
        ("=Sheet1:Sheet3!A1", "3-D reference"),
        ("=SUM(1,", "syntax"),
        ("=1+", "syntax"),
        ("=Table1[col]", "Table1[col]"),
        ("={1,2;3}", "syntax"),
        ("=)", "syntax"),
    ],
)
def test_constructs_it_cannot_evaluate_are_one_clear_error(text, field):
    with pytest.raises(FormulaError) as err:
        parse(text, 3, 2, "s!B3")
    assert err.value.where == "s!B3"
    assert err.value.field == field
    assert text in str(err.value)
