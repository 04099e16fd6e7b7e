"""Contract tests of the engine, written once and run for every model x optimizer on tiny synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xlcf.errors import ConfigError, DataError, DivergenceError
from xlcf.train import OPTIMIZERS, EpochStats, FitResult, InitialParams, TrainConfig, fit, fit_arrays

MODELS = ["dot", "bias", "nn"]
ALL_OPTIMIZERS = sorted(OPTIMIZERS)
GRADIENT_OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam", "adamw"]


def combos():
    for model in MODELS:
        for opt in ALL_OPTIMIZERS:
            if model == "nn" and opt == "als":
                continue  # als is closed-form least squares: dot and bias only (tested to raise below)
            yield model, opt


def synthetic(n_users=30, n_movies=20, k=3, density=0.5, seed=0):
    """Low-rank ratings on the 0.5..5 scale with noise, as (user_index, movie_index, rating)."""
    rng = np.random.default_rng(seed)
    users, movies = rng.normal(size=(n_users, k)), rng.normal(size=(n_movies, k))
    full = 3.0 + 0.6 * users @ movies.T + rng.normal(scale=0.2, size=(n_users, n_movies))
    mask = rng.random((n_users, n_movies)) < density
    mask[np.arange(n_users), np.arange(n_users) % n_movies] = True  # every user and movie rated at least once
    mask[np.arange(n_movies) % n_users, np.arange(n_movies)] = True
    ui, mi = np.nonzero(mask)
    return ui, mi, np.clip(np.round(full[ui, mi] * 2) / 2, 0.5, 5.0).astype(np.float32)


def synthetic_df(seed=0):
    ui, mi, r = synthetic(seed=seed)
    # Raw ids that are not 0..n-1, to check the vocabulary mapping.
    return pd.DataFrame({"userId": ui * 10 + 7, "movieId": mi * 100 + 3, "rating": r.astype(np.float64)})


# Learning rates that move these tiny problems in a few dozen full-batch steps (the defaults are tuned for
# the sheet and for MovieLens, and a near-zero start sits on a saddle that plain SGD leaves slowly).
TEST_LR = {"sgd": 2.0, "momentum": 0.2, "rmsprop": 0.01, "adam": 0.05, "adamw": 0.05}


def small_config(model, opt, **kw):
    epochs = 8 if opt in ("lbfgs", "als") else 60
    if model == "nn" and opt in ("sgd", "momentum"):
        # The network's hidden layer wants smaller plain-SGD steps, and a bigger start to leave the saddle at 0.
        kw.setdefault("lr", {"sgd": 0.5, "momentum": 0.1}[opt])
        kw.setdefault("init_scale", 0.3)
    kw.setdefault("lr", TEST_LR.get(opt))
    return TrainConfig(model=model, optimizer=opt, factors=4, epochs=epochs, valid_pct=0, device="cpu", **kw)


def initial_rmse(result: FitResult, ui, mi, r) -> float:
    return float(np.sqrt(np.mean((r - result.global_mean) ** 2)))


@pytest.mark.parametrize("model,opt", list(combos()))
def test_loss_goes_down_and_result_is_complete(model, opt):
    ui, mi, r = synthetic()
    res = fit_arrays(ui, mi, r, 30, 20, small_config(model, opt))
    assert isinstance(res, FitResult) and res.history and isinstance(res.history[0], EpochStats)
    losses = [h.train_loss for h in res.history]
    assert losses[-1] < losses[0], losses
    # Better than predicting the mean for everybody (what an untrained model does).
    assert res.train_rmse < 0.97 * initial_rmse(res, ui, mi, r)
    assert res.user_factors.shape == (30, res.config.factors) and res.movie_factors.shape == (20, res.config.factors)
    if model == "bias":
        assert res.user_bias.shape == (30,) and res.movie_bias.shape == (20,)
    assert np.all(np.isfinite(res.user_factors)) and np.all(np.isfinite(res.movie_factors))
    pred = res.predict_indices(ui, mi)
    assert math.isclose(float(np.sqrt(np.mean((pred - r) ** 2))), res.train_rmse, rel_tol=1e-4)
    assert res.fit_seconds > 0 and res.device == "cpu"


@pytest.mark.parametrize("model,opt", list(combos()))
def test_deterministic_on_cpu(model, opt):
    df = synthetic_df()
    cfg = small_config(model, opt).replace(
        valid_pct=0.2,
        epochs=5 if opt not in ("lbfgs", "als") else 3,
        batch_size=None if opt in ("lbfgs", "als") else 64,
    )
    a, b = fit(df, cfg), fit(df, cfg)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.movie_factors, b.movie_factors)
    assert [h.valid_rmse for h in a.history] == [h.valid_rmse for h in b.history]
    c = fit(df, cfg.replace(seed=1))
    assert not np.array_equal(a.user_factors, c.user_factors)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("opt", GRADIENT_OPTIMIZERS)
def test_divergence_guard(model, opt):
    ui, mi, r = synthetic()
    cfg = small_config(model, opt, lr=1e7).replace(epochs=20)
    with pytest.raises(DivergenceError) as info:
        fit_arrays(ui, mi, r, 30, 20, cfg)
    err = info.value
    assert "smaller lr" in str(err) and f"epoch {err.epoch}" in str(err)
    res = err.result
    assert isinstance(res, FitResult) and res.stopped_reason == "diverged"
    for arr in (res.user_factors, res.movie_factors, res.user_bias, res.movie_bias):
        assert arr is None or np.all(np.isfinite(arr))
    assert np.all(np.isfinite(res.predict_matrix()))
    assert len(res.history) == err.epoch - 1


@pytest.mark.parametrize("model", ["dot", "bias"])
def test_line_search_and_closed_form_never_write_nan(model):
    """L-BFGS (strong-Wolfe line search) and ALS (no lr) stay finite even with an absurd lr."""
    ui, mi, r = synthetic()
    for opt in ("lbfgs", "als"):
        try:
            res = fit_arrays(ui, mi, r, 30, 20, small_config(model, opt, lr=1e7))
        except DivergenceError as err:
            res = err.result
        assert np.all(np.isfinite(res.predict_matrix()))


def test_als_rejects_nn():
    with pytest.raises(ConfigError, match="dot and bias"):
        TrainConfig(model="nn", optimizer="als")


def test_callback_stops_training():
    ui, mi, r = synthetic()
    seen = []

    def cb(stats):
        seen.append(stats.epoch)
        return stats.epoch < 3

    res = fit_arrays(ui, mi, r, 30, 20, small_config("bias", "adam"), callback=cb)
    assert seen == [1, 2, 3] and len(res.history) == 3 and res.stopped_reason == "callback"


def test_warm_start_uses_given_parameters():
    ui, mi, r = synthetic()
    rng = np.random.default_rng(5)
    init = InitialParams(rng.random((30, 4)), rng.random((20, 4)), rng.random(30), rng.random(20))
    cfg = TrainConfig(
        model="bias",
        optimizer="sgd",
        lr=1e-9,
        epochs=1,
        factors=4,
        valid_pct=0,
        y_range=None,
        global_mean=False,
        device="cpu",
        restarts=0,
    )  # one run: the warm start's
    res = fit_arrays(ui, mi, r, 30, 20, cfg, init=init)
    np.testing.assert_allclose(res.user_factors, init.user_factors, atol=1e-6)
    np.testing.assert_allclose(res.movie_bias, init.movie_bias, atol=1e-6)
    expected = init.user_factors @ init.movie_factors.T + init.user_bias[:, None] + init.movie_bias[None, :]
    np.testing.assert_allclose(res.predict_matrix(), expected, atol=1e-5)


def test_warm_start_shape_mismatch_is_a_config_error():
    ui, mi, r = synthetic()
    init = InitialParams(np.zeros((29, 4)), np.zeros((20, 4)))
    with pytest.raises(ConfigError, match="29 users"):
        fit_arrays(ui, mi, r, 30, 20, small_config("dot", "adam"), init=init)


def test_predict_with_raw_and_unknown_ids():
    df = synthetic_df()
    res = fit(df, TrainConfig(model="bias", factors=4, epochs=20, valid_pct=0.2, device="cpu"))
    known_u, known_m = int(res.users.ids[0]), int(res.movies.ids[0])
    matrix = res.predict_matrix()
    assert math.isclose(float(res.predict(known_u, known_m)), matrix[0, 0], rel_tol=1e-9)
    # Unknown user, known movie: global mean + that movie's bias (through the sigmoid range).
    got = float(res.predict(-12345, known_m))
    lo, hi = res.config.y_range
    raw = res.offset + res.movie_bias[0]
    assert math.isclose(got, lo + (hi - lo) / (1 + math.exp(-raw)), rel_tol=1e-9)
    both_unknown = res.predict([-1, -2], [-3, -4])
    assert np.all(np.isfinite(both_unknown))
    assert np.allclose(both_unknown, res.global_mean, atol=1e-6)
    arr = res.predict(np.array([known_u, -5]), np.array([known_m, known_m]))
    assert arr.shape == (2,) and np.all(np.isfinite(arr))


def test_predict_unknown_for_every_model():
    df = synthetic_df()
    for model in MODELS:
        res = fit(df, TrainConfig(model=model, factors=4, epochs=3, valid_pct=0.2, device="cpu"))
        assert np.all(np.isfinite(res.predict([999999, int(res.users.ids[0])], [int(res.movies.ids[0]), 888888])))
        assert res.valid_rmse is not None and math.isfinite(res.valid_rmse)


def test_nn_numpy_predict_equals_torch_eval_forward():
    """FitResult's numpy forward pass (what predict uses) is the torch model in eval mode, unknown ids included."""
    import torch

    from xlcf.data import Vocabulary
    from xlcf.models import build_model, offset_for
    from xlcf.train.trainer import _export

    n_users, n_movies = 7, 9
    cfg = TrainConfig(
        model="nn", optimizer="sgd", factors=4, hidden=5, dropout=(0.3, 0.4), valid_pct=0, device="cpu"
    ).resolve(50)
    model = build_model(
        "nn",
        n_users,
        n_movies,
        4,
        y_range=cfg.y_range,
        offset=offset_for(3.4, cfg.y_range),
        hidden=5,
        dropout=(0.3, 0.4),
    )
    gen = torch.Generator().manual_seed(0)
    model.init_random(gen, scheme="normal", scale=0.5)
    with torch.no_grad():
        model.user_bias.normal_(0.0, 0.5, generator=gen)
        model.movie_bias.normal_(0.0, 0.5, generator=gen)
    model.generator = gen
    model.eval()
    res = _export(
        model,
        cfg,
        users=Vocabulary.from_ids(np.arange(n_users)),
        movies=Vocabulary.from_ids(np.arange(n_movies)),
        mean=3.4,
        history=[],
        device="cpu",
        seconds=0.0,
        train_rmse=0.0,
        valid_rmse=None,
        stopped=None,
        n_train=50,
        n_valid=0,
        rated=(np.zeros(0, np.int64), np.zeros(0, np.int64)),
    )
    assert res.user_bias.shape == (n_users,) and res.movie_bias.shape == (n_movies,)
    u = np.repeat(np.arange(-1, n_users), n_movies + 1)
    m = np.tile(np.arange(-1, n_movies), n_users + 1)
    with torch.no_grad():
        expected = model.forward_safe(torch.as_tensor(u), torch.as_tensor(m)).double().numpy()
    np.testing.assert_allclose(res.predict_indices(u, m), expected, rtol=1e-5, atol=1e-5)
    # Raw ids: an unknown user or movie gets the global mean + the known side's bias; both unknown: the mean.
    lo, hi = cfg.y_range
    squash = lambda raw: lo + (hi - lo) / (1 + np.exp(-(raw + res.offset)))
    assert math.isclose(float(res.predict(12345, 3)), squash(res.movie_bias[3]), rel_tol=1e-9)
    assert math.isclose(float(res.predict(2, 12345)), squash(res.user_bias[2]), rel_tol=1e-9)
    assert math.isclose(float(res.predict(-1, -2)), 3.4, rel_tol=1e-6)
    np.testing.assert_allclose(
        res.predict_matrix(), expected.reshape(n_users + 1, n_movies + 1)[1:, 1:], rtol=1e-5, atol=1e-5
    )


