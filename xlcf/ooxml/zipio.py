"""Raw zip records: read a package's members and write them back with every unchanged member's stored record
(compressed bytes, name, timestamp, attributes) copied byte for byte, in the original order."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from xlcf.errors import WorkbookError

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass
class ZipContents:
    """Every member of a zip as read: infos in order, content by name, the archive comment, and the raw local
    records (None when the archive uses something the raw writer does not reproduce)."""

    infos: list[zipfile.ZipInfo]
    content: dict[str, bytes]
    comment: bytes
    raw: dict[str, bytes] | None


def read_zip(path: Path, data: bytes) -> ZipContents:
    """Read every member of a package's bytes; WorkbookError naming ``path`` when it is not a readable zip."""
    p = path
    infos: list[zipfile.ZipInfo] = []
    content: dict[str, bytes] = {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        if data[:4] == b"PK\x03\x04":
            raise WorkbookError(
                f"{p}: the zip is truncated or damaged (no central directory); restore it from a backup"
            ) from None
        raise WorkbookError(f"{p}: is not a workbook (.xlsx/.xlsm are zip packages; this is not a zip)") from None
    with zf:
        comment = zf.comment
        for info in zf.infolist():
            try:
                content[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
                raise WorkbookError(f"{p}: member {info.filename} is truncated or damaged ({err})") from None
            except Exception as err:  # zlib.error and friends
                raise WorkbookError(f"{p}: member {info.filename} cannot be read ({err})") from None
            infos.append(info)
    return ZipContents(infos, content, comment, raw_records(data, infos))


_LOCAL_SIG, _CENTRAL_SIG, _END_SIG, _DESCRIPTOR_SIG = 0x04034B50, 0x02014B50, 0x06054B50, 0x08074B50
_LIMIT32 = 0xFFFFFFFF


def _has_zip64_extra(extra: bytes) -> bool:
    i = 0
    while i + 4 <= len(extra):
        xid, size = struct.unpack("<HH", extra[i : i + 4])
        if xid == 1:
            return True
        i += 4 + size
    return False


def raw_records(data: bytes, infos: list[zipfile.ZipInfo]) -> dict[str, bytes] | None:
    """Each member's complete local record (header, name, extra, compressed data, data descriptor) as stored, so
    unchanged members are copied without recompression. None when the archive uses anything this simple writer
    does not reproduce (zip64, encryption, duplicate names): saving then re-compresses with zipfile instead."""
    records: dict[str, bytes] = {}
    if len(infos) >= 0xFFFF or len(data) >= _LIMIT32:
        return None
    for info in infos:
        off = info.header_offset
        if info.filename in records or info.flag_bits & 0x1 or _has_zip64_extra(info.extra):
            return None
        if data[off : off + 4] != struct.pack("<I", _LOCAL_SIG):
            return None
        name_len, extra_len = struct.unpack("<HH", data[off + 26 : off + 30])
        if _has_zip64_extra(data[off + 30 + name_len : off + 30 + name_len + extra_len]):
            return None
        end = off + 30 + name_len + extra_len + info.compress_size
        if info.flag_bits & 0x8:  # data descriptor after the data, with or without its signature
            end += 16 if data[end : end + 4] == struct.pack("<I", _DESCRIPTOR_SIG) else 12
        if end > len(data):
            return None
        records[info.filename] = data[off:end]
    return records


def _dos_time(date_time) -> tuple[int, int]:
    y, mo, d, h, mi, sec = date_time
    return (h << 11) | (mi << 5) | (sec // 2), (max(y, 1980) - 1980) << 9 | (mo << 5) | d


def write_raw_zip(entries, comment: bytes) -> bytes | None:
    """Write a zip from (name, raw local record | None, new content | None, original ZipInfo | None) in order:
    raw records are copied byte for byte; new content is deflated (or stored, like the original member)."""
    out = bytearray()
    central = bytearray()
    for name, record, content, info in entries:
        offset = len(out)
        flags_utf8 = 0x800 if not name.isascii() else 0
        if record is not None and info is not None:
            out += record
            flags, method, crc = info.flag_bits, info.compress_type, info.CRC
            csize, usize = info.compress_size, info.file_size
            version_needed, extra = info.extract_version, info.extra
            made_by = (info.create_system << 8) | info.create_version
            date_time, int_attr, ext_attr, file_comment = (
                info.date_time,
                info.internal_attr,
                info.external_attr,
                info.comment,
            )
            name_bytes = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        else:
            method = (
                info.compress_type
                if info is not None and info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
                else zipfile.ZIP_DEFLATED
            )
            if method == zipfile.ZIP_DEFLATED:
                packer = zlib.compressobj(6, zlib.DEFLATED, -15)
                data = packer.compress(content) + packer.flush()
            else:
                data = content
            crc, csize, usize = zlib.crc32(content) & _LIMIT32, len(data), len(content)
            flags = flags_utf8
            version_needed = 20 if method == zipfile.ZIP_DEFLATED else 10
            date_time = info.date_time if info is not None else (1980, 1, 1, 0, 0, 0)
            made_by = ((info.create_system << 8) | info.create_version) if info is not None else 20
            int_attr = info.internal_attr if info is not None else 0
            ext_attr = info.external_attr if info is not None else 0
            file_comment = info.comment if info is not None else b""
            extra = b""
            name_bytes = name.encode("utf-8")
            dos_t, dos_d = _dos_time(date_time)
            out += (
                struct.pack(
                    "<IHHHHHIIIHH",
                    _LOCAL_SIG,
                    version_needed,
                    flags,
                    method,
                    dos_t,
                    dos_d,
                    crc,
                    csize,
                    usize,
                    len(name_bytes),
                    0,
                )
                + name_bytes
                + data
            )
        if len(out) >= _LIMIT32:
            return None
        dos_t, dos_d = _dos_time(date_time)
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                _CENTRAL_SIG,
                made_by,
                version_needed,
                flags,
                method,
                dos_t,
                dos_d,
                crc,
                csize,
                usize,
                len(name_bytes),
                len(extra),
                len(file_comment),
                0,
                int_attr,
                ext_attr,
                offset,
            )
            + name_bytes
            + extra
            + file_comment
        )
    cd_offset = len(out)
    out += central
    out += (
        struct.pack("<IHHHHIIH", _END_SIG, 0, 0, len(entries), len(entries), len(central), cd_offset, len(comment))
        + comment
    )
    return bytes(out)


def copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A ZipInfo with the same name, timestamp, method and attributes (zip64 extra stripped; zipfile re-adds it)."""
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = info.compress_type
    new.comment = info.comment
    new.external_attr = info.external_attr
    new.internal_attr = info.internal_attr
    new.create_system = info.create_system
    extra, out = info.extra, b""
    i = 0
    while i + 4 <= len(extra):
        xid = int.from_bytes(extra[i : i + 2], "little")
        size = int.from_bytes(extra[i + 2 : i + 4], "little")
        if xid != 1:
            out += extra[i : i + 4 + size]
        i += 4 + size
    new.extra = out
    return new
