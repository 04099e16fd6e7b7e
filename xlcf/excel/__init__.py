"""The Excel side: the only package that imports xlwings.

- ``xlcf.excel.macros``: ``main(book=None)`` and the named scripts ``fit``, ``step``, ``reset``, ``train``
  that a button (RunPython), the remote interpreter (``xlcf serve``) or a test runs against a workbook.
- ``xlcf.excel.udfs``: worksheet functions ``CF_FIT``, ``CF_PREDICT``, ``CF_RMSE``, ``CF_RECOMMEND``.
- ``xlcf.excel.sheetio``: reading named blocks and writing computed blocks through any xlwings engine.

Everything heavy (the fit itself) lives in ``xlcf.actions`` / ``xlcf.train`` as pure array functions, so the
headless CLI, the desktop macros and the server all run the same logic.
"""
