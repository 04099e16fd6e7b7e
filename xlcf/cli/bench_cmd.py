"""``xlcf bench``: the command line of the benchmark (:mod:`xlcf.bench.runner` does the work)."""

from __future__ import annotations

import argparse


def _size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if mult > 1 else text) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1M,5M,25M or 20k; got {text!r}") from None


def _sizes(text: str) -> list[int]:
    return [_size(part) for part in text.split(",") if part.strip()]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the engine (MovieLens vs Surprise, the 15x15 sheet, a 25M-shaped scale series, start-up)",
        description="Benchmark: RMSE and fit time on ml-latest-small (vs Surprise SVD when installed), the 15x15 "
        "sheet targets, and seconds/epoch, ratings/s and peak memory on synthetic MovieLens-25M-shaped data.",
    )
    p.add_argument(
        "--data",
        nargs="+",
        metavar="DIR",
        default=None,
        help="dataset folders (with ratings.csv) or folders holding ml-latest-small*/ "
        "(default: ../shared/data relative to the working directory and to the repository)",
    )
    p.add_argument(
        "--scale",
        type=_sizes,
        default=_sizes("1M,5M,25M"),
        metavar="SIZES",
        help="synthetic sizes in ratings (default 1M,5M,25M)",
    )
    p.add_argument("--skip-scale", action="store_true", help="skip the synthetic scale series")
    p.add_argument(
        "--skip-solve",
        action="store_true",
        help="skip the Solver-replacement series (sheets solved through the formula evaluator)",
    )
    p.add_argument(
        "--solve-only",
        action="store_true",
        help="run only the Solver-replacement series (the evaluator beside the fast path; a minute or so)",
    )
    p.add_argument("--scale-epochs", type=int, default=2, help="epochs per synthetic size (default 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for the scale series (default 1: on a shared 2-core machine one thread is "
        "faster than two; 0 = torch's default)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="split / init seed (default 0)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write every figure to this JSON file")
    p.add_argument(
        "--skip-startup",
        action="store_true",
        help="skip the start-up section (whole-process times of xlcf --help, new collab and fit)",
    )
    p.add_argument("--startup-only", action="store_true", help="run only the start-up section (a minute or so)")
    p.add_argument(
        "--startup-repeats",
        type=int,
        default=5,
        metavar="N",
        help="processes per start-up figure; the median is reported (default 5)",
    )
    p.add_argument(
        "--seeds",
        type=lambda t: [int(v) for v in t.split(",") if v.strip()],
        default=[0, 1, 2],
        metavar="S,S,...",
        help="hold-out seeds of the Bayesian comparison (default 0,1,2)",
    )
    p.add_argument(
        "--skip-bayes",
        action="store_true",
        help="skip the Bayesian comparison (myFM vs gibbs vs SVD vs defaults on several hold-outs)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test mode: no warm-up, one run per sheet fit instead of best of 3, few epochs, no start-up section",
    )
    p.add_argument(
        "--ranks",
        type=_counts,
        default=None,
        metavar="N,N",
        help="instead: the distributed series on the --scale sizes with each number of ranks "
        "(e.g. 1,2), started on this host by torch's elastic launcher",
    )
    p.add_argument(
        "--dist-optimizers",
        type=lambda t: [s.strip().lower() for s in t.split(",") if s.strip()],
        default=["als", "sgd", "adam"],
        metavar="NAMES",
        help="with --ranks: the algorithms of the series (default als,sgd,adam)",
    )
    p.add_argument(
        "--exchange",
        choices=("auto", "dense", "sparse"),
        default="auto",
        help="with --ranks: how data-parallel ranks sum embedding gradients (default auto)",
    )
    p.add_argument(
        "--skip-exchange",
        action="store_true",
        help="with --ranks: skip the dense vs sparse gradient exchange measurement",
    )
    p.set_defaults(func=run)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers of ranks like 1,2; got {text!r}")
    return counts


def run(args) -> int:
    if args.ranks:
        from xlcf.bench.distributed import run as run_distributed

        return run_distributed(args)
    from xlcf.bench.runner import run as run_bench

    return run_bench(args)
