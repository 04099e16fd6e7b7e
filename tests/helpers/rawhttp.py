"""A minimal asyncio HTTP/1.1 client for load tests: one connection per request, ``Connection: close``.

httpx's async client spends a few milliseconds of CPU per request, so with 200 requests at once on a small
machine the test would measure the client rather than the server; this one spends a fraction of that."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # connect to last byte, as the client saw it

    def json(self):
        return json.loads(self.body)


async def request(
    host: str, port: int, method: str, path: str, payload=None, headers: dict | None = None, timeout: float = 120.0
) -> Answer:
    begun = time.monotonic()
    body = b"" if payload is None else json.dumps(payload).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", f"Content-Length: {len(body)}"]
    if payload is not None:
        lines.append("Content-Type: application/json")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)  # until the server closes
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    if "chunked" in parsed.get("transfer-encoding", ""):
        rest = _unchunk(rest)
    return Answer(int(status_line.split()[1]), parsed, rest, time.monotonic() - begun)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
