"""A package's file: whether it can be replaced now, and its raw zip records — read every member, and write them
back with each unchanged member's stored record (compressed bytes, name, timestamp, attributes) copied byte for
byte, in the original order."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from xlcf.errors import WorkbookError, quote
from xlcf.fileio import MAX_WORKBOOK_MEMBER, MAX_WORKBOOK_TOTAL, ZipMemberError, human_bytes, read_zip_member

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
                "the zip is truncated or damaged (no central directory); restore it from a backup", where=str(p)
            ) from None
        raise WorkbookError(
            "is not a workbook (.xlsx/.xlsm are zip packages; this is not a zip)", where=str(p)
        ) from None
    with zf:
        comment = zf.comment
        members = zf.infolist()
        total = sum(i.file_size for i in members)
        if total > MAX_WORKBOOK_TOTAL:  # bounded before anything is decompressed
            raise WorkbookError(
                f"its parts expand to {human_bytes(total)}, more than the "
                f"{human_bytes(MAX_WORKBOOK_TOTAL)} xlcf reads from one workbook",
                where=str(p),
            )
        for info in members:
            try:
                content[info.filename] = read_zip_member(zf, info, max_size=MAX_WORKBOOK_MEMBER)
            except ZipMemberError as err:
                raise WorkbookError(f"part {quote(info.filename)} {err}", where=str(p)) from None
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


def check_writable(target: Path) -> None:
    """WorkbookError when the workbook cannot be replaced now: read-only file or folder, or open in Excel or
    LibreOffice (their lock files ``~$BOOK.xlsx`` / ``.~lock.BOOK.xlsx#`` beside it)."""
    folder = target.parent
    for lock in (folder / ("~$" + target.name), folder / (".~lock." + target.name + "#")):
        if lock.exists():
            raise WorkbookError(
                f"is open in Excel or LibreOffice ({lock.name} exists); close it in Excel first", where=str(target)
            )
    if target.exists():
        mode = os.stat(target).st_mode
        if not os.access(target, os.W_OK) or not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
            raise WorkbookError(
                "the file is read-only; make it writable (or close it in Excel first)", where=str(target)
            )
    if not os.access(folder, os.W_OK):
        raise WorkbookError(
            f"its folder {folder} is not writable (xlcf writes a temporary file "
            f"beside the workbook and then replaces it)",
            where=str(target),
        )


def write_plain_zip(infos, removed, added, read_member, comment: bytes) -> bytes:
    """A zip written member by member through :mod:`zipfile` (the fallback when raw records cannot be copied):
    the original members in their order with their metadata, then the added ones, deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True) as out:
        out.comment = comment
        seen = set()
        for info in infos:
            name = info.filename
            if name in removed:
                continue
            seen.add(name)
            out.writestr(copy_info(info), read_member(name))
        for name in added:
            if name in removed or name in seen:
                continue
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, read_member(name))
    return buf.getvalue()
