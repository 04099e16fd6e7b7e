"""Every failure is one line and exit 2, and the file stays byte-identical: damaged or hostile zips (encrypted
member, compression method 99, corrupt deflate data, a 400 KB zip that expands to 400 MB), damaged workbook
XML, numbers out of range, a closed standard output; and locked cells of protected sheets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.bad_zips import corrupt, deflated, encrypted, method, write_zip, zeros_entry
from tests.helpers.fit_books import lesson_book
from xlcf.cli import main
from xlcf.errors import WorkbookError
from xlcf.ooxml.package import Package

REPO = Path(__file__).resolve().parents[2]
RATINGS = b"userId,movieId,rating\n" + b"".join(b"%d,%d,4\n" % (u, m) for u in range(1, 6) for m in range(1, 6))
FIT = ("--optimizer", "als", "--restarts", "0", "--epochs", "3")


def one_line_error(capsys, *args) -> str:
    """Run the CLI in-process; assert exit 2 and exactly one line on stderr, no traceback; return the line."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert len(lines[0]) < 600, lines[0][:200]  # bounded: values are quoted at most 80 characters
    return lines[0]


@pytest.fixture(scope="module")
def collab_book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("collab") / "b.xlsx"
    assert main(["new", "collab", "-o", str(path)]) == 0
    return path


@pytest.fixture
def book(collab_book, tmp_path) -> Path:
    target = tmp_path / "b.xlsx"
    shutil.copy(collab_book, target)
    return target


def rebuilt(source: Path, target: Path, change: dict) -> Path:
    """``source``'s members rewritten into ``target``: ``change`` maps a member name to a function of its Entry
    (or, for a name not in the zip, to an Entry to append)."""
    with zipfile.ZipFile(source) as zf:
        entries = [deflated(i.filename, zf.read(i)) for i in zf.infolist()]
    entries = [change[e.name](e) if e.name in change else e for e in entries]
    entries += [v for k, v in change.items() if k not in {e.name for e in entries} and not callable(v)]
    return write_zip(target, entries)


def edited_xml(source: Path, target: Path, member: str, edit) -> Path:
    """``source`` with one XML member's text edited."""

    def change(entry):
        with zipfile.ZipFile(source) as zf:
            text = zf.read(member).decode()
        return deflated(member, edit(text).encode())

    return rebuilt(source, target, {member: change})


# --------------------------------------------------------------------------------------------------------------
# Ratings inside a zip


RATINGS_ZIPS = {
    "encrypted member": (lambda e: encrypted(e), "is encrypted (password-protected)"),
    "compression method 99": (lambda e: method(e, 99), "is encrypted (password-protected)"),
    "compression method 93": (lambda e: method(e, 93), "uses compression method 93, which xlcf cannot read"),
    "corrupt deflate data": (corrupt, "is damaged: its compressed data is corrupt"),
}


@pytest.mark.parametrize("case", sorted(RATINGS_ZIPS))
def test_a_damaged_ratings_zip_is_one_line(case, tmp_path, capsys):
    damage, expected = RATINGS_ZIPS[case]
    path = write_zip(tmp_path / "ml.zip", [damage(deflated("ml/ratings.csv", RATINGS))])
    line = one_line_error(capsys, "crosstab", path)
    assert line.startswith(f"xlcf crosstab: error: {path}/ml/ratings.csv: ") and expected in line


def test_a_400_kb_ratings_zip_that_expands_to_400_mb_is_refused_before_decompressing(tmp_path, capsys):
    path = write_zip(tmp_path / "bomb.zip", [zeros_entry("ml/ratings.csv", 400)])
    assert path.stat().st_size < 500_000
    line = one_line_error(capsys, "train", path)
    assert "expands 1,0" in line and "to 400 MB" in line and "refusing to decompress it" in line


def test_the_ratings_of_a_good_zip_still_load(tmp_path, capsys):
    path = write_zip(tmp_path / "ml.zip", [deflated("ml/ratings.csv", RATINGS)])
    assert main(["crosstab", str(path)]) == 0


# --------------------------------------------------------------------------------------------------------------
# Workbooks: damaged zips and XML


WORKBOOK_ZIPS = {
    "encrypted member": (encrypted, "is encrypted (password-protected)"),
    "compression method 99": (lambda e: method(e, 99), "is encrypted (password-protected)"),
    "corrupt deflate data": (corrupt, "is damaged: its compressed data is corrupt"),
}


@pytest.mark.parametrize("case", sorted(WORKBOOK_ZIPS))
def test_a_damaged_workbook_zip_is_one_line(case, collab_book, tmp_path, capsys):
    damage, expected = WORKBOOK_ZIPS[case]
    path = rebuilt(collab_book, tmp_path / "b.xlsx", {"xl/worksheets/sheet1.xml": damage})
    before = path.read_bytes()
    line = one_line_error(capsys, "fit", path, "--sheet", "dotprod", *FIT)
    assert f"{path}: part 'xl/worksheets/sheet1.xml' {expected}" in line
    assert path.read_bytes() == before


