"""Pytest-side wrapper around ``lo_recalc.py``: recalculate workbooks in real LibreOffice Calc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("lo_recalc.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def libreoffice_missing_reason() -> str | None:
    """Why LibreOffice tests cannot run here, or None when they can."""
    if not shutil.which("soffice"):
        return "LibreOffice (soffice) is not installed: apt-get install libreoffice-calc-nogui python3-uno"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} (LibreOffice's UNO Python) is missing"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import uno"], capture_output=True)
    if probe.returncode != 0:
        return "LibreOffice's UNO bindings do not import in /usr/bin/python3 (apt-get install python3-uno)"
    return None


@dataclass
class Recalculated:
    """Cells of every sheet after LibreOffice's full recalculation."""

    sheets: dict[str, dict[str, dict]]
    names: dict[str, str]

    def value(self, sheet: str, ref: str):
        cell = self.sheets[sheet].get(ref.replace("$", ""))
        return None if cell is None else cell["v"]

    def cell(self, sheet: str, ref: str) -> dict | None:
        return self.sheets[sheet].get(ref.replace("$", ""))


def recalculate(*paths: str | Path, save_as: list[str | Path] | None = None) -> list[Recalculated]:
    """Open each workbook in headless LibreOffice (one office process for all), recalculate everything
    and return the cells. ``save_as[i]``, when given, receives the recalculated workbook as .xlsx."""
    with tempfile.TemporaryDirectory(prefix="xlcf-lo-") as tmp:
        jobs = []
        for i, path in enumerate(paths):
            job = {"input": str(path), "output": os.path.join(tmp, f"out{i}.json")}
            if save_as and save_as[i]:
                job["save_as"] = str(save_as[i])
            jobs.append(job)
        jobs_file = os.path.join(tmp, "jobs.json")
        with open(jobs_file, "w") as fh:
            json.dump(jobs, fh)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run(
            [SYSTEM_PYTHON, str(SCRIPT), jobs_file], capture_output=True, text=True, timeout=300, env=env
        )
        if proc.returncode != 0:
            raise RuntimeError(f"LibreOffice recalculation failed:\n{proc.stderr[-3000:]}")
        results = []
        for job in jobs:
            with open(job["output"]) as fh:
                data = json.load(fh)
            results.append(Recalculated(sheets=data["sheets"], names=data["names"]))
        return results
