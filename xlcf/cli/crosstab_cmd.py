"""`xlcf crosstab RATINGS [--top N] [--csv OUT]`: the lesson's table of the most active users x the
most rated movies, printed (movie ids as headers, a title legend when movies.csv sits beside the
ratings) or written as CSV (header ``userId,<movie ids>``, blank where unrated)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MAX_PRINTED = 40  # columns of a printed table; wider goes to --csv


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "crosstab",
        help="print the lesson's crosstab (top users x top movies) of a ratings file",
        description="Users with the most ratings x movies with the most ratings (ties: smaller id first), "
        "as in fast.ai lesson 5. RATINGS is a ratings.csv, a folder holding one, a GroupLens zip, "
        "or the name ml-latest-small (downloaded once into the cache, sha256-verified).",
    )
    parser.add_argument("ratings", metavar="RATINGS", help="ratings.csv | folder | zip | ml-latest-small")
    parser.add_argument(
        "--top", type=_positive_int, default=None, metavar="N", help="users and movies to keep (default 15)"
    )
    parser.add_argument("--csv", metavar="OUT", help="write CSV to OUT ('-' for stdout) instead of printing the table")
    parser.add_argument("--json", action="store_true", help="print one JSON object (users, movies, ratings with null)")
    parser.add_argument(
        "--duplicates",
        choices=("error", "last", "mean"),
        default="error",
        help="what to do with repeated (userId, movieId) pairs (default: error)",
    )
    parser.add_argument(
        "--scale",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=(0.5, 5.0),
        help="allowed rating range (default 0.5 5.0)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where downloads are cached (default: $XLCF_CACHE_DIR, $XDG_CACHE_HOME/xlcf or ~/.cache/xlcf)",
    )
    parser.set_defaults(func=run)


def render_table(table, titles: dict[int, str]) -> str:
    """Fixed-width text: movie ids as column headers, users as rows, blank where unrated."""
    from xlcf.data import format_rating

    movie_ids = [int(m) for m in table.columns]
    cells = [[format_rating(v) for v in row] for row in table.to_numpy()]
    width = max([len(str(m)) for m in movie_ids] + [len(c) for row in cells for c in row] + [4])
    user_width = max([len("userId")] + [len(str(int(u))) for u in table.index])
    lines = ["userId".rjust(user_width) + "  " + " ".join(str(m).rjust(width) for m in movie_ids)]
    for user, row in zip(table.index, cells):
        lines.append(str(int(user)).rjust(user_width) + "  " + " ".join(c.rjust(width) for c in row))
    rated = int(table.notna().to_numpy().sum())
    lines.append(f"{len(table.index)} users x {len(movie_ids)} movies, {rated} rated cells")
    named = [m for m in movie_ids if m in titles]
    if named:
        lines.append("")
        id_width = max(len(str(m)) for m in named)
        lines.extend(f"{str(m).rjust(id_width)}  {titles[m]}" for m in named)
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from xlcf.data import crosstab, crosstab_csv, load_ratings, load_titles, resolve_source

    source = resolve_source(args.ratings, cache_dir=args.cache_dir)
    ratings = load_ratings(source, scale=tuple(args.scale), duplicates=args.duplicates)
    top = 15 if args.top is None else args.top
    n_users, n_movies = int(ratings["userId"].nunique()), int(ratings["movieId"].nunique())
    if args.top is not None and top > max(n_users, n_movies):
        from xlcf.errors import ConfigError

        raise ConfigError(
            f"--top {args.top} is beyond the data: it has {n_users} users and {n_movies} movies", field="--top"
        )
    if top > MAX_PRINTED and not (args.csv or args.json):
        from xlcf.errors import ConfigError

        raise ConfigError(
            f"--top {top} prints a table {top} columns wide; a terminal shows up to "
            f"{MAX_PRINTED}: write it with --csv OUT (or --json)",
            field="--top",
        )
    table = crosstab(ratings, top=top)
    if args.json:
        payload: dict[str, Any] = {
            "source": source.label,
            "users": [int(u) for u in table.index],
            "movies": [int(m) for m in table.columns],
            "ratings": [[None if v != v else float(v) for v in row] for row in table.to_numpy()],
            "rated_cells": int(table.notna().to_numpy().sum()),
        }
        titles = load_titles(source)
        payload["titles"] = {str(m): titles[int(m)] for m in payload["movies"] if int(m) in titles}
        print(json.dumps(payload))
        return 0
    if args.csv:
        text = crosstab_csv(table)
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            out = Path(args.csv)
            if out.is_dir():
                from xlcf.errors import DataError

                raise DataError("is a folder; give a file name for --csv", where=str(out))
            from xlcf.fileio import atomic_write_text

            try:  # temp file beside it, then rename: a crash never leaves half a CSV behind
                atomic_write_text(out, text, newline="")
            except OSError as err:
                from xlcf.errors import DataError

                raise DataError(f"cannot write ({err.strerror or err})", where=str(out)) from None
            print(
                f"wrote {out} ({len(table.index)} users x {len(table.columns)} movies, "
                f"{int(table.notna().to_numpy().sum())} rated cells)",
                file=sys.stderr,
            )
        return 0
    sys.stdout.write(render_table(table, load_titles(source)))
    return 0
