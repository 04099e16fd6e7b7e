"""The differentiable pass: the torch objective equals the numpy one, its gradient equals finite differences, the
model's refusals, and the numpy pass never importing torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.formula.conftest import book_of
from tests.helpers.solver_corpus import build_all
from xlcf.errors import FormulaError, SolverModelError
from xlcf.formula import FormulaBook
from xlcf.formula.calc import recalculate, same_value


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("corpus"))


# corpus books whose stored Solver model (solver_opt, solver_adj) is compiled
MODELS = [
    "if_outside",
    "sumsq_diff",
    "sumproduct_pred",
    "transposed",
    "other_sheet",
    "named",
    "expanded",
    "sumxmy2_zero_dot",
    "logistic",
    "rosenbrock",
    "line_fit",
]


def _model_of(corpus, key):
    cb = corpus[key]
    book = FormulaBook.open(cb.path)
    names = book.view.names.get(cb.sheet, {})
    return book, f"{cb.sheet}!{cb.objective}", [a.strip() for a in names["SOLVER_ADJ"].split(",")]


@pytest.mark.parametrize("key", MODELS)
def test_torch_objective_and_gradient_match_numpy_and_finite_differences(corpus, key):
    book, objective, variables = _model_of(corpus, key)
    m = book.compile(objective, variables)
    mt = book.compile(objective, variables, backend="torch")
    rng = np.random.default_rng(1)
    x0 = m.x0 + rng.normal(0, 0.05, m.x0.shape)
    x = torch.tensor(x0, requires_grad=True)
    f = mt.objective(x)
    f.backward()
    assert float(f.detach()) == pytest.approx(m.objective(x0), rel=1e-12)
    assert np.isfinite(m.f0)
    for i in rng.choice(len(x0), size=min(6, len(x0)), replace=False):
        h = 1e-6 * max(1.0, abs(x0[i]))
        e = np.zeros_like(x0)
        e[i] = h
        fd = (m.objective(x0 + e) - m.objective(x0 - e)) / (2 * h)
        assert float(x.grad[i]) == pytest.approx(fd, rel=1e-5, abs=1e-8), (i, float(x.grad[i]), fd)


def test_downstream_values_are_every_formula_cell_below_the_variables(corpus):
    book, objective, variables = _model_of(corpus, "sumsq_diff")
    m = book.compile(objective, variables)
    x = m.x0 * 1.1
    down = m.downstream_values(x)
    assert "dotprod!V42" in down and "dotprod!H26" in down
    assert len(down) == m.downstream_count
    # the same numbers as a full recalculation after writing x into the variable cells
    view = FormulaBook.open(corpus["sumsq_diff"].path).view
    for name, value in m.variable_values(x).items():
        s, ref = name.split("!")
        from xlcf.formula.book import split_cell

        view.sheets[s].values[split_cell(ref)] = value
    full = recalculate(view).values
    assert all(same_value(full[k], v, rel=1e-12) for k, v in down.items())
    assert m.objective(x) == pytest.approx(down[objective], rel=1e-12)


def test_rounding_has_a_zero_gradient_and_untaken_branches_stay_finite():
    book = book_of(
        {
            "A1": 2.3,
            "A2": -1.0,
            "B1": "=ROUND(A1*3,0)+INT(A1)+A1",
            "B2": "=IF(A2>0,SQRT(A2),A2^2)",
            "B3": "=IFERROR(1/(A2+1),5)+B1+B2",
            "B4": "=SUMPRODUCT((A1:A2>0)*A1:A2)",
        }
    )
    mt = book.compile("s!B3", ["s!A1:A2"], backend="torch")
    x = torch.tensor([2.3, -1.0], requires_grad=True)
    f = mt.objective(x)
    f.backward()
    assert float(f.detach()) == pytest.approx(7.0 + 2.0 + 2.3 + 1.0 + 5.0)
    assert x.grad.tolist() == pytest.approx([1.0, -2.0])  # ROUND/INT flat; SQRT branch not taken; 1/0 caught
    assert torch.isfinite(x.grad).all()


def test_model_refusals(corpus):
    book = book_of({"A1": 1.0, "B1": 2.0, "C1": "=A1*2", "D1": "=B1+1", "E1": "=C1^2"})
    with pytest.raises(SolverModelError) as err:
        book.compile("s!D1", ["s!A1"])
    assert err.value.where == "s!D1" and "does not depend on the variable cells" in str(err.value)
    with pytest.raises(SolverModelError) as err:
        book.compile("s!E1", ["s!A1:C1"])
    assert err.value.where == "s!C1" and "holds a formula" in str(err.value)
    with pytest.raises(SolverModelError) as err:
        book.compile("s!B1", ["s!A1"])
    assert err.value.where == "s!B1" and "holds no formula" in str(err.value)
    bad = FormulaBook.open(corpus["circular"].path)
    with pytest.raises(FormulaError) as err:
        bad.compile("bad!D2", ["bad!A2:B2"])
    assert err.value.field == "circular reference"
    start = book_of({"A1": 0.0, "B1": "=1/A1"}).compile("s!B1", ["s!A1"])
    with pytest.raises(SolverModelError) as err:
        start.check_start()
    assert err.value.where == "s!B1" and "#DIV/0!" in str(err.value)


def test_variables_in_the_order_given():
    book = book_of({"A1": 1.0, "A2": 2.0, "C1": 3.0, "D1": "=A1+10*A2+100*C1"})
    m = book.compile("s!D1", ["s!C1", "s!A1:A2"])
    assert m.variable_cells == ["s!C1", "s!A1", "s!A2"]
    assert list(m.x0) == [3.0, 1.0, 2.0]
    assert m.objective(np.array([1.0, 2.0, 3.0])) == 2.0 + 30.0 + 100.0
    mt = book.compile("s!D1", ["s!C1", "s!A1:A2"], backend="torch")
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    mt.objective(x).backward()
    assert x.grad.tolist() == [100.0, 1.0, 10.0]


def test_the_numpy_pass_and_the_commands_never_import_torch(tmp_path, corpus):
    code = (
        "import sys\n"
        "from xlcf.formula import FormulaBook\n"
        f"b = FormulaBook.open({str(corpus['if_outside'].path)!r})\n"
        "b.recalc(); b.check()\n"
        "m = b.compile('bias!V42', ['bias!B26:F40', 'bias!H20:V24']); m.objective(m.x0); m.downstream_values(m.x0)\n"
        "from xlcf.cli import main\n"
        f"main(['check', {str(corpus['if_outside'].path)!r}, '--json'])\n"
        f"main(['recalc', {str(corpus['if_outside'].path)!r}, '--dry-run'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_an_unsupported_formula_below_the_variables_is_refused():
    book = book_of({"A1": 1.0, "B1": "=A1*2", "C1": "=BESSELJ(A1,1)", "D1": "=BESSELJ(5,1)"})
    with pytest.raises(FormulaError) as err:
        book.compile("s!B1", ["s!A1"])  # C1 reads the variable: its cached value could not be kept up to date
    assert err.value.where == "s!C1" and err.value.field == "BESSELJ"
    ok = book_of({"A1": 1.0, "B1": "=A1*2", "D1": "=BESSELJ(5,1)"}).compile("s!B1", ["s!A1"])
    assert ok.f0 == 2.0  # an unsupported cell that neither reads the variables nor is read keeps its cache


def test_recalculator_sets_constants_and_recalculates_again_and_again():
    book = book_of({"A1": 1.0, "A2": 2.0, "B1": "=A1*10+A2", "B2": "=SUM(B1,A1)", "C1": '=IF(B2>20,"big","small")'})
    rc = book.recalculator()
    assert rc.recalc()["s!B2"] == 13.0
    for step in range(1, 4):
        rc.set({"s!A1": float(step * 2)})
        values = rc.recalc()
        assert values["s!B1"] == step * 20 + 2.0 and values["s!B2"] == step * 22 + 2.0
        assert rc.value("s!B2") == values["s!B2"] and rc.value("s!A1") == step * 2
    assert values["s!C1"] == "big"
    with pytest.raises(SolverModelError):
        rc.set({"s!B1": 1.0})


@pytest.mark.gpu
def test_the_differentiable_pass_on_a_cuda_device(corpus):
    book, objective, variables = _model_of(corpus, "if_outside")
    cpu = book.compile(objective, variables, backend="torch")
    gpu = book.compile(objective, variables, backend="torch", device="cuda")
    x_cpu = torch.tensor(cpu.x0, requires_grad=True)
    x_gpu = torch.tensor(gpu.x0, requires_grad=True, device="cuda")
    cpu.objective(x_cpu).backward()
    f = gpu.objective(x_gpu)
    f.backward()
    assert f.device.type == "cuda"
    assert float(f.detach().cpu()) == pytest.approx(cpu.f0, rel=1e-12)
    assert torch.allclose(x_gpu.grad.cpu(), x_cpu.grad, rtol=1e-10, atol=1e-12)
