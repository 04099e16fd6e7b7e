"""A1 references (xlcf.ooxml.refs): letters <-> numbers, cells, ranges, sheet quoting, area splitting."""

import pytest

from xlcf.errors import WorkbookError
from xlcf.ooxml.refs import (
    Area,
    absolute,
    cell_ref,
    col_index,
    col_letter,
    parse_range,
    qualified,
    quote_sheet,
    range_ref,
    sheet_cell,
    split_areas,
    split_ref,
    split_top_level,
)


@pytest.mark.parametrize(
    "index, letters",
    [(1, "A"), (26, "Z"), (27, "AA"), (52, "AZ"), (53, "BA"), (702, "ZZ"), (703, "AAA"), (16384, "XFD")],
)
def test_column_letters_and_numbers(index, letters):
    assert col_letter(index) == letters
    assert col_index(letters) == index
    assert col_index(letters.lower()) == index


def test_letters_round_trip_over_every_column():
    assert all(col_index(col_letter(i)) == i for i in range(1, 16385))
    assert col_letter(0) == ""


def test_cell_refs_both_ways():
    assert cell_ref(26, 2) == "B26"
    assert cell_ref(26, 2, absolute=True) == "$B$26"
    assert split_ref("B26") == (26, 2)
    assert split_ref(" $b$26 ") == (26, 2)
    assert split_ref("XFD1048576") == (1048576, 16384)
    for bad in ("B", "26", "B2:C3", "dotprod!B2", "B0", "XFE1", "A1048577", ""):
        with pytest.raises(WorkbookError, match="cell reference|outside a worksheet"):
            split_ref(bad)


def test_ranges_and_absolute():
    assert range_ref(26, 2, 40, 6) == "B26:F40"
    assert range_ref(42, 22, 42, 22) == "V42"
    assert range_ref(3, 8, 17, 22, absolute=True) == "$H$3:$V$17"
    assert absolute("B3") == "$B$3"
    assert absolute("B3:C4") == "$B$3:$C$4"
    assert absolute("$B3") == "$B$3"


def test_sheet_quoting():
    assert quote_sheet("dotprod") == "dotprod"
    assert quote_sheet("dotprod", always=True) == "'dotprod'"
    assert quote_sheet("my sheet") == "'my sheet'"
    assert quote_sheet("it's") == "'it''s'"
    assert quote_sheet("A1") == "'A1'"  # would read as a cell
    assert quote_sheet("2020") == "'2020'"  # starts with a digit
    assert qualified("my sheet", "A1:B2") == "'my sheet'!A1:B2"
    assert sheet_cell("my sheet", 3, 8) == "my sheet!H3"  # for people: no quotes


def test_parse_range_and_area():
    area = parse_range("'my ''q'' sheet'!$H$2:$V$16")
    assert area == Area("my 'q' sheet", 2, 8, 16, 22)
    assert area.shape == (15, 15) and area.ref == "H2:V16"
    assert area.qualified() == "'my ''q'' sheet'!H2:V16" == str(area)
    assert parse_range("=dotprod!B3").sheet == "dotprod"
    assert parse_range("B3", "bias") == Area("bias", 3, 2, 3, 2)
    assert parse_range("C4:B3") == Area(None, 3, 2, 4, 3)  # corners in any order
    assert parse_range("B3:C4").cells() == [["B3", "C3"], ["B4", "C4"]]
    with pytest.raises(WorkbookError, match="not a cell range"):
        parse_range("H2:nonsense")


def test_splitting_at_top_level_commas():
    assert split_areas("'a,b'!$A$1, x!$B$2:$C$3") == ["'a,b'!$A$1", "x!$B$2:$C$3"]
    assert split_top_level('IF(A1="",0,MMULT(B1:C1,D1:D2)),"x,y",\'s,t\'!A1') == [
        'IF(A1="",0,MMULT(B1:C1,D1:D2))',
        '"x,y"',
        "'s,t'!A1",
    ]
    assert split_top_level("A1*B1+C1", "+") == ["A1*B1", "C1"]
    assert split_top_level("'it''s'!A1,B2") == ["'it''s'!A1", "B2"]