def test_nn_fit_predict_agrees_with_the_engines_valid_rmse():
    from xlcf.data import split_ratings

    df = synthetic_df()
    train_df, valid_df = split_ratings(df, valid_pct=0.2, seed=0)
    valid_df = pd.concat([valid_df, pd.DataFrame({"userId": [-1, 7], "movieId": [3, -1], "rating": [3.0, 4.0]})])
    res = fit(train_df, TrainConfig(model="nn", factors=4, epochs=5, device="cpu"), valid_df=valid_df)
    assert res.user_bias is not None and np.any(res.user_bias != 0)
    pred = res.predict(valid_df.userId.to_numpy(), valid_df.movieId.to_numpy())
    assert math.isclose(float(np.sqrt(np.mean((pred - valid_df.rating.to_numpy()) ** 2))), res.valid_rmse, rel_tol=1e-5)


def test_recommend_excludes_rated_and_is_sorted():
    df = synthetic_df()
    res = fit(df, TrainConfig(model="bias", factors=4, epochs=20, valid_pct=0.2, device="cpu"))
    user = int(df.userId.iloc[0])
    rated = set(df.loc[df.userId == user, "movieId"])  # train AND valid ratings count as rated
    rec = res.recommend(user, n=5)
    assert list(rec.columns) == ["movieId", "prediction"]
    assert len(rec) == min(5, len(res.movies) - len(rated & set(res.movies.ids)))
    assert not (set(rec.movieId) & rated)
    assert list(rec.prediction) == sorted(rec.prediction, reverse=True)
    everything = res.recommend(user, n=1000, exclude_rated=False)
    assert len(everything) == len(res.movies)
    np.testing.assert_allclose(
        everything.prediction.to_numpy(), res.predict(np.full(len(everything), user), everything.movieId.to_numpy())
    )
    with pytest.raises(DataError, match="not in the training data"):
        res.recommend(-42)


