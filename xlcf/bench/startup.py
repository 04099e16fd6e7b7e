"""Start-up and small fits, measured as a user meets them: whole processes.

What a button press or a ``xlcf fit`` waits for is the whole process — the interpreter, the imports, the
workbook, the fit and the save — not the fit alone. Each figure here is the median of ``repeats`` fresh
processes: wall time and the process's CPU time (user + sys, less sensitive to other load on a shared
machine), with the load average before and after. Rows:

- ``python -c pass`` and ``python -c "import torch"``: the floor, and what torch alone costs;
- ``xlcf --help``, ``xlcf new collab``;
- ``xlcf fit BOOK --sheet dotprod|bias`` on a fresh ``xlcf new collab`` book with the sheet's defaults, each
  in its own process, with the RMSE it reached against the sheet's floor;
- which heavy libraries each xlcf command imported (one extra run under ``python -X importtime``);
- the progress bar's cost: the fit time of a 3000-epoch fit in a pseudo-terminal vs redirected;
- the second press through ``xlcf serve`` (:mod:`xlcf.bench.server`): a warm fit's server time, when xlwings'
  remote engine can run here (``XLWINGS_LICENSE_KEY`` set).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"fit": 1.0, "new": 1.0, "help": 0.3}  # seconds of wall time, medians
SECOND_PRESS_TARGET_MS = 100.0  # server time of a warm fit through `xlcf serve`
SHEET_FLOORS = {"dotprod": 0.3933, "bias": 0.3191}
HEAVY = ("torch", "pandas", "scipy", "openpyxl", "xlwings", "tqdm")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Run the xlcf that is running this benchmark (a source checkout as well as an installed one).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(args: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """One process: wall seconds, CPU seconds (user + sys of the child), exit code, stdout, stderr."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "cpu": _children_cpu() - cpu0,
        "rc": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
    }


def imported_modules(importtime_stderr: str) -> tuple[set[str], float]:
    """(every module a ``python -X importtime`` run imported, the milliseconds its top-level imports took)."""
    names: set[str] = set()
    total_us = 0
    for line in importtime_stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            names.add(match.group(3))
            if len(match.group(2)) <= 1:  # imported at top level, not inside another import
                total_us += int(match.group(1))
    return names, total_us / 1000


