"""Zip-level workbook editing: reading every cell kind, writing in place, byte-identical pass-through, safety."""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from pathlib import Path

import openpyxl
import pytest
import xlsxwriter

from tests.helpers.fit_books import tiny_png, zip_members, zip_order
from xlcf.errors import WorkbookError
from xlcf.ooxml import (
    Area,
    ErrorValue,
    Package,
    line_chart_xml,
    parse_range,
    shift_formula,
    split_areas,
    split_ref,
)

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _hand_package(
    path: Path,
    sheet_xml: str,
    *,
    workbook_extra: str = "",
    calc_pr: str = "",
    shared_strings: str | None = None,
    calc_chain: bool = False,
) -> Path:
    """A minimal package written by hand (like other tools write them): prefixes, mc:Ignorable, shared formulas."""
    ct_over = (
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="'
        'application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    )
    rels = f'<Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/>'
    if shared_strings is not None:
        ct_over += (
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sharedStrings+xml"/>'
        )
        rels += f'<Relationship Id="rId2" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/>'
    if calc_chain:
        ct_over += (
            '<Override PartName="/xl/calcChain.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.calcChain+xml"/>'
        )
        rels += f'<Relationship Id="rId3" Type="{REL}/calcChain" Target="calcChain.xml"/>'
    members = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<Types xmlns="http://'
        'schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        + ct_over
        + "</Types>",
        "_rels/.rels": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<Relationships xmlns="http://'
        'schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
        'openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>",
        "xl/workbook.xml": f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<workbook xmlns="{MAIN}" '
        f'xmlns:r="{REL}"><sheets><sheet name="Data Sheet" sheetId="1" r:id="rId1"/></sheets>{workbook_extra}'
        f"{calc_pr}</workbook>",
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<Relationships '
        'xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' + rels + "</Relationships>",
        "xl/worksheets/sheet1.xml": sheet_xml,
    }
    if shared_strings is not None:
        members["xl/sharedStrings.xml"] = shared_strings
    if calc_chain:
        members["xl/calcChain.xml"] = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<calcChain '
            f'xmlns="{MAIN}"><c r="C1" i="1"/></calcChain>'
        )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text.encode())
        zf.writestr(zipfile.ZipInfo("docProps/stored.bin"), b"\x00\x01stored-not-deflated")
    return path


PREFIXED_SHEET = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
    f'<x:worksheet xmlns:x="{MAIN}" xmlns:r="{REL}" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility'
    '/2006" xmlns:x14ac="http://schemas.microsoft.com/office/spreadsheetml/2009/9/ac" mc:Ignorable="x14ac">'
    '<x:dimension ref="A1:D3"/><x:sheetData>'
    '<x:row r="1" spans="1:4" x14ac:dyDescent="0.25"><x:c r="A1" s="3"><x:v>1.5</x:v></x:c><x:c r="B1" t="s">'
    '<x:v>0</x:v></x:c><x:c r="C1"><x:f>A1*2</x:f><x:v>3</x:v></x:c><x:c r="D1" t="b"><x:v>1</x:v></x:c></x:row>'
    '<x:row r="2"><x:c r="A2" t="e"><x:v>#N/A</x:v></x:c><x:c r="B2" t="inlineStr"><x:is><x:t>inline</x:t>'
    '</x:is></x:c><x:c r="C2"><x:f t="shared" ref="C2:D3" si="0">A2+$A$1+B$1</x:f><x:v>0</x:v></x:c>'
    '<x:c r="D2"><x:f t="shared" si="0"/><x:v>0</x:v></x:c></x:row>'
    '<x:row r="3"><x:c r="B3" t="s"><x:v>1</x:v></x:c><x:c r="C3"><x:f t="shared" si="0"/></x:c>'
    '<x:c r="D3" t="e"><x:f t="shared" si="0"/><x:v>#DIV/0!</x:v></x:c></x:row>'
    '</x:sheetData><x:extLst><x:ext uri="{x}"/></x:extLst></x:worksheet>'
)
SHARED_STRINGS = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<sst xmlns="{MAIN}" count="2" '
    'uniqueCount="2"><si><t>plain</t></si><si><r><t>rich </t></r><r><rPr><b/></rPr><t>text</t></r>'
    '<rPh sb="0" eb="1"><t>ignored</t></rPh></si></sst>'
)


