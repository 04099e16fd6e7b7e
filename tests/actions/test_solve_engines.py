"""What evaluates a solve's objective: the numpy tape on the CPU (L-BFGS), torch otherwise — the same minimum
either way, and the same result for the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from xlcf.actions import solve as solve_mod
from xlcf.actions.solve import read_model, solve_model
from xlcf.bench.solve_bench import _rated_rmse, lesson_cells
from xlcf.data import lesson_crosstab
from xlcf.formula import FormulaBook

FLOOR = {False: 0.3929, True: 0.3187}


def lesson_book(bias: bool):
    table = lesson_crosstab().to_numpy(dtype=float)
    cells, names, layout = lesson_cells(table, 5, bias=bias)
    return table, FormulaBook.from_cells(cells, names), layout


@pytest.mark.parametrize("bias", [False, True])
def test_the_tape_and_torch_reach_the_same_floor(bias, monkeypatch):
    table, book, layout = lesson_book(bias)
    tape = solve_model(book, read_model(book, "model"), device="cpu")
    assert tape.engine == "numpy tape"
    monkeypatch.setattr(solve_mod, "numpy_tape", lambda compiled, x: None)
    torch_run = solve_model(book, read_model(book, "model"), device="cpu")
    assert torch_run.engine == "torch"
    for outcome in (tape, torch_run):
        rmse = _rated_rmse(table, outcome.values, "model", layout)
        assert rmse == pytest.approx(FLOOR[bias], rel=1e-3)
    assert tape.objective_after == pytest.approx(torch_run.objective_after, rel=1e-6)


def test_the_same_seed_gives_the_same_result_and_another_seed_other_restarts():
    _, book, _ = lesson_book(True)
    a = solve_model(book, read_model(book, "model"), device="cpu", seed=4)
    b = solve_model(book, read_model(book, "model"), device="cpu", seed=4)
    assert _same_runs(a, b) and a.evaluations == b.evaluations
    c = solve_model(book, read_model(book, "model"), device="cpu", seed=5)
    assert [r["loss"] for r in c.runs[1:]] != [r["loss"] for r in a.runs[1:]]


def _same_runs(a, b) -> bool:
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.runs]
    return np.array_equal(a.x, b.x) and strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.runs]


def test_bounded_models_keep_l_bfgs_b_and_first_order_optimizers_keep_torch():
    _, book, _ = lesson_book(False)
    bounded = solve_model(book, read_model(book, "model", bounds=["B26:F40>=0"]), device="cpu")
    assert bounded.engine == "numpy tape" and min(bounded.x[:75]) >= 0.0
    adam = solve_model(book, read_model(book, "model"), optimizer="adam", epochs=20, device="cpu")
    assert adam.engine == "torch"


def test_a_restart_that_reaches_the_best_minimum_stops_there_and_the_best_is_polished():
    """Restarts stop once two runs agree within 0.1%: a restart stops as soon as its loss comes within 0.1% of the
    best finished run's minimum (it agrees), which ends the restarts; the best run is then polished, and the sheet
    reaches the floor."""
    table, book, layout = lesson_book(True)
    outcome = solve_model(book, read_model(book, "model"), device="cpu")
    runs = [r for r in outcome.runs if "polished" not in r["start"]]
    agreeing = [r for r in runs if r["stopped"] == "agrees"]
    assert agreeing and runs[-1]["stopped"] == "agrees"  # the first agreement ends the restarts
    finished = [r["loss"] for r in runs if r["stopped"] not in ("agrees", "budget")]
    for r in agreeing:
        assert r["loss"] - min(finished) <= 1e-3 * min(finished)
    polished = outcome.runs[-1]
    assert "polished" in polished["start"] and polished["loss"] <= min(r["loss"] for r in runs)
    assert _rated_rmse(table, outcome.values, "model", layout) == pytest.approx(FLOOR[True], rel=1e-3)
