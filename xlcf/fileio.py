"""Atomic file output — the one place that writes a file so a crash or an error never leaves half of it.

Every writer of xlcf (workbooks, macro workbooks + their .py, CSV output, downloads) goes through
:func:`atomic_output`: the data goes to a temporary file in the target's folder (same file system, so the
final ``os.replace`` is atomic), is flushed and fsynced, gets its permissions, and only then replaces the
target. On any error the temporary file is removed and the target is left exactly as it was.

Permissions: a file that already exists keeps its mode; a new file gets ``0o666 & ~umask`` — what ``open()``
would give it (``mkstemp`` alone would leave it 0600). A target reached through a symbolic link is replaced
where the link points (the link stays).

Saves that cannot lose an update: :func:`book_lock` is an advisory lock (the ``filelock`` package: ``flock`` on
POSIX, ``LockFileEx`` on Windows) on a hidden file beside a workbook (``.BOOK.xlsx.xlcf-lock``). A command that
reads a workbook, computes and writes it back holds the lock from the read to the rename, so a second xlcf
writer of the same book waits for the first to finish (and then reads its result) or, after the wait limit,
gives up with :class:`~xlcf.errors.BusyError` before computing anything. Other programs (Excel) do not know the
lock: the writer still checks that the file did not change since it was read.

Leftovers: a temporary file of ours (``.~xlcf-XXXXXXXX.tmp``) that a kill left behind is removed by the next
save in its folder once it is a minute old.

Bottom layer: standard library (+ ``filelock``); raises OSError (callers turn it into their XlcfError with the
context a person needs), BusyError when a lock cannot be had in time.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xlcf.errors import BusyError, WorkbookError

TEMP_PREFIX = ".~xlcf-"  # hidden, and recognisable as ours if a crash ever leaves one behind
LOCK_SUFFIX = ".xlcf-lock"  # .BOOK.xlsx.xlcf-lock: hidden, beside the book, named after it
DEFAULT_LOCK_WAIT = 60.0  # seconds a second writer waits for the first before giving up (before computing)
STALE_TEMP_SECONDS = 60.0  # a temporary file of ours untouched this long is a leftover of a killed writer
# What mkstemp(prefix=TEMP_PREFIX, suffix=".tmp") names look like (8 random characters).
_STALE_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}\.tmp")
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def current_umask() -> int:
    """The process umask. Read from /proc where possible: setting it to read it (``os.umask``) is not
    thread-safe (the server writes from worker threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 minus the umask."""
    return 0o666 & ~current_umask()


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); silently skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_disk_full(err: BaseException) -> bool:
    """True for the OSError a full disk (or an exhausted quota) raises."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def remove_stale_temps(folder: str | os.PathLike, *, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove our temporary files (``.~xlcf-XXXXXXXX.tmp``) in ``folder`` not modified for ``older_than``
    seconds: leftovers of a writer killed mid-save (a live writer's file is younger; it writes, then renames
    within seconds). Best effort: anything that cannot be listed or removed is left. Returns what was removed."""
    removed: list[Path] = []
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        if not _STALE_TEMP.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def checkpoint(point: str) -> None:
    """A synchronisation point for tests of concurrent writers; does nothing unless ``XLCF_TEST_HOOK_DIR`` is set.

    With it set, the process appends a line to ``$XLCF_TEST_HOOK_DIR/<point>.<pid>`` each time it reaches
    ``point``; when ``point`` is listed in ``XLCF_TEST_PAUSE`` (comma-separated), it then waits until
    ``$XLCF_TEST_HOOK_DIR/go.<point>`` exists (at most two minutes). Points: ``lock-wait`` (another writer holds
    the book's lock), ``locked`` (lock held, nothing read yet), ``save`` (new file written to its temporary name,
    not yet renamed)."""
    folder = os.environ.get("XLCF_TEST_HOOK_DIR")
    if not folder:
        return
    with open(Path(folder, f"{point}.{os.getpid()}"), "a", encoding="ascii") as fh:
        fh.write(f"{time.time():.6f}\n")
    if point in os.environ.get("XLCF_TEST_PAUSE", "").split(","):
        go = Path(folder, f"go.{point}")
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


@contextmanager
def atomic_output(
    path: str | os.PathLike, *, mode_from: str | os.PathLike | None = None, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file there (by name: ``wb.save(tmp)``,
    ``open(tmp, "wb")``). When the block ends normally the file is fsynced, given its mode and moved over
    ``path``; when it raises, the temporary file is removed and ``path`` is untouched.

    Mode: that of ``mode_from`` when given (and it exists), else that of the existing ``path``, else
    :func:`new_file_mode`. ``suffix`` lets a writer whose library looks at the extension (openpyxl) get one.
    """
    target = Path(os.path.realpath(path))  # through a symlink: replace the file, not the link
    folder = target.parent
    remove_stale_temps(folder)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the writer may have closed (or replaced) it: fsync what is there now
            fh.flush()
            os.fsync(fh.fileno())
        source = Path(mode_from) if mode_from is not None else target
        try:
            mode = stat.S_IMODE(os.stat(source).st_mode)
        except FileNotFoundError:
            mode = new_file_mode()
        os.chmod(tmp, mode)
        checkpoint("save")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the replace; removed after any error
    _fsync_folder(folder)


@contextmanager
def scratch_file(beside: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield an (empty) temporary file in the folder of ``beside`` for an intermediate result; it is removed
    when the block ends, however it ends."""
    folder = Path(os.path.realpath(beside)).parent
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode_from: str | os.PathLike | None = None) -> Path:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_output`). Returns the path written."""
    with atomic_output(path, mode_from=mode_from) as tmp:
        tmp.write_bytes(data)
    return Path(os.path.realpath(path))


def atomic_write_text(
    path: str | os.PathLike,
    text: str,
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
    mode_from: str | os.PathLike | None = None,
) -> Path:
    """Replace ``path`` with ``text`` atomically (``newline=""`` writes the text's line ends as they are)."""
    with atomic_output(path, mode_from=mode_from) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)
    return Path(os.path.realpath(path))


# ----------------------------------------------------------------------------------------------------------------
# Bounded zip reading: a small zip must not make xlcf decompress gigabytes (or print them in an error)

MAX_ZIP_RATIO = 200  # real workbooks and CSVs compress 3:1 to 50:1; a zip bomb 1000:1 and more
RATIO_FLOOR = 1 << 20  # ratios are judged only for members above 1 MiB: tiny parts compress oddly
MAX_DATA_MEMBER = 2 << 30  # a ratings CSV inside a zip (the largest MovieLens release's is 0.9 GB)
MAX_WORKBOOK_MEMBER = 512 << 20  # one part of a workbook (a sheet of a million filled rows is ~100 MB)
MAX_WORKBOOK_TOTAL = 1 << 30  # all parts of a workbook, uncompressed
# Methods zipfile decompresses: stored, deflate, bzip2, lzma. 99 is WinZip's AES encryption.
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


class ZipMemberError(ValueError):
    """A zip member that cannot or must not be read; the message says why, in a person's words, without a
    file name (callers prefix the archive and member)."""


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'``; powers of 1024, one decimal below 10."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f} {unit}" if abs(value) < 10 else f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.0f} TB"  # pragma: no cover


def zip_member_problem(info: zipfile.ZipInfo, *, max_size: int) -> str | None:
    """Why ``info`` must not be read (encrypted, unknown method, too large, compressed suspiciously well), or
    None. Judged from the central directory, before a byte is decompressed; the declared size is also what
    zipfile stops at (a member that expands further fails its CRC check)."""
    if info.compress_type == 99 or info.flag_bits & 0x1:
        return (
            "is encrypted (password-protected); xlcf reads unencrypted zips only — extract it with its "
            "password and zip it again without one"
        )
    if info.compress_type not in ZIP_METHODS:
        return (
            f"uses compression method {info.compress_type}, which xlcf cannot read (it reads "
            f"{', '.join(ZIP_METHODS.values())}); zip it again with ordinary deflate compression"
        )
    if info.file_size > max_size:
        return (
            f"expands to {human_bytes(info.file_size)}, more than the {human_bytes(max_size)} xlcf reads from "
            f"one zip member"
        )
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        return (
            f"expands {ratio:,.0f}:1 ({human_bytes(info.compress_size)} to {human_bytes(info.file_size)}), "
            f"far beyond the {MAX_ZIP_RATIO}:1 of real data; refusing to decompress it (a zip bomb?)"
        )
    return None


def read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, max_size: int) -> bytes:
    """The bytes of one member, after :func:`zip_member_problem`; every way a member can be damaged (bad
    deflate data, CRC mismatch, truncation) is a :class:`ZipMemberError` with a one-line reason."""
    problem = zip_member_problem(info, max_size=max_size)
    if problem:
        raise ZipMemberError(problem)
    try:
        return archive.read(info)
    except zlib.error as err:
        raise ZipMemberError(f"is damaged: its compressed data is corrupt ({err})") from None
    except zipfile.BadZipFile as err:  # CRC mismatch, bad local header
        raise ZipMemberError(f"is damaged ({err})") from None
    except (EOFError, ValueError) as err:
        raise ZipMemberError(f"is truncated or damaged ({err or 'unexpected end of data'})") from None
    except RuntimeError:  # zipfile: "File ... is encrypted, password required for extraction"
        raise ZipMemberError("is encrypted (password-protected); xlcf reads unencrypted zips only") from None
    except NotImplementedError as err:
        raise ZipMemberError(f"cannot be decompressed ({err})") from None
    except OSError as err:  # bzip2 data errors
        raise ZipMemberError(f"is damaged ({err})") from None
    except Exception as err:  # lzma.LZMAError and other decompressor errors
        if type(err).__module__ in ("lzma", "_lzma", "bz2", "_bz2"):
            raise ZipMemberError(f"is damaged ({err})") from None
        raise