@pytest.fixture
def hand_book(tmp_path):
    return _hand_package(
        tmp_path / "hand.xlsx",
        PREFIXED_SHEET,
        shared_strings=SHARED_STRINGS,
        workbook_extra="<definedNames><definedName name=\"glob\">'Data Sheet'!$A$1:$B$2"
        '</definedName><definedName name="_loc" localSheetId="0" hidden="1">'
        "'Data Sheet'!$C$1,'Data Sheet'!$D$1:$D$3</definedName></definedNames>",
        calc_pr='<calcPr calcId="191029" iterate="1"/>',
        calc_chain=True,
    )


def test_reads_every_cell_kind(hand_book):
    pkg = Package.open(hand_book)
    assert pkg.sheet_names == ["Data Sheet"]
    cells = {c.ref: c for row in pkg.read_range("Data Sheet", "A1:D3") for c in row}
    assert cells["A1"].value == 1.5 and cells["A1"].style == 3
    assert cells["B1"].value == "plain"
    assert cells["B3"].value == "rich text"  # runs joined, phonetic run skipped
    assert cells["C1"].formula == "=A1*2" and cells["C1"].value == 3.0
    assert cells["D1"].value is True
    assert cells["A2"].value == ErrorValue("#N/A") and not isinstance(cells["A2"].value, str)
    assert cells["B2"].value == "inline"
    # shared formula: master text, and dependents translated like Excel does
    assert cells["C2"].formula == "=A2+$A$1+B$1" and cells["C2"].formula_type == "shared"
    assert cells["D2"].formula == "=B2+$A$1+C$1"
    assert cells["C3"].formula == "=A3+$A$1+B$1" and cells["C3"].value is None
    assert cells["D3"].formula == "=B3+$A$1+C$1" and cells["D3"].value == ErrorValue("#DIV/0!")
    assert cells["A3"].is_empty


def test_defined_names_scope_and_hidden(hand_book):
    pkg = Package.open(hand_book)
    assert pkg.defined_names() == {"glob": "'Data Sheet'!$A$1:$B$2"}
    scoped = pkg.defined_names("Data Sheet")
    assert scoped["_loc"] == "'Data Sheet'!$C$1,'Data Sheet'!$D$1:$D$3"
    hidden = [n for n in pkg.names() if n.name == "_loc"][0]
    assert hidden.hidden and hidden.sheet == "Data Sheet"
    areas = pkg.name_areas("Data Sheet", "_LOC")  # case-insensitive like Excel
    assert [a.ref for a in areas] == ["C1", "D1:D3"] and areas[0].sheet == "Data Sheet"


def test_write_keeps_prefixes_ignorable_style_and_order(hand_book, tmp_path):
    pkg = Package.open(hand_book)
    before = zip_members(hand_book)
    n = pkg.write_values("Data Sheet", {"A1": 2.25, "E1": "new text", "B4": True, "F2": 7, "A5": None})
    assert n == 5
    pkg.set_cached_values("Data Sheet", {"C1": 4.5, "D2": ErrorValue("#N/A")})
    pkg.save()
    after = zip_members(hand_book)
    assert zip_order(hand_book) == list(before)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"xl/worksheets/sheet1.xml", "xl/workbook.xml"}
    sheet = after["xl/worksheets/sheet1.xml"].decode()
    assert sheet.startswith('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<x:worksheet')
    assert 'mc:Ignorable="x14ac"' in sheet and 'x14ac:dyDescent="0.25"' in sheet and "<x:extLst>" in sheet
    assert "ns0:" not in sheet and "<c " not in sheet  # new cells reuse the x: prefix
    assert '<x:c r="A1" s="3"><x:v>2.25</x:v></x:c>' in sheet  # style kept
    assert sheet.index('r="D1"') < sheet.index('r="E1"') < sheet.index('<x:row r="2"')
    assert sheet.index('<x:row r="3"') < sheet.index('<x:row r="4"') < sheet.index('<x:row r="5"')
    assert '<x:dimension ref="A1:F5"/>' in sheet and 'spans="1:5"' in sheet
    workbook = after["xl/workbook.xml"].decode()
    assert '<calcPr calcId="191029" iterate="1" fullCalcOnLoad="1"/>' in workbook
    re = Package.open(hand_book)
    assert re.read_cell("Data Sheet", "A1").value == 2.25
    assert re.read_cell("Data Sheet", "E1").value == "new text"
    assert re.read_cell("Data Sheet", "B4").value is True
    assert re.read_cell("Data Sheet", "F2").value == 7.0
    assert re.read_cell("Data Sheet", "C1").formula == "=A1*2" and re.read_cell("Data Sheet", "C1").value == 4.5
    assert re.read_cell("Data Sheet", "D2").value == ErrorValue("#N/A")
    assert re.read_cell("Data Sheet", "D2").formula == "=B2+$A$1+C$1"


