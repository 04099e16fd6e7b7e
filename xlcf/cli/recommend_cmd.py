"""`xlcf recommend RATINGS --user ID`: train on RATINGS as `xlcf train` does (the same options; by default on
every rating, no hold-out) and show each user's top movies among those they have not rated. With the default
optimizer (gibbs) each predicted rating comes with its posterior predictive std (``4.61 ± 0.78``): about two
ratings in three fall within it. Other optimizers give no std, and the column is left out."""

from __future__ import annotations

from xlcf.cli import train_cmd
from xlcf.cli._recommend import user_id


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recommend",
        help="train on a ratings file and show users' top unrated movies (with ± std under gibbs)",
        description="Train on RATINGS (the options of `xlcf train`; every rating by default, --valid-pct to hold "
        "some out) and list the top movies each --user has not rated, with the posterior predictive std beside "
        "each predicted rating when the model is Bayesian (gibbs, the default). --json adds a "
        "`recommendations` list (userId, rank, movieId, title, prediction[, std]).",
    )
    train_cmd.add_train_arguments(p)
    p.add_argument(
        "--user",
        dest="users",
        metavar="ID",
        type=user_id,
        action="append",
        required=True,
        help="user id to recommend for (repeat for several users)",
    )
    p.add_argument("-n", "--top", type=int, default=10, help="movies per user (default 10)")
    p.set_defaults(func=run, valid_pct=0.0)


def run(args) -> int:
    from xlcf.errors import ConfigError

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1; got {args.top}", field="--top")
    return train_cmd.run(args)
