"""The numpy L-BFGS of unbounded solves: its compact form is the two-loop recursion, it finds minima, and a
stopped run resumes with what it had learnt."""

from __future__ import annotations

import numpy as np
import pytest

from xlcf.actions import lbfgs


def two_loop(S: np.ndarray, Y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """-H g by Nocedal & Wright's algorithm 7.4 (the textbook form)."""
    q, alphas = g.copy(), []
    for s, y in zip(S[::-1], Y[::-1]):
        a = (s @ q) / (s @ y)
        q -= a * y
        alphas.append(a)
    q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
    for s, y, a in zip(S, Y, alphas[::-1]):
        q += (a - (y @ q) / (s @ y)) * s
    return -q


def test_the_compact_form_is_the_two_loop_recursion_as_pairs_come_and_go():
    rng = np.random.default_rng(0)
    n, memory = 30, 5
    a = rng.normal(size=(n, n))
    hessian = a @ a.T + np.eye(n)
    S = rng.normal(size=(23, n))
    Y = S @ hessian
    st = lbfgs.LbfgsState(np.zeros(n), 0.0, np.zeros(n), memory)
    for i, (s, y) in enumerate(zip(S, Y)):
        st.remember(s, y, float(s @ y), float(y @ y))
        st.g = rng.normal(size=n)
        window = slice(max(0, i + 1 - memory), i + 1)
        want = two_loop(S[window], Y[window], st.g)
        assert np.abs(st.direction() - want).max() <= 1e-12 * np.abs(want).max(), i


def rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray]:
    a, b = x[:-1], x[1:]
    f = float(np.sum(100.0 * (b - a * a) ** 2 + (1 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] += -400.0 * a * (b - a * a) - 2.0 * (1 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


@pytest.mark.parametrize("n", [2, 10])
def test_it_finds_rosenbrocks_minimum(n):
    st = lbfgs.start(rosenbrock, np.full(n, -1.2), memory=10)
    st, reason = lbfgs.run(rosenbrock, st, max_iter=5000, ftol=1e-15, gtol=1e-10)
    assert reason == "converged"
    assert np.allclose(st.x, 1.0, atol=1e-6) and st.f < 1e-12


def test_a_quadratic_is_solved_and_a_budget_stops_a_run_that_resumes():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 40))
    hessian = a @ a.T / 40 + 0.05 * np.eye(40)
    b = rng.normal(size=40)

    def fg(x):
        return 0.5 * float(x @ hessian @ x) - float(b @ x), hessian @ x - b

    st = lbfgs.start(fg, np.zeros(40), memory=50)
    st, reason = lbfgs.run(fg, st, max_iter=5, ftol=1e-15, gtol=1e-10)
    assert reason == "budget" and st.iterations == 5 and st.k == 5
    st, reason = lbfgs.run(fg, st, max_iter=1000, ftol=1e-15, gtol=1e-10)
    assert reason == "converged" and st.iterations > 5
    assert np.allclose(st.x, np.linalg.solve(hessian, b), atol=1e-8)


def test_a_callback_stops_and_a_flat_function_converges():
    calls = []
    st = lbfgs.start(rosenbrock, np.array([-1.2, 1.0]), memory=5)
    st, reason = lbfgs.run(
        rosenbrock, st, max_iter=100, ftol=0.0, gtol=0.0, on_iteration=lambda f: len(calls) < 3 and not calls.append(f)
    )
    assert reason == "stopped" and len(calls) == 3 and calls == sorted(calls, reverse=True)
    st = lbfgs.start(lambda x: (0.0, np.zeros_like(x)), np.ones(3), memory=5)
    assert lbfgs.run(lambda x: (0.0, np.zeros_like(x)), st, max_iter=10, ftol=0.0, gtol=0.0)[1] == "converged"