def test_refuses_formulas_and_non_finite(hand_book):
    pkg = Package.open(hand_book)
    with pytest.raises(WorkbookError, match=r"Data Sheet!C1 holds a formula \(=A1\*2\)"):
        pkg.write_values("Data Sheet", {"A1": 1.0, "C1": 2.0})
    with pytest.raises(WorkbookError, match="Data Sheet!D2 holds a formula"):
        pkg.write_values("Data Sheet", {"D2": 2.0})
    with pytest.raises(WorkbookError, match="Data Sheet!B7"):
        pkg.write_values("Data Sheet", {"B7": float("nan")})
    with pytest.raises(WorkbookError, match="A1 holds no formula"):
        pkg.set_cached_values("Data Sheet", {"A1": 1.0})
    with pytest.raises(WorkbookError):
        pkg.set_cached_values("Data Sheet", {"C1": math.inf})
    assert not pkg.modified  # all-or-nothing: the first good cell of a refused batch was not written
    with pytest.raises(WorkbookError, match="no sheet 'Nope'.*Data Sheet"):
        pkg.read_cell("Nope", "A1")


def test_overwriting_a_formula_drops_the_calc_chain(hand_book):
    pkg = Package.open(hand_book)
    pkg.write_values("Data Sheet", {"C1": 1.0}, overwrite_formulas=True)
    with pytest.raises(WorkbookError, match="master of a shared formula"):
        pkg.write_values("Data Sheet", {"C2": 1.0}, overwrite_formulas=True)
    pkg.save()
    members = zip_members(hand_book)
    assert "xl/calcChain.xml" not in members
    assert b"calcChain" not in members["xl/_rels/workbook.xml.rels"]
    assert b"calcChain" not in members["[Content_Types].xml"]
    assert Package.open(hand_book).read_cell("Data Sheet", "C1").formula is None


def test_keeps_compression_and_calc_chain_when_no_formula_removed(hand_book):
    pkg = Package.open(hand_book)
    pkg.write_values("Data Sheet", {"A1": 9})
    pkg.save()
    with zipfile.ZipFile(hand_book) as zf:
        assert zf.getinfo("docProps/stored.bin").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("xl/worksheets/sheet1.xml").compress_type == zipfile.ZIP_DEFLATED
        assert "xl/calcChain.xml" in zf.namelist()


def _xlsxwriter_book(path: Path) -> Path:
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("data")
    fmt = wb.add_format({"num_format": "0.000", "bold": True})
    for i in range(5):
        ws.write_number(i, 0, i + 1, fmt)
        ws.write_formula(i, 1, f"=A{i + 1}*2", fmt, (i + 1) * 2)
    chart = wb.add_chart({"type": "line"})
    chart.add_series({"values": "=data!$B$1:$B$5"})
    ws.insert_chart("D2", chart)
    ws.insert_image("D20", "p.png", {"image_data": io.BytesIO(tiny_png())})
    ws.write_comment("A1", "a comment")
    wb.add_worksheet("other").write("A1", "x")
    wb.close()
    return path


