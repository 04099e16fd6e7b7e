"""What `xlcf recommend` adds to a training run: each user's top movies (not rated by them), with the posterior
predictive std beside each predicted rating when the model is Bayesian (optimizer gibbs), as a table and as JSON."""

from __future__ import annotations

import math

from xlcf.errors import DataError


def user_id(text: str) -> int | str:
    """A user id as the ratings hold it: a whole number (MovieLens), else the text."""
    try:
        return int(text)
    except ValueError:
        return text


def check_users(users, ratings, source) -> None:
    """DataError naming the ids that are not in the ratings (before any training)."""
    known = set(ratings["userId"].unique().tolist())
    missing = [u for u in users if u not in known]
    if missing:
        shown = ", ".join(str(u) for u in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"user id{'s' if len(missing) > 1 else ''} {shown} not in {source} ({len(known)} users, ids "
            f"{min(known)}..{max(known)})",
            field="--user",
        )


def recommendations(result, users, n: int, titles: dict) -> list[dict]:
    """One row per (user, rank): userId, rank, movieId, title, prediction and, for a Bayesian fit, std."""
    rows = []
    for user in users:
        frame = result.recommend(user, n=n)
        for rank, row in enumerate(frame.itertuples(index=False), start=1):
            movie = int(row.movieId)
            item = {"userId": user, "rank": rank, "movieId": movie, "title": titles.get(movie, "")}
            item["prediction"] = float(row.prediction)
            if "std" in frame.columns:
                item["std"] = float(row.std)
            rows.append(item)
    return rows


def render(rows: list[dict], users) -> str:
    """The table: ``rank. prediction ± std  title [movieId]`` per line, one block per user."""
    bayesian = any("std" in r for r in rows)
    lines = []
    for user in users:
        mine = [r for r in rows if r["userId"] == user]
        what = "predicted rating ± posterior predictive std" if bayesian else "predicted rating"
        lines.append(f"top {len(mine)} for user {user} ({what}):")
        width = len(str(len(mine)))
        for r in mine:
            spread = f" ± {r['std']:.2f}" if bayesian and math.isfinite(r.get("std", math.nan)) else ""
            title = r["title"] or f"movie {r['movieId']}"
            lines.append(f"  {r['rank']:>{width}}. {r['prediction']:.2f}{spread}  {title} [{r['movieId']}]")
        if not mine:
            lines.append("  (every movie is rated by this user)")
    return "\n".join(lines)
