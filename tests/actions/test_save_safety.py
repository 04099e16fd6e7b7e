"""Saves that cannot lose an update: one writer per workbook (advisory lock from the read to the rename), the
on-disk check against other programs, backups that survive a failure, a full disk, leftovers of killed writers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from xlcf.cli import main
from xlcf.errors import BusyError, WorkbookError
from xlcf.fileio import STALE_TEMP_SECONDS, TEMP_PREFIX, atomic_write_bytes, book_lock, lock_path, remove_stale_temps
from xlcf.ooxml.package import Package

REPO = Path(__file__).resolve().parents[2]


def cli(*args, env=None, **kw) -> subprocess.Popen:
    """``python -m xlcf ARGS`` as a separate process (its own interpreter, its own lock file handle)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "xlcf", *map(str, args)],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def wait_for(predicate, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def hook_files(folder: Path, point: str, pid: int) -> Path:
    return folder / f"{point}.{pid}"


def factors(path: Path, sheet: str) -> np.ndarray:
    pkg = Package.open(path)
    (area,) = pkg.name_areas(sheet, "user_factors")
    return np.array(pkg.read_values(sheet, area), dtype=float)


@pytest.fixture(scope="module")
def collab_book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("collab") / "b.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


@pytest.fixture
def book(collab_book, tmp_path) -> Path:
    target = tmp_path / "b.xlsx"
    shutil.copy(collab_book, target)
    return target


FIT = ("--optimizer", "als", "--restarts", "0", "--epochs", "5")


# --------------------------------------------------------------------------------------------------------------
# Two xlcf writers of one book


def test_overlapping_saves_keep_both_updates(book, tmp_path):
    """Writer A is held between its read and its rename; writer B starts meanwhile. B waits for the lock, then
    reads A's result: both sheets' fits are in the file."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    before = {s: factors(book, s) for s in ("bias", "dotprod")}
    a = cli("fit", book, "--sheet", "bias", *FIT, env={"XLCF_TEST_HOOK_DIR": str(hooks), "XLCF_TEST_PAUSE": "save"})
    wait_for(lambda: hook_files(hooks, "save", a.pid).exists() or a.poll() is not None, "writer A to reach its save")
    assert a.poll() is None, a.communicate()
    b = cli("fit", book, "--sheet", "dotprod", *FIT, env={"XLCF_TEST_HOOK_DIR": str(hooks)})
    wait_for(lambda: hook_files(hooks, "lock-wait", b.pid).exists() or b.poll() is not None, "writer B to wait")
    assert b.poll() is None, b.communicate()  # B is waiting for A, not failing
    assert not hook_files(hooks, "locked", b.pid).exists()  # and has read nothing yet
    (hooks / "go.save").touch()
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    assert "wrote" in out_a and "wrote" in out_b
    after = {s: factors(book, s) for s in ("bias", "dotprod")}
    for sheet in ("bias", "dotprod"):  # both updates kept
        assert not np.allclose(after[sheet], before[sheet]), f"{sheet}: the fit was lost"
    assert hook_files(hooks, "locked", b.pid).stat().st_mtime >= hook_files(hooks, "save", a.pid).stat().st_mtime


def test_second_writer_that_will_not_wait_is_refused_before_computing(book, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    a = cli("fit", book, "--sheet", "bias", *FIT, env={"XLCF_TEST_HOOK_DIR": str(hooks), "XLCF_TEST_PAUSE": "save"})
    wait_for(lambda: hook_files(hooks, "save", a.pid).exists() or a.poll() is not None, "writer A to reach its save")
    held = book.read_bytes()
    b = cli("fit", book, "--sheet", "dotprod", *FIT, "--wait", "0", env={"XLCF_TEST_HOOK_DIR": str(hooks)})
    _, err_b = b.communicate(timeout=120)
    assert b.returncode == 2
    assert len(err_b.strip().splitlines()) == 1, err_b
    assert "another xlcf command is writing this workbook" in err_b and "nothing was read or written" in err_b
    assert not hook_files(hooks, "locked", b.pid).exists()  # refused before reading, so before computing
    assert book.read_bytes() == held
    (hooks / "go.save").touch()
    assert a.wait(timeout=120) == 0


@pytest.mark.slow
def test_fifty_overlapping_pairs_lose_no_update(collab_book, tmp_path):
    """50 books, two writer processes fitting different sheets of each book at (nearly) the same moment: every
    fit a writer reports as written is in the final file — zero silent losses."""
    n = 50
    books = []
    for i in range(n):
        books.append(tmp_path / f"b{i}.xlsx")
        shutil.copy(collab_book, books[-1])
    original = {s: factors(collab_book, s) for s in ("bias", "dotprod")}
    barrier, hooks = tmp_path / "barrier", tmp_path / "hooks"
    barrier.mkdir()
    hooks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLCF_TEST_HOOK_DIR": str(hooks)}
    workers = {
        sheet: subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.race_worker", sheet, str(barrier), seed, *map(str, books)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for sheet, seed in (("bias", "1"), ("dotprod", "2"))
    }
    reports = {}
    for sheet, proc in workers.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        reports[sheet] = [json.loads(line) for line in out.splitlines()]
        assert len(reports[sheet]) == n
    lost = []
    for sheet, lines in reports.items():
        for line in lines:
            changed = not np.allclose(factors(books[line["book"]], sheet), original[sheet])
            if line["ok"] and not changed:
                lost.append((line["book"], sheet))
            if not line["ok"]:
                assert not changed and "another xlcf command" in line["error"]
    assert lost == []
    refused = sum(not line["ok"] for lines in reports.values() for line in lines)
    assert refused == 0  # the default wait (60 s) is far longer than one small fit
    waits = sum(len(p.read_text().splitlines()) for p in hooks.glob("lock-wait.*"))
    assert waits >= 10, f"only {waits} of {n} pairs overlapped; the test did not exercise the race"


# --------------------------------------------------------------------------------------------------------------
# The lock itself


def test_book_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path):
    target = tmp_path / "b.xlsx"
    target.write_bytes(b"x")
    with book_lock(target) as lock_file:
        assert lock_file == lock_path(target) and lock_file.name == ".b.xlsx.xlcf-lock"
        with book_lock(target, timeout=0):  # the same thread again: no deadlock
            pass
        outcome = []

        def other():
            try:
                with book_lock(target, timeout=0.2):
                    outcome.append("got it")
            except BusyError as err:
                outcome.append(err)

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert isinstance(outcome[0], BusyError) and outcome[0].field == "--wait"
    t = threading.Thread(target=other)
    t.start()
    t.join(30)
    assert outcome[1] == "got it"


def test_symlinked_names_of_one_book_share_one_lock(tmp_path):
    target = tmp_path / "b.xlsx"
    target.write_bytes(b"x")
    link = tmp_path / "link.xlsx"
    link.symlink_to(target)
    assert lock_path(link) == lock_path(target)


def test_a_lock_file_that_cannot_be_created_is_one_clear_error(tmp_path):
    book = tmp_path / "b.xlsx"
    book.write_bytes(b"x")
    lock_path(book).mkdir()  # something that is not a file sits where the lock file goes
    with (
        pytest.raises(WorkbookError, match=r"cannot create the lock file \.b\.xlsx\.xlcf-lock") as info,
        book_lock(book),
    ):
        pass
    assert "\n" not in str(info.value)


def test_lock_in_a_folder_that_is_not_writable_is_one_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "b.xlsx").write_bytes(b"x")
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(WorkbookError, match="cannot create the lock file"), book_lock(folder / "b.xlsx"):
            pass
    finally:
        folder.chmod(0o755)


# --------------------------------------------------------------------------------------------------------------
# Other programs, leftovers, backups, a full disk


def test_a_file_replaced_by_another_program_is_not_overwritten(book):
    pkg = Package.open(book)
    pkg.write_values("dotprod", {"A1": "mine"})
    st = os.stat(book)
    replacement = book.with_name("other.xlsx")
    shutil.copy(book, replacement)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same time: only the inode differs
    os.replace(replacement, book)
    theirs = book.read_bytes()
    with pytest.raises(WorkbookError, match="changed on disk since xlcf read it"):
        pkg.save()
    assert book.read_bytes() == theirs


def test_stale_temp_files_of_ours_are_removed_on_the_next_save(book):
    folder = book.parent
    old = folder / f"{TEMP_PREFIX}abcd1234.tmp"
    young = folder / f"{TEMP_PREFIX}efgh5678.tmp"
    foreign = folder / f"{TEMP_PREFIX}notours.txt"
    for p in (old, young, foreign):
        p.write_bytes(b"left behind")
    past = time.time() - STALE_TEMP_SECONDS - 5
    os.utime(old, (past, past))
    os.utime(foreign, (past, past))
    pkg = Package.open(book)
    pkg.write_values("dotprod", {"A1": "x"})
    pkg.save()
    assert not old.exists()
    assert young.exists()  # could be another writer's file, being written now
    assert foreign.exists()  # not a name xlcf gives its temporary files
    assert remove_stale_temps(folder, older_than=0) == [young]


def test_backup_is_replaced_atomically(book):
    bak = book.with_name(book.name + ".bak")
    bak.write_bytes(b"the previous backup")
    original = book.read_bytes()
    pkg = Package.open(book)
    pkg.write_values("dotprod", {"A1": "x"})
    pkg.save(backup=True)
    assert bak.read_bytes() == original
    assert not [p for p in book.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


class _FullDisk:
    """A file object whose writes fail like a full disk after ``allow`` bytes."""

    def __init__(self, real, allow: int):
        self.real, self.allow = real, allow

    def write(self, data):
        if len(data) > self.allow:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.allow -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


@pytest.mark.parametrize("backup", [False, True])
def test_disk_full_during_save_leaves_book_and_backup_unchanged(book, monkeypatch, backup):
    import builtins

    from xlcf.ooxml import package as package_module

    bak = book.with_name(book.name + ".bak")
    bak.write_bytes(b"the previous backup")
    original = book.read_bytes()
    real_open = builtins.open
    monkeypatch.setattr(package_module, "open", lambda *a, **k: _FullDisk(real_open(*a, **k), 100), raising=False)
    pkg = Package.open(book)
    pkg.write_values("dotprod", {"A1": "x"})
    with pytest.raises(WorkbookError, match="disk full; nothing was written") as info:
        pkg.save(backup=backup)
    assert "\n" not in str(info.value)
    assert book.read_bytes() == original
    assert bak.read_bytes() == b"the previous backup"
    assert not [p for p in book.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real, tiny file system (tmpfs) — needs the right to mount; skipped without it."""
    mount = tmp_path / "tiny"
    mount.mkdir()

    def make(size: int) -> Path:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
        return mount

    yield make
    subprocess.run(["umount", str(mount)], capture_output=True, check=False)


def test_disk_full_on_a_real_file_system_via_the_cli(collab_book, tiny_disk):
    page = 4096
    size = collab_book.stat().st_size
    pages = -(-size // page)
    disk = tiny_disk((2 * pages + 1) * page)  # the book and its old backup fit; a new copy does not
    book = disk / "b.xlsx"
    shutil.copy(collab_book, book)
    bak = disk / "b.xlsx.bak"
    shutil.copy(collab_book, bak)
    with open(bak, "r+b") as fh:  # an old backup that differs from the book
        fh.write(b"PK")
    old_bak = bak.read_bytes()
    original = book.read_bytes()
    proc = cli("fit", book, "--sheet", "dotprod", *FIT, "--backup")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "disk full" in err, err
    assert book.read_bytes() == original
    assert bak.read_bytes() == old_bak
    assert sorted(p.name for p in disk.iterdir()) == [".b.xlsx.xlcf-lock", "b.xlsx", "b.xlsx.bak"]


def test_atomic_write_bytes_on_a_full_disk_removes_its_temp(tiny_disk):
    disk = tiny_disk(8192)
    target = disk / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"x" * 100_000)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and sorted(p.name for p in disk.iterdir()) == ["out.bin"]
