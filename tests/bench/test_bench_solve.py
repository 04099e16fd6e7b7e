"""The Solver-replacement part of `xlcf bench` (xlcf/bench/solve_bench.py): its sheets compute what they claim, and
the evaluator reaches the same floor as the fast path on them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xlcf.bench.solve_bench import SHEET_MINIMA, bench_solve, lesson_cells, synthetic_ratings
from xlcf.cli import main
from xlcf.data import lesson_crosstab
from xlcf.formula import FormulaBook


@pytest.mark.parametrize("bias", [False, True])
def test_the_sheet_computes_the_lesson_model(bias):
    r = lesson_crosstab().to_numpy(dtype=float)
    cells, names, layout = lesson_cells(r, 5, bias=bias)
    values = FormulaBook.from_cells(cells, names).recalc()
    pred = np.where(np.isnan(r), 0.0, layout["uf"] @ layout["mf"])
    if bias:  # the biases outside the IF: added to every cell, rated or not
        pred = pred + layout["ub"][:, None] + layout["mb"][None, :]
    got = np.array([[values[f"model!{chr(72 + j)}{26 + i}"] for j in range(15)] for i in range(15)])
    np.testing.assert_allclose(got, pred, rtol=1e-13)
    mask = ~np.isnan(r)
    rmse = math.sqrt(float(((r[mask] - pred[mask]) ** 2).sum()) / mask.sum())
    assert values["model!V42"] == pytest.approx(rmse, rel=1e-13)  # Excel's SUMXMY2 skips the blank ratings


def test_synthetic_ratings_are_half_stars_with_the_density_asked():
    r = synthetic_ratings(200, 200, 10, 1 / 3)
    rated = r[~np.isnan(r)]
    assert set(np.unique(rated * 2)) <= set(range(1, 11)) and abs(rated.size / r.size - 1 / 3) < 0.01


def test_bench_rows_reach_the_floor():
    lines = []
    rows = bench_solve("cpu", lines.append, large=False, repeats=1)
    assert "load" in lines[0] and "median of 1" in lines[0]
    for row, model in zip(rows, ("dot", "bias")):
        assert row["rmse"] == pytest.approx(SHEET_MINIMA[model], rel=1e-3)
        assert row["fast_path"]["rmse"] == pytest.approx(SHEET_MINIMA[model], rel=1e-3)
        assert row["solve_s"] > 0 and row["solve_cpu_s"] > 0 and row["evaluations"] > 0
        assert row["engine"] == "numpy tape" and row["repeats"] == 1


def test_solve_only_runs_just_this_series(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--solve-only", "--quick", "--device", "cpu", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "formula evaluator" in text and "15x15 sheet" not in text and "scale series" not in text
    report = json.loads(out.read_text())
    assert [r["sheet"] for r in report["solve"]] == ["lesson 15x15 dot", "lesson 15x15 bias"]
    assert "movielens" not in report and all(r["repeats"] == 1 for r in report["solve"])