def _median(rows: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def _row(label: str, runs: list[dict], **extra) -> dict:
    return {
        "what": label,
        "runs": len(runs),
        "wall_s": _median(runs, "wall"),
        "cpu_s": _median(runs, "cpu"),
        "wall_all": [round(r["wall"], 3) for r in runs],
        **extra,
    }


def bench_startup(out, repeats: int = 5, progress_check: bool = True) -> dict:
    py = sys.executable
    env = _env()
    xlcf = [py, "-m", "xlcf"]
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    out(
        f"\n## start-up and small fits: whole processes, median of {repeats} "
        f"(wall and user+sys CPU seconds; the machine may be shared, so see the load average)"
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="xlcf-bench-") as tmp:
        folder = Path(tmp)
        rows.append(_row("python -c pass", [run_timed([py, "-c", "pass"], folder, env) for _ in range(repeats)]))
        rows.append(
            _row(
                'python -c "import torch"', [run_timed([py, "-c", "import torch"], folder, env) for _ in range(repeats)]
            )
        )
        rows.append(
            _row(
                "xlcf --help",
                [run_timed(xlcf + ["--help"], folder, env) for _ in range(repeats)],
                target="help",
                command=["--help"],
            )
        )
        made = [run_timed(xlcf + ["new", "collab", "-o", f"new{i}.xlsx"], folder, env) for i in range(repeats)]
        _check(made, "xlcf new collab")
        rows.append(_row("xlcf new collab", made, target="new", command=["new", "collab", "-o", "imports.xlsx"]))
        fresh = folder / "new0.xlsx"
        for sheet in ("dotprod", "bias"):
            runs = []
            for i in range(repeats):
                book = folder / f"fit-{sheet}-{i}.xlsx"
                shutil.copy(fresh, book)
                runs.append(run_timed(xlcf + ["fit", book.name, "--sheet", sheet, "--json"], folder, env))
            _check(runs, f"xlcf fit --sheet {sheet}")
            reports = [json.loads(r["stdout"]) for r in runs]
            rmse = max(rep["rmse_after"] for rep in reports)
            shutil.copy(fresh, folder / f"imports-{sheet}.xlsx")
            rows.append(
                _row(
                    f"xlcf fit --sheet {sheet}",
                    runs,
                    target="fit",
                    rmse=rmse,
                    floor=SHEET_FLOORS[sheet],
                    optimizer=reports[0]["optimizer"],
                    fit_s=statistics.median(r["fit_seconds"] for r in reports),
                    command=["fit", f"imports-{sheet}.xlsx", "--sheet", sheet, "--json"],
                )
            )
        for row in rows:
            if "command" in row:
                probe = run_timed([py, "-X", "importtime", "-m", "xlcf", *row["command"]], folder, env)
                names, millis = imported_modules(probe["stderr"])
                row["imports_ms"] = round(millis, 1)
                row["heavy"] = sorted(name for name in HEAVY if name in names)
        progress = bench_progress(folder, env, fresh, repeats) if progress_check else None
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    out(f"{'what':28s} {'wall s':>7s} {'cpu s':>7s} {'imports ms':>10s}  heavy imports / result")
    for row in rows:
        note = ""
        if "heavy" in row:
            note = ", ".join(row["heavy"]) or "none of " + "/".join(HEAVY)
        if "rmse" in row:
            reached = row["rmse"] <= row["floor"]
            note += (
                f"; {row['optimizer']}: RMSE {row['rmse']:.4f} {'<=' if reached else '>'} {row['floor']} "
                f"(fit itself {row['fit_s'] * 1000:.0f} ms)"
            )
        if "target" in row:
            limit = TARGETS[row["target"]]
            met = row["wall_s"] <= limit and row.get("rmse", 0) <= row.get("floor", 1)
            note += f"; target <= {limit:.1f} s: {'met' if met else 'MISSED'}"
        imports = f"{row['imports_ms']:10.0f}" if "imports_ms" in row else f"{'':10s}"
        out(f"{row['what']:28s} {row['wall_s']:7.2f} {row['cpu_s']:7.2f} {imports}  {note}")
    if progress:
        out(
            f"progress bar, 3000-epoch sgd fit, median fit time: terminal {progress['tty_s']:.3f} s vs redirected "
            f"{progress['redirected_s']:.3f} s ({progress['ratio'] * 100 - 100:+.1f}%), "
            f"{progress['redraws']} redraws in the terminal"
        )
    if load_before is not None and load_after is not None:  # both or neither (the same platform check)
        out(
            f"load average (1, 5, 15 min): before {', '.join(f'{x:.2f}' for x in load_before)}; "
            f"after {', '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} CPUs"
        )
    second_press = bench_server_press(out)
    for row in rows:
        row.pop("command", None)
    return {
        "rows": rows,
        "progress": progress,
        "second_press": second_press,
        "load_before": load_before,
        "load_after": load_after,
        "cpus": os.cpu_count(),
    }


def bench_server_press(out) -> dict | None:
    """The warm second press through ``xlcf serve`` (median of 5 per sheet), or None with the reason printed."""
    if not os.environ.get("XLWINGS_LICENSE_KEY"):
        out(
            "second press through xlcf serve: skipped (xlwings' remote engine needs XLWINGS_LICENSE_KEY, "
            "e.g. noncommercial for non-commercial use)"
        )
        return None
    from xlcf.bench.server import bench_second_press

    result = bench_second_press()
    for line in result.lines():
        out(line)
    worst = max(p.second_server_ms for p in result.presses)
    met = worst <= SECOND_PRESS_TARGET_MS
    out(
        f"second press, slowest sheet: {worst:.1f} ms server time; target <= {SECOND_PRESS_TARGET_MS:.0f} ms: "
        f"{'met' if met else 'MISSED'}"
    )
    return {
        "startup_s": result.startup_s,
        "presses": [dataclasses.asdict(p) for p in result.presses],
        "target_ms": SECOND_PRESS_TARGET_MS,
        "met": met,
    }


def _check(runs: list[dict], what: str) -> None:
    for r in runs:
        if r["rc"] != 0:
            raise RuntimeError(f"{what} failed (exit {r['rc']}): {r['stderr'].strip()[-500:]}")


def bench_progress(folder: Path, env: dict[str, str], fresh: Path, repeats: int) -> dict | None:
    """Median fit time of a 3000-epoch fit with stderr on a pseudo-terminal (progress bar shown) and redirected
    (no bar), alternating the two so load changes hit both alike."""
    try:
        import pty  # noqa: F401  # POSIX only
    except ImportError:
        return None
    args = [
        sys.executable,
        "-m",
        "xlcf",
        "fit",
        "",
        "--sheet",
        "dotprod",
        "--optimizer",
        "sgd",
        "--epochs",
        "3000",
        "--restarts",
        "0",
    ]
    tty: list[float] = []
    redirected: list[float] = []
    redraws: list[int] = []
    for i in range(repeats):
        for shown in (True, False):
            book = folder / f"progress-{i}-{int(shown)}.xlsx"
            shutil.copy(fresh, book)
            args[4] = book.name
            if shown:
                text = run_in_terminal(args, folder, env)
                redraws.append(len(re.findall(r"\r(?!\n)", text)))
            else:
                done = subprocess.run(
                    args, cwd=folder, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
                )
                text = done.stdout
            match = re.search(r"sgd x \d+ epochs on \S+ in ([0-9.]+)s", text)
            if not match:
                return None
            (tty if shown else redirected).append(float(match.group(1)))
    tty_s, red_s = statistics.median(tty), statistics.median(redirected)
    return {"tty_s": tty_s, "redirected_s": red_s, "ratio": tty_s / red_s, "redraws": int(statistics.median(redraws))}


def run_in_terminal(args: list[str], cwd: Path, env: dict[str, str], columns: int = 80) -> str:
    """Run with stdin/stdout/stderr on a pseudo-terminal of ``columns`` x 24; everything it wrote."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")
