"""The distributed benchmark: the synthetic MovieLens-25M-shaped series on 1, 2, ... ranks (torch.distributed,
gloo on CPUs, NCCL on GPUs), and the cost of the two ways data-parallel ranks sum embedding gradients.

- ``bench_distributed``: for each algorithm, size and number of ranks, one job started with
  :func:`xlcf.train.distributed.launch`: rank 0 generates the ratings (:func:`xlcf.bench.runner.synthetic_ratings`)
  and shards them, every rank trains; reported: seconds per epoch (median of the epochs after the first),
  ratings per second, the speed-up over one rank, each rank's ratings and peak memory, and the bytes each rank
  sends per epoch.
- ``bench_exchange``: dense all-reduce of the embedding tables vs sparse all-gather of the rows a batch touched,
  per step, at the 25M shape and several batch sizes (what :class:`~xlcf.train.collective.GradExchange`'s
  automatic choice is calibrated on)."""

from __future__ import annotations

import os
import time
from datetime import UTC
from typing import Any

ML25M_USERS, ML25M_MOVIES = 162_541, 59_047
# Settings of the series: what a user would run on 25M ratings. The gradient optimizers keep the global batch of
# the one-rank scale series (65,536 ratings per step, split over the ranks).
SETTINGS: dict[str, dict[str, Any]] = {
    "als": dict(model="bias", optimizer="als", factors=50, weight_decay=0.1),
    "sgd": dict(
        model="bias", optimizer="sgd", lr=400.0, weight_decay=0.02, batch_size=65536, schedule="onecycle", factors=50
    ),
    "adam": dict(model="bias", optimizer="adam", lr=0.01, weight_decay=0.05, batch_size=65536, factors=50),
    "gibbs": dict(model="bias", optimizer="gibbs", factors=50),
}


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _series_rank(
    n: int, optimizer: str, epochs: int, device: str, seed: int, threads: int, exchange: str, timeout: float
) -> dict:
    """One rank of a series job (module level: the launcher imports it in each rank)."""
    import numpy as np

    from xlcf.bench.runner import synthetic_ratings
    from xlcf.train import TrainConfig
    from xlcf.train.distributed import DistContext, fit_arrays_distributed

    ctx = DistContext.from_env(device, timeout)
    try:
        users = movies = ratings = None
        gen_seconds = 0.0
        if ctx.rank == 0:
            t0 = time.perf_counter()
            users, movies, ratings = synthetic_ratings(n, seed=seed)
            gen_seconds = time.perf_counter() - t0
        cfg = TrainConfig(
            **SETTINGS[optimizer], epochs=epochs, valid_pct=0, device=device, seed=seed, threads=threads or None
        )
        t0 = time.perf_counter()
        res = fit_arrays_distributed(
            users, movies, ratings, ML25M_USERS, ML25M_MOVIES, cfg, context=ctx, exchange=exchange
        )
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {
            "rank": ctx.rank,
            "peak_rss_mb": _peak_rss_mb(),
            "threads": int(__import__("torch").get_num_threads()),
        }
        if res is not None:
            per_epoch = [h.seconds for h in res.history]
            steady = float(np.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch))
            out.update(
                epoch_seconds=per_epoch,
                seconds_per_epoch=steady,
                train_rmse=res.train_rmse,
                shards=res.shards,
                generate_seconds=gen_seconds,
                fit_seconds=res.fit_seconds,
                wall_seconds=wall,
                device=res.device,
            )
        return out
    finally:
        ctx.close()