# ----------------------------------------------------------------------------------------------------------------
# One writer per workbook

_held = threading.local()  # per thread: lock path -> depth, so a writer that calls another writer does not deadlock


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a workbook: ``.BOOK.xlsx.xlcf-lock`` beside it (through symlinks: beside the real file,
    so every name of one book shares one lock)."""
    target = Path(os.path.realpath(path))
    return target.with_name(f".{target.name}{LOCK_SUFFIX}")


@contextmanager
def book_lock(path: str | os.PathLike, *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the advisory lock of the workbook at ``path`` for the block: read, compute and save inside it.

    Waits up to ``timeout`` seconds (None: :data:`DEFAULT_LOCK_WAIT`; 0: do not wait) while another xlcf writer
    holds it, then raises :class:`BusyError`; a folder where the lock file cannot be created raises
    WorkbookError. Re-entrant within a thread (a fit that hands over to another writer keeps one lock); other
    threads and processes wait. Yields the lock file's path."""
    from filelock import FileLock, Timeout  # only writers pay for the import

    lock_file = lock_path(path)
    key = str(lock_file)
    depth = getattr(_held, "depth", None)
    if depth is None:
        depth = _held.depth = {}
    if depth.get(key):
        depth[key] += 1
        try:
            yield lock_file
        finally:
            depth[key] -= 1
        return
    wait = DEFAULT_LOCK_WAIT if timeout is None else max(float(timeout), 0.0)
    lock = FileLock(lock_file, thread_local=False)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            checkpoint("lock-wait")
            lock.acquire(timeout=wait)
    except Timeout:
        raise BusyError(
            f"another xlcf command is writing this workbook and did not finish within "
            f"{wait:g} s; nothing was read or written — run the command again when it is done (or "
            f"wait longer with --wait SECONDS)",
            where=str(Path(path)),
            field="--wait",
        ) from None
    except OSError as err:
        if is_disk_full(err):
            raise
        raise WorkbookError(
            f"cannot create the lock file {lock_file.name} beside the workbook "
            f"({err.strerror or err}); xlcf needs a writable folder to save a workbook",
            where=str(Path(path)),
        ) from None
    depth[key] = 1
    try:
        checkpoint("locked")
        yield lock_file
    finally:
        depth.pop(key, None)
        lock.release()


