"""Each command imports only what its job needs: torch never for --help, new, step, crosstab, check or a
sheet-sized fit; pandas, scipy and openpyxl only where a path uses them. Every check runs in a fresh
interpreter and looks at ``sys.modules`` after the call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pandas", "scipy", "openpyxl", "xlwings", "tqdm", "fastapi")
LESSON_CSV = "userId,movieId,rating\n" + "\n".join(
    f"{u},{m},{(u * 7 + m) % 10 / 2 + 0.5}" for u in range(1, 9) for m in range(1, 9) if (u + m) % 3
)


def loaded_after(code: str, cwd: Path) -> set[str]:
    """The heavy packages in sys.modules after running ``code`` in a fresh interpreter."""
    out = cwd / "modules.json"
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        with open({str(out)!r}, "w") as f:
            json.dump(sorted(m for m in {HEAVY!r} if m in sys.modules), f)
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def cli(*args: str) -> str:
    """Code that runs ``xlcf ARGS`` in-process and fails on a non-zero exit."""
    return f"""
        import contextlib, io
        from xlcf.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main({list(args)!r})
        assert rc == 0, rc
        """


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for kind in ("collab", "graddesc"):
        subprocess.run(
            [sys.executable, "-m", "xlcf", "new", kind, "-o", str(folder / f"{kind}.xlsx")],
            check=True,
            env=env,
            capture_output=True,
            timeout=300,
        )
    (folder / "ratings.csv").write_text(LESSON_CSV)
    return folder


def test_the_command_line_and_the_layers_below_the_engine_import_no_heavy_library(tmp_path):
    assert loaded_after("import xlcf.cli; xlcf.cli.build_parser()", tmp_path) == set()
    base = ["xlcf", "xlcf.errors", "xlcf.fileio", "xlcf.catalog", "xlcf.ooxml"]
    assert loaded_after("import " + ", ".join(base), tmp_path) == set()
    engine_side = "import xlcf.data, xlcf.train, xlcf.train.config, xlcf.train.result, xlcf.train.engine"
    assert loaded_after(engine_side, tmp_path) == set()


def test_the_workbook_layers_do_not_import_torch(tmp_path):
    modules = [
        f"xlcf.{pkg}.{p.stem}"
        for pkg in ("ooxml", "lessons", "actions")
        for p in sorted((REPO / "xlcf" / pkg).glob("*.py"))
        if p.stem != "__init__"
    ]
    assert "torch" not in loaded_after("import " + ", ".join(modules), tmp_path)


def test_help_imports_nothing_heavy(tmp_path):
    code = """
        import contextlib, io
        from xlcf.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit as stop:
                assert stop.code == 0
        """
    assert loaded_after(code, tmp_path) == set()


def test_new_collab_and_graddesc_need_no_engine(tmp_path):
    for kind in ("collab", "graddesc"):
        # openpyxl writes the new book; pandas holds the lesson's crosstab
        assert loaded_after(cli("new", kind, "-o", str(tmp_path / f"{kind}.xlsx")), tmp_path) <= {"openpyxl", "pandas"}


@pytest.mark.parametrize("sheet", ["dotprod", "bias"])
def test_a_sheet_fit_with_the_sheets_defaults_needs_numpy_only(books, tmp_path, sheet):
    book = tmp_path / "b.xlsx"
    book.write_bytes((books / "collab.xlsx").read_bytes())
    assert loaded_after(cli("fit", str(book), "--sheet", sheet, "--json"), tmp_path) == set()


@pytest.mark.parametrize("optimizer", ["als", "lbfgs"])
def test_fits_with_a_numpy_solver_do_not_import_torch(books, tmp_path, optimizer):
    book = tmp_path / "b.xlsx"
    book.write_bytes((books / "collab.xlsx").read_bytes())
    assert loaded_after(cli("fit", str(book), "--sheet", "bias", "--optimizer", optimizer, "--json"), tmp_path) == set()


def test_a_fit_with_a_gradient_optimizer_imports_torch(books, tmp_path):
    """The other side of the switch: the lesson's optimizers run in torch."""
    book = tmp_path / "b.xlsx"
    book.write_bytes((books / "collab.xlsx").read_bytes())
    assert "torch" in loaded_after(
        cli("fit", str(book), "--sheet", "dotprod", "--optimizer", "adam", "--epochs", "5", "--json"), tmp_path
    )


def test_step_imports_nothing_heavy(books, tmp_path):
    book = tmp_path / "g.xlsx"
    book.write_bytes((books / "graddesc.xlsx").read_bytes())
    assert loaded_after(cli("step", str(book), "--sheet", "adam", "--passes", "2", "--json"), tmp_path) == set()


def test_crosstab_needs_pandas_only(books, tmp_path):
    assert loaded_after(cli("crosstab", str(books / "ratings.csv"), "--top", "5"), tmp_path) <= {"pandas"}


def test_check_imports_no_engine(books, tmp_path):
    book = tmp_path / "b.xlsx"
    book.write_bytes((books / "collab.xlsx").read_bytes())
    code = f"""
        import contextlib, io
        from xlcf.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["check", {str(book)!r}])
        """
    assert "torch" not in loaded_after(code, tmp_path)
