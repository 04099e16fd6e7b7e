"""``xlcf serve``: an xlwings Server–compatible FastAPI app, so Excel on any OS (VBA ``RunServerPython``,
Office Scripts, the Office.js add-in it serves itself) can run the fit on the machine that has the GPU.

Routes follow xlwings Server's own, so xlwings' clients work unchanged:

- ``POST /xlwings/custom-scripts-call/{name}``: the book payload in, ``book.json()`` (the actions) out.
  ``name`` is one of :data:`xlcf.excel.macros.SCRIPTS` (main, fit, solve, step, step5, reset, train).
- ``GET /xlwings/custom-scripts-meta``, ``GET /xlwings/custom-functions-meta``,
  ``GET /xlwings/custom-functions-code``, ``POST /xlwings/custom-functions-call``: the UDFs for Office.js
  (function names in any letter case, as Excel matches them).
- ``POST /xlcf/solve-sheet``: the task pane's "Solve this sheet" — the active sheet's Solver model solved from
  the formulas, values and names Office.js gives (:mod:`xlcf.server.sheet_solve`); the answer is the solved
  variable cells, the objective before and after, and the downstream values.
- ``GET /`` (what this server is, and its workers), and the add-in: ``GET /manifest.xml``, ``/taskpane.html``
  (:mod:`xlcf.server.addin`).

Work: every script, every solve and every training function (``CF_FIT``, ``CF_RECOMMEND``) runs in a worker process of
:class:`xlcf.server.pool.WorkerPool` under the time cap; a worker that overruns it is killed and replaced. The
cheap functions (``CF_RMSE``, ``CF_PREDICT``), the meta routes and ``GET /`` run in the server process and never
wait behind a fit. A full queue answers 503 with ``Retry-After``.

The xlwings side is done by xlwings' own helpers on top of the remote engine, which needs an xlwings license key in
the environment (``XLWINGS_LICENSE_KEY``; ``noncommercial`` for non-commercial use); xlcf never sets one. They are
wrapped by :class:`xlcf.excel.remote.RemoteExcel`, so this module itself never imports xlwings.

Security (:mod:`xlcf.server.security`): loopback by default, where the ``Host`` must be a loopback name and a
browser request from another origin is refused; any other bind address needs a token; bodies are capped and
checked all the way down before any work; ratings paths named on a sheet are confined to ``--data-dir``;
answers carry one line of text, never file contents, tracebacks or the server's paths.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import MutableHeaders

from xlcf.errors import BadPayload, ConfigError
from xlcf.server import security
from xlcf.server.pool import PoolBusy, PoolTimeout, WorkerFailed, WorkerPool
from xlcf.server.worker import WorkerConfig, soft_cap

logger = logging.getLogger("xlcf.server")

LOOPBACK_HOSTS = security.LOOPBACK_NAMES
DEFAULT_TIME_LIMIT = 25.0  # VBA's RunServerPython times out after 30 s by default; leave room for the reply
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_QUEUE = 8
SHUTDOWN_GRACE = 3  # seconds uvicorn waits for open requests after SIGTERM (the workers are stopped at once)
INLINE_BYTES = 64 * 1024  # bodies up to this size are parsed (and cheap functions run) on the event loop
SOLVE_PATH = "/xlcf/solve-sheet"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    data_dir: Path | None = None
    time_limit: float = DEFAULT_TIME_LIMIT
    max_bytes: int = DEFAULT_MAX_BYTES
    workers: int = 1
    queue: int = DEFAULT_QUEUE
    certfile: Path | None = None
    keyfile: Path | None = None
    threads: int | None = None  # torch threads per worker

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

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
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"--workers must be between 1 and 64, got {self.workers}")
        if not 0 <= self.queue <= 10_000:
            raise ConfigError(f"--queue must be between 0 and 10000, got {self.queue}")
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("HTTPS needs both --certfile and --keyfile")
        for option, path in (("--certfile", self.certfile), ("--keyfile", self.keyfile)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{option} {path} is not a file")
        return self


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def check_version(payload: dict, version: str) -> None:
    """xlwings' clients and the server must speak the same xlwings version (the action set differs)."""
    client_version = payload.get("version")
    if client_version != version:
        raise RequestError(
            400,
            f"xlwings version mismatch: the client sends {str(client_version)[:40]!r}, this "
            f"server runs xlwings {version}. Use the matching xlwings VBA module/add-in "
            f"(pip install xlwings=={str(client_version)[:40]} on the server, or update the "
            "client)",
        )


def validate_payload(payload) -> dict:
    """The book payload of an xlwings client, checked all the way down (RequestError 400 otherwise)."""
    try:
        return security.validate_book_payload(payload)
    except BadPayload as err:
        raise RequestError(400, str(err)) from None