def test_fit_arrays_rejects_bad_arrays():
    with pytest.raises(DataError):
        fit_arrays([0, 1], [0], [3.0, 4.0], 2, 2, TrainConfig(valid_pct=0))
    with pytest.raises(DataError, match="out of range"):
        fit_arrays([0, 5], [0, 1], [3.0, 4.0], 2, 2, TrainConfig(valid_pct=0))
    with pytest.raises(DataError, match="NaN"):
        fit_arrays([0, 1], [0, 1], [3.0, float("nan")], 2, 2, TrainConfig(valid_pct=0))


def test_onecycle_schedule_and_minibatches():
    ui, mi, r = synthetic()
    cfg = TrainConfig(
        model="bias",
        optimizer="adam",
        factors=4,
        epochs=6,
        batch_size=64,
        schedule="onecycle",
        lr=0.05,
        valid_pct=0,
        device="cpu",
    )
    res = fit_arrays(ui, mi, r, 30, 20, cfg)
    lrs = [h.lr for h in res.history]
    assert max(lrs) <= 0.05 + 1e-12 and lrs[-1] < lrs[1] and lrs[-1] < 0.05 / 100
    assert res.config.batch_size == 64 and res.config.schedule == "onecycle"


def test_result_config_is_resolved_and_json_ready():
    import json

    ui, mi, r = synthetic()
    res = fit_arrays(
        ui, mi, r, 30, 20, TrainConfig(model="dot", optimizer="adam", factors=4, valid_pct=0, device="cpu", epochs=3)
    )
    cfg = res.config
    assert cfg.lr is not None and cfg.weight_decay is not None and cfg.batch_size == len(r)
    json.dumps(res.summary())


def test_callable_optimizer():
    import torch

    def my_sgd(params, lr):
        return torch.optim.SGD(params, lr=lr)

    ui, mi, r = synthetic()
    res = fit_arrays(
        ui,
        mi,
        r,
        30,
        20,
        TrainConfig(model="bias", optimizer=my_sgd, lr=0.05, epochs=30, factors=4, valid_pct=0, device="cpu"),
    )
    assert res.optimizer == "my_sgd" and res.history[-1].train_loss < res.history[0].train_loss