def test_a_workbook_that_expands_to_400_mb_is_refused(collab_book, tmp_path, capsys):
    path = rebuilt(collab_book, tmp_path / "b.xlsx", {"xl/media/zeros.bin": zeros_entry("xl/media/zeros.bin", 400)})
    assert path.stat().st_size < 500_000
    before = path.read_bytes()
    line = one_line_error(capsys, "fit", path, "--sheet", "dotprod", *FIT)
    assert "part 'xl/media/zeros.bin' expands" in line and "zip bomb" in line
    assert path.read_bytes() == before


XML_DAMAGE = {
    "localSheetId='x'": (
        "xl/workbook.xml",
        lambda t: re.sub(r'localSheetId="\d+"', 'localSheetId="x"', t, count=1),
        r"the defined name '\w+': localSheetId is 'x', not a sheet index",
    ),
    "row r='abc'": (
        "xl/worksheets/sheet1.xml",
        lambda t: t.replace('<row r="1"', '<row r="abc"', 1),
        r"sheet 'dotprod' \(xl/worksheets/sheet1.xml\): <row r=\.\.\.> is 'abc', not a row number",
    ),
    "row r=0": (
        "xl/worksheets/sheet1.xml",
        lambda t: t.replace('<row r="1"', '<row r="0"', 1),
        r"<row r=\.\.\.> is '0', not a row number \(1 to 1048576\)",
    ),
    "cell r='A0'": (
        "xl/worksheets/sheet1.xml",
        lambda t: re.sub(r'<c r="[A-Z]+\d+"', '<c r="A0"', t, count=1),
        r"<c r=\.\.\.>: 'A0' is outside a worksheet",
    ),
}


@pytest.mark.parametrize("case", sorted(XML_DAMAGE))
def test_damaged_workbook_xml_is_one_line(case, collab_book, tmp_path, capsys):
    member, edit, pattern = XML_DAMAGE[case]
    path = edited_xml(collab_book, tmp_path / "b.xlsx", member, edit)
    before = path.read_bytes()
    line = one_line_error(capsys, "fit", path, "--sheet", "dotprod", *FIT)
    assert re.search(pattern, line), line
    assert "the file is damaged" in line
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------------------------------
# Numbers out of range


def test_a_seed_cell_of_1e20_names_the_cell(book, capsys):
    pkg = Package.open(book)
    (area,) = pkg.name_areas("bias", "seed")
    pkg.write_values("bias", {area.ref: 1e20})
    pkg.save()
    before = book.read_bytes()
    line = one_line_error(capsys, "fit", book, "--sheet", "bias", *FIT)
    assert f"bias!{area.ref}: seed must be a whole number from 0 to 4294967295" in line
    assert book.read_bytes() == before


@pytest.mark.parametrize("command", ["fit", "train"])
def test_a_seed_beyond_32_bits_on_the_command_line(command, book, tmp_path, capsys):
    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(RATINGS)
    args = ["fit", book, "--sheet", "dotprod"] if command == "fit" else ["train", ratings]
    before = book.read_bytes()
    line = one_line_error(capsys, *args, "--seed", "99999999999999999999")
    assert "seed must be a whole number from 0 to 4294967295; got 99999999999999999999" in line
    assert book.read_bytes() == before


def test_factors_that_would_not_fit_in_memory_say_how_much_they_need(tmp_path, capsys):
    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(RATINGS)
    line = one_line_error(capsys, "train", ratings, "--factors", "1000000000000", "--device", "cpu")
    assert re.search(r"factors=1,000,000,000,000 would need about [\d.]+ (TB|GB) of memory for 5 users, 5 movies", line)
    assert "free; at most about" in line


def test_memory_estimate_refuses_only_what_does_not_fit():
    import torch

    from xlcf.train import TrainConfig
    from xlcf.train.memory import check_memory, estimate_bytes

    cfg = TrainConfig(factors=50, batch_size=8192, optimizer="adam", epochs=1, lr=0.01)
    need = estimate_bytes(610, 9724, 80_000, 50, batch_size=8192, optimizer="adam")
    assert 10e6 < need < 100e6  # tens of MB for ml-latest-small at 50 factors
    check_memory(610, 9724, 80_000, cfg, torch.device("cpu"), available=10 * need)
    with pytest.raises(Exception, match=r"at most about [\d,]+ factors fit") as info:
        check_memory(610, 9724, 80_000, cfg, torch.device("cpu"), available=need)
    assert info.value.field == "factors"


# --------------------------------------------------------------------------------------------------------------
# A closed standard output


def test_a_closed_stdout_is_a_quiet_one_line_exit(book):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `xlcf fit ... --json | true`: nobody reads
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "xlcf", "fit", str(book), "--sheet", "dotprod", *FIT, "--json"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write_end)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2
    assert lines == [
        ("xlcf fit: error: standard output was closed before everything was printed (the command itself completed)")
    ], proc.stderr


