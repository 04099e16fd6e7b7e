"""Distributed training on torch.distributed (gloo, CPU, two local ranks): each algorithm on two ranks reaches what
it reaches on one, each rank holds about half of the ratings, and a failing rank ends the job with one line."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.distributed import fit_each, low_rank_ratings

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

# Settings under which every optimizer converges on the low-rank set (valid RMSE near the noise floor): there the
# order of the mini-batches, which differs between one and two ranks, no longer matters (to well under 0.5%).
COMMON = {"factors": 3, "seed": 0, "restarts": 0}
GRADIENT = {
    "sgd": {"optimizer": "sgd", "lr": 20.0, "epochs": 20, "batch_size": 1024, "weight_decay": 0.05},
    "momentum": {"optimizer": "momentum", "lr": 5.0, "epochs": 20, "batch_size": 1024, "weight_decay": 0.05},
    "rmsprop": {"optimizer": "rmsprop", "lr": 0.01, "epochs": 30, "batch_size": 1024, "weight_decay": 0.05},
    "adam": {"optimizer": "adam", "lr": 0.02, "epochs": 30, "batch_size": 1024, "weight_decay": 0.05},
    "adamw": {"optimizer": "adamw", "lr": 0.02, "epochs": 30, "batch_size": 2048, "weight_decay": 0.2},
    "lbfgs": {"optimizer": "lbfgs", "epochs": 10, "weight_decay": 0.02},
}
ALS = {"optimizer": "als", "epochs": 10, "weight_decay": 0.01}
# The Bayesian sampler: every draw is keyed by row (or rating), so two ranks sample the one-rank chain.
GIBBS = {"optimizer": "gibbs", "epochs": 16, "burn_in": 6}
# Full-batch gradient descent sees the same gradient on one rank and on two: equal up to float rounding.
FULL_BATCH = {
    "optimizer": "adam",
    "lr": 0.02,
    "epochs": 30,
    "batch_size": 10**6,
    "weight_decay": 0.02,
    "schedule": "constant",
}
# Dense and sparse gradient exchange with the same shuffles: the same sums, so the same fit.
EXCHANGE = {"optimizer": "adam", "lr": 0.02, "epochs": 4, "batch_size": 1024, "weight_decay": 0.05}


def _settings() -> dict:
    out = {name: {**s, **COMMON} for name, s in GRADIENT.items()}
    out["als"] = {**ALS, **COMMON}
    out["gibbs"] = {**GIBBS, **COMMON}
    # Multistart: rank 0 keeps the score and tells every rank whether to start another run.
    out["als_restarts"] = {**ALS, **COMMON, "restarts": 3}
    # The time cap of the settings (max_seconds): rank 0's clock stops every rank.
    out["adam_time"] = {**GRADIENT["adam"], **COMMON, "epochs": 100_000, "max_seconds": 1.0}
    out["gibbs_time"] = {**GIBBS, **COMMON, "epochs": 100_000, "max_seconds": 1.0}
    out["als_time"] = {**ALS, **COMMON, "epochs": 100_000, "max_seconds": 0.2}  # (converges after ~170 epochs)
    out["gibbs_one_noise"] = {**GIBBS, **COMMON, "noise_df": 0, "seed": 3}
    out["full_batch"] = {**FULL_BATCH, **COMMON}
    out["dense"] = {**EXCHANGE, **COMMON, "_exchange": "dense"}
    out["sparse"] = {**EXCHANGE, **COMMON, "_exchange": "sparse"}
    # Plain SGD: the in-place row update (sparse) against torch's SGD step on the all-reduced gradient (dense).
    out["sgd_dense"] = {**GRADIENT["sgd"], **COMMON, "epochs": 4, "_exchange": "dense"}
    out["sgd_sparse"] = {**GRADIENT["sgd"], **COMMON, "epochs": 4, "_exchange": "sparse"}
    return out


@pytest.fixture(scope="module")
def ratings():
    return low_rank_ratings()


@pytest.fixture(scope="module")
def two_ranks(ratings):
    """Every fit of ``_settings()`` on two ranks, in one job (starting ranks is the slow part)."""
    from xlcf.train.distributed import launch

    return launch(2, fit_each, ratings, _settings(), timeout=120)[0]


def _one_rank(ratings, name):
    from xlcf.train import TrainConfig, fit

    fields = {k: v for k, v in _settings()[name].items() if not k.startswith("_")}
    return fit(ratings, TrainConfig(**fields))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRADIENT))
def test_two_ranks_reach_the_one_rank_validation_rmse(ratings, two_ranks, name):
    one, two = _one_rank(ratings, name), two_ranks[name]
    assert two["ranks"] == 2
    assert abs(two["valid_rmse"] / one.valid_rmse - 1) <= 0.005, (one.valid_rmse, two["valid_rmse"])
    assert one.valid_rmse < 0.36  # converged near the noise floor (0.3), not stuck at the bias-only level
    n_train = one.n_train
    held = [s["n_train"] for s in two["shards"]]
    assert sum(held) == n_train and all(abs(h - n_train / 2) <= 1 for h in held)  # a random half each


@pytest.mark.slow
def test_als_on_two_ranks_is_the_one_rank_fit(ratings, two_ranks):
    one, two = _one_rank(ratings, "als"), two_ranks["als"]
    assert two["valid_rmse"] == pytest.approx(one.valid_rmse, rel=1e-6)
    assert two["train_rmse"] == pytest.approx(one.train_rmse, rel=1e-6)
    for key in ("user_factors", "movie_factors", "user_bias", "movie_bias"):
        np.testing.assert_allclose(two[key], getattr(one, key), rtol=0, atol=1e-5)
    held = [s["n_train"] for s in two["shards"]]
    by_movie = [s["n_train_by_movie"] for s in two["shards"]]
    # Each rank owns a block of users (and of movies) with about half the ratings.
    assert sum(held) == one.n_train and all(abs(h / one.n_train - 0.5) < 0.02 for h in held)
    assert sum(by_movie) == one.n_train and all(abs(h / one.n_train - 0.5) < 0.02 for h in by_movie)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gibbs", "gibbs_one_noise"])
def test_gibbs_on_two_ranks_samples_the_one_rank_chain(ratings, two_ranks, name):
    one, two = _one_rank(ratings, name), two_ranks[name]
    assert two["ranks"] == 2
    # The contract of every algorithm (within 0.5% of one rank's validation RMSE) ...
    assert abs(two["valid_rmse"] / one.valid_rmse - 1) <= 0.005, (one.valid_rmse, two["valid_rmse"])
    assert one.valid_rmse_avg < 0.36  # averaged predictions near the noise floor (0.3): a working sampler
    # ... and more: the same chain, so the same posterior means, averaged predictions and coverage.
    np.testing.assert_allclose(two["history"], [h.train_rmse for h in one.history], rtol=1e-6)
    for key in ("valid_rmse", "train_rmse", "valid_rmse_avg", "train_rmse_avg", "valid_coverage"):
        assert two[key] == pytest.approx(getattr(one, key), rel=1e-6), key
    for key in ("user_factors", "movie_factors", "user_bias", "movie_bias"):
        np.testing.assert_allclose(two[key], getattr(one, key), rtol=0, atol=1e-5)
    assert two["posterior"] == one.posterior.user_rows.shape  # rank 0 kept the thinned draws of the whole table
    held = [s["n_train"] for s in two["shards"]]
    by_movie = [s["n_train_by_movie"] for s in two["shards"]]
    assert sum(held) == one.n_train and all(abs(h / one.n_train - 0.5) < 0.02 for h in held)
    assert sum(by_movie) == one.n_train and all(abs(h / one.n_train - 0.5) < 0.02 for h in by_movie)


@pytest.mark.slow
def test_restarts_run_as_in_one_process(ratings, two_ranks):
    one, two = _one_rank(ratings, "als_restarts"), two_ranks["als_restarts"]
    assert len(one.runs) >= 2  # restarts did run (and stopped as soon as two runs agreed, or after all 3)
    assert [(r["run"], r["epochs"], r["stopped"]) for r in two["runs"]] == [
        (r["run"], r["epochs"], r["stopped"]) for r in one.runs
    ]
    np.testing.assert_allclose([r["train_rmse"] for r in two["runs"]], [r["train_rmse"] for r in one.runs], rtol=1e-6)
    assert two["best_run"] == one.best_run
    np.testing.assert_allclose(two["user_factors"], one.user_factors, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adam_time", "gibbs_time", "als_time"])
def test_the_time_cap_of_the_settings_stops_every_rank(two_ranks, name):
    two = two_ranks[name]  # (the job went on to the next fit: no rank was left waiting)
    assert two["stopped_reason"] == "time" and 1 <= two["epochs"] < 100_000
    assert len(two["history"]) == two["epochs"]


@pytest.mark.slow
def test_full_batch_gradient_is_the_same_on_two_ranks(ratings, two_ranks):
    one, two = _one_rank(ratings, "full_batch"), two_ranks["full_batch"]
    np.testing.assert_allclose(two["history"], [h.train_rmse for h in one.history], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["", "sgd_"])
def test_dense_and_sparse_gradient_exchange_give_the_same_fit(two_ranks, prefix):
    dense, sparse = two_ranks[prefix + "dense"], two_ranks[prefix + "sparse"]
    assert dense["shards"][0]["exchange"] == {"user": "dense", "movie": "dense"}
    assert sparse["shards"][0]["exchange"] == {"user": "sparse", "movie": "sparse"}
    np.testing.assert_allclose(sparse["history"], dense["history"], rtol=1e-5)
    np.testing.assert_allclose(sparse["user_factors"], dense["user_factors"], atol=1e-4)
    np.testing.assert_allclose(sparse["movie_bias"], dense["movie_bias"], atol=1e-4)


# ------------------------------------------------------------------------------------------------
# the command line: --nproc, torchrun, errors, a killed rank
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ratings_csv(ratings, tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "ratings.csv"
    ratings.to_csv(path, index=False)
    return path


def _xlcf(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "xlcf", *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO
    )


@pytest.mark.slow
def test_cli_nproc_reports_ranks_and_matches_one_process(ratings_csv, tmp_path):
    args = [
        "train",
        str(ratings_csv),
        "--optimizer",
        "als",
        "--factors",
        "3",
        "--epochs",
        "5",
        "--wd",
        "0.01",
        "--json",
        "--quiet",
    ]
    single = _xlcf(*args)
    book = tmp_path / "trained.xlsx"
    double = _xlcf(*args, "--nproc", "2", "--out", str(book))
    assert single.returncode == 0 and double.returncode == 0, double.stderr
    one, two = json.loads(single.stdout), json.loads(double.stdout)  # one JSON object each
    assert one["ranks"] == 1 and two["ranks"] == 2
    assert len(two["rank_n_train"]) == 2 and sum(two["rank_n_train"]) == two["n_train"] == one["n_train"]
    assert all(abs(n / two["n_train"] - 0.5) < 0.02 for n in two["rank_n_train"])
    assert two["valid_rmse"] == pytest.approx(one["valid_rmse"], rel=1e-6)
    assert two["out"] == str(book) and zipfile.is_zipfile(book)  # rank 0 wrote the workbook


@pytest.mark.slow
def test_cli_nproc_runs_the_default_sampler_as_one_process(ratings_csv):
    args = ["train", str(ratings_csv), "--factors", "3", "--epochs", "12", "--json", "--quiet"]
    single, double = _xlcf(*args), _xlcf(*args, "--nproc", "2")
    assert single.returncode == 0 and double.returncode == 0, double.stderr
    one, two = json.loads(single.stdout), json.loads(double.stdout)
    assert one["optimizer"] == two["optimizer"] == "gibbs" and two["ranks"] == 2
    for key in ("valid_rmse", "valid_rmse_avg", "train_rmse_avg"):
        assert two[key] == pytest.approx(one[key], rel=1e-6), key
    assert sum(two["rank_n_train"]) == one["n_train"]


@pytest.mark.slow
def test_torchrun_runs_the_same_entry_point(ratings_csv):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "xlcf",
            "train",
            str(ratings_csv),
            "--optimizer",
            "adam",
            "--factors",
            "3",
            "--epochs",
            "2",
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # rank 0 alone reports
    obj = json.loads(lines[0])
    assert obj["ranks"] == 2 and len(obj["rank_n_train"]) == 2 and obj["epochs"] == 2


@pytest.mark.slow
def test_bad_file_on_rank_0_ends_every_rank_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating\n1,10,4.0\n2,x,3.0\n")
    proc = _xlcf("train", str(bad), "--nproc", "2", "--json", timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.csv:3:2" in lines[0] and lines[0].startswith("xlcf train: error:"), proc.stderr
    assert proc.stdout == ""


@pytest.mark.slow
def test_time_limit_stops_every_rank(ratings_csv):
    proc = _xlcf(
        "train",
        str(ratings_csv),
        "--optimizer",
        "als",
        "--factors",
        "3",
        "--epochs",
        "100000",
        "--time-limit",
        "1",
        "--nproc",
        "2",
        "--json",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["stopped_reason"] == "callback" and 1 <= obj["epochs"] < 100000


def _worker_pids(launcher: int) -> list[int]:
    """Pids of the ranks the launcher spawned (its children running multiprocessing's spawn_main; Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks' processes through Linux /proc")
def test_a_killed_rank_ends_the_job_with_a_readable_error(ratings_csv):
    # Mini-batches at a constant lr never count as converged: the job runs until a rank is killed.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xlcf",
            "train",
            str(ratings_csv),
            "--optimizer",
            "adam",
            "--batch-size",
            "256",
            "--schedule",
            "constant",
            "--factors",
            "3",
            "--epochs",
            "1000000",
            "--nproc",
            "2",
            "--timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=REPO,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("training ratings per rank" in line for line in lines):  # every rank holds its shard
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        pids = _worker_pids(proc.pid)
        assert len(pids) == 2
        os.kill(pids[-1], signal.SIGKILL)
        proc.wait(timeout=120)  # the launcher ends the job (no hang)
        reader.join(timeout=10)
        assert proc.returncode == 2
        assert len(lines) == 2, "".join(lines)  # the start line and one error line
        assert lines[-1].startswith("xlcf train: error: rank ")
        assert f"of 2 (pid {pids[-1]}) was killed by SIGKILL" in lines[-1], "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------------------------------------
# pieces (no ranks started)
# ------------------------------------------------------------------------------------------------
def test_balanced_ranges_split_the_ratings_evenly():
    from xlcf.train.distributed import _balanced_ranges

    rng = np.random.default_rng(1)
    index = np.minimum(rng.zipf(1.5, 50_000) - 1, 999)  # a power law: a few very popular rows
    for world in (1, 2, 3, 8):
        ranges = _balanced_ranges(index, 1000, world)
        assert ranges[0][0] == 0 and ranges[-1][1] == 1000
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous, no gaps
        counts = [int(((index >= lo) & (index < hi)).sum()) for lo, hi in ranges]
        assert sum(counts) == len(index)
        # No block exceeds its fair share by more than the single most popular row.
        assert max(counts) <= len(index) / world + np.bincount(index).max()


def test_restarts_are_kept_and_bad_solvers_refused():
    from xlcf.errors import ConfigError
    from xlcf.train import TrainConfig
    from xlcf.train.distributed import _Data, _plan, register_solver, solver_for

    u, m = np.array([0, 1, 1]), np.array([0, 0, 1])
    r = np.array([3.0, 4.0, 5.0], dtype=np.float32)
    job, _ = _plan(2, _Data(u, m, r, 2, 2, None, None, None, (u, m), TrainConfig(optimizer="adam", restarts=2)))
    assert job.config.restarts == 2
    job, parts = _plan(2, _Data(u, m, r, 2, 2, None, None, None, (u, m), TrainConfig(optimizer="als")))
    # Unset, restarts take the one-process default for the data (as a one-process fit resolves them).
    assert (
        job.config.restarts == TrainConfig(optimizer="als").resolve(3).restarts and sum(p["u"].size for p in parts) == 3
    )
    assert solver_for(TrainConfig(optimizer="als")).shard == "owner"
    assert solver_for(TrainConfig(optimizer="gibbs")).shard == "owner"
    assert solver_for(TrainConfig(optimizer="sgd")).shard == "random"
    with pytest.raises(ConfigError, match="unknown shard kind"):
        register_solver("mine", "diagonal", solver_for(TrainConfig(optimizer="als")).train)


@pytest.mark.slow
def test_bench_ranks_series(tmp_path):
    out = tmp_path / "bench.json"
    proc = _xlcf(
        "bench",
        "--ranks",
        "1,2",
        "--scale",
        "20k",
        "--scale-epochs",
        "2",
        "--dist-optimizers",
        "als",
        "--skip-exchange",
        "--device",
        "cpu",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "distributed scale series" in proc.stdout and "load average" in proc.stdout
    rows = json.loads(out.read_text())["distributed"]
    assert [(r["algorithm"], r["ranks"]) for r in rows] == [("als", 1), ("als", 2)]
    one, two = rows
    assert one["speed_up"] == 1.0 and two["speed_up"] > 0 and two["ratings_per_second"] > 0
    assert [s["n_train"] for s in one["shards"]] == [20_000] and sum(s["n_train"] for s in two["shards"]) == 20_000
    assert two["train_rmse"] == pytest.approx(one["train_rmse"], rel=1e-5)  # ALS: the same fit on two ranks
    assert two["bytes_per_epoch_per_rank"] > 0 and len(two["peak_rss_mb_per_rank"]) == 2
