"""`xlcf train RATINGS`: train a dot / bias / nn model on a ratings file with a chosen optimizer.

Heavy imports (torch, pandas) happen inside ``run`` so ``xlcf --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys

from xlcf import catalog
from xlcf.cli._options import add_force_option, add_time_limit_option, add_wait_option, time_cap_note

D = catalog.FULL_RATINGS_DEFAULTS


def _y_range(text: str):
    if text.lower() in ("none", "off", ""):
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0.5,5.5) or none; got {text!r}") from None
    return (lo, hi)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a collaborative-filtering model on a ratings file",
        description="Train on RATINGS (a ratings.csv, a folder holding one, a GroupLens zip, or the name "
        "ml-latest-small) and report train/validation RMSE. Unset hyper-parameters take the "
        "optimizer's defaults (see the README's table).",
    )
    add_train_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(p) -> None:
    """The model, data and optimizer options (shared by `xlcf recommend`)."""
    p.add_argument("ratings", metavar="RATINGS", help="ratings.csv | folder | GroupLens zip | ml-latest-small")
    p.add_argument(
        "--model",
        type=str.lower,
        choices=catalog.MODELS,
        default=D["model"],
        help=f"{', '.join(catalog.MODELS)} (default {D['model']})",
    )
    p.add_argument(
        "--optimizer",
        default=None,  # None: TrainConfig's default, which depends on the model
        metavar="NAME",
        help=f"one of {', '.join(catalog.optimizer_names())} (default {D['optimizer']}: Bayesian matrix "
        f"factorisation, the most accurate; {D['nn_optimizer']} for the nn model)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs, or sweeps for gibbs (default: the optimizer's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    p.add_argument(
        "--wd", type=float, default=None, dest="weight_decay", help="weight decay / L2 (default: the optimizer's)"
    )
    p.add_argument(
        "--factors",
        type=int,
        default=None,
        help=f"embedding size (default: the optimizer's, {catalog.OPTIMIZERS[D['optimizer']].full_batch['factors']} "
        f"for {D['optimizer']} and {D['factors']} for the others)",
    )
    p.add_argument(
        "--valid-pct", type=float, default=D["valid_pct"], help=f"held-out fraction, 0..0.9 (default {D['valid_pct']})"
    )
    p.add_argument(
        "--seed", type=int, default=D["seed"], help=f"seed of the split, init and shuffling (default {D['seed']})"
    )
    p.add_argument("--device", default=D["device"], help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=None, help="ratings per step (default: the optimizer's)")
    p.add_argument(
        "--schedule", choices=("constant", "onecycle"), default=None, help="lr schedule (default: the optimizer's)"
    )
    p.add_argument(
        "--y-range",
        type=_y_range,
        default=(0.5, 5.5),
        metavar="LOW,HIGH",
        help="sigmoid output range (default 0.5,5.5; 'none' for a linear output)",
    )
    p.add_argument("--hidden", type=int, default=10, help="nn: hidden units (default 10)")
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="extra runs from fresh random starts, the best kept (default: 3 for the dot and bias "
        "models on at most 20,000 training ratings, else 0)",
    )
    p.add_argument(
        "--burn-in",
        type=int,
        default=None,
        help="gibbs: sweeps before averaging starts (default: the optimizer's, at most half the sweeps)",
    )
    p.add_argument(
        "--prior",
        type=float,
        default=None,
        help="gibbs: hyper-prior strength (> 0; larger = more shrinkage; default 1)",
    )
    p.add_argument(
        "--noise-df",
        type=float,
        default=None,
        help="gibbs: degrees of freedom of the per-user/per-movie noise scales (0 = one noise level)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train on N local processes (ranks) with torch.distributed; on several hosts start "
        "`torchrun --nnodes H --nproc-per-node N -m xlcf train ...` instead (see docs/distributed.md)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="distributed: how long a rank waits for the others before the job fails (default 300)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the result line is still printed)")
    p.add_argument(
        "--out",
        metavar="BOOK",
        default=None,
        help="also write the results into this workbook (created if missing; see `xlcf new movielens`)",
    )
    add_time_limit_option(p, aliases=("--max-seconds",))
    add_wait_option(p)
    add_force_option(p)


def settings_from_args(args) -> dict:
    """The TrainConfig fields the command line sets (also what --out records as the settings)."""
    optimizer = {} if args.optimizer is None else {"optimizer": args.optimizer}  # None: TrainConfig's default
    return {
        **optimizer,
        "model": args.model,
        "epochs": args.epochs,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "factors": args.factors,
        "batch_size": args.batch_size,
        "schedule": args.schedule,
        "seed": args.seed,
        "device": args.device,
        "valid_pct": args.valid_pct,
        "y_range": args.y_range,
        "hidden": args.hidden,
        "restarts": args.restarts,
        "burn_in": args.burn_in,
        "prior": args.prior,
        "noise_df": args.noise_df,
    }


def run(args) -> int:
    from xlcf.errors import ConfigError
    from xlcf.train import TrainConfig
    from xlcf.train.collective import launched

    TrainConfig.from_dict(settings_from_args(args))  # validate before reading any data or starting ranks
    if launched():  # one rank of a torchrun job
        if args.nproc is not None:
            raise ConfigError("--nproc starts local ranks itself; under torchrun leave it out", field="--nproc")
        return _report(rank_main(args), args)
    if args.nproc is not None:
        from xlcf.train.distributed import launch

        outcome = launch(args.nproc, rank_main, args, timeout=args.timeout)
        return _report(outcome[0], args)
    return _report(_train_here(args), args)


def _load(args):
    from xlcf.data import load_ratings, split_ratings
    from xlcf.train import TrainConfig

    config = TrainConfig.from_dict(settings_from_args(args))
    ratings = load_ratings(args.ratings)
    if getattr(args, "users", None):  # `xlcf recommend`: unknown users are an error before any training
        from xlcf.cli._recommend import check_users

        check_users(args.users, ratings, args.ratings)
    train_df, valid_df = split_ratings(ratings, valid_pct=config.valid_pct, seed=config.seed)
    return config, ratings, train_df, valid_df


def _time_cap(args):
    """(callback, state): the callback stops training after the epoch that passes --time-limit; state["hit"] says
    whether it did."""
    import time

    started = time.perf_counter()
    state = {"hit": False}

    def time_cap(stats):
        if args.time_limit is not None and time.perf_counter() - started > args.time_limit:
            state["hit"] = True
            return False
        return None

    return time_cap, state


def _train_here(args) -> dict:
    import time

    from xlcf.train import fit

    config, ratings, train_df, valid_df = _load(args)
    progress = not args.quiet and sys.stderr.isatty()  # the bar is on stderr, so --json (stdout) keeps it
    t0 = time.perf_counter()
    callback, capped = _time_cap(args)
    result = fit(train_df, config, valid_df=valid_df if len(valid_df) else None, progress=progress, callback=callback)
    return _finish(args, result, ratings, train_df, valid_df, time.perf_counter() - t0, capped["hit"])


def rank_main(args) -> dict:
    """One rank of `xlcf train` on several processes (started by `launch` or torchrun): rank 0 reads the ratings,
    every rank trains its shard, rank 0 reports. Returns {"rank", and "summary" (rank 0) or "error"}."""
    import time

    from xlcf.errors import XlcfError
    from xlcf.train import TrainConfig
    from xlcf.train.distributed import DistContext, fit_distributed

    ctx, rank = None, -1
    try:
        ctx = DistContext.from_env(args.device, args.timeout)
        rank = ctx.rank
        loaded: dict = {}

        def loader():
            config, ratings, train_df, valid_df = _load(args)
            loaded.update(config=config, ratings=ratings, train_df=train_df, valid_df=valid_df)
            return train_df, valid_df if len(valid_df) else None

        progress = rank == 0 and not args.quiet and sys.stderr.isatty()
        t0 = time.perf_counter()
        callback, capped = _time_cap(args)
        result = fit_distributed(
            loader=loader,
            config=TrainConfig.from_dict(settings_from_args(args)),
            callback=callback,
            progress=progress,
            context=ctx,
            on_start=None if args.quiet else _announce,
        )
        if rank != 0:
            return {"rank": rank}
        out = _finish(
            args,
            result,
            loaded["ratings"],
            loaded["train_df"],
            loaded["valid_df"],
            time.perf_counter() - t0,
            capped["hit"],
        )
        return {"rank": rank, **out}
    except XlcfError as err:
        return {
            "rank": rank,
            "error": (type(err).__name__, err.message, err.where, err.field),
            "echo": not getattr(err, "from_rank0", False),
        }
    finally:
        if ctx is not None:
            ctx.close()


def _announce(shards: list[dict]) -> None:
    print(
        f"xlcf train: {len(shards)} ranks; training ratings per rank: "
        + ", ".join(f"{s['n_train']:,}" for s in shards),
        file=sys.stderr,
        flush=True,
    )


def _finish(args, result, ratings, train_df, valid_df, wall: float, capped: bool = False) -> dict:
    """The JSON summary of a fit (and the workbook written with --out)."""
    from xlcf.data import load_titles

    summary = {
        "model": result.model,
        "optimizer": result.optimizer,
        "device": result.device,
        "epochs": result.epochs,
        "n_ratings": int(len(ratings)),
        "n_users": int(ratings["userId"].nunique()),
        "n_movies": int(ratings["movieId"].nunique()),
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "train_rmse": result.train_rmse,
        "valid_rmse": result.valid_rmse,
        "fit_seconds": result.fit_seconds,
        "stopped_reason": result.stopped_reason,
        "lr": result.config.lr,
        "weight_decay": result.config.weight_decay,
        "factors": result.config.factors,
        "batch_size": result.config.batch_size,
        "schedule": result.config.schedule,
        "seed": result.config.seed,
        "valid_pct": result.config.valid_pct,
        "restarts": result.config.restarts,
        "runs": len(result.runs) or 1,
        "best_run": result.best_run,
        "ranks": result.ranks,
        "rank_n_train": [s["n_train"] for s in result.shards] or [result.n_train],
        "time_capped": capped,
        "time_limit": args.time_limit,
    }
    if result.posterior is not None:  # gibbs: the averaged predictions and the predictive std's calibration
        summary.update(
            train_rmse_avg=result.train_rmse_avg,
            valid_rmse_avg=result.valid_rmse_avg,
            valid_coverage=result.valid_coverage,
            burn_in=result.config.burn_in,
            samples=result.posterior.count,
        )
    if args.out:
        from xlcf.actions.train_book import write_results

        titles = load_titles(args.ratings)
        write_results(
            args.out,
            result,
            train_df,
            valid_df,
            titles,
            {**result.config.to_dict(), "ratings": str(args.ratings)},
            lock_timeout=args.wait,
            force=args.force,
        )
        summary["out"] = str(args.out)
    if getattr(args, "users", None):  # `xlcf recommend`: the top movies of each user, with their ± under gibbs
        from xlcf.cli._recommend import recommendations

        summary["recommendations"] = recommendations(result, args.users, args.top, load_titles(args.ratings))
    valid = "n/a" if result.valid_rmse is None else f"{result.valid_rmse:.4f}"
    text = (
        f"{result.model}/{result.optimizer} on {result.device}: {len(ratings)} ratings "
        f"({summary['n_users']} users x {summary['n_movies']} movies), {result.epochs} epochs, "
        f"train RMSE {result.train_rmse:.4f}, valid RMSE {valid}, fit {result.fit_seconds:.2f} s "
        f"(wall {wall:.2f} s)" + (f"; wrote {args.out}" if args.out else "")
    )
    if result.valid_rmse_avg is not None and result.valid_coverage is not None:
        text += (
            f"\naveraged predictions of {result.epochs - (result.config.burn_in or 0)} sweeps: valid RMSE "
            f"{result.valid_rmse_avg:.4f}; {result.valid_coverage:.0%} of validation ratings within "
            f"+-1 predictive std (the factors' posterior means give {valid})"
        )
    if "recommendations" in summary:
        from xlcf.cli._recommend import render

        text += "\n" + render(summary["recommendations"], args.users)
    return {"summary": summary, "text": text, "note": time_cap_note(args.time_limit, result.epochs) if capped else None}


def _report(outcome: dict, args) -> int:
    """Print what a fit produced (rank 0 / the single process); other ranks print only their own errors."""
    import xlcf.errors as errors

    if "error" in outcome:
        name, message, where, field = outcome["error"]
        if outcome.get("rank", 0) > 0 and not outcome.get("echo", True):
            return errors.XlcfError.exit_code  # rank 0 reports this error
        raise getattr(errors, name, errors.XlcfError)(message, where=where, field=field)
    if "summary" not in outcome:
        return 0
    if outcome.get("note"):
        print(outcome["note"], file=sys.stderr)
    if args.json:
        print(json.dumps(outcome["summary"]))
    else:  # --quiet hides the progress bar only; the result line is what the user asked for
        print(outcome["text"])
    return 0
