"""Workbooks made by OTHER tools for the fit-in-place tests.

``lesson_book`` writes, with XlsxWriter, a workbook laid out like the lesson's collab_filter.xlsx — ratings
H2:V16, movie factors H19:V23 (movie bias H18:V18), user factors B25:F39 (user bias A25:A39), predictions H25:V39
as ``IF(H2="",0,MMULT($B25:$F25,H$19:H$23)[+H$18+$A25])``, RMSE in V41 as
``SQRT(SUMXMY2(H2:V16,H25:V39)/COUNT(H2:V16))`` — with only the Solver model's names (no xlcf names), plus a
chart, an image and a second sheet. It stands in for "a workbook made in Excel".
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG made with zlib/struct only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(
        b"\x00" + b"".join(bytes([(x * 60) % 256, (y * 80) % 256, 128]) for x in range(width)) for y in range(height)
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def lesson_ratings() -> tuple[np.ndarray, list[int], list[int]]:
    from xlcf.data import lesson_crosstab

    df = lesson_crosstab()
    return df.to_numpy(dtype=float), [int(u) for u in df.index], [int(m) for m in df.columns]


def lesson_book(
    path: Path,
    *,
    bias: bool = False,
    sheet: str = "dotprod",
    seed: int = 0,
    ratings=None,
    chart: bool = True,
    image: bool = True,
    second_sheet: bool = True,
    solver: bool = True,
    factors: int = 5,
    ratings_override: dict | None = None,
    protect: str | None = None,
) -> Path:
    """Write the lesson-like workbook. ``ratings_override``: {"H2": value} to plant bad cells. ``protect``:
    ``"all"`` protects the sheet (every cell locked, Excel's default), ``"inputs"`` protects it with the factor
    and bias cells unlocked (how a teacher hands the sheet out)."""
    import xlsxwriter

    r, users, movies = lesson_ratings() if ratings is None else ratings
    n_users, n_movies = r.shape
    k = factors
    rng = np.random.default_rng(seed)
    uf = rng.uniform(0, 1, (n_users, k)).round(4)
    mf = rng.uniform(0, 1, (k, n_movies)).round(4)
    ub = np.zeros(n_users)
    mb = np.zeros(n_movies)
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet(sheet)
    blue = wb.add_format({"bg_color": "#DDEBF7", "num_format": "0.0"})
    two = wb.add_format({"num_format": "0.00"})
    owned = wb.add_format({"num_format": "0.00", "locked": False}) if protect == "inputs" else two
    # header: movie ids in row 1 (H1..), user ids in column G (G2..)
    ws.write(0, 6, "userId\\movieId")
    for j, m in enumerate(movies):
        ws.write(0, 7 + j, m)
    for i, u in enumerate(users):
        ws.write(1 + i, 6, u)
        for j in range(n_movies):
            if not np.isnan(r[i, j]):
                ws.write_number(1 + i, 7 + j, float(r[i, j]), blue)
            else:
                ws.write_blank(1 + i, 7 + j, None, blue)
    if ratings_override:
        for ref, value in ratings_override.items():
            ws.write(ref, value)
    # movie bias row 18 (0-based 17) and movie factors rows 19..(18+k)
    mf_top = 18  # 0-based row of H19
    if bias:
        for j in range(n_movies):
            ws.write_number(17, 7 + j, float(mb[j]), owned)
    for a in range(k):
        for j in range(n_movies):
            ws.write_number(mf_top + a, 7 + j, float(mf[a, j]), owned)
    pred_top = mf_top + k + 1  # 0-based row 24 -> Excel row 25 for k=5
    for i in range(n_users):
        if bias:
            ws.write_number(pred_top + i, 0, float(ub[i]), owned)
        for a in range(k):
            ws.write_number(pred_top + i, 1 + a, float(uf[i, a]), owned)
    last_col = xlsxwriter.utility.xl_col_to_name(7 + n_movies - 1)
    fcol_last = xlsxwriter.utility.xl_col_to_name(k)  # F for k=5
    mf_first_row, mf_last_row = mf_top + 1, mf_top + k
    for i in range(n_users):
        for j in range(n_movies):
            col = xlsxwriter.utility.xl_col_to_name(7 + j)
            ur = pred_top + 1 + i
            core = f"MMULT($B{ur}:${fcol_last}{ur},{col}${mf_first_row}:{col}${mf_last_row})"
            if bias:
                core += f"+{col}$18+$A{ur}"
            value = 0.0
            if not np.isnan(r[i, j]):
                value = float(uf[i] @ mf[:, j] + (ub[i] + mb[j] if bias else 0))
            ws.write_formula(pred_top + i, 7 + j, f'=IF({col}{2 + i}="",0,{core})', two, value)
    rat = f"H2:{last_col}{1 + n_users}"
    pred = f"H{pred_top + 1}:{last_col}{pred_top + n_users}"
    rmse_row = pred_top + n_users + 2  # 1-based row for the RMSE cell (V41 for 15 users)
    ws.write(rmse_row - 1, 7 + n_movies - 2, "RMSE")
    ws.write_formula(f"{last_col}{rmse_row}", f"=SQRT(SUMXMY2({rat},{pred})/COUNT({rat}))", two, 0)
    if solver:
        adj = (
            f"'{sheet}'!$B${pred_top + 1}:${fcol_last}${pred_top + n_users},'{sheet}'!$H${mf_first_row}:"
            f"${last_col}${mf_last_row}"
        )
        if bias:
            adj += f",'{sheet}'!$A${pred_top + 1}:$A${pred_top + n_users},'{sheet}'!$H$18:${last_col}$18"
        wb.define_name(f"'{sheet}'!solver_adj", "=" + adj)
        wb.define_name(f"'{sheet}'!solver_opt", f"='{sheet}'!${last_col}${rmse_row}")
        for name, value in (
            ("solver_typ", "2"),
            ("solver_eng", "1"),
            ("solver_neg", "2"),
            ("solver_ver", "3"),
            ("solver_num", "0"),
            ("solver_val", "0"),
        ):
            wb.define_name(f"'{sheet}'!{name}", "=" + value)
    if protect:
        ws.protect()
    if second_sheet:
        other = wb.add_worksheet("notes")
        other.write("A1", "a second sheet that must survive")
        other.write_formula("A2", f"='{sheet}'!{last_col}{rmse_row}*2", None, 0)
        other.write("A3", 42)
    if chart:
        ch = wb.add_chart({"type": "column"})
        ch.add_series(
            {
                "name": "movie factor 1",
                "categories": [sheet, 0, 7, 0, 7 + n_movies - 1],
                "values": [sheet, mf_top, 7, mf_top, 7 + n_movies - 1],
            }
        )
        ws.insert_chart("X2", ch)
    if image:
        import io

        ws.insert_image("X20", "tiny.png", {"image_data": io.BytesIO(tiny_png())})
    wb.close()
    return Path(path)


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def zip_order(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def excel_like(path: Path, sheet_part: str = "xl/worksheets/sheet1.xml", shared_ref: str = "H25:V39") -> Path:
    """Rewrite a lesson book the way Excel stores it: the prediction grid as ONE shared formula (master in the
    top-left cell, ``<f t="shared" si="0"/>`` elsewhere), a calcChain.xml part, hidden Solver names, and a
    ``<calcPr calcId=.../>`` without fullCalcOnLoad. Done with lxml on the raw parts (not with xlcf's Package)."""
    import re

    from lxml import etree

    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    members = zip_members(path)
    order = zip_order(path)
    root = etree.fromstring(members[sheet_part])
    first, last = shared_ref.split(":")
    cells = []
    for c in root.iterfind(".//m:sheetData/m:row/m:c", ns):
        f = c.find("m:f", ns)
        if f is None:
            continue
        m = re.match(r"([A-Z]+)(\d+)$", c.get("r"))
        col, row = m.group(1), int(m.group(2))
        fm, lm = re.match(r"([A-Z]+)(\d+)$", first), re.match(r"([A-Z]+)(\d+)$", last)
        if fm.group(1) <= col <= lm.group(1) and len(col) == 1 and int(fm.group(2)) <= row <= int(lm.group(2)):
            cells.append(c.get("r"))
            f.set("t", "shared")
            f.set("si", "0")
            if c.get("r") == first:
                f.set("ref", shared_ref)
            else:
                f.text = None
    members[sheet_part] = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
    chain = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<calcChain xmlns="'
        + ns["m"]
        + '">'
        + "".join(f'<c r="{r}" i="1"/>' for r in cells)
        + "</calcChain>"
    )
    members["xl/calcChain.xml"] = chain.encode()
    rels = members["xl/_rels/workbook.xml.rels"].decode()
    rels = rels.replace(
        "</Relationships>",
        '<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships/calcChain" Target="calcChain.xml"/></Relationships>',
    )
    members["xl/_rels/workbook.xml.rels"] = rels.encode()
    ct = members["[Content_Types].xml"].decode()
    ct = ct.replace(
        "</Types>",
        '<Override PartName="/xl/calcChain.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.spreadsheetml.calcChain+xml"/></Types>',
    )
    members["[Content_Types].xml"] = ct.encode()
    wb = members["xl/workbook.xml"].decode()
    wb = re.sub(r'<definedName name="(solver_\w+)"', r'<definedName name="\1" hidden="1"', wb)
    wb = re.sub(r"<calcPr[^>]*/>", '<calcPr calcId="191029"/>', wb)
    members["xl/workbook.xml"] = wb.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in order + ["xl/calcChain.xml"]:
            zf.writestr(name, members[name])
    return path
