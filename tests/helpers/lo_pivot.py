"""Make test workbooks with LibreOffice Calc : a plain round trip, and the same workbook with a
pivot table (DataPilot) on a new sheet. Runs under LibreOffice's UNO Python (``/usr/bin/python3``)::

    /usr/bin/python3 lo_pivot.py JOBS.json

JOBS.json: a list of ``{"input": xlsx, "output": xlsx, "pivot": bool}``. With ``pivot`` a sheet ``pivot_data`` is
added (user, movie, rating rows) and a DataPilot table summing ratings per user is placed on sheet ``pivot``.
Every job is stored as "Calc MS Excel 2007 XML". One office process for all jobs.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uno  # noqa: F401 - importing uno makes the com.sun.star modules importable
from com.sun.star.table import CellAddress, CellRangeAddress
from lo_recalc import for_each_document, store_xlsx


def add_pivot(doc):
    sheets = doc.getSheets()
    sheets.insertNewByName("pivot_data", sheets.getCount())
    sheets.insertNewByName("pivot", sheets.getCount())
    data = sheets.getByName("pivot_data")
    rows = [("user", "movie", "rating")]
    for i in range(12):
        rows.append(("u%d" % (i % 4), "m%d" % (i % 3), float(1 + (i * 7) % 5)))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            cell = data.getCellByPosition(c, r)
            if isinstance(value, float):
                cell.setValue(value)
            else:
                cell.setString(value)
    src = CellRangeAddress()
    src.Sheet = sheets.getCount() - 2
    src.StartColumn, src.StartRow, src.EndColumn, src.EndRow = 0, 0, 2, len(rows) - 1
    pivot_sheet = sheets.getByName("pivot")
    tables = pivot_sheet.getDataPilotTables()
    desc = tables.createDataPilotDescriptor()
    desc.setSourceRange(src)
    fields = desc.getDataPilotFields()
    from com.sun.star.sheet.DataPilotFieldOrientation import DATA, ROW
    from com.sun.star.sheet.GeneralFunction import SUM

    user_field = fields.getByIndex(0)
    user_field.Orientation = ROW
    rating_field = fields.getByIndex(2)
    rating_field.Orientation = DATA
    rating_field.Function = SUM
    dest = CellAddress()
    dest.Sheet = sheets.getCount() - 1
    dest.Column, dest.Row = 0, 0
    tables.insertNewByName("RatingsPivot", dest, desc)


def convert(doc, job):
    if job.get("pivot"):
        add_pivot(doc)
    doc.calculateAll()
    store_xlsx(doc, job["output"])


def main():
    with open(sys.argv[1]) as jobs:
        for_each_document(json.load(jobs), convert)


if __name__ == "__main__":
    main()
