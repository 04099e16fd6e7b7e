"""Render workbooks as a reader prints them: headless LibreOffice to PDF, poppler to text (and PNG pages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def render_missing_reason() -> str | None:
    """Why PDF renders cannot be made here, or None when they can."""
    if not shutil.which("soffice"):
        return "LibreOffice (soffice) is not installed: apt-get install libreoffice-calc-nogui"
    for tool in ("pdftotext", "pdfinfo"):
        if not shutil.which(tool):
            return f"{tool} is not installed: apt-get install poppler-utils"
    return None


def to_pdf(book: str | Path, out_dir: str | Path) -> Path:
    """``book`` printed to PDF by headless LibreOffice (its own profile, so runs never collide)."""
    book, out_dir = Path(book), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="xlcf-lo-profile-") as profile:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        subprocess.run(
            [
                "soffice",
                f"-env:UserInstallation=file://{profile}",
                "--headless",
                "--convert-to",
                "pdf",
                "--outdir",
                str(out_dir),
                str(book),
            ],
            check=True,
            capture_output=True,
            timeout=300,
            env=env,
        )
    pdf = out_dir / (book.stem + ".pdf")
    if not pdf.exists():
        raise RuntimeError(f"LibreOffice wrote no PDF for {book}")
    return pdf


def pdf_pages(pdf: str | Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def pdf_text(pdf: str | Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True).stdout


def to_png(
    pdf: str | Path, prefix: str | Path, *, dpi: int = 72, first: int = 1, last: int | None = None
) -> list[Path]:
    """PNG pages of ``pdf`` (poppler's pdftoppm), named ``prefix-N.png``."""
    cmd = ["pdftoppm", "-png", "-r", str(dpi), "-f", str(first)]
    if last is not None:
        cmd += ["-l", str(last)]
    subprocess.run([*cmd, str(pdf), str(prefix)], check=True, capture_output=True)
    prefix = Path(prefix)
    return sorted(prefix.parent.glob(prefix.name + "-*.png"))