def test_unchanged_members_are_byte_identical(tmp_path):
    book = _xlsxwriter_book(tmp_path / "w.xlsx")
    before = zip_members(book)
    pkg = Package.open(book)
    pkg.write_values("data", {"A1": 10, "C7": 0.125})
    pkg.save()
    after = zip_members(book)
    assert list(after) == list(before)
    assert {k for k in before if before[k] != after[k]} == {"xl/worksheets/sheet1.xml"}  # calc flag already set
    wb = openpyxl.load_workbook(book)
    assert wb["data"]["C7"].value == 0.125 and wb["data"]["A1"].number_format == "0.000"


def test_open_errors_name_the_problem(tmp_path):
    with pytest.raises(WorkbookError, match="no such file"):
        Package.open(tmp_path / "missing.xlsx")
    text = tmp_path / "text.xlsx"
    text.write_text("hello, I am a CSV\n1,2\n")
    with pytest.raises(WorkbookError, match="not a workbook"):
        Package.open(text)
    ole = tmp_path / "secret.xlsx"
    ole.write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + b"\x00" * 600)
    with pytest.raises(WorkbookError, match="password-protected or legacy .xls"):
        Package.open(ole)
    good = _xlsxwriter_book(tmp_path / "good.xlsx")
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(WorkbookError, match="truncated"):
        Package.open(cut)
    other_zip = tmp_path / "other.xlsx"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(WorkbookError, match="not an Office package|not an Excel workbook"):
        Package.open(other_zip)
    with pytest.raises(WorkbookError, match="folder"):
        Package.open(tmp_path)


def test_save_is_atomic_and_safe(tmp_path):
    book = _xlsxwriter_book(tmp_path / "s.xlsx")
    original = book.read_bytes()
    # read-only file: refused, unchanged
    pkg = Package.open(book)
    pkg.write_values("data", {"A1": 5})
    os.chmod(book, stat.S_IRUSR | stat.S_IRGRP)
    try:
        with pytest.raises(WorkbookError, match="read-only"):
            pkg.save()
    finally:
        os.chmod(book, stat.S_IRUSR | stat.S_IWUSR)
    assert book.read_bytes() == original
    # Excel's lock file beside it
    lock = tmp_path / "~$s.xlsx"
    lock.write_bytes(b"owner")
    with pytest.raises(WorkbookError, match="close it in Excel first"):
        pkg.save()
    lock.unlink()
    assert book.read_bytes() == original
    # changed on disk since open
    other = Package.open(book)
    other.write_values("data", {"A2": 1})
    os.utime(book, ns=(1, 1))
    with pytest.raises(WorkbookError, match="changed on disk"):
        other.save()
    assert book.read_bytes() == original
    # backup: the .bak is the original
    pkg = Package.open(book)
    pkg.write_values("data", {"A1": 6})
    pkg.save(backup=True)
    assert (tmp_path / "s.xlsx.bak").read_bytes() == original
    assert book.read_bytes() != original
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".~xlcf-")]  # no temp left behind


def test_new_sheet_with_native_chart_then_updated_in_place(tmp_path):
    book = _xlsxwriter_book(tmp_path / "c.xlsx")
    before = zip_members(book)
    pkg = Package.open(book)
    pkg.add_sheet("fit_log")
    rows = [["epoch", "rmse"]] + [[i + 1, 1.0 / (i + 1)] for i in range(12)]
    pkg.write_block("fit_log", "A1", rows)
    pkg.add_chart("fit_log", line_chart_xml("fit_log", rows, title="RMSE"), anchor=(3, 1, 10, 15))
    pkg.save()
    after = zip_members(book)
    for name, data in before.items():  # existing parts: only the workbook, its rels and content types changed
        if name not in ("xl/workbook.xml", "xl/_rels/workbook.xml.rels", "[Content_Types].xml"):
            assert after[name] == data, name
    wb = openpyxl.load_workbook(book)
    assert wb.sheetnames == ["data", "other", "fit_log"]
    assert wb["fit_log"]["B13"].value == pytest.approx(1 / 12)
    assert len(wb["fit_log"]._charts) == 1 and len(wb["data"]._charts) == 1
    # second time: same sheet, same single chart, new data
    pkg = Package.open(book)
    chart_before = pkg.chart_parts("fit_log")
    pkg.clear_sheet("fit_log")
    rows = rows[:5]
    pkg.write_block("fit_log", "A1", rows)
    pkg.add_chart("fit_log", line_chart_xml("fit_log", rows, title="RMSE"), replace=chart_before[0])
    pkg.save()
    pkg = Package.open(book)
    assert pkg.sheet_names == ["data", "other", "fit_log"] and pkg.chart_parts("fit_log") == chart_before
    assert pkg.read_values("fit_log", "A5:B6") == [[4.0, 0.25], [None, None]]
    assert b"$B$2:$B$5" in pkg.read_member(chart_before[0])
    with pytest.raises(WorkbookError, match="already has a sheet"):
        pkg.add_sheet("FIT_LOG")


