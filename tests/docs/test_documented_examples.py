"""The examples in README.md and docs/ are what the code prints: every ```console block is run and compared.

In a block, a line starting with ``$ xlcf`` is a command; the lines under it, up to the next command, are its
output. A ``…`` in an expected line stands for any text (timings, paths). ``../shared/`` in a command is the shared
data folder beside the repository; a block that needs it is skipped where it is absent. The commands of one block
run in order in one fresh folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def blocks():
    for page in PAGES:
        for n, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8"))):
            yield pytest.param(match.group(1), id=f"{page.relative_to(REPO)}#{n + 1}")


def steps(block: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    while expected and not expected[-1].strip():
        expected = expected[:-1]
    while actual and not actual[-1].strip():
        actual = actual[:-1]
    if len(expected) != len(actual):
        return False
    for want, got in zip(expected, actual):
        pattern = "^" + ".*".join(re.escape(part.rstrip()) for part in want.split("…")) + r"\s*$"
        if not re.match(pattern, got.rstrip()):
            return False
    return True


def test_the_docs_have_examples():
    assert sum(1 for _ in blocks()) >= 3


@pytest.mark.parametrize("block", list(blocks()))
def test_documented_example(block, tmp_path):
    for command, expected in steps(block):
        assert command.startswith("xlcf "), f"only xlcf commands are run: {command}"
        if "../shared/" in command and not SHARED.exists():
            pytest.skip(f"needs {SHARED}")
        args = [a.replace("../shared/", f"{SHARED}/") for a in shlex.split(command)[1:]]
        done = subprocess.run(
            [sys.executable, "-m", "xlcf", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        actual = (done.stdout + done.stderr).splitlines()
        assert done.returncode == 0, f"$ {command}\n{done.stderr}"
        assert matches(expected, actual), (
            f"$ {command}\nexpected:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(actual)
        )
