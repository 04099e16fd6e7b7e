"""Atomic file output — the one place that writes a file so a crash or an error never leaves half of it.

Every writer of xlcf (workbooks, macro workbooks + their .py, CSV output, downloads) goes through
:func:`atomic_output`: the data goes to a temporary file in the target's folder (same file system, so the
final ``os.replace`` is atomic), is flushed and fsynced, gets its permissions, and only then replaces the
target. On any error the temporary file is removed and the target is left exactly as it was.

Permissions: a file that already exists keeps its mode; a new file gets ``0o666 & ~umask`` — what ``open()``
would give it (``mkstemp`` alone would leave it 0600). A target reached through a symbolic link is replaced
where the link points (the link stays).

Bottom layer: standard library only, raises OSError (callers turn it into their XlcfError with the context
a person needs).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".~xlcf-"  # hidden, and recognisable as ours if a crash ever leaves one behind


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


__all__ = [
    "TEMP_PREFIX",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "new_file_mode",
    "scratch_file",
]
