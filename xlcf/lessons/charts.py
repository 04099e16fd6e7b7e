"""Charts that do not lie: every line is drawn straight between points (no spline that dips below the data)
and value axes show the data's magnitude (their own number format, not the cells' two decimals)."""

from __future__ import annotations


def honest(chart, *, value_format: str = "General", log_y: bool = False):
    """Set ``smooth=0`` on every series of an openpyxl line or scatter chart (LibreOffice draws a spline when the
    element is absent) and give the value axis a number format of its own: ``General`` adapts to the magnitude
    (0.3187, 1.2E-05) where the source cells' ``0.00`` would print every tick as 0.00. ``log_y`` for data that
    spans decades. Returns the chart."""
    from openpyxl.chart.data_source import NumFmt

    for series in chart.series:
        if hasattr(series, "smooth"):
            series.smooth = False
    if hasattr(chart, "smooth"):
        chart.smooth = False
    chart.y_axis.numFmt = NumFmt(formatCode=value_format, sourceLinked=False)
    if chart.tagname == "scatterChart":  # its x axis is a value axis too
        chart.x_axis.numFmt = NumFmt(formatCode="General", sourceLinked=False)
    if log_y:
        chart.y_axis.scaling.logBase = 10
    return chart
