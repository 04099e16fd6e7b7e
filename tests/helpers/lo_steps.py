"""Pytest-side wrapper of ``lo_copy_step.py``: the same "paste values" copies made by real LibreOffice."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from tests.helpers.libreoffice import SYSTEM_PYTHON

SCRIPT = Path(__file__).with_name("lo_copy_step.py")


def lo_copy_steps(path, copies: list, passes: int, *, manual: bool, watch: list) -> dict:
    """``copies``: [((sheet, "C2"), (sheet, "B2")), ...] in order; returns {"passes": [{"sgd!B2": v}], "final":
    {sheet: {cell: {"v": ..., "f": ...}}}}."""
    with tempfile.TemporaryDirectory(prefix="xlcf-lo-step-") as tmp:
        job = {
            "input": str(path),
            "output": os.path.join(tmp, "out.json"),
            "passes": int(passes),
            "manual": bool(manual),
            "copies": [[list(a), list(b)] for a, b in copies],
            "watch": [list(w) for w in watch],
        }
        jobs_file = os.path.join(tmp, "jobs.json")
        with open(jobs_file, "w") as fh:
            json.dump([job], fh)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run(
            [SYSTEM_PYTHON, str(SCRIPT), jobs_file], capture_output=True, text=True, timeout=300, env=env
        )
        if proc.returncode != 0:
            raise RuntimeError(f"LibreOffice copy steps failed:\n{proc.stderr[-3000:]}")
        with open(job["output"]) as fh:
            return json.load(fh)
