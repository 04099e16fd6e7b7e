"""What ``xlcf serve`` checks before any work is done, and what it strips from every answer.

- **Token**: compared in constant time (``hmac.compare_digest``) with the ``Authorization`` header, raw (as
  xlwings' ``AUTH`` setting sends it) or ``Bearer <token>``.
- **Tokenless loopback mode**: a web page the user visits can reach ``127.0.0.1`` too, so without a token the
  server answers only requests whose ``Host`` is a loopback name (no DNS rebinding) and refuses any request that
  carries an ``Origin`` other than its own (no CORS: only its own task pane may call it from a browser). The one
  exception is the functions' metadata, a public read-only file that Excel on the web reads from its own origin.
- **Payloads**: valid JSON of the wrong shape is refused with one line naming the first bad place
  (``sheets[2].values[0]``), before xlwings or a worker sees it (pydantic models of the xlwings client payload).
- **Answers**: never an absolute server path; :func:`scrub_paths` replaces the server's own folders in every
  string that goes back to a client.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from xlcf.errors import BadPayload

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_ERROR_CHARS = 200  # of a client's value in an answer

# Paths the browser may fetch without a token: the add-in's own files and the function metadata Office loads
# itself (neither carries anything secret; every call that computes needs the token).
PUBLIC_GET_PATHS = frozenset(
    {
        "/manifest.xml",
        "/taskpane.html",
        "/taskpane.js",
        "/taskpane.css",
        "/functions.js",
        "/icon-16.png",
        "/icon-32.png",
        "/icon-64.png",
        "/icon-80.png",
        "/xlwings/custom-functions-meta",
        "/xlwings/custom-functions-code",
    }
)


# ---------------------------------------------------------------------------------------------------- requests


def token_matches(expected: str, header: str | None) -> bool:
    sent = (header or "").strip()
    if sent.lower().startswith("bearer "):
        sent = sent[7:].strip()
    return hmac.compare_digest(sent.encode(), expected.encode())


def host_name(host_header: str) -> str:
    """``127.0.0.1:8000`` -> ``127.0.0.1``; ``[::1]:8000`` -> ``::1``; lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def loopback_refusal(headers, scheme: str, path: str, method: str) -> str | None:
    """Why a request to the tokenless server is refused, or None. ``headers``: case-insensitive mapping."""
    host = headers.get("host")
    if not host:
        return "the request has no Host header"
    if host_name(host) not in LOOPBACK_NAMES:
        return (
            f"Host {_short(host)} is not a loopback name; this server runs without a token and answers "
            "127.0.0.1, localhost and [::1] only (start it with --token to serve other names)"
        )
    origin = headers.get("origin")
    public = method in ("GET", "HEAD") and path in PUBLIC_GET_PATHS
    if origin is not None and not public and not same_origin(origin, scheme, host):
        return (
            f"cross-origin request from {_short(origin)} refused: without a token only this server's own "
            "pages may call it from a browser"
        )
    if method not in ("GET", "HEAD") and headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request refused: without a token only this server's own pages may call it from a browser"
    return None


def same_origin(origin: str, scheme: str, host_header: str) -> bool:
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme.lower() != scheme.lower() or not parts.netloc:
        return False
    return _with_port(parts.netloc, scheme) == _with_port(host_header, scheme)


