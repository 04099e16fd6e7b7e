"""Bayesian matrix factorisation with biases, sampled by block Gibbs (BPMF, Salakhutdinov & Mnih 2008),
with per-user and per-movie noise scales (robust BPMF, Lakshminarayanan, Bouchard & Archambeau 2011).

Model: ``r_um = mean + b_u + b_m + p_u . q_m + e``, ``e ~ N(0, 1 / (alpha * s_u * s_m))``. Each user's row
``x_u = [p_u, b_u]`` (each movie's ``[q_m, b_m]``) has the prior N(mu_U, Lambda_U^-1); (mu_U, Lambda_U) has a
Normal-Wishart hyper-prior (W0 = I / prior, nu0 = d, beta0 = 2), alpha a Gamma(1, 1) prior and the noise
scales s a Gamma(noise_df / 2, noise_df / 2) prior (mean 1; ``noise_df=0`` drops them: one noise level).

One sweep draws, in turn: (mu_U, Lambda_U) given the user rows; every user row given the movies; the same
for the movies; alpha and the noise scales given the residuals. A row's conditional is Gaussian with
precision ``Lambda + alpha * sum_m s_u s_m z_m z_m^T`` (``z_m = [q_m, 1]``); rows are grouped by rating
count (padded to a power of two) and drawn in batches:

- rows with few ratings (fewer than half the row width) by Matheron's rule — draw the row from its prior,
  then correct it with the (count x count) system ``(Z Sigma Z^T + D) a = t - Z x - e``: no d x d
  factorisation for the thousands of rarely rated movies;
- the others by a batched Cholesky of their d x d precision (``torch.linalg``).

Memory is bounded: ratings are sorted once per side, each batch gathers at most CHUNK_FLOATS floats. Every
random draw is keyed by (seed, sweep, side) and indexed by row (or by rating), never by batch, so the chain
is the same for any chunk size; on CPU it is deterministic for a seed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

CHUNK_FLOATS = 1 << 22  # floats gathered per batch (padded ratings x d, or rows x d x d): 16 MB in float32
EVAL_CHUNK = 1 << 18  # ratings per prediction chunk


@dataclass(frozen=True)
class Priors:
    """Hyper-prior settings. ``prior`` scales the Wishart's W0 = I / prior (a larger prior expects smaller
    rows: more shrinkage); ``noise_df`` is the degrees of freedom of the per-user/per-movie noise scales."""

    prior: float = 1.0
    beta0: float = 2.0
    noise_df: float = 16.0
    alpha_shape: float = 1.0
    alpha_rate: float = 1.0


def stream_seed(*key: int) -> int:
    """A 63-bit seed derived from a key (seed, sweep, side, ...): independent streams per key."""
    return int(
        np.random.SeedSequence([int(k) for k in key])
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot(np.array([1, 1 << 32], dtype=np.uint64))
        >> np.uint64(1)
    )


# ------------------------------------------------------------------------------------------------
# ratings grouped by row
# ------------------------------------------------------------------------------------------------
class Side:
    """The ratings sorted by one side's row (user or movie), and the batches its rows are drawn in."""

    def __init__(
        self,
        own: torch.Tensor,
        other: torch.Tensor,
        rating: torch.Tensor,
        n_rows: int,
        width: int,
        chunk_floats: int = CHUNK_FLOATS,
        rows: tuple[int, int] | None = None,
    ):
        device = own.device
        order = torch.argsort(own, stable=True)
        self.n_rows, self.n = n_rows, int(own.shape[0])
        self.own = own.index_select(0, order)
        # The other side's row per rating; the padding slot (index n) points at the other side's zero row.
        self.other = torch.cat([other.index_select(0, order), torch.full((1,), -1, dtype=other.dtype, device=device)])
        self.rating = rating.index_select(0, order)
        counts = torch.bincount(own.long(), minlength=n_rows)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        # (row ids, padded length, short?) batches; rows without ratings come first with length 1. With ``rows``
        # (lo, hi), only those rows are drawn (the ratings given are theirs: one process's share of the rows).
        self.batches: list[tuple[torch.Tensor, int, bool]] = []
        counts_cpu = counts.cpu()
        bucket = torch.where(counts_cpu > 0, torch.ceil(torch.log2(counts_cpu.clamp_min(1).double())).long() + 1, 0)
        if rows is not None:
            bucket[: rows[0]] = -1
            bucket[rows[1] :] = -1
        for b in torch.unique(bucket).tolist():
            if b < 0:
                continue
            ids = torch.nonzero(bucket == b).reshape(-1)
            length = 1 << max(b - 1, 0)
            short = 2 * length < width
            per = max(chunk_floats // (width * (length if short else max(length, width))), 1)
            for c in range(0, ids.numel(), per):
                self.batches.append((ids[c : c + per].to(device), length, short))

    def positions(self, rows: torch.Tensor, length: int) -> torch.Tensor:
        """(rows, length) positions into the sorted ratings; padding -> n (the zero slot)."""
        offs = torch.arange(length, device=rows.device)
        pos = self.starts[rows][:, None] + offs[None, :]
        return torch.where(offs[None, :] < self.counts[rows][:, None], pos, torch.full_like(pos, self.n))


# ------------------------------------------------------------------------------------------------
# hyper-parameters
# ------------------------------------------------------------------------------------------------
def _wishart(df: float, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Wishart(df, scale) draw by the Bartlett decomposition (scipy.stats would cost ~0.5 s to import)."""
    d = scale.shape[0]
    a = np.tril(rng.standard_normal((d, d)), -1)
    a[np.diag_indices(d)] = np.sqrt(rng.chisquare(df - np.arange(d)))
    la = np.linalg.cholesky(scale) @ a
    return la @ la.T


def draw_hyper(
    rows: torch.Tensor, priors: Priors, rng: np.random.Generator, total=None, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, Lambda) from the Normal-Wishart posterior given the rows (n, d) (mu0 = 0, W0 = I / prior, nu0 = d);
    statistics on the device, the d x d draw on the host in float64.

    ``rows`` may be one process's share of the ``n`` rows: ``total(tensor)`` then sums a statistic over the
    processes (the mean first, then the scatter about it: no cancellation), so every process draws the same."""
    d = rows.shape[1]
    x = rows.double()
    if total is None:
        n = rows.shape[0]
        xbar_t = x.mean(0)
        centred = x - xbar_t
        scatter = (centred.T @ centred).cpu().numpy()
    else:
        assert n is not None  # the number of rows over all processes
        xbar_t = total(x.sum(0)) / n
        centred = x - xbar_t
        scatter = total(centred.T @ centred).cpu().numpy()
    xbar = xbar_t.cpu().numpy()
    beta_n = priors.beta0 + n
    w_inv = np.eye(d) * priors.prior + scatter + (priors.beta0 * n / beta_n) * np.outer(xbar, xbar)
    w_n = np.linalg.inv(w_inv)
    lam = _wishart(d + n, (w_n + w_n.T) / 2, rng)
    chol = np.linalg.cholesky(beta_n * lam)
    mu = n * xbar / beta_n + np.linalg.solve(chol.T, rng.standard_normal(d))
    return mu, lam


# ------------------------------------------------------------------------------------------------
# row draws
# ------------------------------------------------------------------------------------------------
def _small_cholesky_solve(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Solve m a = v for a batch of small SPD matrices (G, L, L), column by column over the batch: for
    L < 32 this beats one LAPACK call per matrix."""
    n = m.shape[1]
    low = torch.zeros_like(m)
    y = torch.empty_like(v)
    for j in range(n):
        s = m[:, j:, j] - torch.einsum("gik,gk->gi", low[:, j:, :j], low[:, j, :j])
        piv = s[:, 0].clamp_min(torch.finfo(m.dtype).tiny).sqrt()
        low[:, j, j] = piv
        low[:, j + 1 :, j] = s[:, 1:] / piv[:, None]
        y[:, j] = (v[:, j] - (low[:, j, :j] * y[:, :j]).sum(1)) / piv
    a = torch.empty_like(v)
    for j in range(n - 1, -1, -1):
        a[:, j] = (y[:, j] - (low[:, j + 1 :, j] * a[:, j + 1 :]).sum(1)) / low[:, j, j]
    return a


def draw_rows(
    rows: torch.Tensor,
    z: torch.Tensor,
    side: Side,
    target: torch.Tensor,
    weight: torch.Tensor,
    mu: torch.Tensor,
    lam: torch.Tensor,
    alpha: float,
    eps: torch.Tensor,
    noise: torch.Tensor,
    resid_out: torch.Tensor | None = None,
) -> bool:
    """Draw every row of ``rows`` (n_rows, d) in place from its Gaussian conditional.

    ``z`` (n_other + 1, d): the other side's regressors [factors, 1] with a zero last row (padding);
    ``target``/``weight`` (n + 1,): per sorted rating, the part of the rating the row explains and the noise
    scale s_u s_m (0 in the padding slot); ``eps`` (n_rows, d) and ``noise`` (n + 1,) standard normal draws
    keyed by row and by rating. ``resid_out`` (n + 1,), when given, receives each rating's residual
    ``target - z . row`` under the new rows. Returns False when a precision matrix was not positive definite."""
    d = rows.shape[1]
    ok = True
    # The prior draw every row starts from (Matheron) and the prior covariance, from Lambda = C C^T.
    lam64 = lam.double()
    chol_lam = torch.linalg.cholesky(lam64)
    inv_c = torch.linalg.solve_triangular(chol_lam, torch.eye(d, dtype=torch.float64, device=lam.device), upper=False)
    sigma = (inv_c.T @ inv_c).to(rows.dtype)
    lam_mu = lam @ mu
    inv_c = inv_c.to(rows.dtype)
    n_other = z.shape[0] - 1
    for gid, length, short in side.batches:
        g = gid.numel()
        pos = side.positions(gid, length).reshape(-1)
        # index_select gathers whole rows (much faster than advanced indexing on CPU); padding -> zero row
        other = side.other.index_select(0, pos)
        zb = z.index_select(0, torch.where(other < 0, n_other, other)).view(g, length, d)
        wb = weight.index_select(0, pos).view(g, length)  # 0 in padding
        tb = target.index_select(0, pos).view(g, length)
        if short:
            # Matheron: x = x0 + Sigma Z^T (Z Sigma Z^T + D)^-1 (t - Z x0 - e), x0 ~ prior, e ~ N(0, D),
            # D = diag(1 / (alpha w)); padding: D = 1, residual 0, so it decouples and adds nothing.
            x0 = mu + eps.index_select(0, gid) @ inv_c  # rows of C^-T eps: covariance Lambda^-1
            ws = zb @ sigma  # (G, L, d) = Z Sigma
            dvar = torch.where(wb > 0, 1.0 / (alpha * wb).clamp_min(1e-30), torch.ones_like(wb))
            m = torch.bmm(ws, zb.transpose(1, 2)) + torch.diag_embed(dvar)
            resid = torch.where(
                wb > 0,
                tb - (zb @ x0[:, :, None])[:, :, 0] - noise.index_select(0, pos).view(g, length) * dvar.sqrt(),
                torch.zeros_like(tb),
            )
            if length == 1:
                a = resid / m[:, :, 0]
            else:
                a = _small_cholesky_solve(m, resid)
            x = x0 + torch.bmm(a[:, None, :], ws)[:, 0, :]
        else:
            zw = zb.transpose(1, 2) * (alpha * wb)[:, None, :]
            prec = torch.baddbmm(lam.expand(g, d, d), zw, zb)
            rhs = torch.bmm(zw, tb[:, :, None]) + lam_mu[None, :, None]
            chol, info = torch.linalg.cholesky_ex(prec)
            ok = ok and not bool((info != 0).any())
            y = torch.linalg.solve_triangular(chol, rhs, upper=False)
            # x = L^-T (L^-1 b + eps): mean (L L^T)^-1 b, covariance (L L^T)^-1
            y = y + eps.index_select(0, gid)[:, :, None]
            x = torch.linalg.solve_triangular(chol.transpose(1, 2), y, upper=True)[:, :, 0]
        rows.index_copy_(0, gid, x)
        if resid_out is not None:  # (the padding slot n receives junk; it is never read)
            resid_out.index_copy_(0, pos, (tb - torch.bmm(zb, x[:, :, None])[:, :, 0]).reshape(-1))
    return ok


# ------------------------------------------------------------------------------------------------
# the chain
# ------------------------------------------------------------------------------------------------
def predict_rows(urows, mrows, u, m, offset: float, has_bias: bool):
    """Predictions for index pairs (-1 = unknown id: no factors, no bias). Rows are [factors, bias?]."""
    ku, km = u >= 0, m >= 0
    uu, mm = urows.index_select(0, u.clamp_min(0)), mrows.index_select(0, m.clamp_min(0))
    k = urows.shape[1] - int(has_bias)
    out = (uu[:, :k] * mm[:, :k]).sum(1) * (ku & km) + offset
    if has_bias:
        out = out + uu[:, k] * ku + mm[:, k] * km
    return out


@dataclass
class Chain:
    """A run's state and accumulators (rows are [factors, bias] when the model has biases)."""

    users: torch.Tensor
    movies: torch.Tensor
    user_scale: torch.Tensor  # noise scales s_u, s_m (ones without noise_df)
    movie_scale: torch.Tensor
    alpha: float = 1.0
    sweep: int = 0
    kept: int = 0
    user_sum: torch.Tensor | None = None
    movie_sum: torch.Tensor | None = None
    user_noise_sum: torch.Tensor | None = None  # sum over kept sweeps of 1 / (alpha s_u), and of 1 / s_m
    movie_noise_sum: torch.Tensor | None = None
    train_sum: torch.Tensor | None = None  # sum of the training predictions (movie-sorted order)
    valid_mean: torch.Tensor | None = None  # running mean and sum of squared deviations (Welford)
    valid_m2: torch.Tensor | None = None
    valid_noise: torch.Tensor | None = None  # running mean of the noise variance of each validation pair
    samples: list = field(default_factory=list)  # thinned (users, movies) copies on the host, for predict_std
    sample_sweeps: list = field(default_factory=list)


@dataclass
class SweepInfo:
    sweep: int
    train_rmse: float  # this sweep's sample
    valid_rmse: float | None  # this sweep's sample
    valid_rmse_avg: float | None  # the averaged predictions so far (None during burn-in)
    alpha: float
    seconds: float


class OneProcess:
    """The processes that sample one chain together, as the sampler sees them: here just this one. A
    distributed fit passes its own (``xlcf.train.dist_gibbs``): each process then draws the rows it owns
    (``rows``), holds their ratings, and the statistics every draw needs are summed over the processes
    (``total``), so every process takes the same hyper-parameter and noise draws."""

    lead = True  # this process keeps the thinned samples and decides when to stop
    users: tuple[int, int] | None = None  # the rows this process draws (None: all of them)
    movies: tuple[int, int] | None = None

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes."""
        return t

    def before(self, side: int) -> int:
        """How many ratings of ``side`` (0: users, 1: movies) belong to rows before this process's."""
        return 0

    def share(self, tables: list[torch.Tensor], side: int) -> None:
        """Give every process every process's rows of ``tables`` (rows of ``side``)."""

    def decide(self, reason: str | None) -> str | None:
        """The lead process's reason to stop (None: go on), on every process."""
        return reason


class Sampler:
    """Block Gibbs for one dataset. ``run`` sweeps; ``on_sweep(info)`` returning False stops it.

    ``ranks`` (see :class:`OneProcess`): when several processes sample the chain, ``u, m, r`` are the ratings of
    this process's users and ``movie_ratings`` those of its movies; every draw is keyed by row (or by rating in
    the side's sorted order), so the chain is the one-process chain up to float rounding."""

    def __init__(
        self,
        u,
        m,
        r,
        n_users: int,
        n_movies: int,
        *,
        rank: int,
        has_bias: bool,
        offset: float,
        priors: Priors,
        seed: int,
        dtype,
        chunk_floats: int = CHUNK_FLOATS,
        valid=None,
        init=None,
        init_std: float = 0.1,
        movie_ratings=None,
        ranks: OneProcess | None = None,
    ):
        device = r.device
        self.ranks = ranks if ranks is not None else OneProcess()
        self.device, self.dtype, self.seed, self.priors = device, dtype, int(seed), priors
        self.has_bias, self.offset, self.rank = has_bias, float(offset), rank
        mu_, mm_, mr_ = movie_ratings if movie_ratings is not None else (u, m, r)
        self.n_users, self.n_movies, self.n = n_users, n_movies, int(mr_.shape[0])
        d = rank + int(has_bias)
        self.d = d
        idt = torch.int32 if max(n_users, n_movies, self.n, int(r.shape[0])) < 2**31 - 1 else torch.int64
        self.by_user = Side(u.to(idt), m.to(idt), r.to(dtype), n_users, d, chunk_floats, self.ranks.users)
        self.by_movie = Side(mm_.to(idt), mu_.to(idt), mr_.to(dtype), n_movies, d, chunk_floats, self.ranks.movies)
        # Ratings per row and in all, over every process (each row's ratings are all on its owner).
        self.user_counts = self.ranks.total(self.by_user.counts)
        self.movie_counts = self.ranks.total(self.by_movie.counts)
        self.n_total = int(self.movie_counts.sum())
        if init is None:
            gen = torch.Generator().manual_seed(self.seed)
            users = torch.randn(n_users, d, generator=gen, dtype=torch.float64) * init_std
            movies = torch.randn(n_movies, d, generator=gen, dtype=torch.float64) * init_std
            if has_bias:
                users[:, -1] = 0.0
                movies[:, -1] = 0.0
        else:
            users, movies = (torch.as_tensor(a, dtype=torch.float64) for a in init)
        self.chain = Chain(
            users.to(device, dtype),
            movies.to(device, dtype),
            torch.ones(n_users, dtype=dtype, device=device),
            torch.ones(n_movies, dtype=dtype, device=device),
        )
        self.valid = None
        if valid is not None:
            vu, vm, vr = valid
            self.valid = (vu.to(device).long(), vm.to(device).long(), vr.to(device, torch.float64))
        n_valid = torch.tensor([0 if valid is None else int(valid[2].shape[0])], dtype=torch.float64, device=device)
        self.n_valid = int(self.ranks.total(n_valid)[0])

    def _sum(self, *values) -> list[float]:
        """Scalars (tensors or floats) summed over the processes, in one exchange."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(()) for v in values])
        return self.ranks.total(t).tolist()

    def _mine(self, side: int) -> slice:
        own = self.ranks.users if side == 0 else self.ranks.movies
        return slice(None) if own is None else slice(own[0], own[1])

    # -- one sweep ---------------------------------------------------------------------------------
    def _z(self, rows: torch.Tensor) -> torch.Tensor:
        z = rows.clone()
        if self.has_bias:
            z[:, -1] = 1.0
        return torch.cat([z, torch.zeros(1, self.d, dtype=z.dtype, device=z.device)])

    def _half(
        self, side: Side, rows, other_rows, own_scale, other_scale, sweep: int, side_id: int, resid_out=None
    ) -> bool:
        rng = np.random.default_rng(stream_seed(self.seed, sweep, side_id, 0))
        one = self.ranks.users is None
        mine = rows[self._mine(side_id)]
        mu, lam = draw_hyper(mine, self.priors, rng, None if one else self.ranks.total, side.n_rows)
        gen = torch.Generator(device=self.device).manual_seed(stream_seed(self.seed, sweep, side_id, 1))
        eps = torch.randn(side.n_rows, self.d, generator=gen, dtype=self.dtype, device=self.device)
        # One noise draw per rating of the side, in its sorted order: this process takes its rows' stretch.
        noise = torch.randn(self.n_total + 1, generator=gen, dtype=self.dtype, device=self.device)
        if side.n != self.n_total:
            at = self.ranks.before(side_id)
            noise = torch.cat([noise[at : at + side.n], noise[-1:]])
        other = side.other[:-1]
        target = side.rating - self.offset
        if self.has_bias:
            target = target - other_rows[:, -1].index_select(0, other)
        pad = torch.zeros(1, dtype=self.dtype, device=self.device)
        weight = torch.cat([own_scale.index_select(0, side.own) * other_scale.index_select(0, other), pad])
        ok = draw_rows(
            rows,
            self._z(other_rows),
            side,
            torch.cat([target, pad]),
            weight,
            torch.as_tensor(mu, dtype=self.dtype, device=self.device),
            torch.as_tensor(lam, dtype=self.dtype, device=self.device),
            self.chain.alpha,
            eps,
            noise,
            resid_out,
        )
        self.ranks.share([rows], side_id)
        return ok

    def _noise(self, sweep: int, resid: torch.Tensor) -> None:
        """Draw alpha and the noise scales given the residuals (movie-sorted order, from the movie half-step)."""
        ch, side, pri = self.chain, self.by_movie, self.priors
        rng = np.random.default_rng(stream_seed(self.seed, sweep, 2, 0))
        m, u = side.own, side.other[:-1]
        e2 = resid.double().square()
        scale = ch.user_scale.index_select(0, u).double() * ch.movie_scale.index_select(0, m).double()
        (weighted,) = self._sum((e2 * scale).sum())
        ch.alpha = float(rng.gamma(pri.alpha_shape + self.n_total / 2, 1.0 / (pri.alpha_rate + weighted / 2)))
        if pri.noise_df > 0:
            half = pri.noise_df / 2
            for own, other, own_scale, other_scale, counts in (
                (u, m, "user_scale", "movie_scale", self.user_counts),
                (m, u, "movie_scale", "user_scale", self.movie_counts),
            ):
                sums = torch.zeros(counts.shape[0], dtype=torch.float64, device=self.device).index_add_(
                    0, own, e2 * getattr(ch, other_scale).index_select(0, other).double()
                )
                sums = self.ranks.total(sums)
                shape = (half + counts.double() / 2).cpu().numpy()
                rate = (half + ch.alpha * sums / 2).cpu().numpy()
                setattr(
                    ch, own_scale, torch.as_tensor(rng.gamma(shape, 1.0 / rate), dtype=self.dtype, device=self.device)
                )

    def sweep(self, sweep: int, burn_in: int, keep_every: int) -> tuple[bool, float, float | None, float | None]:
        """One sweep; returns (finite, train RMSE of this sample, its valid RMSE, the averaged valid RMSE)."""
        ch = self.chain
        ok = self._half(self.by_user, ch.users, ch.movies, ch.user_scale, ch.movie_scale, sweep, 0)
        resid = torch.empty(self.n + 1, dtype=self.dtype, device=self.device)
        ok = self._half(self.by_movie, ch.movies, ch.users, ch.movie_scale, ch.user_scale, sweep, 1, resid) and ok
        resid = resid[:-1]
        sse, failed = self._sum(resid.double().square().sum(), float(not ok))
        self._noise(sweep, resid)
        ok = (
            not failed
            and math.isfinite(sse)
            and math.isfinite(ch.alpha)
            and bool(torch.isfinite(ch.users).all())
            and bool(torch.isfinite(ch.movies).all())
        )
        if not ok:
            return False, float("nan"), None, None
        ch.sweep = sweep
        valid_now = valid_avg = None
        vpred = None
        if self.valid is not None:
            vu, vm, vr = self.valid
            vpred = predict_rows(ch.users, ch.movies, vu, vm, self.offset, self.has_bias).double()
        if sweep > burn_in:
            self._accumulate(self.by_movie.rating - resid, vpred, (sweep - burn_in - 1) % keep_every == keep_every - 1)
        if self.n_valid:
            assert self.valid is not None and vpred is not None  # every process has a (maybe empty) share
            vr = self.valid[2]
            now, avg = self._sum(
                ((vpred - vr) ** 2).sum(), ((ch.valid_mean - vr) ** 2).sum() if ch.valid_mean is not None else 0.0
            )
            valid_now = math.sqrt(now / self.n_valid)
            valid_avg = math.sqrt(avg / self.n_valid) if sweep > burn_in else None
        return True, math.sqrt(sse / self.n_total), valid_now, valid_avg

    def _accumulate(self, pred, vpred, keep: bool) -> None:
        ch = self.chain
        ch.kept += 1
        if ch.user_sum is None:
            ch.user_sum, ch.movie_sum = torch.zeros_like(ch.users), torch.zeros_like(ch.movies)
            ch.user_noise_sum = torch.zeros(self.n_users, dtype=torch.float64, device=self.device)
            ch.movie_noise_sum = torch.zeros(self.n_movies, dtype=torch.float64, device=self.device)
            ch.train_sum = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        # Allocated together just above on the first kept sweep.
        assert ch.user_noise_sum is not None and ch.movie_noise_sum is not None and ch.train_sum is not None
        assert ch.movie_sum is not None
        # Each process sums its own rows (the others' rows of the sums are completed by `finish`).
        mu, mm = self._mine(0), self._mine(1)
        users, movies = self._aligned(ch.users[mu], ch.movies[mm], ch.user_sum[mu], ch.movie_sum[mm], ch.kept > 1)
        ch.user_sum[mu] += users
        ch.movie_sum[mm] += movies
        ch.user_noise_sum += 1.0 / (ch.alpha * ch.user_scale.double())
        ch.movie_noise_sum += 1.0 / ch.movie_scale.double()
        ch.train_sum += pred.double()
        if vpred is not None:
            assert self.valid is not None  # vpred is only computed when there is a validation set
            vu, vm, _ = self.valid
            if ch.valid_mean is None:
                ch.valid_mean, ch.valid_m2, ch.valid_noise = (torch.zeros_like(vpred) for _ in range(3))
            assert ch.valid_m2 is not None and ch.valid_noise is not None  # allocated with valid_mean
            delta = vpred - ch.valid_mean
            ch.valid_mean += delta / ch.kept
            ch.valid_m2 += delta * (vpred - ch.valid_mean)
            noise = 1.0 / (
                ch.alpha
                * torch.where(vu >= 0, ch.user_scale.index_select(0, vu.clamp_min(0)).double(), 1.0)
                * torch.where(vm >= 0, ch.movie_scale.index_select(0, vm.clamp_min(0)).double(), 1.0)
            )
            ch.valid_noise += (noise - ch.valid_noise) / ch.kept
        if keep and self.ranks.lead:
            ch.samples.append((ch.users.float().cpu().numpy().copy(), ch.movies.float().cpu().numpy().copy()))
            ch.sample_sweeps.append(ch.sweep)

    def _aligned(self, users, movies, user_ref, movie_ref, have_ref: bool):
        """The draw's factors rotated onto the running sum's (orthogonal Procrustes). Predictions only see
        ``P Q^T``, which any rotation R (P R, Q R) leaves unchanged, and the priors are rotation invariant too,
        so the chain may drift or flip between such copies; averaging unaligned draws would shrink the
        posterior-mean factors towards zero (on a small sheet, to nothing). Biases are not rotated. (Rows of
        this process; the k x k cross product is summed over the processes, so all rotate alike.)"""
        if not have_ref:
            return users, movies
        k = self.rank
        pu, pm = users[:, :k].double(), movies[:, :k].double()
        cross = self.ranks.total(pu.T @ user_ref[:, :k].double() + pm.T @ movie_ref[:, :k].double())
        w, _, vh = torch.linalg.svd(cross)
        rot = (w @ vh).to(users.dtype)
        users, movies = users.clone(), movies.clone()
        users[:, :k] = users[:, :k] @ rot
        movies[:, :k] = movies[:, :k] @ rot
        return users, movies

    def finish(self) -> None:
        """Complete the posterior sums on every process (each summed its own rows)."""
        ch = self.chain
        if ch.user_sum is not None and ch.movie_sum is not None:
            self.ranks.share([ch.user_sum], 0)
            self.ranks.share([ch.movie_sum], 1)

    def run(
        self, sweeps: int, burn_in: int, *, keep_samples: int = 32, on_sweep=None, max_seconds: float | None = None
    ) -> str | None:
        """Sweep up to ``sweeps`` times; returns why it stopped early ("callback", "time", "diverged") or None.
        With several processes, the lead's callback and clock decide for all."""
        kept = max(sweeps - burn_in, 1)
        keep_every = max(kept // max(keep_samples, 1), 1)
        t0 = time.perf_counter()
        snapshot = (self.chain.users.clone(), self.chain.movies.clone(), self.chain.alpha)
        reason = None
        for sweep in range(1, sweeps + 1):
            t_sweep = time.perf_counter()
            ok, train_rmse, valid_now, valid_avg = self.sweep(sweep, burn_in, keep_every)
            if not ok:  # (the same on every process: its inputs are summed over them)
                self.chain.users.copy_(snapshot[0])
                self.chain.movies.copy_(snapshot[1])
                self.chain.alpha = snapshot[2]
                self.failed_sweep = sweep
                reason = "diverged"
                break
            snapshot[0].copy_(self.chain.users)
            snapshot[1].copy_(self.chain.movies)
            snapshot = (snapshot[0], snapshot[1], self.chain.alpha)
            info = SweepInfo(sweep, train_rmse, valid_now, valid_avg, self.chain.alpha, time.perf_counter() - t_sweep)
            if on_sweep is not None and on_sweep(info) is False:
                reason = "callback"
            elif max_seconds is not None and time.perf_counter() - t0 >= max_seconds and sweep < sweeps:
                reason = "time"
            reason = self.ranks.decide(reason)
            if reason is not None:
                break
        self.finish()
        return reason
