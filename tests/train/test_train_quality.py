"""Real-data quality: default settings on ml-latest-small (skipped when the shared data is absent).
The stricter targets (0.850 / 0.870 / 0.860, with fit time vs Surprise) are measured by `xlcf bench`."""

from __future__ import annotations

import warnings

import pytest

from xlcf.data import load_ratings, split_ratings
from xlcf.train import TrainConfig, fit


@pytest.fixture(scope="module")
def ml2018_split(ml2018):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratings = load_ratings(ml2018)
    return split_ratings(ratings, valid_pct=0.2, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("opt", ["rmsprop", "sgd"])
def test_bias_model_defaults_beat_the_lesson(ml2018_split, opt):
    train_df, valid_df = ml2018_split
    res = fit(train_df, TrainConfig(model="bias", optimizer=opt, device="cpu"), valid_df=valid_df)
    # The lesson's models reached 0.894; Surprise's default SVD ~0.877 on this split.
    assert res.valid_rmse < 0.87, res.valid_rmse
    assert len(res.history) == res.config.epochs and all(h.valid_rmse is not None for h in res.history)
    # Predictions for validation pairs through the public API agree with the engine's own RMSE.
    import numpy as np

    pred = res.predict(valid_df.userId.to_numpy(), valid_df.movieId.to_numpy())
    assert np.isclose(np.sqrt(np.mean((pred - valid_df.rating.to_numpy()) ** 2)), res.valid_rmse, rtol=1e-4)


@pytest.mark.slow
def test_nn_best_settings_reach_the_target(ml2018_split):
    import numpy as np

    from xlcf.bench.runner import BEST

    train_df, valid_df = ml2018_split
    res = fit(train_df, TrainConfig.from_dict({**BEST["nn"], "device": "cpu", "seed": 0}), valid_df=valid_df)
    # The target is 0.860; the biased EmbeddingNet reaches ~0.8536 (0.852-0.854 over seeds).
    assert res.valid_rmse < 0.858, res.valid_rmse
    pred = res.predict(valid_df.userId.to_numpy(), valid_df.movieId.to_numpy())
    assert np.isclose(np.sqrt(np.mean((pred - valid_df.rating.to_numpy()) ** 2)), res.valid_rmse, rtol=1e-4)
