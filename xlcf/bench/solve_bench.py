"""The Solver replacement in ``xlcf bench``: a collaborative-filtering sheet solved through the formula evaluator
(``xlcf solve`` / ``xlcf fit`` on a layout the fast path does not know), beside the fast path on the same start.

Sheets are built in memory (:meth:`xlcf.formula.FormulaBook.from_cells`) in the lesson's layout, with the
prediction written the way the fast path cannot read — the biases outside the IF::

    =IF(H2="",0,MMULT($B26:$F26,H$20:H$24))+H$19+$A26         objective  =SQRT(SUMXMY2(R,P)/COUNT(R))

1. the lesson's 15 x 15 table, 5 factors (dot: no bias terms; bias: as above): objective and RMSE over the rated
   cells against the global minima, solve time with multistart (target <= 100 ms);
2. a 200 users x 200 movies x 10 factors sheet (synthetic low-rank ratings, a third rated; target <= 2 s).

Times: ``solve`` is the optimisation (multistart included); ``build`` is everything else ``solve_model`` does:
it compiles the formulas, records the objective (the numpy tape, or torch's trace), checks the start and
computes the cached values written back. Imports are done before the clock starts. Each figure is the median of
``repeats`` runs; CPU seconds of the solve are given beside its wall seconds because a shared machine stretches
the wall clock.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from xlcf.ooxml.refs import col_letter as _col

SHEET_MINIMA = {"dot": 0.3929, "bias": 0.3187}
SMALL_TARGET_S, LARGE_TARGET_S = 0.1, 2.0


def lesson_cells(ratings: np.ndarray, k: int, *, bias: bool, seed: int = 0, sheet: str = "model"):
    """(cells, names, layout) of a sheet in the lesson's layout for ``ratings`` (NaN = unrated), k factors, with
    a stored Solver model. Factors (and biases) start uniform in [0, 1) from ``default_rng(seed)``."""
    n_users, n_movies = int(ratings.shape[0]), int(ratings.shape[1])
    rng = np.random.default_rng(seed)
    uf, mf = rng.random((n_users, k)), rng.random((k, n_movies))
    ub, mb = rng.random(n_users), rng.random(n_movies)
    r_top, left = 2, k + 3  # ratings from row 2, movies from the column after the ids
    mb_row = r_top + n_users + 2
    mf_top = mb_row + 1
    p_top = mf_top + k + 1
    obj_row = p_top + n_users + 1
    last = _col(left + n_movies - 1)
    cells: dict[tuple[int, int], tuple] = {}
    for i in range(n_users):
        for j in range(n_movies):
            if not math.isnan(ratings[i, j]):
                cells[(r_top + i, left + j)] = (float(ratings[i, j]), None)
            c, row = _col(left + j), p_top + i
            pred = f'IF({c}{r_top + i}="",0,MMULT($B{row}:${_col(k + 1)}{row},{c}${mf_top}:{c}${mf_top + k - 1}))'
            if bias:
                pred += f"+{c}${mb_row}+$A{row}"
            cells[(row, left + j)] = (0.0, "=" + pred)
        for a in range(k):
            cells[(p_top + i, 2 + a)] = (float(uf[i, a]), None)
        if bias:
            cells[(p_top + i, 1)] = (float(ub[i]), None)
    for a in range(k):
        for j in range(n_movies):
            cells[(mf_top + a, left + j)] = (float(mf[a, j]), None)
    if bias:
        for j in range(n_movies):
            cells[(mb_row, left + j)] = (float(mb[j]), None)
    rat = f"{_col(left)}{r_top}:{last}{r_top + n_users - 1}"
    pre = f"{_col(left)}{p_top}:{last}{p_top + n_users - 1}"
    cells[(obj_row, left + n_movies - 1)] = (0.0, f"=SQRT(SUMXMY2({rat},{pre})/COUNT({rat}))")
    adj = [f"$B${p_top}:${_col(k + 1)}${p_top + n_users - 1}", f"${_col(left)}${mf_top}:${last}${mf_top + k - 1}"]
    if bias:
        adj += [f"$A${p_top}:$A${p_top + n_users - 1}", f"${_col(left)}${mb_row}:${last}${mb_row}"]
    names = {
        sheet: {
            "solver_opt": f"{sheet}!${last}${obj_row}",
            "solver_adj": ",".join(f"{sheet}!{a}" for a in adj),
            "solver_typ": "2",
            "solver_neg": "2",
            "solver_num": "0",
        }
    }
    layout = {"predictions": pre, "p_top": p_top, "left": left, "uf": uf, "mf": mf, "ub": ub, "mb": mb}
    return {sheet: cells}, names, layout


def synthetic_ratings(n_users: int, n_movies: int, k: int, density: float, seed: int = 0) -> np.ndarray:
    """Half-star ratings in [0.5, 5] from a rank-k model plus noise; NaN where unrated."""
    rng = np.random.default_rng(seed)
    u, m = rng.normal(0, 0.6, (n_users, k)), rng.normal(0, 0.6, (k, n_movies))
    full = 3.5 + u @ m + rng.normal(0, 0.3, (n_users, n_movies))
    full = np.clip(np.round(full * 2) / 2, 0.5, 5.0)
    full[rng.random((n_users, n_movies)) >= density] = np.nan
    return full


def _rated_rmse(ratings, values: dict, sheet: str, layout) -> float:
    n_users, n_movies = ratings.shape
    pred = np.array(
        [
            [values[sheet][f"{_col(layout['left'] + j)}{layout['p_top'] + i}"] for j in range(n_movies)]
            for i in range(n_users)
        ],
        dtype=float,
    )
    mask = ~np.isnan(ratings)
    return math.sqrt(float(((ratings[mask] - pred[mask]) ** 2).sum()) / mask.sum())


def solve_sheet(ratings: np.ndarray, k: int, *, bias: bool, device: str = "cpu") -> dict:
    """Build, compile and solve one sheet through the evaluator; timings and quality."""
    from xlcf.actions.solve import read_model, solve_model
    from xlcf.formula import FormulaBook

    cells, names, layout = lesson_cells(ratings, k, bias=bias)
    book = FormulaBook.from_cells(cells, names)
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = solve_model(book, read_model(book, "model"), device=device)
    total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "objective": outcome.objective_after,
        "rmse": _rated_rmse(ratings, outcome.values, "model", layout),
        "solve_s": outcome.seconds,
        "solve_cpu_s": outcome.cpu_seconds,
        "total_s": total_wall,
        "total_cpu_s": total_cpu,
        "build_s": total_wall - outcome.seconds,
        "runs": len(outcome.runs),
        "evaluations": outcome.evaluations,
        "cells": outcome.formulas_per_evaluation,
        "device": outcome.device,
        "engine": outcome.engine,
        "layout": layout,
    }


def _median_run(runs: list[dict]) -> dict:
    """The figures of several runs: medians of the times, the rest from the first run (the same every time)."""
    out = dict(runs[0])
    for key in ("solve_s", "solve_cpu_s", "total_s", "total_cpu_s", "build_s", "fit_s"):
        if key in out:
            out[key] = float(np.median([r[key] for r in runs]))
    out["repeats"] = len(runs)
    return out


def warm_up(device: str) -> None:
    """Imports and first-call set-up (torch, scipy's optimizers, the evaluator's modules) before the clock."""
    import scipy.optimize  # noqa: F401
    import torch  # noqa: F401

    from xlcf.formula import tape  # noqa: F401

    table = np.array([[5.0, np.nan, 3.0], [4.0, 2.0, np.nan], [np.nan, 1.0, 4.0]])
    solve_sheet(table, 1, bias=True, device=device)


def fast_path(ratings: np.ndarray, layout: dict, *, bias: bool, optimizer: str = "lbfgs") -> dict:
    from xlcf.actions.fit import fit_sheet_arrays

    biases: tuple[np.ndarray | None, np.ndarray | None] = (layout["ub"], layout["mb"]) if bias else (None, None)
    wall, cpu = time.perf_counter(), time.process_time()
    fit = fit_sheet_arrays(ratings, layout["uf"], layout["mf"], *biases, {"optimizer": optimizer}, scale=None)
    return {
        "rmse": fit.rmse_after,
        "fit_s": fit.fit_seconds,
        "total_s": time.perf_counter() - wall,
        "total_cpu_s": time.process_time() - cpu,
        "runs": len(fit.result.runs) if fit.result else 1,
    }


def bench_solve(device: str, out, *, large: bool = True, repeats: int = 3) -> list[dict]:
    """Print and return the rows of the Solver-replacement benchmark (medians of ``repeats`` runs)."""
    from xlcf.data import lesson_crosstab

    warm_up(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out(
        f"\n## xlcf solve through the formula evaluator (a layout the fast path does not know), "
        f"median of {repeats}, load {load:.1f}"
    )
    out(
        f"{'sheet':22s} {'RMSE':>8s} {'vs min':>8s} {'solve s':>8s} {'cpu s':>7s} {'build s':>8s} {'runs':>5s} "
        f"{'evals':>6s} {'engine':>10s} | fast path lbfgs: {'RMSE':>8s} {'s':>7s}"
    )
    rows = []
    table = lesson_crosstab().to_numpy(dtype=float)
    cases: list[tuple[str, np.ndarray, int, bool, float | None, float]] = [
        ("lesson 15x15 dot", table, 5, False, SHEET_MINIMA["dot"], SMALL_TARGET_S),
        ("lesson 15x15 bias", table, 5, True, SHEET_MINIMA["bias"], SMALL_TARGET_S),
    ]
    if large:
        cases.append(("synthetic 200x200x10", synthetic_ratings(200, 200, 10, 1 / 3), 10, True, None, LARGE_TARGET_S))
    for label, ratings, k, bias, minimum, target in cases:
        res = _median_run([solve_sheet(ratings, k, bias=bias, device=device) for _ in range(max(1, repeats))])
        layout = res.pop("layout")
        fast = _median_run([fast_path(ratings, layout, bias=bias) for _ in range(max(1, repeats))])
        gap = "" if minimum is None else f"{(res['rmse'] / minimum - 1) * 100:+.2f}%"
        met = "met" if res["solve_s"] <= target else "MISSED"
        out(
            f"{label:22s} {res['rmse']:8.5f} {gap:>8s} {res['solve_s']:8.3f} {res['solve_cpu_s']:7.3f} "
            f"{res['build_s']:8.3f} {res['runs']:5d} {res['evaluations']:6d} {res['engine']:>10s} | "
            f"{fast['rmse']:24.5f} {fast['fit_s']:7.3f}  (solve {met} the {target:g} s target)"
        )
        rows.append({"sheet": label, **res, "fast_path": fast, "target_s": target, "load": load})
    return rows
