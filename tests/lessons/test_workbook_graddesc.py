"""The gradient-descent workbook: the numpy reference's rules, and the generated package (no LibreOffice)."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from xlcf.errors import ConfigError, WorkbookError
from xlcf.lessons import graddesc_ref as ref
from xlcf.lessons.graddesc import COLUMNS, build_graddesc

X = np.array([3.0, 10.0, 1.0, 7.0])
Y = 2 * X + 30


def test_data_is_seeded_integers():
    x0, y0 = ref.make_data(0)
    x0b, _ = ref.make_data(0)
    x1, _ = ref.make_data(1)
    np.testing.assert_array_equal(x0, x0b)
    assert not np.array_equal(x0, x1)
    assert ((x0 >= 1) & (x0 <= 100) & (x0 == np.round(x0))).all()
    np.testing.assert_array_equal(y0, 2 * x0 + 30)


def test_basic_rows_by_hand():
    res = ref.run_pass("basic", X[:2], Y[:2], {"slope": 1.0, "const": 1.0}, {"lr": 0.001})
    # row 1: pred = 1*3 + 1 = 4, y = 36, r = -32: de/db = -64, de/da = -192
    assert res.rows["de_db"][0] == -64 and res.rows["de_da"][0] == -192
    b1, a1 = 1 + 0.001 * 64, 1 + 0.001 * 192
    assert res.rows["new_b"][0] == pytest.approx(b1) and res.rows["new_a"][0] == pytest.approx(a1)
    # row 2 starts from row 1's result
    assert res.rows["a"][1] == res.rows["new_a"][0]
    r2 = a1 * 10 + b1 - 50
    assert res.after["const"] == pytest.approx(b1 - 0.001 * 2 * r2)
    assert res.after["slope"] == pytest.approx(a1 - 0.001 * 2 * r2 * 10)
    # the finite-difference estimates approach the analytic derivatives (error = the step's curvature term)
    assert res.rows["est_de_db"] == pytest.approx(res.rows["de_db"] + 0.01, abs=1e-6)
    assert res.rows["est_de_da"] == pytest.approx(res.rows["de_da"] + 0.01 * X[:2] ** 2, abs=1e-6)
    assert res.rmse == pytest.approx(math.sqrt(np.mean((res.after["slope"] * X[:2] + res.after["const"] - Y[:2]) ** 2)))


def test_momentum_with_beta_zero_is_basic():
    a = ref.run_pass("momentum", X, Y, hyper={"lr": 1e-3, "beta": 0.0})
    b = ref.run_pass("basic", X, Y, hyper={"lr": 1e-3})
    assert a.after["slope"] == pytest.approx(b.after["slope"], rel=1e-12)
    assert a.after["v_slope"] == a.rows["de_da"][-1]


def test_rmsprop_and_adam_state_follow_the_formulas():
    res = ref.run_pass("rmsprop", X, Y, hyper={"lr": 0.1, "beta": 0.9, "eps": 1e-8})
    s = 0.0
    for g in res.rows["de_da"]:
        s = 0.9 * s + 0.1 * g * g
    assert res.after["s_slope"] == pytest.approx(s, rel=1e-12)
    adam = ref.run_pass("adam", X, Y, hyper={"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8})
    v = 0.0
    for g in adam.rows["de_db"]:
        v = g * 0.1 + v * 0.9
    assert adam.after["v_const"] == pytest.approx(v, rel=1e-12)


def test_adam_ann_without_annealing_is_adam_and_with_it_lowers_lr():
    hyper = {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    ann = ref.run_pass("adam_ann", X, Y, {"lr": 0.2}, dict(hyper, anneal=1.0))
    adam = ref.run_pass("adam", X, Y, hyper=dict(hyper, lr=0.2))
    assert ann.after["slope"] == pytest.approx(adam.after["slope"], rel=1e-12)
    x, y = ref.make_data(0)
    ann = ref.run_pass("adam_ann", x, y, {"lr": 0.5}, dict(hyper, anneal=0.5))
    grew = np.diff(np.concatenate([[0.0], ann.rows["ratio"]])) > 0
    assert ann.after["lr"] == pytest.approx(0.5 * 0.5 ** grew.sum())
    assert ann.after["ratio"] == ann.rows["ratio"][-1]


@pytest.mark.parametrize("kind", ref.KINDS)
def test_default_passes_make_progress_without_blowing_up(kind):
    x, y = ref.make_data(0)
    results = ref.run_passes(kind, x, y, passes=20)
    rmses = [r.rmse for r in results]
    assert all(math.isfinite(v) for v in rmses)
    assert rmses[-1] < results[0].rmse_start / 4
    assert max(rmses) < results[0].rmse_start


def test_unknown_kind():
    with pytest.raises(ConfigError, match="adam_ann"):
        ref.run_pass("nesterov", X, Y)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    path = tmp_path_factory.mktemp("graddesc") / "graddesc.xlsx"
    return path, build_graddesc(path, seed=0)


def test_package_names_charts_and_panes(book):
    from openpyxl import load_workbook

    from xlcf.ooxml.package import Package

    path, layout = book
    pkg = Package.open(path)
    assert pkg.sheet_names == ["data", *ref.KINDS]
    names = pkg.names()
    assert all(n.sheet is not None for n in names), "names are sheet-scoped"
    for kind in ref.KINDS:
        mine = {n.name for n in names if n.sheet == kind}
        required = {
            "slope",
            "const",
            "lastslope",
            "lastconst",
            "lr",
            "rmse",
            "rmse_start",
            "status",
            "history_pass",
            "history_rmse",
        }
        for state in ref.state_names(kind):
            required |= {state, ref.after_name(state), ref.init_name(state)}
        assert required <= mine, (kind, required - mine)
    data_names = {n.name for n in names if n.sheet == "data"}
    assert {"data_x", "data_y", "true_slope", "true_const"} <= data_names
    with zipfile.ZipFile(path) as z:
        charts = [n for n in z.namelist() if n.startswith("xl/charts/chart")]
    assert len(charts) == 1 + 2 * len(ref.KINDS)
    for kind in ref.KINDS:
        assert len(pkg.chart_parts(kind)) == 2
    assert len(pkg.chart_parts("data")) == 1
    wb = load_workbook(path)
    x, _ = ref.make_data(0)
    assert [wb["data"].cell(row=5 + i, column=1).value for i in range(len(x))] == [int(v) for v in x]
    assert wb["data"]["B5"].value == "=$B$3*A5+$B$2"
    for kind in ref.KINDS:
        ws = wb[kind]
        assert ws.freeze_panes == "A21"
        assert [c.value for c in ws[20]][: len(COLUMNS[kind])] == [h for _k, h in COLUMNS[kind]]
        assert ws["A21"].value == "=data!A5"
        # history row 0 pre-laid with the RMSE of the start values
        hp = layout.refs(kind)["history_pass"].split(":")[0]
        assert ws[hp].value == 0


def test_formulas_of_each_rule(book):
    from openpyxl import load_workbook

    path, layout = book
    wb = load_workbook(path)
    basic, mom, ann = wb["basic"], wb["momentum"], wb["adam_ann"]
    assert basic["C21"].value == "=$B$5" and basic["D21"].value == "=$B$4"  # start const, slope
    assert basic["C22"].value == "=M21" and basic["D22"].value == "=N21"  # previous row's new b, a
    assert basic["K21"].value == "=2*(E21-B21)" and basic["L21"].value == "=A21*K21"
    assert basic["M21"].value == "=C21-$B$6*K21"
    assert mom["I22"].value == "=G22*(1-$B$9)+I21*$B$9"
    assert ann["O22"].value.startswith("=IF(N22>N21,M22*")
    assert layout.refs("adam_ann")["lastlr"] == "C10"


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        build_graddesc(tmp_path / "g.xlsx", seed=-1)
    with pytest.raises(WorkbookError):
        build_graddesc(tmp_path / "nope" / "g.xlsx")
    (tmp_path / "g.xlsx").write_text("x")
    with pytest.raises(WorkbookError, match="--force"):
        build_graddesc(tmp_path / "g.xlsx")
