"""The numpy small-problem engine (xlcf.train.small) against the torch engine: same starts, same steps, same
results on sheet-sized problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlcf.data import Vocabulary, lesson_crosstab
from xlcf.train import TrainConfig, fit_arrays
from xlcf.train.lbfgs import LBFGS
from xlcf.train.result import InitialParams
from xlcf.train.small import initial_weights, small_path_applies, torch_uniform, train_small
from xlcf.train.trainer import train as train_torch


def _sheet():
    ratings = lesson_crosstab().to_numpy(dtype=float)
    u, m = np.nonzero(~np.isnan(ratings))
    return u, m, ratings[u, m].astype(np.float32)


def _start(model: str, seed: int = 0) -> InitialParams:
    """What `xlcf new collab` writes: uniform [0, 1) factors and biases."""
    from xlcf.lessons.collab import initial_parameters

    st = initial_parameters(15, 15, 5, seed)
    bias = model == "bias"
    return InitialParams(
        st.user_factors, st.movie_factors.T.copy(), st.user_bias if bias else None, st.movie_bias if bias else None
    )


def _both(u, m, r, n_users, n_movies, cfg, init=None, valid=None, callback=None):
    kw = dict(
        valid=valid,
        init=init,
        callback=callback,
        progress=False,
        users=Vocabulary.from_ids(np.arange(n_users)),
        movies=Vocabulary.from_ids(np.arange(n_movies)),
        rated=(u, m),
    )
    assert small_path_applies(cfg.replace(device="cpu"), len(r), n_users, n_movies, init)
    return (train_torch(u, m, r, n_users, n_movies, cfg, **kw), train_small(u, m, r, n_users, n_movies, cfg, **kw))


SHEET = dict(factors=5, y_range=None, global_mean=False, valid_pct=0.0, device="cpu")


# ------------------------------------------------------------------------------------------------
# the pieces


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 + 5, 2**32 - 1])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_uniform_draws_are_torchs_bit_for_bit(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.empty(15, 5), torch.empty(33)
    a.uniform_(0.0, scale, generator=gen)
    b.uniform_(0.0, scale, generator=gen)
    mine = torch_uniform(seed, 75 + 33, scale)
    assert mine.dtype == np.float32
    np.testing.assert_array_equal(mine, np.concatenate([a.numpy().ravel(), b.numpy().ravel()]))


@pytest.mark.parametrize("model", ["dot", "bias"])
def test_initial_weights_are_the_torch_models(model):
    from xlcf.models import build_model

    torch_model = build_model(model, 6, 9, 3)
    torch_model.init_random(torch.Generator().manual_seed(11), scheme="uniform", scale=0.5)
    mine = initial_weights(6, 9, 3, model == "bias", 11, 0.5, None)
    for name, p in torch_model.named_parameters():
        np.testing.assert_array_equal(mine[name], p.detach().double().numpy())
    # a warm start replaces the factors (rounded to float32, as the torch model holds them); a missing
    # bias keeps its draw
    warm = InitialParams(np.full((6, 3), 0.1), np.full((9, 3), 0.2), None, None)
    w = initial_weights(6, 9, 3, model == "bias", 11, 0.5, warm)
    assert w["user_factors"][0, 0] == float(np.float32(0.1))
    if model == "bias":
        np.testing.assert_array_equal(w["user_bias"], mine["user_bias"])


def test_lbfgs_takes_torchs_steps():
    """On a float64 problem the numpy port and torch.optim.LBFGS visit the same points, step after step."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 8))
    target = rng.normal(size=30)

    def f_np(x):  # a non-quadratic objective: least squares + quartic term
        res = a @ x - target
        return float(res @ res + 0.1 * np.sum(x**4)), 2 * a.T @ res + 0.4 * x**3

    x_t = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt_t = torch.optim.LBFGS(
        [x_t],
        lr=1.0,
        max_iter=20,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    a_t, target_t = torch.as_tensor(a), torch.as_tensor(target)

    def closure():
        opt_t.zero_grad()
        res = a_t @ x_t - target_t
        loss = res @ res + 0.1 * (x_t**4).sum()
        loss.backward()
        return loss

    opt_np = LBFGS(lr=1.0)
    x = np.zeros(8)
    for _ in range(4):
        loss_t = float(opt_t.step(closure).detach())
        x, loss_np = opt_np.step(f_np, x)
        assert loss_np == pytest.approx(loss_t, rel=1e-10)
        np.testing.assert_allclose(x, x_t.detach().numpy(), rtol=1e-8, atol=1e-10)
    assert opt_np.func_evals == opt_t.state[x_t]["func_evals"]


# ------------------------------------------------------------------------------------------------
# whole fits: the lesson's sheet, both engines


@pytest.mark.parametrize("model", ["dot", "bias"])
@pytest.mark.parametrize("optimizer", ["als", "lbfgs"])
@pytest.mark.parametrize("start", ["sheet", "random"])
def test_the_sheets_fit_is_the_same_in_numpy_and_torch(model, optimizer, start):
    u, m, r = _sheet()
    cfg = TrainConfig(model=model, optimizer=optimizer, **SHEET)
    init = _start(model) if start == "sheet" else None
    via_torch, via_numpy = _both(u, m, r, 15, 15, cfg, init=init)
    assert via_numpy.train_rmse == pytest.approx(via_torch.train_rmse, abs=1e-6)
    assert via_numpy.device == "cpu" and via_numpy.config == via_torch.config
    assert [run["start"] for run in via_numpy.runs] == [run["start"] for run in via_torch.runs]
    if (model, optimizer) != ("dot", "als"):
        # The same stopping rules. Not for ALS on the dot model: its factors can trade scale between users and
        # movies at no cost, so float32 (torch) and float64 (numpy) meet the relative-change rule at different
        # sweeps on the way to the same floor — the RMSE and the predictions are what must agree.
        assert abs(len(via_numpy.history) - len(via_torch.history)) <= 2
    assert via_numpy.offset == via_torch.offset and via_numpy.global_mean == via_torch.global_mean
    # the fitted predictions on the rated cells agree too (not just their RMSE)
    np.testing.assert_allclose(via_numpy.predict_indices(u, m), via_torch.predict_indices(u, m), atol=2e-3)
    floor = {"dot": 0.3933, "bias": 0.3191}[model]
    assert via_numpy.train_rmse <= floor


@pytest.mark.parametrize("optimizer", ["als", "lbfgs"])
def test_mean_sigmoid_range_validation_and_repeated_cells_agree(optimizer):
    """Off the sheet's settings: global mean, a sigmoid y_range (L-BFGS), held-out ratings with unknown ids,
    and a (user, movie) pair rated twice."""
    rng = np.random.default_rng(3)
    u = rng.integers(0, 12, 150)
    m = rng.integers(0, 10, 150)
    r = rng.choice(np.arange(1, 11) / 2, 150).astype(np.float32)
    u[1], m[1] = u[0], m[0]  # the same cell twice
    valid = (np.array([0, 3, -1, 5]), np.array([1, -1, 2, 9]), np.array([3.5, 4.0, 2.0, 1.0], dtype=np.float32))
    cfg = TrainConfig(
        model="bias",
        optimizer=optimizer,
        factors=3,
        y_range=(0.5, 5.5),
        global_mean=True,
        init="uniform",
        init_scale=0.1,
        valid_pct=0.0,
        restarts=1,
        weight_decay=0.05,
        device="cpu",
    )
    via_torch, via_numpy = _both(u, m, r, 12, 10, cfg, valid=valid)
    assert via_numpy.train_rmse == pytest.approx(via_torch.train_rmse, abs=1e-5)
    assert via_numpy.valid_rmse == pytest.approx(via_torch.valid_rmse, abs=1e-4)
    assert via_numpy.config.y_range == via_torch.config.y_range  # ALS reports the linear model it fitted


def test_callback_stops_both_engines_at_the_same_epoch():
    u, m, r = _sheet()
    cfg = TrainConfig(model="bias", optimizer="als", **SHEET)
    via_torch, via_numpy = _both(u, m, r, 15, 15, cfg, init=_start("bias"), callback=lambda s: s.epoch < 4)
    for res in (via_torch, via_numpy):
        assert res.stopped_reason == "callback" and len(res.history) == 4 and len(res.runs) == 1
    assert [h.train_rmse for h in via_numpy.history] == pytest.approx(
        [h.train_rmse for h in via_torch.history], abs=1e-6
    )


# ------------------------------------------------------------------------------------------------
# when the numpy engine is used


def test_which_problems_train_in_numpy():
    sheet = TrainConfig(model="dot", optimizer="lbfgs", **SHEET)
    assert small_path_applies(sheet, 206, 15, 15)
    assert small_path_applies(sheet.replace(optimizer="als", model="bias"), 206, 15, 15)
    assert not small_path_applies(sheet.replace(optimizer="adam"), 206, 15, 15)  # no numpy twin
    assert not small_path_applies(sheet.replace(model="nn"), 206, 15, 15)
    assert not small_path_applies(sheet, 100_000, 600, 9000)  # MovieLens-sized
    assert not small_path_applies(sheet, 5_000, 1000, 1000)  # too many cells for the dense grid
    assert not small_path_applies(sheet.replace(device="cuda"), 206, 15, 15)
    assert not small_path_applies(sheet.replace(y_range=(0.5, 5.5), global_mean=True), 206, 15, 15)  # normal init
    assert not small_path_applies(sheet.replace(optimizer=lambda params, lr: torch.optim.SGD(params, lr)), 206, 15, 15)


def test_fit_arrays_picks_numpy_for_a_sheet_and_torch_otherwise():
    u, m, r = _sheet()
    cfg = TrainConfig(model="bias", optimizer="lbfgs", **SHEET)
    small = fit_arrays(u, m, r, 15, 15, cfg, init=_start("bias"))
    big = fit_arrays(u, m, r, 15, 15, cfg.replace(optimizer="adam", epochs=50))
    assert small.device == "cpu" and small.train_rmse <= 0.3191
    # the numpy engine keeps float64 parameters; the torch engine's are float32 values
    assert not np.array_equal(small.user_factors, small.user_factors.astype(np.float32))
    np.testing.assert_array_equal(big.user_factors, big.user_factors.astype(np.float32))
