"""`xlcf serve`: run the xlwings Server–compatible app so Excel (VBA RunServerPython, Office Scripts, the
Office.js add-in it serves) can fit on this machine — e.g. the one with the GPU."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the macros and UDFs to Excel over HTTP (xlwings Server routes) and an Office.js add-in",
        description="Serve POST /xlwings/custom-scripts-call/{main,fit,step,step5,reset,train}, the "
        "/xlwings/custom-functions-* routes, and an Office.js add-in (GET /manifest.xml, "
        "/taskpane.html). Fits run in worker processes under --time-limit. Needs an xlwings license "
        "key in the environment (XLWINGS_LICENSE_KEY=noncommercial for non-commercial use); xlcf "
        "never sets one.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1; anything else requires --token)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--token",
        default=None,
        help="shared secret every request must send in the Authorization header "
        "(xlwings.conf AUTH, or the task pane's token field); required when not on loopback. "
        "Also read from XLCF_SERVER_TOKEN",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder that ratings paths named on a sheet must lie in (default: none allowed)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=25.0,
        help="seconds a call may run; a fit stops itself before, a worker past it is replaced "
        "(VBA's client times out at 30 s; default 25)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="fit worker processes, each warm with torch imported (default 1)"
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=8,
        help="fits that may wait for a worker; more get 503 with Retry-After (default 8)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's choice)")
    parser.add_argument(
        "--certfile",
        type=Path,
        default=None,
        help="TLS certificate (PEM): serve HTTPS, which Office needs for the add-in",
    )
    parser.add_argument("--keyfile", type=Path, default=None, help="TLS private key (PEM) for --certfile")
    parser.add_argument("--max-request-mb", type=float, default=16.0, help="largest request body (default 16)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(func=run)


def run(args) -> int:
    import logging
    import os

    from xlcf.server.app import ServerSettings, serve

    token = args.token or os.environ.get("XLCF_SERVER_TOKEN") or None
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        token=token,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        time_limit=args.time_limit,
        max_bytes=int(args.max_request_mb * 1024 * 1024),
        workers=args.workers,
        queue=args.queue,
        threads=args.threads,
        certfile=args.certfile.resolve() if args.certfile else None,
        keyfile=args.keyfile.resolve() if args.keyfile else None,
    ).check()
    logging.basicConfig(level=args.log_level.upper(), format="xlcf serve: %(levelname)s %(message)s")
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"{settings.scheme}://{host}:{args.port}"
    print(
        f"xlcf serve: {url}  (scripts: /xlwings/custom-scripts-call/<name>; add-in: {url}/manifest.xml; "
        f"token {'required' if token else 'off (loopback only)'}; time cap {args.time_limit:g} s; "
        f"{args.workers} worker(s), queue {args.queue})",
        flush=True,
    )
    serve(settings, log_level=args.log_level)
    return 0
