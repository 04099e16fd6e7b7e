"""``xlcf serve``: an xlwings Server–compatible FastAPI app, so Excel on any OS (VBA ``RunServerPython``,
Office Scripts, Office.js add-ins) can run the fit on the machine that has the GPU.

Routes follow xlwings Server's own, so xlwings' clients work unchanged:

- ``POST /xlwings/custom-scripts-call/{name}``: the book payload in, ``book.json()`` (the actions) out.
  ``name`` is one of :data:`xlcf.excel.macros.SCRIPTS` (main, fit, step, step5, reset, train).
- ``GET /xlwings/custom-scripts-meta``, ``GET /xlwings/custom-functions-meta``,
  ``GET /xlwings/custom-functions-code``, ``POST /xlwings/custom-functions-call``: the UDFs for Office.js.

The xlwings side is done by xlwings' own helpers (``xlwings.server.custom_scripts_call``,
``custom_functions_meta/code/call``) on top of the remote engine, which needs an xlwings license key in the
environment (``XLWINGS_LICENSE_KEY``; ``noncommercial`` for non-commercial use). xlcf never sets one. They are
wrapped by :class:`xlcf.excel.remote.RemoteExcel`, so this module itself never imports xlwings.

Security: loopback by default; any other bind address needs a token, checked on every request in constant
time (``hmac.compare_digest``) against the ``Authorization`` header (raw, as xlwings' ``AUTH`` config sends it,
or ``Bearer <token>``); request bodies are capped; ratings paths named on a sheet are confined to
``--data-dir``; error responses carry one line of text, never file contents or tracebacks.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from xlcf.errors import ConfigError

logger = logging.getLogger("xlcf.server")

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
DEFAULT_TIME_LIMIT = 25.0  # VBA's RunServerPython times out after 30 s by default; leave room for the reply
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    data_dir: Path | None = None
    time_limit: float = DEFAULT_TIME_LIMIT
    max_bytes: int = DEFAULT_MAX_BYTES

    def check(self) -> ServerSettings:
        if self.host not in LOOPBACK_HOSTS and not self.token:
            raise ConfigError(
                f"binding to {self.host} (not loopback) needs --token T (clients send it as the "
                "AUTH setting of xlwings.conf / the Authorization header)"
            )
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("--token must be at least 8 characters")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ConfigError(f"--data-dir {self.data_dir} is not a folder")
        if not self.time_limit > 0:
            raise ConfigError("--time-limit must be positive")
        if self.max_bytes < 1024:
            raise ConfigError("--max-request-mb is too small")
        return self


def _fallback_functions_js(version: str, call_path: str, names: list[str]) -> str:
    """Minimal Office.js glue when the installed xlwings lacks its ``custom_functions_code.js`` template:
    each custom function POSTs its arguments to the call route and returns the result."""
    lines = [
        "// xlcf: minimal custom-functions glue (xlwings' own template was not found in this installation)",
        f"const XLWINGS_VERSION = {json.dumps(version)};",
        "async function base(funcName, isStreaming, ...args) {",
        "  const invocation = args.pop();",
        "  const body = {func_name: funcName, args: args, caller_address: invocation.address,",
        "    formula_name: invocation.functionName, version: XLWINGS_VERSION, runtime: '1.1',",
        "    client: 'Office.js', culture_info_name: '', date_format: ''};",
        "  const headers = {'Content-Type': 'application/json'};",
        "  if (globalThis.xlcfAuth) { headers['Authorization'] = globalThis.xlcfAuth; }",
        f"  const response = await fetch(window.location.origin + {json.dumps(call_path)},",
        "    {method: 'POST', headers: headers, body: JSON.stringify(body)});",
        "  if (!response.ok) { return [[await response.text()]]; }",
        "  return (await response.json()).result;",
        "}",
    ]
    for name in names:
        lines += [
            f"async function {name}() {{",
            f"  return await base({json.dumps(name)}, false, ...arguments);",
            "}",
            f"CustomFunctions.associate({json.dumps(name.upper())}, {name});",
        ]
    return "\n".join(lines) + "\n"


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_version(payload: dict, version: str) -> None:
    """xlwings' clients and the server must speak the same xlwings version (the action set differs)."""
    client_version = payload.get("version")
    if client_version != version:
        raise RequestError(
            400,
            f"xlwings version mismatch: the client sends {client_version!r}, this server "
            f"runs xlwings {version}. Use the matching xlwings VBA module/add-in "
            f"(pip install xlwings=={client_version} on the server, or update the client)",
        )


