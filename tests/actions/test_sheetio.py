"""The SheetIO helpers every front end shares: the zip adapters and how computed cells become range writes."""

from __future__ import annotations

from xlcf.actions.sheetio import ZipBookIO, rectangles
from xlcf.lessons.graddesc import build_graddesc
from xlcf.ooxml.package import Package


def test_rectangles_cover_every_cell_once_with_few_ranges():
    block = {(r, c): r * 10 + c for r in range(4, 7) for c in range(2, 5)}  # B4:D6
    assert rectangles(block) == [(4, 2, [[42, 43, 44], [52, 53, 54], [62, 63, 64]])]
    ragged = {(1, 1): "a", (1, 2): "b", (2, 1): "c", (5, 9): None}
    rects = rectangles(ragged)
    assert rects == [(1, 1, [["a", "b"]]), (2, 1, [["c"]]), (5, 9, [[None]])]
    cells = {
        (top + i, left + j): v for top, left, rows in rects for i, row in enumerate(rows) for j, v in enumerate(row)
    }
    assert cells == ragged
    two_columns = {(r, c): 0.0 for r in (3, 4) for c in (5, 7)}  # not adjacent: two column runs
    assert rectangles(two_columns) == [(3, 5, [[0.0], [0.0]]), (3, 7, [[0.0], [0.0]])]


def test_zip_book_finds_sheets_as_excel_does(tmp_path):
    path = tmp_path / "g.xlsx"
    build_graddesc(path, seed=0)
    book = ZipBookIO(Package.open(path))
    assert book.path == path
    io = book.sheet_io("ADAM")
    assert io is not None and io.sheet == "adam"
    assert book.sheet_io("nosuch") is None
    area = io.name_area("slope")
    assert area is not None and io.read_values(area) == [[1.0]]
