"""Make "paste values" copies in headless LibreOffice Calc, pass after pass, and dump the cells after each pass.

Runs under the system Python with LibreOffice's UNO bindings (``/usr/bin/python3``). Usage::

    /usr/bin/python3 lo_copy_step.py JOBS.json

Each job: ``{"input": path, "output": json_path, "copies": [[[sheet, "C2:C3"], [sheet, "B2:B3"]], ...],
"passes": N, "manual": bool, "watch": [[sheet, "B2"], ...]}``. The document is fully calculated first; then per
pass every copy reads the source's values (``getDataArray``) and writes them into the target
(``setDataArray``), followed by a recalculation in automatic mode; in manual mode automatic calculation is
off and the document is recalculated once at the end of the pass. ``output`` receives ``{"passes": [{cell:
value}], "final": {sheet: {cell: {...}}}}`` (the watch cells after each pass, every cell at the end).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lo_recalc import dump_sheet, for_each_document


def copy_step(doc, job):
    sheets = doc.getSheets()
    doc.calculateAll()
    doc.enableAutomaticCalculation(not job["manual"])
    passes = []
    for _ in range(job["passes"]):
        for (src_sheet, src), (dst_sheet, dst) in job["copies"]:
            data = sheets.getByName(src_sheet).getCellRangeByName(src).getDataArray()
            sheets.getByName(dst_sheet).getCellRangeByName(dst).setDataArray(data)
            if not job["manual"]:
                doc.calculate()
        if job["manual"]:
            doc.calculateAll()
        passes.append(
            {
                "%s!%s" % (s, ref): sheets.getByName(s).getCellRangeByName(ref).getDataArray()[0][0]
                for s, ref in job["watch"]
            }
        )
    out = {"passes": passes, "final": {}}
    for i in range(sheets.getCount()):
        sheet = sheets.getByIndex(i)
        out["final"][sheet.getName()] = dump_sheet(sheet)
    with open(job["output"], "w") as fh:
        json.dump(out, fh)


def main():
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    for_each_document(jobs, copy_step)


if __name__ == "__main__":
    main()
