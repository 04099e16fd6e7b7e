"""The numpy tape of the differentiable pass: the same values and gradients as torch's autograd on every Solver
model of the corpus and on a zoo of functions, the grids resolved away, and everything it cannot reproduce
refused (so that the caller keeps torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.formula.conftest import book_of
from tests.helpers.solver_corpus import build_all
from xlcf.formula import FormulaBook, tape_ops
from xlcf.formula.tape import NotTaped, record_tape

# every corpus book whose Solver model compiles (the others are refused before any recording)
CORPUS_MODELS = [
    "if_outside",
    "sumsq_diff",
    "sumproduct_mask",
    "expanded",
    "sumproduct_pred",
    "other_sheet",
    "transposed",
    "sumxmy2_zero_dot",
    "sumxmy2_zero_bias",
    "named",
    "shared",
    "line_fit",
    "line_noisy",
    "rosenbrock",
    "logistic",
    "value_of",
    "nonnegative",
    "bounds",
]

ZOO = {
    "exp_ln": "=EXP(A1/3)+LN(B1*B1+1)",
    "sqrt_abs_power": "=SQRT(ABS(A1)+1)+POWER(B1,2)+A1^3",
    "max_min": "=MAX(A1:C1)+MIN(A1,B1)",
    "sumproduct": "=SUMPRODUCT(A1:C1,D1:F1)",
    "mmult_transpose": "=SUMPRODUCT(MMULT(A1:C1,TRANSPOSE(D1:F1)))",
    "sumx_family": "=SUMSQ(A1:C1)+SUMXMY2(A1:C1,D1:F1)+SUMX2MY2(A1:C1,D1:F1)+SUMX2PY2(A1:C1,D1:F1)",
    "average_count": "=AVERAGE(A1:F1)*COUNT(A1:F1)",
    "if_compare": "=IF(A1>B1,A1-B1,B1-A1)+IF(C1<>0,1/C1,0)",
    "round_int": "=ROUND(A1,1)+INT(B1)+A1*B1",
    "iferror": "=IFERROR(1/(A1-A1),0)+A1*C1",
    "index_match_constant": "=INDEX(A1:F1,1,MATCH(2,{1,2,3},0))*A1",
    "trig_logs": "=SIN(A1)+COS(B1)+TANH(C1)+LOG10(D1*D1+1)+LOG(E1*E1+2)",
    "sign_pi_percent": "=SIGN(A1)*PI()*B1+-C1%",
    "and_or_not": "=IF(AND(A1>0,OR(B1>0,NOT(C1>0))),A1*B1,C1)",
    "offset": "=SUM(OFFSET(A1,0,1,1,3))*A1",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("corpus"))


def torch_value_and_grad(model, x: np.ndarray) -> tuple[float, np.ndarray]:
    xt = torch.tensor(x, requires_grad=True)
    f = model.objective(xt)
    (g,) = torch.autograd.grad(f, xt, allow_unused=True)
    return float(f.detach()), np.zeros_like(x) if g is None else g.numpy()


def assert_agrees(model, tape, points) -> None:
    for x in points:
        f_torch, g_torch = torch_value_and_grad(model, x)
        f_tape, g_tape = tape.value_and_grad(x)
        assert f_tape == pytest.approx(f_torch, rel=1e-9, abs=1e-12)
        assert tape.value(x) == f_tape
        scale = max(1.0, float(np.abs(g_torch).max()))
        assert np.abs(g_tape - g_torch).max() <= 1e-9 * scale, (g_tape, g_torch)


def _model_of(corpus, key):
    cb = corpus[key]
    book = FormulaBook.open(cb.path)
    adj = book.view.names[cb.sheet]["SOLVER_ADJ"]
    return book.compile(f"{cb.sheet}!{cb.objective}", [a.strip() for a in adj.split(",")], backend="torch")


@pytest.mark.parametrize("key", CORPUS_MODELS)
def test_the_tape_equals_torch_on_every_corpus_model(corpus, key):
    model = _model_of(corpus, key)
    tape = record_tape(model.objective, model.x0)
    rng = np.random.default_rng(5)
    points = [model.x0] + [model.x0 + rng.normal(0, 0.2, model.x0.shape) for _ in range(3)]
    assert_agrees(model, tape, points)
    # and equals the evaluator's numpy pass (Excel's semantics)
    for x in points[1:]:
        assert tape.value(x) == pytest.approx(model._objective_numpy(x), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("key", list(ZOO))
def test_the_tape_equals_torch_on_the_functions(key):
    rng = np.random.default_rng(3)
    cells = {c + "1": float(v) for c, v in zip("ABCDEF", rng.uniform(0.5, 2, 6))}
    cells["H1"] = ZOO[key]
    model = book_of(cells).compile("s!H1", ["s!A1:F1"], backend="torch")
    tape = record_tape(model.objective, model.x0)
    assert_agrees(model, tape, [model.x0 + rng.normal(0, 0.1, 6) for _ in range(4)])


def test_the_grids_disappear_from_the_tape(corpus):
    """The lesson's sheet writes its predictions into the sheet's grid and reads them back: on the tape, no step
    handles an array the size of the grid, and far fewer steps remain than torch recorded."""
    model = _model_of(corpus, "if_outside")
    tape = record_tape(model.objective, model.x0)
    grid = model._base.grids["bias"].nrows * model._base.grids["bias"].ncols
    vals = tape._forward(model.x0)
    assert all(np.size(vals[step.out]) < grid for step in tape.steps)
    assert len(tape) < tape.recorded_ops


@pytest.mark.parametrize(
    "formula",
    [
        "=INDEX(D1:F1,MATCH(A1,{0,1,2},1))*B1",  # a lookup on a value that moves with the variables
        '=IF(A1>1,"big",A1)',  # text or a number depending on the variables
        '=COUNTIF(A1:C1,">1")*B1',
    ],
)
def test_a_value_read_back_to_the_host_is_refused(formula):
    cells = {"A1": 0.5, "B1": 2.0, "C1": 1.5, "D1": 3.0, "E1": 4.0, "F1": 5.0, "H1": formula}
    model = book_of(cells).compile("s!H1", ["s!A1:C1"], backend="torch")
    with pytest.raises(NotTaped, match="read back"):
        record_tape(model.objective, model.x0)


def test_what_the_tape_cannot_reproduce_is_refused():
    x0 = np.array([0.5, -1.0, 2.0])
    with pytest.raises(NotTaped, match="read back"):
        record_tape(lambda x: x.sum() if float(x[0]) > 0 else -x.sum(), x0)
    with pytest.raises(NotTaped, match="in-place"):
        record_tape(lambda x: (x * 2).add_(1).sum(), x0)
    with pytest.raises(NotTaped, match="not implemented"):
        record_tape(lambda x: torch.special.erf(x).sum(), x0)
    with pytest.raises(NotTaped, match="does not depend"):
        record_tape(lambda x: torch.tensor(1.0, dtype=torch.float64), x0)


def test_a_wrong_adjoint_is_caught_by_the_check(monkeypatch):
    """The recording checks the reverse pass against the forward one: an operator whose gradient were wrong
    would not be used."""
    wrong = tape_ops._elementwise2(np.multiply, lambda g, o, x, y: 2 * g * y, lambda g, o, x, y: 2 * g * x)
    monkeypatch.setitem(tape_ops.BUILDERS, "aten.mul.Tensor", wrong)
    with pytest.raises(NotTaped, match="disagrees"):
        record_tape(lambda x: (x * x).sum(), np.array([0.5, -1.0, 2.0]))


def test_a_recording_too_large_to_keep_is_refused(monkeypatch):
    from xlcf.formula import tape as tape_mod

    monkeypatch.setattr(tape_mod, "MAX_RECORDED_BYTES", 1000)
    with pytest.raises(NotTaped, match="too large"):
        record_tape(lambda x: (x * x).sum(), np.ones(200))
    assert record_tape(lambda x: (x * x).sum(), np.ones(20)).value(np.full(20, 2.0)) == 80.0


def test_the_evaluators_idioms_are_fused_and_still_equal_torch():
    """The guarded square root and the masked sum of squares of a difference (the lesson's RMSE objective) are
    replayed as one step each, with torch's values and gradients — NaN below zero included, and the blank
    pair left out."""
    cells = {"A1": 0.7, "B1": 1.2, "C1": 0.4, "D1": 1.0, "F1": 3.0, "H1": "=SQRT(SUMXMY2(A1:C1,D1:F1)/2)+SQRT(A1)"}
    model = book_of(cells).compile("s!H1", ["s!A1:C1"], backend="torch")
    tape = record_tape(model.objective, model.x0)
    fused = [step.name for step in tape.steps if step.name.startswith("fused")]
    assert any("sum" in name for name in fused) and sum("where" in name for name in fused) == 2, fused
    rng = np.random.default_rng(7)
    points = [model.x0 + rng.normal(0, 0.2, 3) for _ in range(4)] + [np.array([0.0, 1.0, 3.0])]
    assert_agrees(model, tape, points[:4])
    f0, g0 = tape.value_and_grad(points[4])  # SQRT(0): an infinite slope, as torch has it
    assert np.array_equal(g0, torch_value_and_grad(model, points[4])[1]) and f0 == pytest.approx(2.0**-0.5)
    below = np.array([-0.5, 1.0, 3.0])  # SQRT of a negative number: #NUM!, NaN on the tape as in torch
    f_torch, g_torch = torch_value_and_grad(model, below)
    f_tape, g_tape = tape.value_and_grad(below)
    assert np.isnan(f_tape) and np.isnan(f_torch)
    assert np.array_equal(np.isnan(g_tape), np.isnan(g_torch))
    assert np.allclose(g_tape[~np.isnan(g_tape)], g_torch[~np.isnan(g_torch)], rtol=1e-12)
