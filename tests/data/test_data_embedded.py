"""The lesson's 15x15 table shipped in data/: its content, and that installs (wheel, editable) find it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xlcf.data import crosstab_csv, lesson_crosstab, lesson_titles, load_titles
from xlcf.data.embedded import embedded_bytes

REPO = Path(__file__).resolve().parents[2]
LESSON_USERS = [15, 30, 73, 212, 213, 294, 311, 380, 452, 468, 509, 547, 564, 580, 624]
LESSON_MOVIES = [1, 110, 260, 296, 318, 356, 480, 527, 589, 593, 608, 1196, 1198, 1270, 2571]


def test_lesson_crosstab_shape_ids_and_values():
    table = lesson_crosstab()
    assert table.index.tolist() == LESSON_USERS and table.index.name == "userId"
    assert table.columns.tolist() == LESSON_MOVIES and table.columns.name == "movieId"
    assert table.index.dtype == np.int64 and table.columns.dtype == np.int64
    assert (table.dtypes == np.float64).all()
    values = table.to_numpy()
    assert int(np.isfinite(values).sum()) == 206
    rated = values[np.isfinite(values)]
    assert rated.min() >= 0.5 and rated.max() <= 5.0 and np.all(rated * 2 == np.round(rated * 2))
    assert table.at[15, 1] == 2.0 and table.at[73, 260] == 4.5 and np.isnan(table.at[212, 608])


def test_lesson_crosstab_is_a_fresh_copy_each_time():
    table = lesson_crosstab()
    table.iloc[0, 0] = -1.0
    assert lesson_crosstab().iloc[0, 0] == 2.0


def test_embedded_csv_is_in_the_documented_format():
    text = (REPO / "data" / "lesson_crosstab.csv").read_text()
    assert text.splitlines()[0] == "userId," + ",".join(map(str, LESSON_MOVIES))
    assert text == crosstab_csv(lesson_crosstab())  # round trip: written exactly as `xlcf crosstab --csv` writes
    assert embedded_bytes("lesson_crosstab.csv") == (REPO / "data" / "lesson_crosstab.csv").read_bytes()


def test_lesson_titles_are_the_2016_titles(ml2016):
    titles = lesson_titles()
    assert sorted(titles) == LESSON_MOVIES
    assert titles[2571] == "Matrix, The (1999)"
    release = load_titles(ml2016)
    assert titles == {m: release[m] for m in LESSON_MOVIES}


def _listed_packages() -> list[str] | None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = config.get("tool", {}).get("setuptools", {}).get("packages")
    return packages if isinstance(packages, list) else None


def test_every_subpackage_is_listed_in_pyproject():
    listed = _listed_packages()
    if listed is None:
        pytest.skip("pyproject.toml still uses packages.find (fix requested in .notes/requests-data.md)")
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "xlcf").rglob("__init__.py")}
    assert on_disk - set(listed) == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "xlcf._embedded" in listed


@pytest.mark.slow
def test_wheel_contains_embedded_csvs_and_installed_xlcf_reads_them(tmp_path):
    if _listed_packages() is None or "xlcf._embedded" not in _listed_packages():
        pytest.xfail("packages.find cannot pick up the mapped xlcf._embedded; fix in .notes/requests-data.md")
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".venv",
            ".notes",
            "workbooks",
            "tests",
        ),
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheels"),
            "-q",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("xlcf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "xlcf/_embedded/lesson_crosstab.csv" in names and "xlcf/_embedded/lesson_movies.csv" in names
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("xlcf/_embedded/lesson_crosstab.csv") == (REPO / "data/lesson_crosstab.csv").read_bytes()

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    code = (
        "import xlcf.data.embedded as e, importlib.resources as r; from xlcf.data import lesson_crosstab;"
        "print(e.__file__); print(r.files('xlcf._embedded').joinpath('lesson_crosstab.csv').is_file());"
        "print(int(lesson_crosstab().notna().to_numpy().sum()))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    origin, found, rated = run.stdout.split()
    assert origin.startswith(str(target)) and found == "True" and rated == "206"
