"""Recalculate spreadsheets in headless LibreOffice Calc and dump every cell as JSON.

Runs under the system Python that has LibreOffice's UNO bindings (``/usr/bin/python3``), not under the
project's interpreter. Usage::

    /usr/bin/python3 lo_recalc.py JOBS.json

JOBS.json is a list of ``{"input": path, "output": json_path, "save_as": optional .xlsx path}``. For each
job the document is loaded hidden, fully recalculated (``calculateAll``), and every sheet's used area is
written to ``output`` as ``{"sheets": {name: {"A1": {"v": value, "f": formula, "t": type}}}}``; with
``save_as`` the recalculated document is stored again as Excel 2007-365 (a LibreOffice round trip).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import uno
from com.sun.star.beans import PropertyValue
from com.sun.star.connection import NoConnectException


def prop(name, value):
    p = PropertyValue()
    p.Name = name
    p.Value = value
    return p


def col_name(index):
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


def start_office():
    profile = tempfile.mkdtemp(prefix="xlcf-lo-profile-")
    pipe = "xlcf_lo_%d" % os.getpid()
    soffice = shutil.which("soffice") or "/usr/bin/soffice"
    proc = subprocess.Popen(
        [
            soffice,
            "--headless",
            "--invisible",
            "--nologo",
            "--norestore",
            "--nodefault",
            "-env:UserInstallation=file://" + profile,
            "--accept=pipe,name=%s;urp;StarOffice.ComponentContext" % pipe,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.time() + 60
    while True:
        try:
            ctx = resolver.resolve("uno:pipe,name=%s;urp;StarOffice.ComponentContext" % pipe)
            break
        except NoConnectException:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("LibreOffice did not start") from None
            time.sleep(0.25)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    return proc, desktop, profile


def dump_sheet(sheet):

    cursor = sheet.createCursor()
    cursor.gotoEndOfUsedArea(False)
    last_row = cursor.RangeAddress.EndRow
    last_col = cursor.RangeAddress.EndColumn
    cells = {}
    if last_row < 0 or last_col < 0:
        return cells
    rng = sheet.getCellRangeByPosition(0, 0, last_col, last_row)
    data = rng.getDataArray()
    from com.sun.star.sheet.FormulaResult import ERROR

    errors = set()
    ranges = sheet.queryFormulaCells(ERROR)
    for addr in ranges.getRangeAddresses():
        for rr in range(addr.StartRow, addr.EndRow + 1):
            for cc in range(addr.StartColumn, addr.EndColumn + 1):
                errors.add((rr, cc))
    formulas = rng.getFormulaArray()
    for r in range(last_row + 1):
        for c in range(last_col + 1):
            formula = formulas[r][c]
            if formula == "":
                continue
            value = data[r][c]
            entry = {"v": value}
            if formula.startswith("=") and not (isinstance(value, str) and value == formula):
                entry["f"] = formula
                if (r, c) in errors:
                    entry["err"] = sheet.getCellByPosition(c, r).getError()
                entry["t"] = "formula"
            else:
                entry["t"] = "text" if isinstance(value, str) else "value"
            cells[col_name(c) + str(r + 1)] = entry
    return cells


def for_each_document(jobs, handle):
    """Start one office, open each job's ``input`` hidden, call ``handle(doc, job)``, close it; shut down."""
    proc, desktop, profile = start_office()
    try:
        for job in jobs:
            url = uno.systemPathToFileUrl(os.path.abspath(job["input"]))
            doc = desktop.loadComponentFromURL(url, "_blank", 0, (prop("Hidden", True),))
            if doc is None:
                raise RuntimeError("LibreOffice could not open " + job["input"])
            try:
                handle(doc, job)
            finally:
                doc.close(True)
    finally:
        try:
            desktop.terminate()
        except Exception:
            pass
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def store_xlsx(doc, path):
    target = uno.systemPathToFileUrl(os.path.abspath(path))
    doc.storeToURL(target, (prop("FilterName", "Calc MS Excel 2007 XML"),))


def recalc_and_dump(doc, job):
    doc.calculateAll()
    out = {"sheets": {}, "names": {}}
    sheets = doc.getSheets()
    for i in range(sheets.getCount()):
        sheet = sheets.getByIndex(i)
        out["sheets"][sheet.getName()] = dump_sheet(sheet)
    named = doc.NamedRanges
    for name in named.getElementNames():
        out["names"][name] = named.getByName(name).getContent()
    if job.get("save_as"):
        store_xlsx(doc, job["save_as"])
    with open(job["output"], "w") as fh:
        json.dump(out, fh)


def main():
    with open(sys.argv[1]) as jobs:
        for_each_document(json.load(jobs), recalc_and_dump)


if __name__ == "__main__":
    main()
