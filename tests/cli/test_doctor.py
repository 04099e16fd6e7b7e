"""`xlcf doctor`: what it checks, one JSON object with --json, and it never prints the license key."""

from __future__ import annotations

import json
import subprocess
import sys


def _doctor(*args, env_key=None):
    import os

    env = {k: v for k, v in os.environ.items() if k != "XLWINGS_LICENSE_KEY"}
    if env_key is not None:
        env["XLWINGS_LICENSE_KEY"] = env_key
    return subprocess.run(
        [sys.executable, "-m", "xlcf", "doctor", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_doctor_json_lists_the_checks_without_the_key():
    secret = "noncommercial"
    proc = _doctor("--json", env_key=secret)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    names = {c["name"]: c for c in report["checks"]}
    for name in (
        "interpreter",
        "xlwings",
        "xlwings quickstart template",
        "torch",
        "LibreOffice",
        "cache dir",
        "xlwings license key (server only)",
    ):
        assert name in names
    import xlwings

    assert xlwings.__version__ in names["xlwings"]["detail"]
    assert "cpu" in names["torch"]["detail"]
    assert names["xlwings license key (server only)"]["ok"] is True
    assert secret not in proc.stdout + proc.stderr


def test_doctor_never_prints_a_key_it_rejects():
    fake = "xlcf-fake-license-key-31337"
    proc = _doctor(env_key=fake)
    assert proc.returncode == 0, proc.stderr
    assert fake not in proc.stdout + proc.stderr
    assert "rejects it" in proc.stdout


def test_doctor_points_out_a_cuda_build_without_a_gpu():
    from xlcf.cli.doctor_cmd import CPU_TORCH_LINE, torch_build_check

    check = torch_build_check("13.0", cuda_available=False)
    assert check is not None and not check.ok and not check.required
    assert "CUDA 13.0 build" in check.detail and CPU_TORCH_LINE in check.detail
    assert "download.pytorch.org/whl/cpu" in CPU_TORCH_LINE
    assert torch_build_check("13.0", cuda_available=True) is None  # the CUDA build is right where a GPU is
    assert torch_build_check(None, cuda_available=False) is None  # a CPU build on a CPU machine
