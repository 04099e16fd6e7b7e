"""`xlcf bench` smoke test on tiny synthetic data only (the real run is recorded in the README)."""

from __future__ import annotations

import json

import numpy as np

from xlcf.bench.runner import ML25M_MOVIES, ML25M_USERS, find_datasets, synthetic_ratings
from xlcf.cli import main
from xlcf.cli.bench_cmd import _sizes


def test_sizes_parse():
    assert _sizes("1M,5M,25M") == [1_000_000, 5_000_000, 25_000_000]
    assert _sizes("20k, 1.5M") == [20_000, 1_500_000]


def test_synthetic_ratings_shape_and_power_law():
    u, m, r = synthetic_ratings(200_000, seed=0, chunk=30_000)  # several chunks
    assert u.dtype == np.int32 and m.dtype == np.int32 and r.dtype == np.float32 and len(r) == 200_000
    assert u.min() >= 0 and u.max() < ML25M_USERS and m.min() >= 0 and m.max() < ML25M_MOVIES
    assert r.min() >= 0.5 and r.max() <= 5.0 and np.all(np.round(r * 2) == r * 2)
    counts = np.sort(np.bincount(m, minlength=ML25M_MOVIES))[::-1]
    # Power law: the top 1% of movies hold a large share of the ratings, many movies have none.
    assert counts[: ML25M_MOVIES // 100].sum() > 0.3 * len(r) and (counts == 0).sum() > 1000
    again = synthetic_ratings(200_000, seed=0, chunk=30_000)
    assert np.array_equal(again[2], r)


def test_find_datasets(tmp_path):
    (tmp_path / "ml-latest-small").mkdir()
    (tmp_path / "ml-latest-small" / "ratings.csv").write_text("userId,movieId,rating\n")
    assert find_datasets([str(tmp_path)]) == [tmp_path / "ml-latest-small"]
    assert find_datasets([str(tmp_path / "ml-latest-small")]) == [tmp_path / "ml-latest-small"]


def test_bench_smoke(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny"
    data.mkdir()
    pairs = {(int(u), int(m)) for u, m in zip(rng.integers(1, 40, 900), rng.integers(1, 60, 900))}
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{rng.integers(1, 11) / 2},1" for u, m in sorted(pairs)]
    (data / "ratings.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--data",
            str(data),
            "--scale",
            "20k",
            "--scale-epochs",
            "1",
            "--quick",
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "15x15 sheet" in text and "synthetic scale series" in text
    report = json.loads(out.read_text())
    runs = report["movielens"][0]["runs"]
    names = {r["run"] for r in runs}
    assert {"bias: best settings", "dot: best settings", "nn: best settings"} <= names
    assert {f"bias: {o} defaults" for o in ("sgd", "momentum", "rmsprop", "adam", "adamw", "lbfgs", "als")} <= names
    assert all(np.isfinite(r["valid_rmse"]) for r in runs)
    assert len(report["sheet"]) == 18 and all(r["rmse"] < 1.0 for r in report["sheet"])
    assert {r["optimizer"] for r in report["sheet"]} >= {"lbfgs (1 run)", "als (1 run)", "sgd"}
    scale = report["scale"][0]
    assert scale["n_ratings"] == 20_000 and scale["ratings_per_second"] > 0 and scale["peak_rss_mb"] > 0
