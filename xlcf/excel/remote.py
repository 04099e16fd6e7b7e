"""xlwings' remote interpreter, as ``xlcf serve`` uses it: the macros and UDFs decorated with ``xlwings.server``'s
decorators, a book built from a client's JSON payload, and xlwings' own route helpers
(``custom_scripts_call``, ``custom_functions_meta/code/call``).

Kept in the Excel layer so that xlwings is imported only here; :mod:`xlcf.server.app` is plain FastAPI (HTTP,
auth, limits) on top of :class:`RemoteExcel`.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

from xlcf.errors import BadPayload, ConfigError


def require_remote_engine():
    """Import xlwings and make sure its remote engine is usable (it is license-gated)."""
    import xlwings

    if "remote" not in [engine.name for engine in xlwings.engines]:
        raise ConfigError(
            "xlwings' remote engine is not available: it needs an xlwings license key in the "
            "environment (export XLWINGS_LICENSE_KEY=noncommercial for non-commercial use, or "
            "your paid key); xlcf never sets one itself"
        )
    return xlwings


def xlwings_status() -> tuple[str, Path, list[str]]:
    """(version, install folder, engine names) of the installed xlwings, for ``xlcf doctor``. Raises whatever the
    import raises."""
    import xlwings

    return xlwings.__version__, Path(xlwings.__file__).parent, [engine.name for engine in xlwings.engines]


def scripts_module(xlwings, *, time_limit: float | None, data_dir: str | None) -> types.ModuleType:
    """The scripts, each decorated with ``xlwings.server.script`` and taking the injected ``xw.Book``."""
    from xlwings import server as xw_server

    from xlcf.excel import macros

    module = types.ModuleType("xlcf_server_scripts")

    def make(name):
        if name in ("main", "fit"):

            def body(book, _name=name):
                module.last_result = getattr(macros, _name)(book, time_limit=time_limit)
        elif name == "train":

            def body(book):
                module.last_result = macros.train(book, time_limit=time_limit, data_dir=data_dir or "")
        else:

            def body(book, _name=name):
                module.last_result = getattr(macros, _name)(book)

        # The decorators look at type hints: the book parameter must be annotated with xw.Book.
        ns = {"xw": xlwings, "_body": body}
        exec(f"def {name}(book: xw.Book):\n    _body(book)\n", ns)
        fn = ns[name]
        fn.__doc__ = (getattr(macros, name).__doc__ or "").strip().split("\n")[0]
        return xw_server.script(fn)

    for name in macros.SCRIPTS:
        setattr(module, name, make(name))
    module.last_result = None
    return module


def functions_module() -> types.ModuleType:
    from xlwings import server as xw_server

    from xlcf.excel import udfs

    module = types.ModuleType("xlcf_server_functions")
    module.__dict__.update(udfs.build(xw_server.func, xw_server.arg, xw_server.ret))
    return module


class RemoteExcel:
    """The macros and UDFs behind xlwings' remote engine. Methods block (run them off the event loop)."""

    def __init__(self, *, time_limit: float | None = None, data_dir: str | None = None):
        self._xlwings = require_remote_engine()
        from xlwings import server as xw_server

        self._server = xw_server
        self.version: str = self._xlwings.__version__
        self.scripts = scripts_module(self._xlwings, time_limit=time_limit, data_dir=data_dir)
        self.functions = functions_module()

    @staticmethod
    def script_names() -> list[str]:
        from xlcf.excel.macros import SCRIPTS

        return list(SCRIPTS)

    def run_script(self, name: str, payload: dict) -> dict:
        """Run script ``name`` on the book of ``payload``; the actions for the client (``book.json()``)."""
        xlwings = self._xlwings
        try:
            book = xlwings.Book(json=payload)
        except xlwings.XlwingsError as err:
            raise BadPayload(str(err).splitlines()[0]) from None
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise BadPayload(f"the book payload is malformed ({type(err).__name__})") from None
        try:
            asyncio.run(self._server.custom_scripts_call(self.scripts, name, typehint_to_value={xlwings.Book: book}))
            return book.json()
        finally:
            try:
                book.close()  # drop it from xlwings' global book list (long-running server)
            except Exception:
                pass

    def scripts_meta(self):
        return self._server.custom_scripts_meta(self.scripts)

    def functions_meta(self):
        return self._server.custom_functions_meta(self.functions)

    def function_names(self) -> list[str]:
        return [n for n in dir(self.functions) if self.has_function(n)]

    def has_function(self, name: str) -> bool:
        return hasattr(getattr(self.functions, name, None), "__xlfunc__")

    def functions_code(self) -> str:
        """xlwings' Office.js glue; FileNotFoundError when this installation lacks its template."""
        return self._server.custom_functions_code(self.functions)

    def call_function(self, data: dict):
        return asyncio.run(self._server.custom_functions_call(data, self.functions))
