"""The training progress bar: a handful of redraws a second in a terminal, nothing when redirected."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from xlcf.train.progress import INTERVAL, Progress

REPO = Path(__file__).resolve().parents[2]


def _run_in_pty(args: list[str], cwd: Path, timeout: float = 240.0) -> tuple[int, bytes]:
    """Run ``python -m xlcf ARGS`` with stdin/stdout/stderr on a pseudo-terminal (80x24); all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xlcf", *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return rc, bytes(out)


def _redraws(output: bytes) -> int:
    """Carriage returns that start a redraw (a terminal turns each "\\n" into "\\r\\n"; those are line ends)."""
    return len(re.findall(rb"\r(?!\n)", output))


def test_a_3000_epoch_fit_redraws_about_ten_times_a_second_in_a_terminal(tmp_path):
    book = tmp_path / "b.xlsx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "xlcf", "new", "collab", "-o", str(book)],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    # sgd from the sheet's start runs all 3000 epochs (no early plateau stop), one run.
    rc, out = _run_in_pty(
        ["fit", str(book), "--sheet", "dotprod", "--optimizer", "sgd", "--epochs", "3000", "--restarts", "0"], tmp_path
    )
    text = out.decode("utf-8", "replace")
    assert rc == 0, text
    match = re.search(r"sgd x (\d+) epochs on \S+ in ([0-9.]+)s", text)
    assert match, text
    epochs, seconds = int(match.group(1)), float(match.group(2))
    assert epochs == 3000
    assert "dot/sgd" in text  # the bar was shown ...
    redraws = _redraws(out)
    assert 1 <= redraws <= 10 * seconds + 5, (redraws, seconds)  # ... but not once per epoch
    assert len(out) < 20_000  # a few lines, not a megabyte


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    book = tmp_path / "b.xlsx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "xlcf", "new", "collab", "-o", str(book)],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xlcf",
            "fit",
            str(book),
            "--sheet",
            "dotprod",
            "--optimizer",
            "sgd",
            "--epochs",
            "300",
            "--restarts",
            "0",
        ],
        env=env,
        capture_output=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert b"\r" not in done.stderr and b"epoch/s" not in done.stderr


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_throttles_redraws_and_ends_on_the_last_epoch():
    term = _FakeTerminal()
    bar = Progress(5000, "dot/test", file=term)
    started = time.monotonic()
    for epoch in range(5000):
        bar.update(1.0 / (epoch + 1), None)
    elapsed = time.monotonic() - started
    assert bar._bar.n + bar._pending == 5000
    bar.close()
    redraws = term.getvalue().count("\r")
    assert redraws <= elapsed / INTERVAL + 5, (redraws, elapsed)
    assert "dot/test" in term.getvalue()


def test_progress_is_silent_off_a_terminal_and_when_disabled():
    quiet = io.StringIO()
    for bar in (Progress(10, "x", file=quiet), Progress(10, "x", file=_FakeTerminal(), enabled=False)):
        for _ in range(10):
            bar.update(0.5, 0.6)
        bar.close()
    assert quiet.getvalue() == ""
