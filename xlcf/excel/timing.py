"""When did the button press start, as far as Python can tell? (The status cell shows how long a press took.)

- through ``xlcf serve``: when the request reached the server (passed in by the server);
- desktop RunPython, first call in a fresh Python process: when the process started, so the interpreter's
  start-up and the imports (torch...) are counted — they are most of what a user waits for;
- later calls in the same process (xlwings' "Use UDF Server"): when the macro was called.
"""

from __future__ import annotations

import os
import sys
import time

_first_call = [True]


def process_start_time() -> float | None:
    """Wall-clock start of this process (seconds since the epoch), or None where it cannot be read cheaply."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/self/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ticks = int(fields[19])  # field 22 of proc(5): start time in clock ticks after boot
            with open("/proc/stat", "rb") as f:
                boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
            return boot + ticks / os.sysconf("SC_CLK_TCK")
        if sys.platform == "win32":
            import ctypes
            from ctypes import wintypes

            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            times = [wintypes.FILETIME() for _ in range(4)]
            if not kernel32.GetProcessTimes(kernel32.GetCurrentProcess(), *[ctypes.byref(t) for t in times]):
                return None
            created = (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime  # 100 ns since 1601-01-01
            return created / 1e7 - 11644473600.0
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return None
    return None


def press_started(started: float | None = None) -> float:
    """``started`` when given (the server's arrival time); else the process start for the first call of a fresh
    process, else now."""
    first, _first_call[0] = _first_call[0], False
    if started is not None:
        return started
    if first:
        begun = process_start_time()
        # A process much older than a minute is a persistent one (UDF server) whose first macro call came later.
        if begun is not None and 0 <= time.time() - begun < 60:
            return begun
    return time.time()


def press_text(started: float) -> str:
    return f"; press took {max(time.time() - started, 0.0):.2f} s end to end"
