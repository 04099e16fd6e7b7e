"""``UDF Modules = xlcf.udfs`` (the xlwings.conf sheet of the generated .xlsm) imports the worksheet
functions from here; they live in :mod:`xlcf.excel.udfs`, the only layer that imports xlwings."""

from xlcf.excel.udfs import *  # noqa: F403
from xlcf.excel.udfs import __all__  # noqa: F401