def create_app(settings: ServerSettings | None = None, *, pool: WorkerPool | None = None):
    """The FastAPI application (``uvicorn.run(create_app(...))``). Its workers start with the app (lifespan)."""
    import anyio

    from xlcf.excel.remote import RemoteExcel
    from xlcf.server import addin

    settings = (settings or ServerSettings()).check()
    data_dir = str(settings.data_dir) if settings.data_dir else None
    fit_seconds = soft_cap(settings.time_limit)
    excel = RemoteExcel(time_limit=fit_seconds, data_dir=data_dir, server=True)
    if pool is None:
        pool = WorkerPool(
            WorkerConfig(fit_seconds=fit_seconds, data_dir=data_dir, threads=settings.threads),
            size=settings.workers,
            queue_limit=settings.queue,
            time_limit=settings.time_limit,
        )
    folders = security.server_paths(settings.data_dir)
    version = excel.version
    fit_threads = anyio.CapacityLimiter(settings.workers + settings.queue)
    cheap_threads = anyio.CapacityLimiter(8)

    @asynccontextmanager
    async def lifespan(_app):
        pool.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(pool.close)

    app = FastAPI(title="xlcf", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.scripts = excel.scripts
    app.state.pool = pool

    app.add_middleware(Guard, settings=settings)

    async def read_json(request: Request, validate):
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_bytes:  # chunked uploads have no Content-Length
                raise RequestError(413, _too_big(settings, request.url.path))

        def parse():
            try:
                return validate(security.parse_json(bytes(body)))
            except BadPayload as err:
                raise RequestError(400, str(err)) from None

        if len(body) <= INLINE_BYTES:
            return parse()
        return await anyio.to_thread.run_sync(parse, limiter=cheap_threads)  # 16 MB take a while: off the loop

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, err: RequestError):
        return PlainTextResponse(f"xlcf serve: {err.message}", status_code=err.status, headers=err.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception):  # never a traceback, a path or file contents
        logger.exception("unexpected error")
        return PlainTextResponse(
            f"xlcf serve: internal error ({type(err).__name__}); see the server log", status_code=500
        )

    async def in_worker(kind: str, name: str, data: dict, arrived: float):
        """(status, value) of a job in a worker; RequestError for a full queue, a dead worker, a bug."""
        try:
            pool.admit()
        except PoolBusy as busy:
            status = pool.status()
            raise RequestError(
                503,
                f"busy: {status.busy} fit(s) running and {status.queued} waiting; try again in {busy.retry_after} s",
                {"Retry-After": str(busy.retry_after)},
            ) from None
        except WorkerFailed as err:
            raise RequestError(503, str(err), {"Retry-After": "5"}) from None
        try:
            status, value = await anyio.to_thread.run_sync(
                pool.run, kind, name, data, arrived, limiter=fit_threads, abandon_on_cancel=True
            )
        except WorkerFailed as err:
            raise RequestError(503, str(err), {"Retry-After": "5"}) from None
        if status == "bad":
            raise RequestError(400, value)
        if status == "refused":  # a well-formed request for a model that cannot be solved
            raise RequestError(422, value)
        if status != "ok":
            raise RequestError(500, f"internal error ({value}); see the server log")
        return security.scrub_paths(value, folders)

    @app.get("/")
    async def root():
        return {
            "service": "xlcf",
            "xlwings": version,
            "scripts": sorted(excel.script_names()),
            "functions": [name.upper() for name in excel.function_names()],
            "time_limit": settings.time_limit,
            "workers": asdict(pool.status()),
        }

    @app.post("/xlwings/custom-scripts-call/{script_name}")
    async def custom_scripts_call(script_name: str, request: Request):
        names = {name.casefold(): name for name in excel.script_names()}
        name = names.get(script_name.casefold())
        if name is None:
            raise RequestError(404, f"no script {script_name[:40]!r}; available: {', '.join(excel.script_names())}")
        payload = await read_json(request, security.validate_book_payload)
        check_version(payload, version)
        try:
            return JSONResponse(await in_worker("script", name, payload, request.state.arrived))
        except PoolTimeout:
            raise RequestError(
                504,
                f"{name} ran past the server's {settings.time_limit:g} s time cap and was "
                "stopped; nothing was written (ask for fewer epochs, or start xlcf serve with a "
                "larger --time-limit)",
            ) from None

    @app.post(SOLVE_PATH)
    async def solve_sheet(request: Request):
        from xlcf.server.sheet_solve import validate_solve_payload

        payload = await read_json(request, validate_solve_payload)
        try:
            return JSONResponse(await in_worker("solve", "solve", payload, request.state.arrived))
        except PoolTimeout:
            raise RequestError(
                504,
                f"the solve ran past the server's {settings.time_limit:g} s time cap and was stopped; nothing was "
                "written (start xlcf serve with a larger --time-limit, or run `xlcf solve BOOK` on the saved file)",
            ) from None

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
        except FileNotFoundError:  # this xlwings installation lacks its template: the add-in's own glue
            js = addin.functions_js(version, excel.function_names())
        return Response(js, media_type="text/javascript")

    @app.post("/xlwings/custom-functions-call")
    async def custom_functions_call(request: Request):
        data = await read_json(request, security.validate_function_call)
        name = excel.function_name(data["func_name"])
        if name is None:
            raise RequestError(
                404,
                f"no custom function {str(data['func_name'])[:40]!r}; available: "
                f"{', '.join(n.upper() for n in excel.function_names())}",
            )
        data["func_name"] = name
        check_version(data, version)
        if name in excel.training_functions:
            try:
                result = await in_worker("function", name, data, request.state.arrived)
            except PoolTimeout:
                result = [
                    [
                        f"{name.upper()}: stopped at the server's {settings.time_limit:g} s time cap; ask for "
                        "fewer epochs, or fit with the Fit button"
                    ]
                ]
            return {"result": result}

        def call():
            try:
                return excel.call_direct(data)
            except BadPayload as err:
                raise RequestError(400, str(err)) from None

        # The cheap functions are numpy one-liners: on the event loop unless the arguments are large.
        result = (
            call()
            if _size(data["args"]) <= INLINE_CELLS
            else await anyio.to_thread.run_sync(call, limiter=cheap_threads)
        )
        return {"result": security.scrub_paths(result, folders)}

    app.include_router(addin.router(version=version, scripts=excel.script_names(), functions=excel.function_names()))
    return app