def _with_port(netloc: str, scheme: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        has_port = "]:" in netloc
    else:
        has_port = ":" in netloc
    return netloc if has_port else f"{netloc}:{443 if scheme == 'https' else 80}"


# Excel on the web fetches the functions' metadata (the manifest's Functions.Metadata.Url) itself, from its own
# origin, and reads it only with CORS; that one public, read-only file is shared with Office's origins, nothing
# else with anyone.
CORS_METADATA_PATH = "/xlwings/custom-functions-meta"
OFFICE_ORIGIN_SUFFIXES = (
    ".officeapps.live.com",
    ".office.com",
    ".cloud.microsoft",
    ".microsoft365.com",
    ".officeppe.com",
    ".sharepoint.com",
)


def office_origin(origin: str | None) -> bool:
    """True for an https origin of Office on the web (``https://excel.officeapps.live.com``...)."""
    if not origin:
        return False
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and any(host.endswith(suffix) for suffix in OFFICE_ORIGIN_SUFFIXES)


def is_json_content(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def _short(value: str, limit: int = 60) -> str:
    text = str(value).replace("\r", " ").replace("\n", " ")
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# ---------------------------------------------------------------------------------------------------- payloads


def parse_json(body: bytes):
    """JSON without NaN/Infinity (Python's json accepts them; no client sends them and no cell may hold them)."""

    def refuse(constant: str):
        raise BadPayload(f"the request body holds {constant}, which is not JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except BadPayload:
        raise
    except (ValueError, RecursionError):
        raise BadPayload("the request body is not valid JSON") from None


_Cell = StrictBool | StrictInt | StrictFloat | StrictStr | None
_ADDRESS = re.compile(
    r"^\$?[A-Za-z]{1,3}\$?\d{1,7}(:\$?[A-Za-z]{1,3}\$?\d{1,7})?"
    r"(,\$?[A-Za-z]{1,3}\$?\d{1,7}(:\$?[A-Za-z]{1,3}\$?\d{1,7})?)*$"
)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _BookInfo(_Loose):
    name: StrictStr
    active_sheet_index: StrictInt
    selection: StrictStr | None = None


class _Name(_Loose):
    name: StrictStr
    sheet_index: StrictInt
    address: StrictStr
    book_scope: StrictBool
    scope_sheet_name: StrictStr | None = None
    scope_sheet_index: StrictInt | None = None


class _Sheet(_Loose):
    name: StrictStr
    values: list[list[_Cell]]
    pictures: list[dict[str, Any]] = []
    tables: list[dict[str, Any]] = []


class _BookPayload(_Loose):
    client: StrictStr
    version: StrictStr
    book: _BookInfo
    names: list[_Name] = []
    sheets: list[_Sheet]


_Arg = _Cell | list[list[_Cell]] | list[_Cell]


class _FunctionCall(_Loose):
    func_name: StrictStr
    args: list[_Arg]
    version: StrictStr
    caller_address: StrictStr | None = None
    client: StrictStr = "Office.js"
    runtime: StrictStr | None = None
    culture_info_name: StrictStr | None = None
    date_format: StrictStr | None = None


def first_error(err: ValidationError) -> str:
    """Where a pydantic validation failed first, as a path (``sheets[0].formulas``) and the reason."""
    first = err.errors()[0]
    place = ""
    for part in first.get("loc", ()):
        place += f"[{part}]" if isinstance(part, int) else (f".{part}" if place else str(part))
    return f"{place or 'the body'}: {first.get('msg', 'invalid')}"


def validate_book_payload(payload) -> dict:
    """The payload of an xlwings client (``client``, ``version``, ``book``, ``names``, ``sheets``), checked all the
    way down; BadPayload names the first bad place. Returns the payload itself (unchanged but for a missing
    ``names`` list)."""
    if not isinstance(payload, dict):
        raise BadPayload("the request body must be a JSON object (an xlwings book payload)")
    for key in ("client", "version", "book", "sheets"):
        if key not in payload:
            raise BadPayload(f"the book payload has no {key!r} key: is this an xlwings client?")
    try:
        model = _BookPayload.model_validate(payload)
    except ValidationError as err:
        raise BadPayload(f"the book payload is malformed at {first_error(err)}") from None
    count = len(model.sheets)
    if count == 0:
        raise BadPayload("the book payload has no sheets")
    if not 0 <= model.book.active_sheet_index < count:
        raise BadPayload(
            f"the book payload's active_sheet_index {model.book.active_sheet_index} is not one of its {count} sheets"
        )
    for i, sheet in enumerate(model.sheets):
        widths = {len(row) for row in sheet.values}
        if len(widths) > 1:
            raise BadPayload(f"the book payload is malformed at sheets[{i}].values: rows of different lengths")
        for r, row in enumerate(sheet.values):
            for c, value in enumerate(row):
                if isinstance(value, float) and not math.isfinite(value):
                    raise BadPayload(f"the book payload is malformed at sheets[{i}].values[{r}][{c}]: not finite")
    for i, name in enumerate(model.names):
        if not 0 <= name.sheet_index < count:
            raise BadPayload(f"the book payload is malformed at names[{i}].sheet_index: no such sheet")
        if not _ADDRESS.match(name.address.strip()):
            raise BadPayload(f"the book payload is malformed at names[{i}].address: not a cell address")
    payload.setdefault("names", [])
    return payload


def validate_function_call(data) -> dict:
    """A custom-functions call (``func_name``, ``args``, ``version``, ...); BadPayload names the first bad place."""
    if not isinstance(data, dict) or "func_name" not in data or "args" not in data:
        raise BadPayload("a custom-functions call needs 'func_name' and 'args'")
    data.setdefault("client", "Office.js")
    data.setdefault("runtime", "1.1")
    try:
        _FunctionCall.model_validate(data)
    except ValidationError as err:
        raise BadPayload(f"the custom-functions call is malformed at {first_error(err)}") from None
    return data


# ---------------------------------------------------------------------------------------------------- answers


def server_paths(data_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(absolute folder, what to show instead), longest first: the data folder, the working folder, the
    installation and the home folder. Folders of 4 characters or fewer (``/``, ``/srv``) are left alone."""
    import xlcf

    folders: list[tuple[str, str]] = []
    if data_dir:
        folders.append((str(Path(data_dir).resolve()), "<data-dir>"))
        folders.append((str(data_dir), "<data-dir>"))
    for folder in (os.getcwd(), str(Path(xlcf.__file__).resolve().parent.parent), sys.prefix, str(Path.home())):
        folders.append((folder, "<server>"))
    unique = {f.rstrip("/\\"): label for f, label in folders if len(f.rstrip("/\\")) > 4}
    return sorted(unique.items(), key=lambda item: -len(item[0]))


def scrub_paths(value, folders: list[tuple[str, str]]):
    """``value`` (JSON-like) with every server folder in its strings replaced (lists/dicts walked)."""
    if isinstance(value, str):
        for folder, label in folders:
            if folder in value:
                value = value.replace(folder, label)
        return value
    if isinstance(value, list):
        return [scrub_paths(v, folders) for v in value]
    if isinstance(value, dict):
        return {k: scrub_paths(v, folders) for k, v in value.items()}
    return value