# --------------------------------------------------------------------------------------------------------------
# Protected sheets


def user_factors(path: Path) -> np.ndarray:
    return np.array(Package.open(path).read_values("dotprod", "B25:F39"), dtype=float)


def test_locked_cells_of_a_protected_sheet_are_refused_naming_them(tmp_path, capsys):
    path = lesson_book(tmp_path / "p.xlsx", protect="all")
    before = path.read_bytes()
    line = one_line_error(capsys, "fit", path, "--sheet", "dotprod", *FIT)
    assert "sheet 'dotprod' is protected and xlcf would change 150 locked cells (B25, C25, D25" in line
    assert "Review > Unprotect Sheet" in line and "--force" in line
    assert path.read_bytes() == before


def test_force_writes_into_a_protected_sheet_and_keeps_its_protection(tmp_path, capsys):
    path = lesson_book(tmp_path / "p.xlsx", protect="all")
    before = user_factors(path)
    capsys.readouterr()
    assert main(["fit", str(path), "--sheet", "dotprod", *FIT, "--force"]) == 0
    assert not np.allclose(user_factors(path), before)
    with zipfile.ZipFile(path) as zf:
        assert b'<sheetProtection sheet="1"' in zf.read("xl/worksheets/sheet1.xml")


def test_unlocked_inputs_of_a_protected_sheet_are_written_and_locked_formulas_get_cached_values(tmp_path, capsys):
    path = lesson_book(tmp_path / "p.xlsx", protect="inputs")
    before = user_factors(path)
    pred_before = Package.open(path).read_cell("dotprod", "H25").value
    capsys.readouterr()
    assert main(["fit", str(path), "--sheet", "dotprod", *FIT]) == 0  # no --force needed
    assert not np.allclose(user_factors(path), before)
    # H25 is a locked formula cell: its cached value is updated (not a write of the cell)
    assert Package.open(path).read_cell("dotprod", "H25").value != pred_before


def test_a_new_cell_on_a_protected_sheet_is_locked_too(tmp_path):
    path = lesson_book(tmp_path / "p.xlsx", protect="inputs")
    pkg = Package.open(path)
    assert pkg.locked_cells("dotprod", ["B25", "H19", "A1", "ZZ999"]) == ["A1", "ZZ999"]
    with pytest.raises(WorkbookError, match=r"would change 1 locked cell \(ZZ999\)") as info:
        pkg.write_values("dotprod", {"B25": 0.5, "ZZ999": 1.0})
    assert info.value.where == "dotprod!ZZ999"
    assert pkg.read_cell("dotprod", "B25").value != 0.5  # all checked before any is changed
    assert Package.open(lesson_book(tmp_path / "u.xlsx")).locked_cells("dotprod", ["A1"]) == []  # unprotected


# --------------------------------------------------------------------------------------------------------------
# The default time cap of command-line fits


def test_a_billion_epoch_fit_stops_at_the_time_cap_and_says_so(book, capsys):
    import json

    capsys.readouterr()
    rc = main(
        [
            "fit",
            str(book),
            "--sheet",
            "bias",
            "--optimizer",
            "rmsprop",
            "--restarts",
            "0",
            "--epochs",
            "1000000000",
            "--time-limit",
            "1",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["time_capped"] is True and summary["time_limit"] == 1.0
    assert 1 <= summary["epochs"] < 1_000_000_000
    assert "training stopped at the time cap of 1 s" in err


def test_train_has_a_default_time_cap_that_can_be_lifted(tmp_path, capsys):
    import json

    from xlcf.cli._options import DEFAULT_TIME_LIMIT

    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(RATINGS)
    capsys.readouterr()
    assert main(["train", str(ratings), "--epochs", "1000000000", "--time-limit", "1", "--json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["time_capped"] is True and "time cap of 1 s" in err
    assert main(["train", str(ratings), "--epochs", "2", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["time_limit"] == DEFAULT_TIME_LIMIT and summary["time_capped"] is False
    assert main(["train", str(ratings), "--epochs", "2", "--json", "--quiet", "--time-limit", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["time_limit"] is None


# --------------------------------------------------------------------------------------------------------------
# Bounded messages


def test_a_5000_character_value_is_quoted_at_most_80_characters(book, tmp_path, capsys):
    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(RATINGS)
    long = "x" * 5000
    for args in (
        ("train", ratings, "--optimizer", long),
        ("fit", book, "--sheet", long),
        ("train", ratings, "--device", long),
    ):
        line = one_line_error(capsys, *args)
        assert "x" * 79 in line and "x" * 81 not in line
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating\n1,1," + "9" * 5000 + "x\n")
    line = one_line_error(capsys, "crosstab", bad)
    assert "bad.csv:2:3: rating" in line and "9" * 81 not in line
