"""`xlcf new collab|graddesc|movielens`: generate the lesson's workbooks headless (openpyxl), optionally as
macro workbooks (``--xlsm``: the xlsx is built to a temp file first, then the Excel layer adds VBA + buttons)."""

from __future__ import annotations

import json
from pathlib import Path

from xlcf.errors import ConfigError, DataError, WorkbookError, XlcfError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "new",
        help="generate a lesson workbook (collab, graddesc or movielens)",
        description="Generate one of the lesson's workbooks with live, portable formulas.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    collab = kinds.add_parser(
        "collab",
        help="collab_filter workbook: sheets dotprod and bias (MMULT predictions, RMSE, Solver model)",
        description="Ratings crosstab, random factors, live MMULT predictions and RMSE on sheets dotprod and bias.",
    )
    collab.add_argument(
        "-o", "--output", required=True, help="workbook to write (.xlsx, or .xlsm for a macro workbook)"
    )
    collab.add_argument(
        "--ratings",
        metavar="SRC",
        help="ratings source (CSV, folder, zip or 'ml-latest-small'); default: the lesson's 15x15 table",
    )
    collab.add_argument("--top", type=int, default=15, help="users and movies with most ratings (with --ratings)")
    collab.add_argument("--factors", type=int, default=5, help="latent factors per user/movie (default 5)")
    collab.add_argument("--seed", type=int, default=0, help="seed of the uniform [0,1) initial factors")
    collab.add_argument("--force", action="store_true", help="overwrite an existing file")
    collab.add_argument("--xlsm", action="store_true", help="macro workbook with 'Fit with Python' buttons")
    collab.add_argument("--json", action="store_true", help="print the layout as one JSON object")
    collab.set_defaults(func=run)

    grad = kinds.add_parser(
        "graddesc",
        help="gradient-descent workbook: data, basic, momentum, rmsprop, adam, adam_ann",
        description="One pass of SGD / momentum / RMSProp / Adam / Adam with annealing over y = 2x + 30.",
    )
    grad.add_argument("-o", "--output", required=True, help="workbook to write")
    grad.add_argument("--seed", type=int, default=0, help="seed of the x values (integers 1..100)")
    grad.add_argument(
        "--json",
        action="store_true",
        help="print the Python reference per sheet: {sheet: {slope, const, lastslope, lastconst, rmse}}",
    )
    grad.add_argument("--force", action="store_true", help="overwrite an existing file")
    grad.add_argument("--xlsm", action="store_true", help="macro workbook with One step / Five steps / Reset buttons")
    grad.set_defaults(func=run)

    ml = kinds.add_parser(
        "movielens",
        help="full-ratings workbook trained by Python",
        description="Settings and result sheets for training on a whole ratings file.",
    )
    ml.add_argument("-o", "--output", required=True, help="workbook to write")
    ml.add_argument("--ratings", metavar="SRC", help="ratings source (default: the engine's default)")
    ml.add_argument("--force", action="store_true", help="overwrite an existing file")
    ml.add_argument("--xlsm", action="store_true", help="macro workbook with a Train button")
    ml.set_defaults(func=run)


def run(args) -> int:
    from xlcf.lessons.collab import check_output_path

    out = Path(args.output)
    if out.suffix.lower() == ".xlsm":
        args.xlsm = True  # the file name says what the user wants: a macro workbook
    if args.xlsm and out.suffix.lower() != ".xlsm":
        raise ConfigError("with --xlsm the output must end in .xlsm", where=str(out))
    if not args.xlsm and out.suffix.lower() != ".xlsx":
        raise ConfigError("the output must end in .xlsx (use --xlsm for a macro workbook)", where=str(out))
    check_output_path(out, force=args.force)  # fail before any work: missing folder, exists, unwritable

    if args.kind == "collab":
        if args.factors < 1:
            raise ConfigError(f"--factors must be >= 1, got {args.factors}")
        if args.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {args.seed}")
        crosstab, titles = _collab_source(args)
        from xlcf.lessons.collab import build_collab

        layout = _build(
            out,
            args,
            "collab",
            lambda p: build_collab(p, crosstab, titles, factors=args.factors, seed=args.seed, force=True),
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "path": str(out),
                        "sheets": {s: layout.refs(s) for s in layout.sheets},
                        "users": layout.n_users,
                        "movies": layout.n_movies,
                        "factors": layout.factors,
                    }
                )
            )
        else:
            print(
                f"wrote {out}: sheets dotprod and bias, {layout.n_users} users x {layout.n_movies} movies, "
                f"{layout.factors} factors (ratings {layout.refs('dotprod')['ratings']}, "
                f"rmse {layout.refs('dotprod')['rmse']})"
            )
        return 0

    if args.kind == "graddesc":
        if args.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {args.seed}")
        from xlcf.lessons.graddesc import build_graddesc
        from xlcf.lessons.graddesc_ref import reference

        _build(out, args, "graddesc", lambda p: build_graddesc(p, seed=args.seed, force=True))
        if args.json:
            print(json.dumps(reference(args.seed)))
        else:
            print(f"wrote {out}: sheets data, basic, momentum, rmsprop, adam, adam_ann")
        return 0

    # movielens: the generator of xlcf.lessons.movielens
    build_movielens = _optional("xlcf.lessons.movielens.build", "build_movielens", "xlcf new movielens")

    _build(out, args, "movielens", lambda p: build_movielens(p, ratings_source=args.ratings, force=True))
    print(f"wrote {out}")
    return 0


def _collab_source(args):
    """The crosstab + titles: the lesson's embedded table, or --ratings with --top."""
    from xlcf import data

    if args.ratings is None:
        if args.top != 15:
            raise ConfigError("--top applies to --ratings; the embedded lesson table is 15 x 15")
        return data.lesson_crosstab(), data.lesson_titles()
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    ratings = data.load_ratings(args.ratings)
    n_users, n_movies = ratings["userId"].nunique(), ratings["movieId"].nunique()
    if args.top > n_users or args.top > n_movies:
        raise DataError(f"--top {args.top} is larger than the {n_users} users / {n_movies} movies in {args.ratings}")
    crosstab = data.crosstab(ratings, args.top)
    try:
        titles = data.load_titles(args.ratings)
    except XlcfError:  # titles are decoration: a broken movies.csv still makes a workbook (ids only)
        titles = {}
    return crosstab, titles


def _optional(module: str, attr: str, what: str):
    """A function from another layer's module, or a clear error when this install lacks it."""
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise WorkbookError(f"{what} is not available in this installation ({module}.{attr}: {err})") from None


def _build(out: Path, args, kind: str, build):
    """Build straight to ``out`` (xlsx) or to a temp xlsx then the macro workbook (xlsm); nothing is left
    behind on failure."""
    if not args.xlsm:
        return build(out)
    make_macro_workbook = _optional("xlcf.lessons.xlsm", "make_macro_workbook", "--xlsm")

    from xlcf.fileio import scratch_file

    with scratch_file(out, suffix=".xlsx") as tmp:  # the xlsx is an intermediate, removed whatever happens
        result = build(tmp)
        make_macro_workbook(str(tmp), str(out), kind=kind)  # writes the .xlsm (and .py) atomically
    return result