def validate_payload(payload) -> dict:
    if not isinstance(payload, dict):
        raise RequestError(400, "the request body must be a JSON object (an xlwings book payload)")
    for key in ("client", "version", "book", "sheets"):
        if key not in payload:
            raise RequestError(400, f"the book payload has no {key!r} key: is this an xlwings client?")
    if not isinstance(payload["sheets"], list) or not isinstance(payload["book"], dict):
        raise RequestError(400, "the book payload is malformed ('book' must be an object, 'sheets' a list)")
    payload.setdefault("names", [])
    return payload


def create_app(settings: ServerSettings | None = None):
    """The FastAPI application (``uvicorn.run(create_app(...))``)."""
    from xlcf.excel.remote import BadPayload, RemoteExcel

    settings = (settings or ServerSettings()).check()
    excel = RemoteExcel(time_limit=settings.time_limit, data_dir=str(settings.data_dir) if settings.data_dir else None)
    run_lock = threading.Lock()  # one fit at a time: the accelerator and the xlwings book list are shared
    version = excel.version
    app = FastAPI(title="xlcf", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.scripts = excel.scripts

    def authorized(request: Request) -> bool:
        if not settings.token:
            return True
        sent = request.headers.get("authorization", "")
        if sent.lower().startswith("bearer "):
            sent = sent[7:]
        return hmac.compare_digest(sent.strip().encode(), settings.token.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not authorized(request):
            return PlainTextResponse(
                "xlcf serve: missing or wrong token (set AUTH in xlwings.conf to the token "
                "given to `xlcf serve --token`)",
                status_code=401,
            )
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > settings.max_bytes
            except ValueError:
                return PlainTextResponse("xlcf serve: bad Content-Length", status_code=400)
            if too_big:
                return PlainTextResponse(_too_big(settings), status_code=413)
        return await call_next(request)

    async def read_json(request: Request):
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_bytes:  # chunked uploads have no Content-Length
                raise RequestError(413, _too_big(settings))
        try:
            return json.loads(body)
        except ValueError:
            raise RequestError(400, "the request body is not valid JSON") from None

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, err: RequestError):
        return PlainTextResponse(f"xlcf serve: {err.message}", status_code=err.status)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception):  # never a traceback or file contents
        logger.exception("unexpected error")
        return PlainTextResponse(
            f"xlcf serve: internal error ({type(err).__name__}); see the server log", status_code=500
        )

    @app.get("/")
    async def root():
        return {"service": "xlcf", "xlwings": version, "scripts": sorted(excel.script_names())}

    @app.post("/xlwings/custom-scripts-call/{script_name}")
    async def custom_scripts_call(script_name: str, request: Request):
        if script_name not in excel.script_names():
            raise RequestError(404, f"no script {script_name!r}; available: {', '.join(excel.script_names())}")
        payload = validate_payload(await read_json(request))
        check_version(payload, version)

        def run() -> dict:
            with run_lock:
                try:
                    return excel.run_script(script_name, payload)
                except BadPayload as err:
                    raise RequestError(400, str(err)) from None

        import anyio

        return JSONResponse(await anyio.to_thread.run_sync(run))

    @app.get("/xlwings/custom-scripts-meta")
    async def custom_scripts_meta():
        return excel.scripts_meta()

    @app.get("/xlwings/custom-functions-meta")
    async def custom_functions_meta():
        return excel.functions_meta()

    @app.get("/xlwings/custom-functions-code")
    async def custom_functions_code():
        try:
            js = excel.functions_code()
        except FileNotFoundError:
            js = _fallback_functions_js(version, "/xlwings/custom-functions-call", excel.function_names())
        return Response(js, media_type="text/javascript")

    @app.post("/xlwings/custom-functions-call")
    async def custom_functions_call(request: Request):
        data = await read_json(request)
        if not isinstance(data, dict) or "func_name" not in data or "args" not in data:
            raise RequestError(400, "a custom-functions call needs 'func_name' and 'args'")
        if not excel.has_function(str(data["func_name"])):
            raise RequestError(404, f"no custom function {data['func_name']!r}")
        data.setdefault("client", "Office.js")
        data.setdefault("runtime", "1.1")
        check_version(data, version)

        def run():
            with run_lock:
                return excel.call_function(data)

        import anyio

        return {"result": await anyio.to_thread.run_sync(run)}

    return app


def _too_big(settings: ServerSettings) -> str:
    return (
        f"request larger than {settings.max_bytes // (1024 * 1024)} MiB (--max-request-mb): exclude sheets "
        "the fit does not need (INCLUDE/EXCLUDE in xlwings.conf)"
    )
