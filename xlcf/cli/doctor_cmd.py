"""`xlcf doctor`: check what the Excel paths need — xlwings (and its quickstart template), the
interpreter, torch and its devices, LibreOffice, an xlwings license key for the server (never printed),
the cache folder."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check xlwings, interpreter, torch devices, LibreOffice",
        description="Check what the Excel/LibreOffice paths of xlcf need on this machine.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def cache_dir() -> Path:
    try:
        from xlcf.data.download import cache_folder  # the data layer's rule (env vars, per-OS default)

        return Path(cache_folder())
    except Exception:
        return Path(os.environ.get("XLCF_CACHE_DIR") or Path.home() / ".cache" / "xlcf")


def _xlwings_checks() -> list[Check]:
    import importlib.util

    checks = []
    spec = importlib.util.find_spec("xlwings")
    if spec is None:
        return [Check("xlwings", False, "not installed: pip install xlwings")]
    # Import quietly: the remote engine's license check must not leak the key or abort the doctor.
    try:
        from xlcf.excel.remote import xlwings_status

        version, folder, engines = xlwings_status()
        checks.append(Check("xlwings", True, f"{version} at {folder}"))
    except Exception as err:
        return [Check("xlwings", False, f"import failed: {type(err).__name__}")]
    from xlcf.lessons.xlsm import template_path

    try:
        checks.append(Check("xlwings quickstart template", True, str(template_path())))
    except Exception as err:
        checks.append(Check("xlwings quickstart template", False, str(err)))
    key_set = bool(os.environ.get("XLWINGS_LICENSE_KEY"))
    remote = "remote" in engines
    if remote:
        detail = (
            "XLWINGS_LICENSE_KEY is set" if key_set else "found in the xlwings config"
        ) + "; the remote engine (xlcf serve) is available"
    elif key_set:
        detail = "XLWINGS_LICENSE_KEY is set but xlwings rejects it (expired or invalid?); xlcf serve will not start"
    else:
        detail = (
            "not set: `xlcf serve` needs XLWINGS_LICENSE_KEY (noncommercial for non-commercial use, or a "
            "paid key); desktop RunPython/UDFs do not"
        )
    checks.append(Check("xlwings license key (server only)", remote, detail, required=False))
    desktop = [e for e in engines if e == "excel"]
    checks.append(
        Check(
            "desktop Excel engine",
            bool(desktop),
            "available (Windows: pywin32; macOS: appscript)"
            if desktop
            else f"none on {platform.system()} (RunPython/UDFs need desktop Excel on Windows/macOS; "
            "use `xlcf serve` or the CLI here)",
            required=False,
        )
    )
    return checks


CPU_TORCH_LINE = "python3 -m pip install torch --index-url https://download.pytorch.org/whl/cpu"


def torch_build_check(cuda_version: str | None, cuda_available: bool) -> Check | None:
    """A CUDA build of torch on a machine without a CUDA GPU costs ~3 GB of disk and nothing in speed: say so
    and print the line that installs the CPU build (None when the build fits the machine)."""
    if cuda_version is None or cuda_available:
        return None
    return Check(
        "torch build",
        False,
        f"a CUDA {cuda_version} build on a machine without a CUDA GPU (~3 GB of CUDA libraries unused); "
        f"the CPU build is enough here: pip uninstall torch, then {CPU_TORCH_LINE}",
        required=False,
    )


def gather() -> list[Check]:
    checks = [
        Check("interpreter", sys.version_info >= (3, 11), f"{sys.executable} (Python {platform.python_version()})")
    ]
    checks += _xlwings_checks()
    try:
        import torch

        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
        checks.append(Check("torch", True, f"{torch.__version__}; devices: {', '.join(devices)}"))
        build = torch_build_check(torch.version.cuda, torch.cuda.is_available())
        if build is not None:
            checks.append(build)
    except Exception as err:
        checks.append(Check("torch", False, f"import failed: {type(err).__name__}: {err}"))
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    checks.append(
        Check(
            "LibreOffice",
            bool(soffice),
            soffice or "not found (optional: headless recalculation checks; apt-get install libreoffice-calc-nogui)",
            required=False,
        )
    )
    folder = cache_dir()
    writable = (
        os.access(folder, os.W_OK)
        if folder.exists()
        else os.access(folder.parent if folder.parent.exists() else Path.home(), os.W_OK)
    )
    checks.append(
        Check(
            "cache dir",
            writable,
            f"{folder} ({'exists' if folder.exists() else 'will be created'})"
            + ("" if writable else " — not writable"),
            required=False,
        )
    )
    return checks


def run(args) -> int:
    checks = gather()
    failed = [c for c in checks if c.required and not c.ok]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        for c in checks:
            mark = "ok " if c.ok else ("!! " if c.required else "-- ")
            print(f"{mark} {c.name}: {c.detail}")
        print("all required checks passed" if not failed else f"{len(failed)} required check(s) failed")
    return 1 if failed else 0
