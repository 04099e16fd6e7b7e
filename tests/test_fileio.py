"""xlcf.fileio: atomic output — nothing partial, nothing left behind, predictable permissions."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest

from xlcf.fileio import (
    TEMP_PREFIX,
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    current_umask,
    new_file_mode,
    scratch_file,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_writes_bytes_and_text(tmp_path):
    target = tmp_path / "out.bin"
    assert atomic_write_bytes(target, b"\x00abc") == target.resolve()
    assert target.read_bytes() == b"\x00abc"
    csv = tmp_path / "t.csv"
    atomic_write_text(csv, "a,b\r\n1,2\r\n", newline="")
    assert csv.read_bytes() == b"a,b\r\n1,2\r\n"  # line ends kept as given
    assert leftovers(tmp_path) == []


def test_error_removes_the_temp_file_and_leaves_the_original(tmp_path):
    target = tmp_path / "book.xlsx"
    target.write_bytes(b"original")
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            seen.append(tmp)
            assert tmp.parent == target.parent and tmp.name.startswith(TEMP_PREFIX)
            tmp.write_bytes(b"half a workbook")
            raise RuntimeError("boom")
    assert not seen[0].exists()
    assert target.read_bytes() == b"original"
    assert leftovers(tmp_path) == []


def test_error_before_any_file_exists_creates_nothing(tmp_path):
    target = tmp_path / "new.csv"
    with pytest.raises(KeyboardInterrupt):  # BaseException too
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_file_gets_0666_minus_umask(tmp_path, mask):
    with umask(mask):
        assert current_umask() == mask
        assert new_file_mode() == 0o666 & ~mask
        atomic_write_bytes(tmp_path / "new.xlsx", b"x")
        with open(tmp_path / "plain.txt", "w") as fh:  # what open() gives, for comparison
            fh.write("x")
    assert mode_of(tmp_path / "new.xlsx") == 0o666 & ~mask == mode_of(tmp_path / "plain.txt")


@posix_only
def test_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "book.xlsx"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with umask(0o022):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and mode_of(target) == 0o640


@posix_only
def test_mode_from_another_file(tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("x")
    os.chmod(model, 0o600)
    atomic_write_text(tmp_path / "copy.txt", "y", mode_from=model)
    assert mode_of(tmp_path / "copy.txt") == 0o600


@posix_only
def test_a_symlink_stays_a_link_and_its_target_is_replaced(tmp_path):
    real = tmp_path / "real.xlsx"
    real.write_bytes(b"old")
    link = tmp_path / "link.xlsx"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "nope" / "out.bin", b"x")


def test_scratch_file_is_removed_however_the_block_ends(tmp_path):
    with scratch_file(tmp_path / "out.xlsm", suffix=".xlsx") as tmp:
        assert tmp.exists() and tmp.parent == tmp_path and tmp.suffix == ".xlsx"
    assert not tmp.exists()
    with pytest.raises(ValueError):
        with scratch_file(tmp_path / "out.xlsm") as tmp:
            tmp.write_text("intermediate")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
