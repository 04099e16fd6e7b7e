"""Charts: native chart parts (built by XlsxWriter over the same table, so cached values match) and the
DrawingML anchor that places a chart on a sheet's drawing."""

from __future__ import annotations

import io
import zipfile

from lxml import etree

from xlcf.ooxml.parts import NS_A, NS_C, NS_DRAW, NS_REL
from xlcf.ooxml.refs import split_ref


def line_chart_xml(
    sheet: str,
    rows: list[list],
    *,
    top_left: str = "A1",
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    size: tuple[int, int] = (640, 320),
) -> bytes:
    """A native line chart part (``xl/charts/chartN.xml`` content) over a table on ``sheet`` whose header row is
    ``rows[0]``, first column the categories (x) and each further column one series. Built by XlsxWriter in a
    scratch workbook holding the same table, so the chart's cached values match; put it on a sheet with
    :meth:`Package.add_chart`."""
    import xlsxwriter  # only needed for charts

    r0, c0 = split_ref(top_left)
    r0, c0 = r0 - 1, c0 - 1
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "nan_inf_to_errors": True})
    ws = wb.add_worksheet(sheet)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            ws.write(r0 + i, c0 + j, value)
    chart = wb.add_chart({"type": "line"})
    last = r0 + len(rows) - 1
    for j in range(1, len(rows[0])):
        chart.add_series(
            {
                "name": [sheet, r0, c0 + j],
                "categories": [sheet, r0 + 1, c0, last, c0],
                "values": [sheet, r0 + 1, c0 + j, last, c0 + j],
                "marker": {"type": "none"},
            }
        )
    if title:
        chart.set_title({"name": title})
    if x_title:
        chart.set_x_axis({"name": x_title})
    if y_title:
        chart.set_y_axis({"name": y_title})
    chart.set_size({"width": size[0], "height": size[1]})
    ws.insert_chart(r0, c0 + len(rows[0]) + 1, chart)
    wb.close()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return straight_lines(zf.read("xl/charts/chart1.xml"))


def straight_lines(chart_xml: bytes) -> bytes:
    """Every line series gets ``<c:smooth val="0"/>`` (LibreOffice draws a spline where the element is absent, and
    a spline can dip below the data) and each value axis a ``General`` number format of its own (the source cells'
    format can print every tick alike)."""
    root = etree.fromstring(chart_xml)
    c = f"{{{NS_C}}}"
    for ser in root.iter(f"{c}ser"):
        if ser.getparent() is None or ser.getparent().tag not in (f"{c}lineChart", f"{c}scatterChart"):
            continue
        smooth = ser.find(f"{c}smooth")
        if smooth is None:
            smooth = etree.Element(f"{c}smooth")
            ext = ser.find(f"{c}extLst")  # schema order: ... val, smooth, extLst
            if ext is not None:
                ext.addprevious(smooth)
            else:
                ser.append(smooth)
        smooth.set("val", "0")
    for ax in root.iter(f"{c}valAx"):
        fmt = ax.find(f"{c}numFmt")
        if fmt is None:
            fmt = etree.Element(f"{c}numFmt")
            anchor = ax.find(f"{c}title")
            if anchor is None:
                anchor = ax.find(f"{c}majorGridlines")
            if anchor is None:
                anchor = ax.find(f"{c}axPos")
            anchor.addnext(fmt)
        fmt.set("formatCode", "General")
        fmt.set("sourceLinked", "0")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def chart_anchor(drawing_root, chart_rid: str, anchor: tuple[int, int, int, int]) -> etree._Element:
    """A ``twoCellAnchor`` holding the chart of relationship ``chart_rid`` on the drawing ``drawing_root``;
    ``anchor`` = (first col, first row, last col, last row), 0-based as in DrawingML."""
    ids = [int(el.get("id")) for el in drawing_root.iter(f"{{{NS_DRAW}}}cNvPr") if (el.get("id") or "").isdigit()]
    c1, r1, c2, r2 = anchor
    anchor_xml = f"""<xdr:twoCellAnchor xmlns:xdr="{NS_DRAW}" xmlns:a="{NS_A}" xmlns:c="{NS_C}" xmlns:r="{NS_REL}">
<xdr:from><xdr:col>{c1}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{r1}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:from>
<xdr:to><xdr:col>{c2}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{r2}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:to>
<xdr:graphicFrame macro=""><xdr:nvGraphicFramePr><xdr:cNvPr id="{max(ids, default=1) + 1}" name="Chart {len(ids) + 1}"/>
<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr><xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/></xdr:xfrm>
<a:graphic><a:graphicData uri="{NS_C}"><c:chart r:id="{chart_rid}"/></a:graphicData></a:graphic></xdr:graphicFrame>
<xdr:clientData/></xdr:twoCellAnchor>"""
    return etree.fromstring(anchor_xml)
