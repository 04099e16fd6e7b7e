"""`xlcf recommend`: each user's top unrated movies, with the posterior predictive std beside each prediction when
the model is Bayesian (gibbs) and without the column otherwise; unknown users fail before training."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from xlcf.cli import main


@pytest.fixture()
def ratings_csv(tmp_path):
    """Low-rank ratings of 40 users x 30 movies (about half rated), with titles beside them."""
    rng = np.random.default_rng(3)
    u, m = rng.normal(size=(40, 2)), rng.normal(size=(30, 2))
    rows = [
        (i + 1, 10 * (j + 1), float(np.clip(np.round((3.2 + 0.7 * u[i] @ m[j]) * 2) / 2, 0.5, 5.0)))
        for i in range(40)
        for j in range(30)
        if rng.random() < 0.5
    ]
    frame = pd.DataFrame(rows, columns=["userId", "movieId", "rating"])
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    (tmp_path / "movies.csv").write_text(
        "movieId,title\n" + "".join(f"{10 * (j + 1)},Film {j + 1} (2001)\n" for j in range(30))
    )
    return tmp_path / "ratings.csv", frame


def recommend(capsys, path, *args):
    capsys.readouterr()
    rc = main(["recommend", str(path), "--quiet", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_gibbs_shows_the_std_beside_each_prediction(ratings_csv, capsys):
    path, frame = ratings_csv
    rc, out, err = recommend(capsys, path, "--user", 3, "--user", 7, "-n", 4, "--epochs", 30, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["optimizer"] == "gibbs" and data["n_valid"] == 0  # every rating trains: no hold-out by default
    recs = data["recommendations"]
    assert [(r["userId"], r["rank"]) for r in recs] == [(u, k) for u in (3, 7) for k in range(1, 5)]
    for user in (3, 7):
        mine = [r for r in recs if r["userId"] == user]
        rated = set(frame.loc[frame.userId == user, "movieId"])
        assert not rated & {r["movieId"] for r in mine}  # only movies the user has not rated
        assert [r["prediction"] for r in mine] == sorted((r["prediction"] for r in mine), reverse=True)
        assert all(0.1 < r["std"] < 3 and r["title"] == f"Film {r['movieId'] // 10} (2001)" for r in mine)
    rc, text, _ = recommend(capsys, path, "--user", 3, "-n", 4, "--epochs", 30)
    assert rc == 0 and "top 4 for user 3 (predicted rating ± posterior predictive std):" in text
    lines = [line for line in text.splitlines() if re.match(r"\s+\d\. ", line)]
    assert len(lines) == 4 and all(
        re.match(r"\s+\d\. \d\.\d\d ± \d\.\d\d  Film \d+ \(2001\) \[\d+\]$", x) for x in lines
    )
    first = [r for r in recs if r["userId"] == 3][0]  # the same chain (seeded) gives the same first line
    assert f"1. {first['prediction']:.2f} ± {first['std']:.2f}  {first['title']} [{first['movieId']}]" in text


def test_other_optimizers_leave_the_column_out(ratings_csv, capsys):
    path, _ = ratings_csv
    rc, out, err = recommend(capsys, path, "--user", 3, "-n", 3, "--optimizer", "als", "--json")
    assert rc == 0, err
    recs = json.loads(out)["recommendations"]
    assert len(recs) == 3 and all("std" not in r for r in recs)
    rc, text, _ = recommend(capsys, path, "--user", 3, "-n", 3, "--optimizer", "als")
    assert rc == 0 and "±" not in text and "top 3 for user 3 (predicted rating):" in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["--user", 999], r"user id 999 not in .*ratings.csv \(40 users, ids 1\.\.40\)"),
        (["--user", 3, "-n", 0], r"--top must be at least 1; got 0"),
    ],
)
def test_bad_requests_fail_before_training_in_one_line(ratings_csv, capsys, args, message):
    path, _ = ratings_csv
    rc, out, err = recommend(capsys, path, *args)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
