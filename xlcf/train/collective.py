"""The communication of a distributed fit, on ``torch.distributed``: the process group of one rank and the few
collectives the solvers need.

- Heavy traffic (gradients, factor rows, per-epoch sums) goes through the default group: NCCL when the ranks
  train on GPUs, gloo on CPUs. Python objects (the fit's plan, the shards, errors) always go through a gloo
  group, because NCCL moves device tensors only.
- Every collective waits at most ``timeout`` seconds for the other ranks: a rank that hangs or dies ends the job
  with an error instead of a hang.
- Gradients of the embedding tables are exchanged dense (one all-reduce of the whole table) or sparse (an
  all-gather of the rows the step touched), whichever moves fewer bytes for the batch at hand; see
  :class:`GradExchange` and docs/distributed.md for the measurements behind the choice."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from xlcf.errors import ConfigError, DeviceError
from xlcf.train.devices import resolve_device

DEFAULT_TIMEOUT_S = 300.0
# Sparse exchange when its bytes are below this fraction of the dense all-reduce's. Sparse is not bytes alone: the
# ranks also find the touched rows, gather and add them back, memory-bound work per row. Measured on gloo (two CPU
# ranks, 25M-shaped tables, `xlcf bench --exchange`, docs/distributed.md): equal speed at ~0.17 of the bytes, sparse
# 2x faster at 0.05, 7x at 0.014. NCCL is not measured here (no GPU): on a GPU the per-row work is cheap next to
# the transfer, so the rule there favours sparse up to half the dense bytes.
SPARSE_BYTES_RATIO = {"gloo": 0.15, "nccl": 0.5}
# Names of the embedding tables by side; every other parameter (the nn's layers) is always all-reduced dense.
SIDES = {"user": ("user_factors", "user_bias"), "movie": ("movie_factors", "movie_bias")}


def launched() -> bool:
    """True inside a process started by torchrun / the elastic launcher (it sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _gather_into(output: torch.Tensor, tensor: torch.Tensor, group=None) -> None:
    # all_gather_single is the newer name of all_gather_into_tensor (deprecated in recent torch).
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(output, tensor, group=group)


@dataclass
class DistContext:
    """One rank of a distributed job: who it is, its device, and its process groups."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    backend: str
    device: torch.device
    timeout: float
    cpu_group: dist.ProcessGroup | None = None  # None: the default group is already gloo
    owns_group: bool = False

    @classmethod
    def from_env(cls, device: str = "auto", timeout: float = DEFAULT_TIMEOUT_S) -> DistContext:
        """Join the job the launcher started (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment)."""
        if not launched():
            raise ConfigError(
                "not inside a distributed job: start it with `xlcf train --nproc N` or `torchrun ... -m xlcf train`",
                field="--nproc",
            )
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds; got {timeout!r}", field="--timeout")
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        dev = rank_device(device, local_rank)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        span = timedelta(seconds=float(timeout))
        owns = False
        if not dist.is_initialized():
            extra: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
            dist.init_process_group(backend, timeout=span, **extra)
            owns = True
        backend = str(dist.get_backend())
        cpu_group = dist.new_group(backend="gloo", timeout=span) if backend != "gloo" else None
        return cls(rank, world, local_rank, local_world, backend, dev, float(timeout), cpu_group, owns)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    # -- objects and control (gloo group) ------------------------------------------------------------
    def broadcast_object(self, obj=None):
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def send_arrays(self, dst: int, arrays: list) -> None:
        for a in arrays:
            if a.size:
                dist.send(torch.from_numpy(a), dst, group=self.cpu_group)

    def recv_arrays(self, specs: list[tuple[int, Any]]) -> list:
        """Receive arrays of the given (length, numpy dtype), in the order rank 0 sent them."""
        import numpy as np

        out = []
        for length, dtype in specs:
            a = np.empty(int(length), dtype=dtype)
            if a.size:
                dist.recv(torch.from_numpy(a), 0, group=self.cpu_group)
            out.append(a)
        return out

    # -- numbers (default group, on the device) ------------------------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def decide(self, code: int) -> int:
        """Rank 0's ``code`` on every rank (whether and why to stop): rank 0 alone runs callbacks and checks."""
        t = torch.tensor([code if self.rank == 0 else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def share_rows(self, tables: list[torch.Tensor], ranges: list[tuple[int, int]]) -> None:
        """Every rank solved the rows ``ranges[rank]`` of ``tables`` (each (n, k) or (n,), same n): give
        everyone everyone's rows. One all-gather of the rows, padded to the longest range."""
        lo, hi = ranges[self.rank]
        longest = max(h - lo_ for lo_, h in ranges)
        cols = [t.reshape(t.shape[0], -1) for t in tables]
        width = sum(c.shape[1] for c in cols)
        block = torch.zeros(longest, width, dtype=tables[0].dtype, device=tables[0].device)
        block[: hi - lo] = torch.cat([c[lo:hi] for c in cols], dim=1)
        out = torch.empty(self.world * longest, width, dtype=block.dtype, device=block.device)
        _gather_into(out, block)
        with torch.no_grad():
            for j, (a, b) in enumerate(ranges):
                rows = out[j * longest : j * longest + (b - a)]
                at = 0
                for c in cols:
                    c[a:b] = rows[:, at : at + c.shape[1]]
                    at += c.shape[1]


def rank_device(name: str, local_rank: int) -> torch.device:
    """The device of a rank: the CPU, or GPU ``local_rank`` of its host (one GPU per rank)."""
    dev = resolve_device(name)
    if dev.type != "cuda":
        return dev
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(
            f"local rank {local_rank} needs GPU {local_rank} but this host has {count}; start at most "
            f"{count} ranks per host (--nproc / --nproc-per-node)",
            field="--nproc",
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------
class GradExchange:
    """Sums the gradients of data-parallel ranks, each computed on its own part of a global batch.

    The gradients live in one flat buffer (``p.grad`` are views into it), so a dense exchange is one all-reduce
    per contiguous run of dense tables. A sparse side (user or movie tables) sends only the rows its batch
    touched: the ranks all-gather (row index, gradient row) pairs and add them back into the zeroed gradient,
    which then holds exactly the dense sum. Either way the optimizer sees the gradient of the global batch."""

    def __init__(self, model: torch.nn.Module, ctx: DistContext):
        self.ctx = ctx
        named = dict(model.named_parameters())
        order = [n for side in SIDES.values() for n in side if n in named]
        order += [n for n in named if n not in order]
        self.names = order
        self.params = [named[n] for n in order]
        sizes = [p.numel() for p in self.params]
        device = self.params[0].device
        self.flat = torch.zeros(sum(sizes), dtype=self.params[0].dtype, device=device)
        self.views, self.spans, at = [], {}, 0
        for name, p, n in zip(order, self.params, sizes):
            self.views.append(self.flat[at : at + n].view_as(p))
            self.spans[name] = (at, at + n)
            at += n
        self.side_of = {n: side for side, names in SIDES.items() for n in names if n in named}
        self.sparse = {"user": False, "movie": False}
        self._bind()

    def _bind(self) -> None:
        """Point every ``p.grad`` at its view (a model may have replaced a gradient tensor)."""
        for p, v in zip(self.params, self.views):
            if p.grad is None:
                v.zero_()
                p.grad = v
            elif p.grad.data_ptr() != v.data_ptr():
                v.copy_(p.grad)
                p.grad = v

    def choose(self, user_rows: int, movie_rows: int) -> dict[str, bool]:
        """Pick dense or sparse per side from the most rows any rank's batch touches (all ranks agree)."""
        counts = torch.tensor([user_rows, movie_rows], dtype=torch.int64, device=self.ctx.device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        ratio = SPARSE_BYTES_RATIO.get(self.ctx.backend, 1.0)
        for side, rows in zip(("user", "movie"), counts.tolist()):
            names = [n for n in self.names if self.side_of.get(n) == side]
            if not names:
                continue
            n_rows = self.params[self.names.index(names[0])].shape[0]
            width = sum(self.params[self.names.index(n)][0].numel() for n in names)
            # ring all-reduce: ~2 (w-1)/w table bytes per rank; all-gather: (w-1) x touched rows x (width + index)
            dense = 2 * (self.ctx.world - 1) / self.ctx.world * n_rows * width * 4
            sparse = (self.ctx.world - 1) * rows * (width * 4 + 8)
            self.sparse[side] = sparse < ratio * dense
        return dict(self.sparse)

    def reduce(self, scale: float, batch_users: torch.Tensor | None, batch_movies: torch.Tensor | None) -> None:
        """Replace the local gradients (of a mean over this rank's batch) with the global batch's: each rank
        weighs its own by ``scale`` (its share of the global batch), then the ranks sum."""
        self._bind()
        if self.ctx.world == 1:  # nothing to sum (and the scale is 1)
            return
        dense_names = [n for n in self.names if not self.sparse.get(self.side_of.get(n, ""), False)]
        for a, b in _runs([self.spans[n] for n in dense_names]):
            seg = self.flat[a:b]
            seg.mul_(scale)
            dist.all_reduce(seg)
        sides = [(s, idx) for s, idx in (("user", batch_users), ("movie", batch_movies)) if self.sparse[s]]
        if not sides:
            return
        picked = []
        for side, idx in sides:
            rows = (
                torch.unique(idx.long())
                if idx is not None
                else torch.empty(0, dtype=torch.long, device=self.flat.device)
            )
            names = [n for n in self.names if self.side_of.get(n) == side]
            grads = [self.views[self.names.index(n)] for n in names]
            picked.append((rows, grads))
        counts = torch.tensor([rows.numel() for rows, _ in picked], dtype=torch.int64, device=self.flat.device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        for (rows, grads), longest in zip(picked, counts.tolist()):
            self._gather_side(rows, grads, int(longest), scale)

    def _gather_side(self, rows: torch.Tensor, grads: list[torch.Tensor], longest: int, scale: float) -> None:
        cols = [g.reshape(g.shape[0], -1) for g in grads]
        vals = torch.cat([c.index_select(0, rows) for c in cols], dim=1) if rows.numel() else None
        all_idx, all_vals = self._all_rows(rows, vals, longest, sum(c.shape[1] for c in cols), scale)
        at = 0
        for c in cols:
            c.index_fill_(0, rows, 0.0)  # the local gradient is zero off its touched rows: clear just those
            _add_rows(c, all_idx, all_vals[:, at : at + c.shape[1]])
            at += c.shape[1]

    def _all_rows(self, rows: torch.Tensor, vals: torch.Tensor | None, longest: int, width: int, scale: float):
        """Every rank's (row index, ``scale`` x gradient row) pairs, one all-gather each, padded to ``longest``
        with row 0 and a zero row (which adds nothing where it lands)."""
        idx = torch.zeros(longest, dtype=torch.int64, device=self.flat.device)
        padded = torch.zeros(longest, width, dtype=self.flat.dtype, device=self.flat.device)
        if rows.numel():
            assert vals is not None  # the callers pass values exactly when there are rows
            idx[: rows.numel()] = rows
            padded[: rows.numel()] = vals * scale
        all_idx = torch.empty(self.ctx.world * longest, dtype=torch.int64, device=idx.device)
        all_vals = torch.empty(self.ctx.world * longest, width, dtype=padded.dtype, device=padded.device)
        _gather_into(all_idx, idx)
        _gather_into(all_vals, padded)
        return all_idx, all_vals

    def sgd_step(self, lr: float, scale: float, sides: list[tuple[torch.Tensor, list, list]]) -> None:
        """Plain SGD on the rows the global batch touched, with no dense gradient and no dense update (the
        data-parallel twin of the one-rank in-place SGD step). ``sides``: per side (batch row indices, per-rating
        gradient rows [(b, k), (b,)...], the tables they belong to). Each rank sums its rows per table row, the
        ranks all-gather the sums, and every rank subtracts ``lr`` x the global batch's gradient in place."""
        packed = []
        for idx, grads, tables in sides:
            cols = [g.reshape(g.shape[0], -1) for g in grads]
            width = sum(c.shape[1] for c in cols)
            if idx.numel():
                rows, inverse = torch.unique(idx.long(), return_inverse=True)
                summed = torch.zeros(rows.numel(), width, dtype=self.flat.dtype, device=self.flat.device)
                summed.index_add_(0, inverse, torch.cat(cols, dim=1) if len(cols) > 1 else cols[0])
            else:  # this rank's shard ran out a step early
                rows, summed = idx.long(), None
            packed.append((rows, summed, width, tables))
        counts = torch.tensor([p[0].numel() for p in packed], dtype=torch.int64, device=self.flat.device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        with torch.no_grad():
            for (rows, summed, width, tables), longest in zip(packed, counts.tolist()):
                all_idx, all_vals = self._all_rows(rows, summed, int(longest), width, scale)
                at = 0
                for t in tables:
                    w = t[0].numel()
                    _add_rows(t.reshape(t.shape[0], -1), all_idx, all_vals[:, at : at + w].mul(-lr))
                    at += w

    def bytes_per_step(self, touched: dict[str, int]) -> float:
        """Bytes one rank sends per step with the current choice (for reports): ring all-reduce of the dense
        parts, all-gather of the touched rows of the sparse ones."""
        world = self.ctx.world
        total = 0.0
        for side in ("user", "movie", ""):
            names = [n for n in self.names if self.side_of.get(n, "") == side]
            if not names:
                continue
            width = sum(self.params[self.names.index(n)][0].numel() for n in names) if side else 0
            if side and self.sparse[side]:
                total += (world - 1) * touched.get(side, 0) * (width * 4 + 8)
            else:
                n = sum(self.params[self.names.index(x)].numel() for x in names)
                total += 2 * (world - 1) / world * n * 4
        return total


def _add_rows(table: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> None:
    """table[idx[i]] += rows[i] (repeated indices add up): scatter_add_ on a broadcast index, several times faster
    on CPU than a 2-D index_add_ (as the models' own gradient scatter)."""
    table.scatter_add_(0, idx[:, None].expand(-1, table.shape[1]), rows.contiguous())


def _runs(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge adjacent [a, b) spans into contiguous runs."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