@contextmanager
def maybe_book_lock(path: str | os.PathLike, enabled: bool, *, timeout: float | None = None) -> Iterator[None]:
    """:func:`book_lock` when ``enabled`` (a command that will write), nothing otherwise (a dry run)."""
    if not enabled:
        yield
        return
    with book_lock(path, timeout=timeout):
        yield


def locked_writer(func):
    """Decorate a read-modify-write of a workbook ``func(path, ..., dry_run=False, ...)``: the whole call runs
    under :func:`book_lock` (not for a dry run, which writes nothing), so its read, its computation and its
    save are one step for other xlcf writers. Adds a keyword ``lock_timeout`` (seconds to wait for the lock;
    None: :data:`DEFAULT_LOCK_WAIT`)."""

    @functools.wraps(func)
    def wrapper(path, *args, lock_timeout: float | None = None, **kwargs):
        with maybe_book_lock(path, not kwargs.get("dry_run", False), timeout=lock_timeout):
            return func(path, *args, **kwargs)

    return wrapper


__all__ = [
    "DEFAULT_LOCK_WAIT",
    "LOCK_SUFFIX",
    "TEMP_PREFIX",
    "ZipMemberError",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "book_lock",
    "checkpoint",
    "current_umask",
    "human_bytes",
    "is_disk_full",
    "lock_path",
    "locked_writer",
    "maybe_book_lock",
    "new_file_mode",
    "read_zip_member",
    "remove_stale_temps",
    "scratch_file",
    "zip_member_problem",
]