def _bytes_per_epoch(optimizer: str, ranks: int, n: int, row: dict, factors: int = 50) -> float:
    """What each rank sends per epoch. ALS: its share of the user and movie rows (factors + bias, float32), in an
    all-gather padded to the longest share; gibbs: the same, and an all-reduce of one float64 per user and per
    movie (the noise draws' residual sums); data parallel: the exchange the run chose, per step (dense: ring
    all-reduce of the tables, 2 (w-1)/w x table bytes; sparse: (w-1) x touched rows x (row + index))."""
    if ranks < 2:
        return 0.0
    width = factors + 1
    row_bytes = (ML25M_USERS + ML25M_MOVIES) / ranks * width * 4 * (ranks - 1)
    if optimizer == "als":
        return row_bytes
    if optimizer == "gibbs":  # the rows (float32 at these sizes), and the noise draws' per-row sums (float64)
        return row_bytes + 2 * (ranks - 1) / ranks * (ML25M_USERS + ML25M_MOVIES) * 8
    exchange = row["shards"][0].get("exchange", {})
    steps = -(-n // SETTINGS[optimizer]["batch_size"])
    total = 0.0
    for side, rows in (("user", ML25M_USERS), ("movie", ML25M_MOVIES)):
        if exchange.get(side) == "sparse":
            touched = min(SETTINGS[optimizer]["batch_size"] / ranks, rows)  # an upper bound: distinct rows <= batch
            total += (ranks - 1) * touched * (width * 4 + 8)
        else:
            total += 2 * (ranks - 1) / ranks * rows * width * 4
    return total * steps


def bench_distributed(
    sizes: list[int],
    ranks: list[int],
    optimizers: list[str],
    epochs: int,
    device: str,
    seed: int,
    out,
    threads: int = 1,
    exchange: str = "auto",
    timeout: float = 900.0,
) -> list[dict]:
    from xlcf.train.distributed import launch

    out(
        f"\n## distributed scale series (synthetic MovieLens-25M shape, bias model, 50 factors): ranks started by "
        f"torch's elastic launcher on this host, {threads or 'default'} CPU thread(s) per rank, {epochs} epochs; "
        f"load average before: {_load()}"
    )
    out(
        f"{'algorithm':9s} {'ratings':>11s} {'ranks':>5s} {'s/epoch':>8s} {'ratings/s':>11s} {'speed-up':>8s} "
        f"{'ratings per rank':>22s} {'peak RSS MB/rank':>18s} {'MB sent/epoch/rank':>18s}  exchange"
    )
    rows = []
    for optimizer in optimizers:
        for n in sizes:
            base = None
            for world in ranks:
                results = launch(
                    world, _series_rank, n, optimizer, epochs, device, seed, threads, exchange, timeout, timeout=timeout
                )
                row = dict(results[0])
                row.update(
                    algorithm=optimizer,
                    n_ratings=n,
                    ranks=world,
                    load_after=_load(),
                    peak_rss_mb_per_rank=[results[r]["peak_rss_mb"] for r in sorted(results)],
                    ratings_per_second=n / row["seconds_per_epoch"],
                )
                row["bytes_per_epoch_per_rank"] = _bytes_per_epoch(optimizer, world, n, row)
                base = row["ratings_per_second"] if base is None else base
                row["speed_up"] = row["ratings_per_second"] / base
                ex = row["shards"][0].get("exchange")
                rows.append(row)
                held = "/".join(f"{s['n_train'] / 1e6:.1f}M" for s in row["shards"])
                rss = "/".join(f"{v:,.0f}" for v in row["peak_rss_mb_per_rank"])
                out(
                    f"{optimizer:9s} {n:11,d} {world:5d} {row['seconds_per_epoch']:8.2f} "
                    f"{row['ratings_per_second']:11,.0f} {row['speed_up']:7.2f}x {held:>22s} {rss:>18s} "
                    f"{row['bytes_per_epoch_per_rank'] / 2**20:18,.0f}  "
                    f"{'' if not ex else ', '.join(f'{k} {v}' for k, v in ex.items())}"
                )
    out(f"load average after: {_load()}")
    return rows


# ------------------------------------------------------------------------------------------------
# dense vs sparse gradient exchange
# ------------------------------------------------------------------------------------------------
def _exchange_rank(local_batches: list[int], steps: int, seed: int, timeout: float) -> list[dict]:
    import numpy as np
    import torch

    from xlcf.bench.runner import synthetic_ratings
    from xlcf.models import build_model
    from xlcf.train.collective import DistContext, GradExchange

    ctx = DistContext.from_env("cpu", timeout)
    try:
        torch.set_num_threads(max((os.cpu_count() or 1) // ctx.local_world, 1))
        users, movies, _ = synthetic_ratings(max(local_batches) * steps, seed=seed + ctx.rank)
        model = build_model("bias", ML25M_USERS, ML25M_MOVIES, 50)
        exchange = GradExchange(model, ctx)
        rows = []
        for b in local_batches:
            for mode in ("dense", "sparse"):
                exchange.sparse = {"user": mode == "sparse", "movie": mode == "sparse"}
                times = []
                touched = {"user": 0, "movie": 0}
                for s in range(steps):
                    bu = torch.as_tensor(users[s * b : (s + 1) * b]).long()
                    bm = torch.as_tensor(movies[s * b : (s + 1) * b]).long()
                    # A gradient where the batch is, as the model leaves it. GradExchange gave every parameter a
                    # .grad (a view of its flat buffer); mypy sees neither that nor the tables' Parameter type.
                    for p in model.parameters():
                        p.grad.zero_()  # type: ignore[union-attr]
                    model.user_factors.grad.index_fill_(0, bu, 1.0)  # type: ignore[union-attr,operator]
                    model.movie_factors.grad.index_fill_(0, bm, 1.0)  # type: ignore[union-attr,operator]
                    torch.distributed.barrier()
                    t0 = time.perf_counter()
                    exchange.reduce(0.5, bu, bm)
                    times.append(time.perf_counter() - t0)
                    touched = {"user": int(torch.unique(bu).numel()), "movie": int(torch.unique(bm).numel())}
                rows.append(
                    dict(
                        local_batch=b,
                        mode=mode,
                        ms_per_step=1000 * float(np.median(times[1:])),
                        touched=touched,
                        bytes_per_step=exchange.bytes_per_step(touched),
                    )
                )
        return rows
    finally:
        ctx.close()


def bench_exchange(
    local_batches: list[int], ranks: int, out, steps: int = 8, seed: int = 0, timeout: float = 600.0
) -> list[dict]:
    from xlcf.train.distributed import launch

    out(
        f"\n## gradient exchange on {ranks} CPU ranks (gloo), 25M-shaped tables (bias model, 50 factors: "
        f"{(ML25M_USERS + ML25M_MOVIES) * 51 * 4 / 2**20:.0f} MB of gradients): dense all-reduce vs sparse all-gather "
        f"of the touched rows (+ adding them back into the gradient), median of {steps - 1} steps; "
        f"load average before: {_load()}"
    )
    out(f"{'ratings/rank/step':>17s} {'users':>7s} {'movies':>7s} {'mode':>6s} {'ms/step':>8s} {'MB sent/rank':>12s}")
    rows = launch(ranks, _exchange_rank, local_batches, steps, seed, timeout, timeout=timeout)[0]
    for row in rows:
        out(
            f"{row['local_batch']:17,d} {row['touched']['user']:7,d} {row['touched']['movie']:7,d} {row['mode']:>6s} "
            f"{row['ms_per_step']:8.1f} {row['bytes_per_step'] / 2**20:12.1f}"
        )
    out(f"load average after: {_load()}")
    return rows


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def run(args) -> int:
    """`xlcf bench --ranks 1,2 ...`: the distributed series (and, with two ranks or more, the exchange costs)."""
    import json
    from datetime import datetime
    from pathlib import Path

    from xlcf.bench.runner import _machine

    lines: list[str] = []

    def out(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    started = datetime.now(UTC)
    out(f"# xlcf bench --ranks — {started:%Y-%m-%d %H:%M} UTC — {_machine()}")
    report: dict = {
        "date": started.isoformat(timespec="seconds"),
        "machine": _machine(),
        "exchange": [],
        "distributed": [],
    }
    if max(args.ranks) > 1 and args.device in ("auto", "cpu") and not args.skip_exchange:
        report["exchange"] = bench_exchange([2048, 8192, 32768], max(args.ranks), out)
    report["distributed"] = bench_distributed(
        args.scale,
        args.ranks,
        args.dist_optimizers,
        args.scale_epochs,
        args.device,
        args.seed,
        out,
        threads=args.threads,
        exchange=args.exchange,
    )
    report["text"] = "\n".join(lines)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0
