"""How much memory a fit will take, checked before any tensor is allocated.

A typo such as ``--factors 100000`` would otherwise allocate until the operating system kills the process
(no message) or the GPU runs out mid-fit. The estimate counts the big tensors of a run: the embeddings and
biases with their gradients, the optimizer's state (two moments for Adam) and the best run's copy kept by the
multistart, the per-batch gathered embeddings and their gradients, and for ALS the padded rating blocks and
one Gram matrix per user or movie of a chunk; for gibbs the sampler's sorted ratings, per-rating temporaries
and rows (no gradients, no mini-batches). It errs on the high side by a small factor, never by orders of
magnitude; a fit is refused only when the estimate exceeds 80% of what the device has free right now.
"""

from __future__ import annotations

import os

import torch

from xlcf.errors import ConfigError
from xlcf.fileio import human_bytes

FLOAT = 4  # bytes per float32
DOUBLE = 8
PARAM_COPIES = 5  # parameters, gradients, two optimizer moments, the best run's copy
BATCH_COPIES = 6  # gathered user and movie rows, their gradients, the product and its gradient
HEADROOM = 0.8  # of the free memory a fit may plan to use: temporaries, the allocator's slack, other programs
# gibbs, per training rating: the ratings sorted by user and by movie (two indices and the rating each), the
# sum of the averaged training predictions (float64), and a sweep's per-rating temporaries (residuals, noise
# draws, weights, the float64 noise update); measured about 90 bytes per rating from 1M to 5M ratings.
GIBBS_PER_RATING = 100
GIBBS_ROW_COPIES = 10  # draws, running sums, the divergence snapshot, prior draws, aligned copies (float64)
GIBBS_SAMPLES = 256 << 20  # the thinned draws kept for predict_std (xlcf.train.gibbs_train.SAMPLE_BYTES)
GIBBS_BATCH = 8 * (1 << 22) * FLOAT  # a batch's gathers (xlcf.train.gibbs.CHUNK_FLOATS) and their products


def estimate_bytes(
    n_users: int,
    n_movies: int,
    n_train: int,
    factors: int,
    *,
    batch_size: int,
    optimizer: str,
    model: str = "bias",
    hidden: int = 10,
) -> int:
    """Approximate peak bytes of one fit (see the module's docstring for what is counted)."""
    width = factors + 1  # a bias per row
    params = (n_users + n_movies) * width
    if model == "nn":
        params += 2 * factors * hidden + hidden + 1
    total = params * FLOAT * PARAM_COPIES
    if optimizer == "gibbs":  # no gradients, no optimizer state, no mini-batches: the sampler's own arrays
        rows = (n_users + n_movies) * width
        samples = min(32 * rows * FLOAT, GIBBS_SAMPLES)
        return int(n_train * GIBBS_PER_RATING + rows * DOUBLE * GIBBS_ROW_COPIES + samples + GIBBS_BATCH)
    if optimizer == "als":
        # the other side's rows gathered per rating (double precision), padded; Gram matrices of a chunk
        total += 3 * n_train * width * DOUBLE + 2 * width * width * DOUBLE * max(1, min(n_users, n_movies, 64))
    else:
        total += BATCH_COPIES * min(batch_size, n_train) * width * FLOAT
    return int(total)


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` now: CUDA's free memory, else the system's available memory (None when it
    cannot be read)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):  # pragma: no cover - a driver that cannot say
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # Windows, macOS without the name
        return None


def check_memory(
    n_users: int, n_movies: int, n_train: int, config, device: torch.device, available: int | None = None
) -> None:
    """ConfigError (field ``factors``) when the fit would need more memory than ``device`` has free, saying how
    much it would take and how many factors would fit. ``config`` is a resolved TrainConfig."""
    free = available_bytes(device) if available is None else available
    if free is None:
        return
    name = config.optimizer_name

    def need(k: int) -> int:
        return estimate_bytes(
            n_users,
            n_movies,
            n_train,
            k,
            batch_size=int(config.batch_size or n_train),
            optimizer=name,
            model=config.model,
            hidden=int(config.hidden),
        )

    needed = need(int(config.factors))
    budget = int(free * HEADROOM)
    if needed <= budget:
        return
    lo, hi = 0, int(config.factors)  # the most factors that fit: need() grows with k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    fits = f"at most about {lo:,} factors fit" if lo >= 1 else "not even one factor fits"
    raise ConfigError(
        f"factors={config.factors:,} would need about {human_bytes(needed)} of memory for "
        f"{n_users:,} users, {n_movies:,} movies and {n_train:,} training ratings with {name}, but "
        f"{device} has {human_bytes(free)} free; {fits}",
        field="factors",
    )