def test_reference_helpers():
    assert parse_range("'my ''q'' sheet'!$H$2:$V$16") == Area("my 'q' sheet", 2, 8, 16, 22)
    assert parse_range("B3").shape == (1, 1)
    assert split_areas("'a,b'!$A$1,x!$B$2:$C$3") == ["'a,b'!$A$1", "x!$B$2:$C$3"]
    assert shift_formula('IF(H2="",0,MMULT($B25:$F25,H$19:H$23))', 1, 2) == 'IF(J3="",0,MMULT($B26:$F26,J$19:J$23))'
    assert shift_formula('A1&"B2"&LOG10(C3)&Sheet1!D4', 1, 1) == 'B2&"B2"&LOG10(D4)&Sheet1!E5'
    with pytest.raises(WorkbookError, match="not a cell range"):
        parse_range("H2:nonsense")


def test_calc_pr_is_created_in_schema_order_when_missing(tmp_path):
    book = _hand_package(
        tmp_path / "nocalc.xlsx",
        PREFIXED_SHEET,
        shared_strings=SHARED_STRINGS,
        workbook_extra="<definedNames><definedName name=\"x\">'Data Sheet'!$A$1</definedName>"
        '</definedNames><extLst><ext uri="{y}"/></extLst>',
    )
    pkg = Package.open(book)
    pkg.write_values("Data Sheet", {"A1": 3})
    pkg.save()
    workbook = zip_members(book)["xl/workbook.xml"].decode()
    assert workbook.startswith('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<workbook')
    assert '</definedNames><calcPr fullCalcOnLoad="1"/><extLst>' in workbook


def test_cells_of_an_array_formula_are_not_writable(tmp_path):
    sheet = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN}"><sheetData>'
        '<row r="1"><c r="A1"><f t="array" ref="A1:B2">MMULT(C1:D2,C1:D2)</f><v>1</v></c><c r="B1"><v>2</v></c>'
        '<c r="C1" vm="1"><v>1</v></c></row><row r="2"><c r="A2"><v>3</v></c><c r="B2"><v>4</v></c></row>'
        "</sheetData></worksheet>"
    )
    book = _hand_package(tmp_path / "arr.xlsx", sheet)
    pkg = Package.open(book)
    assert pkg.read_cell("Data Sheet", "A1").formula_type == "array"
    with pytest.raises(WorkbookError, match=r"Data Sheet!B2 is part of the array formula A1:B2"):
        pkg.write_values("Data Sheet", {"B2": 1.0})
    pkg.write_values("Data Sheet", {"C1": 5.0})
    pkg.save()
    assert b'<c r="C1"><v>5</v></c>' in zip_members(book)["xl/worksheets/sheet1.xml"]


def _compressed(path: Path) -> dict[str, tuple[int, bytes]]:
    """Each member's compression method and its stored (compressed) bytes, read from the local headers."""
    raw = path.read_bytes()
    out = {}
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        for info in zf.infolist():
            off = info.header_offset
            name_len, extra_len = (
                int.from_bytes(raw[off + 26 : off + 28], "little"),
                int.from_bytes(raw[off + 28 : off + 30], "little"),
            )
            start = off + 30 + name_len + extra_len
            out[info.filename] = (info.compress_type, raw[start : start + info.compress_size])
    return out


