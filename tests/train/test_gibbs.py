"""The gibbs optimizer (Bayesian matrix factorisation by block Gibbs sampling): exact conditional draws,
determinism, recovery of a low-rank truth, calibration on real MovieLens, settings and the result's std."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from xlcf.errors import ConfigError, DivergenceError
from xlcf.train import TrainConfig, fit, fit_arrays
from xlcf.train.gibbs import Priors, Sampler, Side, draw_hyper, draw_rows


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one torch thread (as the engine uses below a million ratings) avoids waiting on a second
    thread of a busy machine at every tiny op; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _closed_form(z_rows, targets, weights, mu, lam, alpha):
    prec = lam + alpha * (z_rows.T * weights) @ z_rows
    cov = np.linalg.inv(prec)
    return cov @ (lam @ mu + alpha * (z_rows.T * weights) @ targets), cov


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conditional_draws_match_the_closed_form(dtype):
    """Many replicas of three rows — 1 and 2 ratings (Matheron's rule) and 10 ratings (Cholesky) — drawn in one
    call: the draws' mean and covariance are the Gaussian conditional's."""
    d, reps = 6, 20000
    rng = np.random.default_rng(0)
    other = rng.normal(size=(12, d))
    z = torch.as_tensor(np.vstack([other, np.zeros((1, d))]), dtype=dtype)
    kinds = [[3], [4, 7], list(range(10))]
    targets = [rng.normal(size=len(k)) for k in kinds]
    weights = [rng.uniform(0.5, 2.0, len(k)) for k in kinds]
    own, oth, rat, wts = [], [], [], []
    for rep in range(reps):
        for j, k in enumerate(kinds):
            own += [rep * 3 + j] * len(k)
            oth += k
            rat += list(targets[j])
            wts += list(weights[j])
    own_t = torch.tensor(own)
    side = Side(own_t, torch.tensor(oth), torch.tensor(rat, dtype=dtype), 3 * reps, d)
    assert {(length, short) for _, length, short in side.batches} == {(1, True), (2, True), (16, False)}
    order = torch.argsort(own_t, stable=True)
    pad = torch.zeros(1, dtype=dtype)
    weight = torch.cat([torch.tensor(wts, dtype=dtype)[order], pad])
    target = torch.cat([side.rating, pad])
    mu = rng.normal(size=d)
    a = rng.normal(size=(d, d))
    lam = a @ a.T + np.eye(d)
    alpha = 1.7
    rows = torch.zeros(3 * reps, d, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    ok = draw_rows(
        rows,
        z,
        side,
        target,
        weight,
        torch.as_tensor(mu, dtype=dtype),
        torch.as_tensor(lam, dtype=dtype),
        alpha,
        torch.randn(3 * reps, d, generator=gen, dtype=dtype),
        torch.randn(side.n + 1, generator=gen, dtype=dtype),
    )
    assert ok
    for j, k in enumerate(kinds):
        mean, cov = _closed_form(other[k], targets[j], weights[j], mu, lam, alpha)
        x = rows[j::3].double().numpy()
        sd = np.sqrt(np.diag(cov))
        # standard error of a mean is sd / sqrt(20000) = 0.007 sd; of a covariance about 1%
        assert np.abs(x.mean(0) - mean).max() / sd.min() < 0.05
        assert np.abs(np.cov(x.T) - cov).max() / np.abs(cov).max() < 0.05


def test_hyper_draws_follow_the_normal_wishart_posterior():
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.normal(loc=[1.0, -2.0, 0.5], scale=[1.0, 0.5, 2.0], size=(400, 3)))
    priors = Priors(prior=1.0)
    draws = [draw_hyper(x, priors, np.random.default_rng(s)) for s in range(500)]
    mus = np.array([mu for mu, _ in draws])
    lams = np.array([lam for _, lam in draws])
    xn = x.numpy()
    # E[Lambda] = nu_n W_n with W_n^-1 = I + scatter + shrinkage term; E[mu] = n xbar / (beta0 + n)
    n, xbar = len(xn), xn.mean(0)
    w_inv = np.eye(3) + (xn - xbar).T @ (xn - xbar) + (2.0 * n / (2.0 + n)) * np.outer(xbar, xbar)
    expected_lam = (3 + n) * np.linalg.inv(w_inv)
    np.testing.assert_allclose(lams.mean(0), expected_lam, rtol=0.05, atol=0.02)
    np.testing.assert_allclose(mus.mean(0), n * xbar / (2.0 + n), atol=0.03)


def _low_rank(n_users=200, n_movies=150, k=3, noise=0.3, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(n_users, k)), rng.normal(size=(n_movies, k))
    bu, bm = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_movies)
    mask = rng.random((n_users, n_movies)) < density
    ui, mi = np.nonzero(mask)
    truth = 3.0 + bu[ui] + bm[mi] + 0.5 * np.einsum("ij,ij->i", p[ui], q[mi])
    return ui, mi, (truth + rng.normal(0, noise, ui.shape[0])).astype(np.float32), truth


def test_recovers_a_low_rank_truth_to_the_noise_level():
    ui, mi, r, truth = _low_rank()
    cut = np.random.default_rng(1).random(r.shape[0]) < 0.8
    cfg = TrainConfig(optimizer="gibbs", factors=3, epochs=120, burn_in=40, valid_pct=0, device="cpu")
    res = fit_arrays(ui[cut], mi[cut], r[cut], 200, 150, cfg, valid=(ui[~cut], mi[~cut], r[~cut]))
    # held-out ratings are predicted about as well as the noise (0.3) allows, far better than the mean (~0.9)
    assert res.valid_rmse_avg < 0.36, res.valid_rmse_avg
    assert res.valid_rmse < 0.37, res.valid_rmse
    # ... and the predictions are close to the noise-free truth
    pred = res.predict_indices(ui[~cut], mi[~cut])
    assert np.sqrt(np.mean((pred - truth[~cut]) ** 2)) < 0.2
    assert 0.55 < res.valid_coverage < 0.8


def _sampler(u, m, r, n_users, n_movies, chunk_floats, seed=0):
    return Sampler(
        torch.as_tensor(u),
        torch.as_tensor(m),
        torch.as_tensor(r),
        n_users,
        n_movies,
        rank=4,
        has_bias=True,
        offset=float(r.mean()),
        priors=Priors(),
        seed=seed,
        dtype=torch.float64,
        chunk_floats=chunk_floats,
    )


def test_deterministic_and_independent_of_the_chunk_size():
    ui, mi, r, _ = _low_rank(n_users=120, n_movies=90)
    chains = []
    counts = []
    for chunk in (1 << 22, 512):  # one batch per bucket; many small batches
        s = _sampler(ui, mi, r, 120, 90, chunk)
        counts.append(len(s.by_movie.batches) + len(s.by_user.batches))
        s.run(4, 1)
        chains.append(s.chain)
    assert counts[1] > counts[0]
    for other in chains[1:]:
        np.testing.assert_allclose(other.users.numpy(), chains[0].users.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(other.movies.numpy(), chains[0].movies.numpy(), rtol=1e-9, atol=1e-12)
        assert other.alpha == pytest.approx(chains[0].alpha, rel=1e-9)
    # the public API: same seed, same result; another seed, another chain
    cfg = TrainConfig(optimizer="gibbs", factors=4, epochs=4, valid_pct=0, device="cpu")
    a, b = fit_arrays(ui, mi, r, 120, 90, cfg), fit_arrays(ui, mi, r, 120, 90, cfg)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.posterior.user_rows, b.posterior.user_rows)
    assert [h.train_rmse for h in a.history] == [h.train_rmse for h in b.history]
    c = fit_arrays(ui, mi, r, 120, 90, cfg.replace(seed=1))
    assert not np.array_equal(a.user_factors, c.user_factors)


def test_result_std_recommend_and_the_sheet_parameters():
    ui, mi, r, _ = _low_rank(n_users=60, n_movies=40, density=0.5)
    res = fit_arrays(ui, mi, r, 60, 40, TrainConfig(optimizer="gibbs", factors=3, epochs=30, valid_pct=0, device="cpu"))
    assert res.config.y_range is None and res.config.burn_in == 15 and res.posterior.count >= 2
    # the posterior-mean parameters are what predict (and a sheet's formulas) use
    sheet = res.user_factors @ res.movie_factors.T + res.user_bias[:, None] + res.movie_bias[None, :] + res.offset
    np.testing.assert_allclose(res.predict_matrix(), sheet, atol=1e-9)
    pred, std = res.predict([0, 1, 999], [0, 5, 3], return_std=True)  # 999: an unknown user
    np.testing.assert_allclose(pred, res.predict([0, 1, 999], [0, 5, 3]))
    assert std.shape == (3,) and np.all(np.isfinite(std)) and np.all(std > 0)
    assert res.predict_std(0, 0) == pytest.approx(std[0])
    top = res.recommend(0, n=5)
    assert list(top.columns) == ["movieId", "prediction", "std"] and (top["std"] > 0).all()
    summary = res.summary()
    assert summary["samples"] == res.posterior.count and summary["train_rmse_avg"] == res.train_rmse_avg
    other = fit_arrays(ui, mi, r, 60, 40, TrainConfig(optimizer="als", factors=3, epochs=2, valid_pct=0, device="cpu"))
    with pytest.raises(ConfigError, match="Bayesian fit"):
        other.predict_std(0, 0)
    assert "std" not in other.recommend(0, n=3).columns


def test_dot_model_and_warm_start():
    from xlcf.train import InitialParams

    ui, mi, r, _ = _low_rank(n_users=30, n_movies=20, density=0.6)
    rng = np.random.default_rng(2)
    init = InitialParams(rng.random((30, 2)), rng.random((20, 2)))
    res = fit_arrays(
        ui,
        mi,
        r,
        30,
        20,
        TrainConfig(
            model="dot",
            optimizer="gibbs",
            factors=2,
            epochs=20,
            valid_pct=0,
            global_mean=False,
            y_range=None,
            device="cpu",
        ),
        init=init,
    )
    assert res.user_bias is None and res.user_factors.shape == (30, 2) and res.offset == 0.0
    assert res.train_rmse < float(np.sqrt(np.mean((r - r.mean()) ** 2)))


def test_callback_and_time_cap_stop_the_chain():
    ui, mi, r, _ = _low_rank(n_users=50, n_movies=40)
    seen = []

    def cb(stats):
        seen.append((stats.epoch, stats.train_rmse))
        return stats.epoch < 3

    cfg = TrainConfig(optimizer="gibbs", factors=3, epochs=40, valid_pct=0, device="cpu")
    res = fit_arrays(ui, mi, r, 50, 40, cfg, callback=cb)
    assert [e for e, _ in seen] == [1, 2, 3] and res.stopped_reason == "callback" and len(res.history) == 3
    assert np.all(np.isfinite(res.user_factors))  # stopped in burn-in: the last draw, still a usable result
    res = fit_arrays(ui, mi, r, 50, 40, cfg.replace(epochs=10_000, burn_in=5, max_seconds=0.5))
    assert res.stopped_reason == "time" and 1 <= len(res.history) < 10_000


def test_divergence_keeps_the_last_finite_draw():
    """Ratings around 1e20 overflow float32 (used above 20,000 ratings): the guard restores the last finite draw."""
    rng = np.random.default_rng(0)
    n = 30_000
    ui, mi = rng.integers(0, 300, n), rng.integers(0, 200, n)
    r = (rng.normal(size=n) * 1e20).astype(np.float32)
    with pytest.raises(DivergenceError) as info:
        fit_arrays(ui, mi, r, 300, 200, TrainConfig(optimizer="gibbs", factors=2, epochs=5, valid_pct=0, device="cpu"))
    err = info.value
    assert f"sweep {err.epoch}" in str(err) and "prior" in str(err)
    assert err.result.stopped_reason == "diverged" and len(err.result.history) == err.epoch - 1
    assert np.all(np.isfinite(err.result.user_factors)) and np.all(np.isfinite(err.result.movie_factors))


@pytest.mark.parametrize(
    "settings,field,fragment",
    [
        ({"factors": 0}, None, "factors must be a whole number >= 1"),
        ({"epochs": 10, "burn_in": 10}, "burn_in", "burn_in must be smaller than epochs"),
        ({"epochs": 10, "burn_in": 30}, "burn_in", "none of 10 to average"),
        ({"burn_in": -1}, None, "burn_in must be a whole number >= 0"),
        ({"prior": -1.0}, None, "prior must be > 0"),
        ({"prior": 0}, None, "prior must be > 0"),
        ({"noise_df": -2}, None, "noise_df must be >= 0"),
        ({"max_seconds": 0}, None, "max_seconds must be > 0"),
        ({"model": "nn"}, "optimizer", "fits the dot and bias models only"),
    ],
)
def test_bad_settings_are_clear_config_errors(settings, field, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        TrainConfig(optimizer="gibbs", **settings)
    if field is not None:
        assert info.value.field == field


def test_default_burn_in_never_exceeds_half_the_sweeps():
    assert TrainConfig(optimizer="gibbs", epochs=10).resolve(100_000).burn_in == 5
    cfg = TrainConfig(optimizer="gibbs").resolve(100_000)
    assert cfg.burn_in < cfg.epochs and cfg.prior > 0 and cfg.noise_df >= 0


def test_result_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from xlcf.train.result import FitResult, PosteriorSamples\n"
        "print(PosteriorSamples.__name__, FitResult.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "PosteriorSamples FitResult" in out.stdout


@pytest.mark.slow
def test_calibrated_and_accurate_on_movielens(ml2018):
    from xlcf.data import load_ratings, split_ratings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratings = load_ratings(ml2018)
    train_df, valid_df = split_ratings(ratings, valid_pct=0.2, seed=0)
    res = fit(
        train_df, TrainConfig(optimizer="gibbs", factors=16, epochs=40, burn_in=15, device="cpu"), valid_df=valid_df
    )
    print(
        f"gibbs 16 factors, 40 sweeps: valid RMSE {res.valid_rmse_avg:.4f} averaged, {res.valid_rmse:.4f} posterior "
        f"means; {res.valid_coverage:.1%} of validation ratings within +-1 std"
    )
    assert res.valid_rmse_avg < 0.86 and res.valid_rmse < 0.86  # Surprise's SVD: 0.877 on this split
    assert 0.55 < res.valid_coverage < 0.80
    # the same through the public API: predict_std on the validation pairs
    pred, std = res.predict(valid_df.userId.to_numpy(), valid_df.movieId.to_numpy(), return_std=True)
    err = np.abs(pred - valid_df.rating.to_numpy())
    assert np.isclose(np.sqrt(np.mean(err**2)), res.valid_rmse, rtol=1e-4)
    within = float(np.mean(err <= std))
    print(f"predict_std ({res.posterior.count} kept draws): {within:.1%} within +-1 std")
    assert 0.55 < within < 0.80
