"""The command line as a whole: version, help on every command, error exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xlcf import __version__
from xlcf.cli import COMMANDS, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"xlcf {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: xlcf {command}")
    assert "not yet implemented" not in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: xlcf" in capsys.readouterr().out


def test_help_does_not_import_torch():
    # `xlcf --help` must stay fast: the heavy engine is imported only by the commands that train.
    code = "import sys; from xlcf.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
