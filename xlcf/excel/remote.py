"""xlwings' remote interpreter, as ``xlcf serve`` uses it: the macros and UDFs decorated with ``xlwings.server``'s
decorators, a book built from a client's JSON payload, and xlwings' own route helpers
(``custom_scripts_call``, ``custom_functions_meta/code/call``).

Kept in the Excel layer so that xlwings is imported only here; :mod:`xlcf.server.app` is plain FastAPI (HTTP,
auth, limits) on top of :class:`RemoteExcel`.
"""

from __future__ import annotations

import asyncio
import inspect
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
    """The scripts, each decorated with ``xlwings.server.script`` and taking the injected ``xw.Book``.
    ``module.started`` (set before each call) is when the request reached the server (the status cell's
    end-to-end time)."""
    from xlwings import server as xw_server

    from xlcf.excel import macros

    module = types.ModuleType("xlcf_server_scripts")
    module.__dict__["started"] = None

    def make(name):
        def body(book, _name=name):
            started = module.__dict__["started"]
            if _name in ("main", "fit"):
                result = getattr(macros, _name)(book, time_limit=time_limit, started=started)
            elif _name == "train":
                result = macros.train(book, time_limit=time_limit, data_dir=data_dir or "", started=started)
            else:
                result = getattr(macros, _name)(book, started=started)
            module.__dict__["last_result"] = result

        # The decorators look at type hints: the book parameter must be annotated with xw.Book.
        ns = {"xw": xlwings, "_body": body}
        exec(f"def {name}(book: xw.Book):\n    _body(book)\n", ns)
        fn = ns[name]
        fn.__doc__ = (getattr(macros, name).__doc__ or "").strip().split("\n")[0]
        return xw_server.script(fn)

    for name in macros.SCRIPTS:
        setattr(module, name, make(name))
    module.__dict__["last_result"] = None
    return module


def functions_module() -> types.ModuleType:
    from xlwings import server as xw_server

    from xlcf.excel import udfs

    module = types.ModuleType("xlcf_server_functions")
    module.__dict__.update(udfs.build(xw_server.func, xw_server.arg, xw_server.ret))
    return module


class RemoteExcel:
    """The macros and UDFs behind xlwings' remote engine. Methods block (run them off the event loop).

    ``server=True`` (``xlcf serve``): the fitting worksheet functions stop at ``time_limit`` too, and an
    unexpected error shows its class name only (the traceback goes to the log, never to a client)."""

    def __init__(self, *, time_limit: float | None = None, data_dir: str | None = None, server: bool = False):
        self._xlwings = require_remote_engine()
        from xlwings import server as xw_server

        from xlcf.excel import udfs

        self._server = xw_server
        self.version: str = self._xlwings.__version__
        self.scripts = scripts_module(self._xlwings, time_limit=time_limit, data_dir=data_dir)
        if server:
            udfs.serve_mode(time_limit)
        self.functions = functions_module()
        # Excel matches function names case-insensitively (=cf_fit(...) is CF_FIT): so does the call route.
        self._function_names = {
            name.casefold(): name
            for name in dir(self.functions)
            if hasattr(getattr(self.functions, name, None), "__xlfunc__")
        }
        self.training_functions = frozenset(udfs.TRAINING_FUNCTIONS)
        self.direct_functions = frozenset(self._function_names.values()) - self.training_functions

    @staticmethod
    def script_names() -> list[str]:
        from xlcf.excel.macros import SCRIPTS

        return list(SCRIPTS)

    def run_script(self, name: str, payload: dict, *, started: float | None = None) -> dict:
        """Run script ``name`` on the book of ``payload``; the actions for the client (``book.json()``).
        ``started``: wall-clock time the press reached the server (for the status cell)."""
        xlwings = self._xlwings
        self.scripts.started = started  # type: ignore[attr-defined]  # read by the scripts for the status cell
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
        return sorted(self._function_names.values())

    def function_name(self, name: str) -> str | None:
        """The Python name of worksheet function ``name`` in any letter case (``CF_FIT`` -> ``cf_fit``), or None."""
        return self._function_names.get(str(name).casefold())

    def has_function(self, name: str) -> bool:
        return self.function_name(name) is not None

    def functions_code(self) -> str:
        """xlwings' Office.js glue; FileNotFoundError when this installation lacks its template."""
        return self._server.custom_functions_code(self.functions)

    def call_direct(self, data: dict):
        """A cheap function (:attr:`direct_functions`) called without xlwings' call machinery, which costs ten times
        the function itself (an event loop per call, conversions, failed imports): the server answers these from
        its event loop. Arguments are taken as xlwings passes them to an ``ndim=2`` argument (a scalar becomes
        ``[[x]]``, a row ``[row]``, an omitted one the default) and a scalar result is returned as ``[[x]]``, so
        the answer equals :meth:`call_function`'s."""
        from xlcf.excel import udfs

        name = self.function_name(data.get("func_name", ""))
        if name not in self.direct_functions:
            raise BadPayload(f"{str(data.get('func_name'))[:40]!r} is not a direct function")
        impl = getattr(udfs, name)
        params = list(inspect.signature(impl).parameters.values())
        args = list(data.get("args", []))
        if len(args) > len(params) or any(p.default is inspect.Parameter.empty for p in params[len(args) :]):
            raise BadPayload(f"the arguments of {name.upper()} cannot be read (TypeError)")
        converted = []
        for value, param in zip(args, params, strict=False):
            if value is None:
                converted.append(None if param.default is inspect.Parameter.empty else param.default)
            elif isinstance(value, list):
                converted.append(value if value and isinstance(value[0], list) else [value])
            else:
                converted.append([[value]])
        result = impl(*converted)
        return result if isinstance(result, list) else [[result]]

    def call_function(self, data: dict):
        """The result of a custom-functions call (``func_name`` in any letter case). Arguments xlwings cannot
        convert raise BadPayload."""
        name = self.function_name(data.get("func_name", ""))
        if name is None:
            raise BadPayload(f"no worksheet function {str(data.get('func_name'))[:40]!r}")
        data = {**data, "func_name": name}
        try:
            return asyncio.run(self._server.custom_functions_call(data, self.functions))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise BadPayload(f"the arguments of {name.upper()} cannot be read ({type(err).__name__})") from None