def test_unchanged_members_keep_their_compressed_bytes(tmp_path):
    book = _xlsxwriter_book(tmp_path / "raw.xlsx")
    before = _compressed(book)
    pkg = Package.open(book)
    pkg.write_values("data", {"A1": 11})
    pkg.add_sheet("extra")
    pkg.save()
    after = _compressed(book)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {
        "xl/worksheets/sheet1.xml",
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "[Content_Types].xml",
    }
    assert set(after) - set(before) == {"xl/worksheets/sheet3.xml"}
    assert openpyxl.load_workbook(book).sheetnames == ["data", "other", "extra"]


def test_drop_calc_chain_after_a_raw_sheet_replacement(hand_book):
    pkg = Package.open(hand_book)
    part = pkg.sheet_part("Data Sheet")
    pkg.replace_member(part, pkg.read_member(part).replace(b"A1*2", b"A1*3"))  # raw: the package cannot tell
    pkg.drop_calc_chain()
    pkg.drop_calc_chain()  # nothing left to drop: no error
    pkg.save()
    members = zip_members(hand_book)
    assert "xl/calcChain.xml" not in members
    assert b"calcChain" not in members["xl/_rels/workbook.xml.rels"] + members["[Content_Types].xml"]
    assert Package.open(hand_book).read_cell("Data Sheet", "C1").formula == "=A1*3"


def test_a_sheet_only_read_may_be_replaced_raw_but_not_one_edited(hand_book):
    pkg = Package.open(hand_book)
    part = pkg.sheet_part("Data Sheet")
    assert pkg.read_cell("Data Sheet", "C1").formula == "=A1*2"  # parsed, unchanged
    pkg.replace_member(part, pkg.read_member(part).replace(b"A1*2", b"A1*3"))
    assert pkg.read_cell("Data Sheet", "C1").formula == "=A1*3"  # later reads see the new part
    pkg.write_values("Data Sheet", {"A1": 5})
    with pytest.raises(WorkbookError, match="do not replace it raw"):
        pkg.replace_member(part, pkg.read_member(part))


def test_many_new_cells_in_any_order_land_in_document_order(tmp_path):
    """New cells are placed through a per-row index (linear in the cells written, not quadratic)."""
    book = _xlsxwriter_book(tmp_path / "n.xlsx")
    pkg = Package.open(book)
    rows, cols = 300, 40
    refs = [f"{col}{row}" for row in range(rows, 9, -1) for col in _letters(cols)[::-1]]  # reverse order
    pkg.write_values("data", {ref: i for i, ref in enumerate(refs)})
    pkg.save()
    again = Package.open(book)
    assert again.read_cell("data", refs[0]).value == 0 and again.read_cell("data", refs[-1]).value == len(refs) - 1
    from lxml import etree

    root = etree.fromstring(zip_members(book)["xl/worksheets/sheet1.xml"])
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    row_numbers = [int(r.get("r")) for r in root.iterfind(".//m:sheetData/m:row", ns)]
    assert row_numbers == sorted(row_numbers) and len(set(row_numbers)) == len(row_numbers)
    for row_el in root.iterfind(".//m:sheetData/m:row", ns):
        cols_in_row = [split_ref(c.get("r"))[1] for c in row_el.iterfind("m:c", ns)]
        assert cols_in_row == sorted(cols_in_row) and len(set(cols_in_row)) == len(cols_in_row)


def _letters(n: int) -> list[str]:
    from xlcf.ooxml.refs import col_letter

    return [col_letter(i) for i in range(1, n + 1)]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_save_keeps_the_mode_and_a_new_copy_gets_the_usual_one(tmp_path):
    book = _xlsxwriter_book(tmp_path / "m.xlsx")
    os.chmod(book, 0o640)
    pkg = Package.open(book)
    pkg.write_values("data", {"A1": 1})
    pkg.save()
    assert stat.S_IMODE(os.stat(book).st_mode) == 0o640
    old = os.umask(0o022)
    try:
        pkg.save(tmp_path / "copy.xlsx")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "copy.xlsx").st_mode) == 0o644  # mkstemp alone gave 0600