INLINE_CELLS = 10_000


def _size(args: list) -> int:
    """Cells in a call's arguments (rows of lists counted by length)."""
    return sum(
        sum(len(row) if isinstance(row, list) else 1 for row in arg) if isinstance(arg, list) else 1 for arg in args
    )


class Guard:
    """ASGI middleware (cheaper than FastAPI's ``@app.middleware``, which costs a task per request): refuses a
    request before any work (:func:`_refusal`), stamps its arrival (``request.state.arrived``, the status cell's
    end-to-end time) and adds ``Server-Timing: app;dur=<ms>`` (the benchmark reads it) to every answer."""

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = time.time()
        request = Request(scope)
        origin = request.headers.get("origin")
        share = (
            scope["path"] == security.CORS_METADATA_PATH
            and request.method in ("GET", "HEAD")
            and security.office_origin(origin)
        )

        async def send_stamped(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", f"app;dur={1000 * (time.perf_counter() - started):.1f}")
                headers.append("X-Content-Type-Options", "nosniff")
                if share:  # Excel on the web reads the functions' metadata from its own origin
                    headers.append("Access-Control-Allow-Origin", origin)
                    headers.append("Vary", "Origin")
            await send(message)

        refusal = _refusal(self.settings, request)
        if refusal is not None:
            return await refusal(scope, receive, send_stamped)
        return await self.app(scope, receive, send_stamped)


def _refusal(settings: ServerSettings, request: Request) -> Response | None:
    """The answer to a request refused before any work (wrong origin/host, token, size, content type)."""
    path, method = request.url.path, request.method
    if not settings.token:
        why = security.loopback_refusal(request.headers, settings.scheme, path, method)
        if why:
            return PlainTextResponse(f"xlcf serve: {why}", status_code=403)
    elif not (method in ("GET", "HEAD") and path in security.PUBLIC_GET_PATHS) and not security.token_matches(
        settings.token, request.headers.get("authorization")
    ):
        return PlainTextResponse(
            "xlcf serve: missing or wrong token (set AUTH in xlwings.conf, or the token field "
            "of the task pane, to the token given to `xlcf serve --token`)",
            status_code=401,
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > settings.max_bytes
        except ValueError:
            return PlainTextResponse("xlcf serve: bad Content-Length", status_code=400)
        if too_big:
            return PlainTextResponse(f"xlcf serve: {_too_big(settings, path)}", status_code=413)
    if method == "POST" and not security.is_json_content(request.headers.get("content-type")):
        return PlainTextResponse(
            "xlcf serve: send the payload as JSON (Content-Type: application/json)", status_code=415
        )
    return None


def _too_big(settings: ServerSettings, path: str = "") -> str:
    limit = f"request larger than {settings.max_bytes // (1024 * 1024)} MiB (--max-request-mb)"
    if path == SOLVE_PATH:  # the pane sends every sheet: the saved file is the way for a large workbook
        return f"{limit}: save the workbook and run `xlcf solve BOOK`, or start xlcf serve with a larger limit"
    return f"{limit}: exclude sheets the fit does not need (INCLUDE/EXCLUDE in xlwings.conf)"


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM. A signal stops the workers at once (a running fit ends
    with 503), so the server exits within a few seconds even during a fit."""
    import uvicorn

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        ssl_certfile=str(settings.certfile) if settings.certfile else None,
        ssl_keyfile=str(settings.keyfile) if settings.keyfile else None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # In a thread: the signal handler must not wait on the pool's lock.
            threading.Thread(target=app.state.pool.close, daemon=True).start()
            super().handle_exit(sig, frame)

    Server(config).run()
