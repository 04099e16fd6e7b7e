"""`xlcf bench --startup-only`: whole-process figures of the commands a user waits for."""

from __future__ import annotations

import json
import os

from xlcf.bench.startup import imported_modules
from xlcf.cli import main


def test_importtime_parser_counts_top_level_imports_and_sees_nested_ones():
    text = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |   numpy._core",
        "import time:       200 |        300 | numpy",
        "import time:        50 |         50 |   pandas",
        "import time:        10 |         60 | xlcf.lessons",
    ])  # fmt: skip
    names, millis = imported_modules(text)
    assert {"numpy", "numpy._core", "pandas", "xlcf.lessons"} <= names
    assert millis == 0.36  # numpy 300 us + xlcf.lessons 60 us; nested imports are inside those


def test_startup_section_runs_each_command_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "startup.json"
    assert main(["bench", "--startup-only", "--startup-repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "start-up and small fits" in text and "load average" in text
    rows = {row["what"]: row for row in json.loads(out.read_text())["startup"]["rows"]}
    assert {"python -c pass", 'python -c "import torch"', "xlcf --help", "xlcf new collab"} <= set(rows)
    for sheet, floor in (("dotprod", 0.3933), ("bias", 0.3191)):
        row = rows[f"xlcf fit --sheet {sheet}"]
        assert row["rmse"] <= floor and row["optimizer"] == "als"  # the sheet's default reaches the floor ...
        assert "torch" not in row["heavy"] and "pandas" not in row["heavy"]  # ... without torch or pandas
        assert row["cpu_s"] > 0 and 0 < row["wall_s"] < 120
    assert rows["xlcf --help"]["heavy"] == []
    assert rows['python -c "import torch"']["cpu_s"] > rows["python -c pass"]["cpu_s"]
    second = json.loads(out.read_text())["startup"]["second_press"]
    if os.environ.get("XLWINGS_LICENSE_KEY"):  # the remote engine can run: the warm press through xlcf serve
        assert [p["sheet"] for p in second["presses"]] == ["dotprod", "bias"]
        assert all(0 < p["second_server_ms"] < 60_000 and "Fitted" in p["status"] for p in second["presses"])
        assert "second press, slowest sheet" in text
    else:
        assert second is None and "second press through xlcf serve: skipped" in text
