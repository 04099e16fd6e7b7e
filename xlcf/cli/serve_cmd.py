"""`xlcf serve`: run the xlwings Server–compatible app so Excel (VBA RunServerPython, Office Scripts,
Office.js) can fit on this machine — e.g. the one with the GPU."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the macros and UDFs to Excel over HTTP (xlwings Server routes)",
        description="Serve POST /xlwings/custom-scripts-call/{main,fit,step,step5,reset,train} and the "
        "/xlwings/custom-functions-* routes. Needs an xlwings license key in the environment "
        "(XLWINGS_LICENSE_KEY=noncommercial for non-commercial use); xlcf never sets one.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1; anything else requires --token)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--token",
        default=None,
        help="shared secret every request must send in the Authorization header "
        "(xlwings.conf AUTH); required when not on loopback",
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
        help="seconds a fit may run per request (VBA's client times out at 30 s; default 25)",
    )
    parser.add_argument("--max-request-mb", type=float, default=16.0, help="largest request body (default 16)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(func=run)


def run(args) -> int:
    import os

    from xlcf.server.app import ServerSettings, create_app

    token = args.token or os.environ.get("XLCF_SERVER_TOKEN") or None
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        token=token,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        time_limit=args.time_limit,
        max_bytes=int(args.max_request_mb * 1024 * 1024),
    ).check()
    app = create_app(settings)
    import uvicorn

    print(
        f"xlcf serve: http://{args.host}:{args.port}  (scripts: /xlwings/custom-scripts-call/<name>; "
        f"token {'required' if token else 'off (loopback only)'}; fit time cap {args.time_limit:g} s)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
