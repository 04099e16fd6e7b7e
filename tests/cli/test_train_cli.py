"""`xlcf train` command line: the JSON contract, errors, and the --out hand-off."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xlcf.cli import main


@pytest.fixture()
def tiny_csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    users = rng.integers(1, 41, n)
    movies = rng.integers(1, 31, n) * 10
    ratings = np.clip(np.round((3 + rng.normal(size=n)) * 2) / 2, 0.5, 5.0)
    path = tmp_path / "ratings.csv"
    lines = ["userId,movieId,rating,timestamp"]
    seen = set()
    for u, m, r in zip(users, movies, ratings):
        if (u, m) in seen:
            continue
        seen.add((u, m))
        lines.append(f"{u},{m},{r},964982703")
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines) - 1


REQUIRED = {
    "model",
    "optimizer",
    "device",
    "epochs",
    "n_ratings",
    "n_users",
    "n_movies",
    "train_rmse",
    "valid_rmse",
    "fit_seconds",
}


def test_json_contract(tiny_csv, capsys):
    path, n = tiny_csv
    rc = main(
        [
            "train",
            str(path),
            "--model",
            "bias",
            "--optimizer",
            "adam",
            "--epochs",
            "4",
            "--factors",
            "5",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    obj = json.loads(out)  # exactly one JSON object
    assert set(obj) >= REQUIRED
    assert obj["model"] == "bias" and obj["optimizer"] == "adam" and obj["device"] == "cpu" and obj["epochs"] == 4
    assert obj["n_ratings"] == n and obj["n_train"] + obj["n_valid"] == n
    assert 0 < obj["train_rmse"] < 5 and 0 < obj["valid_rmse"] < 5 and obj["fit_seconds"] > 0


@pytest.mark.parametrize("model,opt", [("dot", "sgd"), ("nn", "rmsprop"), ("bias", "lbfgs"), ("bias", "als")])
def test_models_and_optimizers_from_the_command_line(tiny_csv, capsys, model, opt):
    path, _ = tiny_csv
    rc = main(
        [
            "train",
            str(path),
            "--model",
            model,
            "--optimizer",
            opt,
            "--epochs",
            "3",
            "--factors",
            "4",
            "--device",
            "cpu",
            "--json",
            "--quiet",
        ]
    )
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["model"] == model and obj["optimizer"] == opt


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--optimizer", "adagradx"], "valid optimizers: adam, adamw, als, lbfgs, momentum, rmsprop, sgd"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--epochs", "0"], "epochs must be"),
        (["--valid-pct", "0.95"], "valid_pct"),
        (["--device", "tpu"], "valid devices"),
    ],
)
def test_bad_settings_exit_2_with_a_message(tiny_csv, capsys, flags, fragment):
    path, _ = tiny_csv
    rc = main(["train", str(path), "--json", *flags])
    assert rc == 2
    captured = capsys.readouterr()
    assert fragment in captured.err and captured.out == ""


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", str(tmp_path / "nope.csv"), "--json"])
    assert rc == 2 and "xlcf train: error:" in capsys.readouterr().err


def test_subprocess_json_and_no_progress_bar_when_not_a_tty(tiny_csv):
    path, _ = tiny_csv
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xlcf",
            "train",
            str(path),
            "--epochs",
            "2",
            "--factors",
            "3",
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and json.loads(proc.stdout)["epochs"] == 2
    assert "it/s" not in proc.stderr and "epoch/s" not in proc.stderr


def test_out_hands_results_to_the_workbook_writer(tiny_csv, tmp_path, capsys, monkeypatch):
    """--out BOOK calls xlcf.actions.train_book.write_results(BOOK, result, train_df, valid_df, titles, settings)."""
    import types

    calls = []
    fake = types.ModuleType("xlcf.actions.train_book")
    fake.write_results = lambda *args, **kwargs: calls.append((args, kwargs))
    monkeypatch.setitem(sys.modules, "xlcf.actions.train_book", fake)
    path, n = tiny_csv
    book = tmp_path / "book.xlsx"
    rc = main(["train", str(path), "--epochs", "2", "--factors", "3", "--device", "cpu", "--json", "--out", str(book)])
    assert rc == 0 and len(calls) == 1
    (out_path, result, train_df, valid_df, titles, settings), kwargs = calls[0]
    assert kwargs == {"lock_timeout": 60.0, "force": False}  # --wait default; no --force
    assert str(out_path) == str(book) and len(train_df) + len(valid_df) == n
    assert result.epochs == 2 and settings["model"] == "bias" and isinstance(titles, dict)
    assert json.loads(capsys.readouterr().out)["out"] == str(book)


def test_quiet_hides_the_progress_bar_but_prints_the_result(tiny_csv, capsys):
    path, _ = tiny_csv
    rc = main(
        [
            "train",
            str(path),
            "--model",
            "bias",
            "--optimizer",
            "adam",
            "--epochs",
            "2",
            "--factors",
            "3",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "bias/adam on cpu:" in captured.out and "valid RMSE" in captured.out
    assert captured.err == ""


def test_a_data_warning_is_one_line_without_python_internals(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,3.0,12 not a time\n")
    done = subprocess.run(
        [sys.executable, "-m", "xlcf", "crosstab", str(path), "--csv", "-"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlcf crosstab: warning: ")
    assert ".py" not in done.stderr and "warnings.warn" not in done.stderr


def test_model_and_optimizer_names_are_case_insensitive(tiny_csv, capsys):
    path, _ = tiny_csv
    rc = main(
        [
            "train",
            str(path),
            "--model",
            "Bias",
            "--optimizer",
            "Adam",
            "--epochs",
            "2",
            "--factors",
            "3",
            "--device",
            "CPU",
            "--json",
        ]
    )
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["model"] == "bias" and obj["optimizer"] == "adam" and obj["device"] == "cpu"
