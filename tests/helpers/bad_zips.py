"""Zip files that real tools produce but xlcf must refuse cleanly: encrypted members, compression methods it
cannot read (99 = WinZip AES), corrupt deflate data, and a small zip that expands to hundreds of megabytes.

Built byte by byte (local headers, data, central directory) so that each defect is exactly the one named."""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    name: str
    payload: bytes  # the stored bytes (already compressed for method 8)
    method: int
    crc: int
    size: int  # uncompressed size
    flags: int = 0


def deflated(name: str, data: bytes, **kw) -> Entry:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return Entry(name, c.compress(data) + c.flush(), zipfile.ZIP_DEFLATED, zlib.crc32(data), len(data), **kw)


def write_zip(path: Path, entries: list[Entry]) -> Path:
    """A plain (no zip64) archive of ``entries`` exactly as given."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e.name.encode()
        offset = len(out)
        out += (
            struct.pack(
                "<4s5H3L2H", b"PK\x03\x04", 20, e.flags, e.method, 0, 0x21, e.crc, len(e.payload), e.size, len(name), 0
            )
            + name
            + e.payload
        )
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                e.flags,
                e.method,
                0,
                0x21,
                e.crc,
                len(e.payload),
                e.size,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


def zeros_entry(name: str, megabytes: int) -> Entry:
    """``megabytes`` MB of ASCII zeros, deflated (about 1,000:1) without compressing them all: after a full
    flush the compressor restarts, so one compressed megabyte repeated is a valid stream of many."""
    chunk = b"0" * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(chunk, crc)
    return Entry(name, block * megabytes + tail, zipfile.ZIP_DEFLATED, crc, megabytes << 20)


def encrypted(entry: Entry) -> Entry:
    """The same member flagged as encrypted (traditional PKWARE encryption bit)."""
    return Entry(entry.name, entry.payload, entry.method, entry.crc, entry.size, entry.flags | 0x1)


def method(entry: Entry, number: int) -> Entry:
    return Entry(entry.name, entry.payload, number, entry.crc, entry.size, entry.flags)


def corrupt(entry: Entry) -> Entry:
    """Deflate data whose first block has an invalid block type (3): zlib refuses it."""
    return Entry(entry.name, b"\xff" * 8 + entry.payload[8:], entry.method, entry.crc, entry.size, entry.flags)


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}
