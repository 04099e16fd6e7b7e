"""Fit a collaborative-filtering sheet in place — the Solver replacement.

Two layers, so the headless CLI (zip path) and the xlwings macros run the same logic:

* :func:`fit_sheet_arrays` — pure: arrays in (the sheet's ratings, factors, biases), a :class:`SheetFit` out.
  The model is exactly the sheet's: ``pred = user_factors @ movie_factors (+ user_bias[:, None] + movie_bias)``,
  trained by the engine (``xlcf.train.fit_arrays``) on the rated cells, full batch, warm-started from the sheet.
* :func:`fit_workbook` — the file: finds the blocks (:mod:`xlcf.actions.blocks`), validates every cell (messages
  name sheet!cell), trains, then writes only factor and bias values, updates the cached values of the prediction
  and RMSE formulas it understands, flags a full recalculation on load and saves atomically
  (:mod:`xlcf.ooxml.package`). Any error before the save leaves the file byte-identical.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlcf import catalog
from xlcf.actions.blocks import find_blocks, rmse_formula_understood, understand_predictions
from xlcf.actions.fit_inputs import (
    DEFAULT_SCALE,
    SETTING_NAMES,
    SheetBlocksData,
    SheetSettings,
    read_blocks,
    sheet_settings,
)
from xlcf.actions.fit_outputs import apply_std_block, plan_std_block, write_fit_log
from xlcf.actions.sheetio import SheetIO, ZipSheetIO
from xlcf.errors import ConfigError, DataError, DivergenceError, TrainingError, WorkbookError
from xlcf.fileio import maybe_book_lock
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area, cell_ref, sheet_cell, split_ref
from xlcf.ooxml.values import CellValue


@dataclass
class SheetFit:
    """Result of fitting a sheet. Orientation is the sheet's: movie_factors is k x movies."""

    user_factors: np.ndarray  # (users, k)
    movie_factors: np.ndarray  # (k, movies)
    user_bias: np.ndarray | None
    movie_bias: np.ndarray | None
    predictions: np.ndarray  # (users, movies), every cell
    rmse_before: float | None
    rmse_after: float
    epochs: int
    optimizer: str
    device: str
    fit_seconds: float
    status_text: str
    result: Any = field(repr=False, default=None)  # xlcf.train.FitResult
    model: str = "dot"
    lr: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    n_rated: int = 0
    stopped_reason: str | None = None
    improved: bool = True  # False: training did not beat the sheet's factors, which are returned unchanged
    time_capped: bool = False  # training stopped because ``time_limit`` seconds were spent
    # Bayesian fits (gibbs): the posterior predictive std of every cell and the RMSE of the predictions averaged
    # over the kept sweeps on the rated cells (the factors written are posterior means: ``rmse_after`` is theirs).
    std: np.ndarray | None = field(repr=False, default=None)
    rmse_avg: float | None = None


def sheet_predictions(user_factors, movie_factors, user_bias=None, movie_bias=None) -> np.ndarray:
    """What the sheet's prediction formulas compute, in float64."""
    pred = np.asarray(user_factors, dtype=np.float64) @ np.asarray(movie_factors, dtype=np.float64)
    if user_bias is not None:
        pred = (
            pred
            + np.asarray(user_bias, dtype=np.float64).reshape(-1, 1)
            + np.asarray(movie_bias, dtype=np.float64).reshape(1, -1)
        )
    return pred


def rated_rmse(ratings: np.ndarray, predictions: np.ndarray) -> float:
    """RMSE over the rated (non-NaN) cells, in float64 like a spreadsheet."""
    mask = ~np.isnan(ratings)
    diff = (ratings[mask] - predictions[mask]).astype(np.float64)
    return float(math.sqrt(float(np.dot(diff, diff)) / max(int(mask.sum()), 1)))


def _settings_to_config_fields(settings) -> dict[str, Any]:
    if settings is None:
        return {}
    if hasattr(settings, "to_dict") and not isinstance(settings, dict):
        d = settings.to_dict()
        return {
            k: d[k]
            for k in (
                "optimizer",
                "epochs",
                "lr",
                "weight_decay",
                "seed",
                "device",
                "momentum",
                "betas",
                "schedule",
                "restarts",
            )
            if d.get(k) is not None
        }
    out: dict[str, Any] = {}
    for key, value in dict(settings).items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        out[SETTING_NAMES.get(key) or key] = value
    return out


def fit_sheet_arrays(
    ratings,
    user_factors,
    movie_factors,
    user_bias=None,
    movie_bias=None,
    settings=None,
    *,
    init: str = "keep",
    callback: Callable | None = None,
    time_limit: float | None = None,
    scale: tuple[float, float] | None = DEFAULT_SCALE,
    progress: bool = False,
    ratings_origin: tuple[str, str] | None = None,
) -> SheetFit:
    """Fit the sheet model to the rated cells of ``ratings`` (users x movies, NaN = unrated).

    ``settings``: dict (keys optimizer, lr, epochs, seed, device, wd/weight_decay, momentum, betas, schedule,
    restarts; None or
    blank = the engine's default for the optimizer) or a TrainConfig. ``init="keep"`` warm-starts from the given
    factors (like Solver), ``"random"`` lets the engine initialise (uniform [0, 1) as in the lesson, seeded).
    ``callback(epoch_stats)`` may return False to stop; ``time_limit`` (seconds) stops training when reached.
    ``ratings_origin``: (sheet name, top-left cell of the ratings block), e.g. ``("bias", "H3")``; with it a bad
    rating is reported by its cell (``bias!J5: ...``), without it by its row and column inside the block.
    Raises DataError (bad ratings), ConfigError (bad settings), DivergenceError (lr too large; nothing usable).
    """
    from xlcf.train import TrainConfig, fit_arrays
    from xlcf.train.result import InitialParams

    origin = None if ratings_origin is None else (ratings_origin[0], *split_ref(ratings_origin[1]))
    r = np.array(ratings, dtype=np.float64)
    uf = np.array(user_factors, dtype=np.float64)
    mf = np.array(movie_factors, dtype=np.float64)
    if r.ndim != 2 or uf.ndim != 2 or mf.ndim != 2:
        raise DataError("ratings, user_factors and movie_factors must be 2-D blocks")
    n_users, n_movies = r.shape
    if uf.shape[0] != n_users or mf.shape[1] != n_movies or uf.shape[1] != mf.shape[0]:
        raise DataError(
            f"blocks disagree: ratings {n_users}x{n_movies}, user factors {uf.shape[0]}x{uf.shape[1]}, "
            f"movie factors {mf.shape[0]}x{mf.shape[1]} (expected users x k and k x movies)"
        )
    if (user_bias is None) != (movie_bias is None):
        raise DataError("a bias model needs both user_bias and movie_bias")
    ub = None if user_bias is None else np.array(user_bias, dtype=np.float64).reshape(-1)
    mb = None if movie_bias is None else np.array(movie_bias, dtype=np.float64).reshape(-1)
    if ub is not None and mb is not None and (ub.shape[0] != n_users or mb.shape[0] != n_movies):
        raise DataError(
            f"bias lengths {ub.shape[0]} and {mb.shape[0]} do not match {n_users} users and {n_movies} movies"
        )
    if np.isinf(r).any():
        raise DataError("ratings contain infinite values")
    mask = ~np.isnan(r)
    n_rated = int(mask.sum())
    if n_rated < 2:
        raise DataError(
            f"the ratings block has {n_rated} rated cell{'s' if n_rated != 1 else ''}; at least 2 are needed to fit"
        )
    if scale is not None:
        lo, hi = scale
        bad = mask & ((r < lo) | (r > hi))
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            outside = f"is outside the scale [{lo:g}, {hi:g}]"
            if origin is None:
                raise DataError(f"rating {r[i, j]:g} at row {i + 1}, column {j + 1} of the ratings block {outside}")
            sheet, top, left = origin
            raise DataError(f"rating {r[i, j]:g} {outside}", where=sheet_cell(sheet, top + i, left + j))
    if init not in ("keep", "random"):
        raise ConfigError(f"init must be 'keep' or 'random'; got {init!r}")
    params_finite = all(
        np.isfinite(a).all() for a in [uf, mf, *([ub, mb] if ub is not None and mb is not None else [])]
    )
    if init == "keep" and not params_finite:
        raise DataError("the factor/bias blocks hold blank or non-finite values; fill them or use init='random'")

    model = "bias" if ub is not None else "dot"
    fields = _settings_to_config_fields(settings)
    # A sheet without an optimizer setting keeps the sheet's default (ALS), not the full-ratings one (gibbs).
    base = TrainConfig(
        model=model,
        optimizer=catalog.SHEET_DEFAULTS["optimizer"],
        factors=int(uf.shape[1]),
        y_range=None,
        global_mean=False,
        valid_pct=0.0,
    )
    try:
        config = base.replace(**fields)
    except TypeError as err:  # a wrong type that dataclasses.replace lets through to validation
        raise ConfigError(str(err)) from None
    config = config.replace(model=model, factors=int(uf.shape[1]), y_range=None, global_mean=False, valid_pct=0.0)

    rmse_before = rated_rmse(r, sheet_predictions(uf, mf, ub, mb)) if params_finite else None
    users_idx, movies_idx = np.nonzero(mask)
    init_params = None
    if init == "keep":
        init_params = InitialParams(uf, mf.T.copy(), ub, mb)

    capped_callback, capped = _with_time_cap(callback, time_limit)

    try:
        result = fit_arrays(
            users_idx.astype(np.int64),
            movies_idx.astype(np.int64),
            r[mask].astype(np.float32),
            n_users,
            n_movies,
            config,
            init=init_params,
            progress=progress,
            callback=capped_callback,
        )
    except DivergenceError as err:
        # The engine keeps the last finite parameters; the sheet gets none of them (nothing is written).
        msg = (err.cause or str(err)).strip().rstrip(";")
        if not msg.startswith("training diverged"):
            msg = f"training diverged: {msg}"
        if "smaller lr" not in msg:
            msg += "; try a smaller lr"
        raise DivergenceError(f"{msg}; nothing was written", epoch=err.epoch, result=err.result) from None

    new_uf = np.asarray(result.user_factors, dtype=np.float64)
    new_mf = np.asarray(result.movie_factors, dtype=np.float64).T.copy()
    new_ub = None if result.user_bias is None or ub is None else np.asarray(result.user_bias, np.float64).reshape(-1)
    new_mb = None if result.movie_bias is None or mb is None else np.asarray(result.movie_bias, np.float64).reshape(-1)
    if model == "bias" and (new_ub is None or new_mb is None):
        raise TrainingError("the engine returned no biases for the bias model")
    arrays = [new_uf, new_mf, *([new_ub, new_mb] if new_ub is not None and new_mb is not None else [])]
    if not all(np.isfinite(a).all() for a in arrays):
        lr = getattr(result.config, "lr", None)
        raise DivergenceError(
            f"training diverged (non-finite factors after {len(result.history)} epochs with "
            f"lr={lr}); try a smaller lr; nothing was written",
            epoch=len(result.history),
        )
    predictions = sheet_predictions(new_uf, new_mf, new_ub, new_mb)
    rmse_after = rated_rmse(r, predictions)
    if not math.isfinite(rmse_after) or (rmse_before is not None and rmse_after > 1e3 * max(rmse_before, 1.0)):
        raise DivergenceError(
            f"training diverged (RMSE {rmse_after:g} after, {rmse_before} before); try a smaller "
            f"lr; nothing was written",
            epoch=len(result.history),
        )
    improved = True
    bayesian = result.posterior is not None
    # gibbs averages over the posterior instead of minimising the RMSE: its posterior means are written even when
    # their RMSE on the rated cells is above the sheet's (a least-squares fit's factors sit lower, and overfit).
    if init == "keep" and rmse_before is not None and rmse_after > rmse_before and not bayesian:
        # Like Solver: a warm-started fit never leaves the sheet worse than it found it.
        improved = False
        new_uf, new_mf, new_ub, new_mb = uf, mf, ub, mb
        predictions = sheet_predictions(uf, mf, ub, mb)
        rmse_after = rmse_before
    cfg = result.config
    seconds = float(result.fit_seconds)
    epochs = len(result.history)
    before_txt = "n/a" if rmse_before is None else f"{rmse_before:.4f}"
    status = (
        f"fit {cfg.optimizer_name} {epochs} epochs on {result.device} in {seconds:.2f}s: "
        f"RMSE {before_txt} -> {rmse_after:.4f}"
    )
    completed = [r for r in result.runs if r.get("train_rmse") is not None]
    if len(completed) > 1:
        status += f" (best of {len(completed)} runs)"
    if result.stopped_reason == "callback" and capped["hit"]:
        status += f" (stopped at the {time_limit:g} s time cap)"
    elif result.stopped_reason == "callback":
        status += " (stopped early)"
    if not improved:
        status += " (no improvement: factors kept)"
    std = None
    if bayesian:
        if result.train_rmse_avg is not None:
            status += f" (posterior means; averaged predictions {result.train_rmse_avg:.4f})"
        std = result.predict_std_indices(
            np.repeat(np.arange(n_users), n_movies), np.tile(np.arange(n_movies), n_users)
        ).reshape(n_users, n_movies)
    return SheetFit(
        new_uf,
        new_mf,
        new_ub,
        new_mb,
        predictions,
        rmse_before,
        rmse_after,
        epochs,
        cfg.optimizer_name,
        str(result.device),
        seconds,
        status,
        result,
        model=model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        n_rated=n_rated,
        stopped_reason=result.stopped_reason,
        improved=improved,
        time_capped=capped["hit"],
        std=std,
        rmse_avg=result.train_rmse_avg if bayesian else None,
    )


def already_at_minimum_note(rmse_before: float | None, result) -> str:
    """Why the sheet's factors were kept. When every run (the warm start and the fresh restarts) ended at or above
    the sheet's RMSE, the sheet already sits at the minimum the fit can find, and that is the message; when the
    runs stopped early (time cap, epochs), more epochs may help."""
    runs = list(getattr(result, "runs", None) or [])
    best = min((r.get("train_rmse") for r in runs if r.get("train_rmse") is not None), default=None)
    converged = all(r.get("stopped") in (None, "converged", "plateau") for r in runs) if runs else False
    if rmse_before is not None and best is not None and best >= rmse_before - 1e-9 and (converged or len(runs) > 1):
        return (
            f"the sheet is already at the minimum: no run got below its RMSE {rmse_before:.4f}; its factors were kept"
        )
    return (
        "training did not lower the RMSE of the sheet's factors; they were kept (try more epochs, another "
        "optimizer or --init random)"
    )


def _is_graddesc_sheet(pkg: Package, sheet: str) -> bool:
    names = {n.name.lower() for n in pkg.names() if n.sheet == sheet}
    return {"slope", "lastslope"} <= names


def _is_movielens_sheet(pkg: Package, sheet: str) -> bool:
    if pkg.name_areas(sheet, "ratings") is not None and pkg.name_areas(sheet, "user_factors") is not None:
        return False
    scoped = {n.name.lower() for n in pkg.names() if n.sheet == sheet}
    return "ratings_source" in scoped or (sheet.lower() == "movielens" and "ratings" not in scoped)


# ----------------------------------------------------------------------------------------------------------------
# Fitting a workbook


@dataclass(frozen=True)
class BlockRefs:
    """Explicit ranges of a sheet's blocks (e.g. ``"H2:V16"``); None: found from names or the Solver model."""

    ratings: str | None = None
    user_factors: str | None = None
    movie_factors: str | None = None
    user_bias: str | None = None
    movie_bias: str | None = None
    rmse: str | None = None


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit_workbook` fits a sheet (the ``xlcf fit`` flags)."""

    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields that win over the sheet's cells
    init: str = "keep"  # keep: warm start from the sheet's factors (like Solver); random: the engine initialises
    backup: bool = False
    dry_run: bool = False
    history: bool = False  # also write the fit_log sheet (RMSE per epoch and its chart)
    blocks: BlockRefs = field(default_factory=BlockRefs)
    scale: tuple[float, float] | None = DEFAULT_SCALE
    progress: bool = False
    callback: Callable | None = None
    time_limit: float | None = None  # seconds; training stops there and keeps what it reached
    lock_timeout: float | None = None  # seconds to wait for another xlcf writer of the book (None: the default)
    force: bool = False  # write even into locked cells of a protected sheet


@dataclass
class SheetFitRun:
    """A fit of a sheet read through a :class:`SheetIO`: its inputs, settings and result."""

    data: SheetBlocksData
    settings: SheetSettings
    fitted: SheetFit


def fit_sheet(
    io: SheetIO,
    ratings: Area,
    user_factors: Area,
    movie_factors: Area,
    user_bias: Area | None = None,
    movie_bias: Area | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    init: str = "keep",
    scale: tuple[float, float] | None = DEFAULT_SCALE,
    callback: Callable | None = None,
    time_limit: float | None = None,
    progress: bool = False,
) -> SheetFitRun:
    """Read the blocks and settings cells of a sheet through ``io`` (any front end), validate every cell, and
    fit. The one path of ``xlcf fit``, the Fit button and the server. An engine ConfigError about a setting
    read from the sheet names its cell."""
    data = read_blocks(io, ratings, user_factors, movie_factors, user_bias, movie_bias, init=init, scale=scale)
    chosen = sheet_settings(io, overrides)
    try:
        fitted = fit_sheet_arrays(
            data.ratings,
            data.user_factors,
            data.movie_factors,
            data.user_bias,
            data.movie_bias,
            chosen.settings,
            init=init,
            callback=callback,
            time_limit=time_limit,
            scale=None,
            progress=progress,
        )
    except ConfigError as err:
        where = chosen.refs.get(err.field or "")
        if where is not None and err.where is None:
            err.where = where
        raise
    return SheetFitRun(data, chosen, fitted)


def fit_workbook(
    path: str | os.PathLike, sheet: str, options: FitOptions | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Fit ``sheet`` of the workbook at ``path`` in place and return a JSON-ready summary.

    ``options`` (or its fields as keyword arguments): ``overrides`` are TrainConfig fields (optimizer, epochs, lr,
    weight_decay, seed, device; None = not given) that win over the sheet's settings cells. When an override picks
    a different optimizer than the sheet's, the sheet's lr/epochs/weight decay (tuned for its optimizer) are not
    used. Nothing is written on any error or with ``dry_run``. The workbook's lock is held from the read to the
    save (``lock_timeout``: seconds to wait for another xlcf writer of the book; see
    :func:`xlcf.fileio.book_lock`). Locked cells of a protected sheet are refused before training unless
    ``force``.
    """
    opts = options if options is not None else FitOptions(**kwargs)
    book = Path(path)
    with maybe_book_lock(book, not opts.dry_run, timeout=opts.lock_timeout):
        return _fit_workbook_locked(book, sheet, opts)


def _fit_workbook_locked(book: Path, sheet: str, opts: FitOptions) -> dict[str, Any]:
    """:func:`fit_workbook` once the workbook's lock is held: read, fit, write, save."""
    pkg = Package.open(book)
    pkg.sheet_part(sheet)
    overrides = {k: v for k, v in opts.overrides.items() if v is not None}
    if _is_movielens_sheet(pkg, sheet):
        from xlcf.actions.train_book import train_workbook

        ml_overrides = {("wd" if k == "weight_decay" else k): v for k, v in overrides.items()}
        capped_callback, capped = _with_time_cap(opts.callback, opts.time_limit)
        summary = train_workbook(
            book,
            overrides=ml_overrides,
            progress=opts.progress,
            callback=capped_callback,
            backup=opts.backup,
            dry_run=opts.dry_run,
            force=opts.force,
        )
        return {**summary, "time_capped": capped["hit"], "time_limit": opts.time_limit}
    pkg.allow_protected = opts.force
    if not opts.dry_run:
        pkg.check_writable()  # fail before training, not after
    refs = opts.blocks
    try:
        blocks = find_blocks(
            pkg,
            sheet,
            ratings=refs.ratings,
            user_factors=refs.user_factors,
            movie_factors=refs.movie_factors,
            user_bias=refs.user_bias,
            movie_bias=refs.movie_bias,
            rmse=refs.rmse,
        )
    except WorkbookError as err:
        if refs != BlockRefs():
            raise
        # A layout the fast path does not know: solve the sheet's Solver model through its own formulas.
        from xlcf.actions.fit_solve import fit_through_solver

        solved = fit_through_solver(
            book,
            sheet,
            reason=err.message,
            overrides=overrides,
            backup=opts.backup,
            dry_run=opts.dry_run,
            callback=opts.callback,
            time_limit=opts.time_limit,
            force=opts.force,
        )
        if solved is None:
            if _is_graddesc_sheet(pkg, sheet):
                raise WorkbookError(
                    f"'{sheet}' is a gradient-descent sheet (it has slope/lastslope cells), not a model to fit: "
                    f"step it with `xlcf step {book.name} --sheet {sheet}` (or its One step button)",
                    where=f"{sheet}!A1",
                ) from None
            raise
        return solved
    owned = [a for a in (blocks.user_factors, blocks.movie_factors, blocks.user_bias, blocks.movie_bias) if a]
    pkg.check_unprotected(blocks.sheet, [ref for a in owned for ref in _block_cells(a, np.zeros(a.shape))])
    run = fit_sheet(
        ZipSheetIO(pkg, sheet),
        blocks.ratings,
        blocks.user_factors,
        blocks.movie_factors,
        blocks.user_bias,
        blocks.movie_bias,
        overrides=overrides,
        init=opts.init,
        scale=opts.scale,
        callback=opts.callback,
        time_limit=opts.time_limit,
        progress=opts.progress,
    )
    ratings, fitted = run.data.ratings, run.fitted
    notes = list(blocks.notes) + run.settings.notes
    init, dry_run, backup = opts.init, opts.dry_run, opts.backup

    # --- writes (values of owned cells; cached values of understood formulas)
    values: dict[str, float] = {}
    s = blocks.sheet
    values.update(_block_cells(blocks.user_factors, fitted.user_factors))
    values.update(_block_cells(blocks.movie_factors, fitted.movie_factors))
    if blocks.user_bias is not None and blocks.movie_bias is not None:  # a row or a column: shaped as its area
        assert fitted.user_bias is not None and fitted.movie_bias is not None
        values.update(_block_cells(blocks.user_bias, fitted.user_bias))
        values.update(_block_cells(blocks.movie_bias, fitted.movie_bias))
    cached: dict[str, CellValue] = {}
    understood = understand_predictions(pkg, blocks)
    for ref, (i, j, blank_value) in understood.items():
        if blank_value is not None and np.isnan(ratings[i, j]):
            cached[ref] = blank_value
        else:
            cached[ref] = float(fitted.predictions[i, j])
    if blocks.predictions is not None:
        n_pred = blocks.n_users * blocks.n_movies
        if len(understood) < n_pred:
            notes.append(
                f"{n_pred - len(understood)} of {n_pred} prediction cells have formulas xlcf does not "
                f"understand; their cached values were left (Excel/LibreOffice recalculate them on open)"
            )
    rmse_cached = rmse_formula_understood(pkg, blocks)
    if rmse_cached and blocks.rmse is not None:
        cached[blocks.rmse.ref] = fitted.rmse_after
    # The evaluator, when it can compute the sheet, gives every downstream formula cell (any sheet) and the value
    # of the sheet's own RMSE cell, which is what fit reports.
    cached_by_sheet: dict[str, dict[str, CellValue]] = {s: cached}
    rmse_before, rmse_after = fitted.rmse_before, fitted.rmse_after
    if fitted.improved and blocks.rmse is not None:
        from xlcf.actions.fit_solve import evaluated_cached_values

        evaluated = evaluated_cached_values(pkg, s, owned, values, blocks.rmse)
        if evaluated is not None:
            cached_by_sheet, sheet_before, sheet_after = evaluated
            cached = {f"{k}!{ref}": v for k, cells in cached_by_sheet.items() for ref, v in cells.items()}
            notes = [n for n in notes if "not understand" not in n]
            rmse_before = sheet_before if sheet_before is not None else rmse_before
            rmse_after = sheet_after if sheet_after is not None else rmse_after
    status_ref = None
    status_areas = pkg.name_areas(s, "status")
    if (
        status_areas
        and len(status_areas) == 1
        and status_areas[0].sheet == s
        and status_areas[0].shape == (1, 1)
        and not pkg.read_cell(s, status_areas[0].ref).formula
    ):
        status_ref = status_areas[0].ref

    if not fitted.improved:
        notes.append(already_at_minimum_note(fitted.rmse_before, fitted.result))
        values, cached, cached_by_sheet = {}, {}, {}
    pkg.write_values(s, values)
    for target, cells in cached_by_sheet.items():
        if cells:
            pkg.set_cached_values(target, cells)
    if status_ref:
        pkg.write_values(s, {status_ref: fitted.status_text})
    std_block = None
    if fitted.improved:  # the ± block follows the factors: filled by a Bayesian fit, blanked by any other
        std_block, std_notes = plan_std_block(
            ZipSheetIO(pkg, s),
            blocks.predictions,
            blocks.rmse,
            fitted.std,
            fitted.optimizer,
            fitted.epochs,
            [blocks.ratings, *owned],
        )
        notes += std_notes
        locked = [] if std_block is None or pkg.allow_protected else pkg.locked_cells(s, std_block.values)
        if locked:
            notes.append(f"the ± std block's cells are locked ({s}!{locked[0]}, ...); it was not written")
            std_block = None
        if std_block is not None:
            apply_std_block(pkg, s, std_block)
    history_rows = 0
    if opts.history:
        history_rows = write_fit_log(pkg, sheet, fitted)

    saved_to = backup_path = None
    if not dry_run:
        saved_to = str(pkg.save(backup=backup))
        backup_path = None if pkg.backup_path is None else str(pkg.backup_path)
    return {
        "path": str(book),
        "sheet": sheet,
        "source": blocks.source,
        "blocks": blocks.describe(),
        "model": fitted.model,
        "optimizer": fitted.optimizer,
        "lr": fitted.lr,
        "weight_decay": fitted.weight_decay,
        "epochs": fitted.epochs,
        "seed": fitted.seed,
        "device": fitted.device,
        "init": init,
        "n_users": blocks.n_users,
        "n_movies": blocks.n_movies,
        "factors": blocks.factors,
        "n_rated": fitted.n_rated,
        "rmse_before": rmse_before,
        "rmse_after": rmse_after,
        "rmse_rated": fitted.rmse_after,
        "rmse_avg": fitted.rmse_avg,
        "std_block": None if std_block is None else std_block.describe(s),
        "fit_seconds": fitted.fit_seconds,
        "cells_written": len(values) + (1 if status_ref else 0) + (0 if std_block is None else len(std_block.values)),
        "cached_values_updated": len(cached),
        "rmse_cell": f"{s}!{blocks.rmse.ref}" if blocks.rmse is not None else None,
        "status": fitted.status_text,
        "stopped_reason": fitted.stopped_reason,
        "improved": fitted.improved,
        "time_capped": fitted.time_capped,
        "time_limit": opts.time_limit,
        "runs": fitted.result.runs if fitted.result is not None else [],
        "best_run": fitted.result.best_run if fitted.result is not None else 0,
        "history_rows": history_rows,
        "settings_from_sheet": run.settings.from_sheet,
        "dry_run": dry_run,
        "saved": saved_to,
        "backup": backup_path,
        "notes": notes,
    }


def _with_time_cap(callback: Callable | None, time_limit: float | None) -> tuple[Callable | None, dict]:
    """``callback`` that also stops training once ``time_limit`` seconds have passed; the dict's ``hit`` says
    whether the cap is what stopped it."""
    capped = {"hit": False}
    if time_limit is None:
        return callback, capped
    started = time.perf_counter()

    def capped_callback(stats):
        if callback is not None and callback(stats) is False:
            return False
        if time.perf_counter() - started > time_limit:
            capped["hit"] = True
            return False
        return None

    return capped_callback, capped


def _block_cells(area: Area, block: np.ndarray) -> dict[str, float]:
    """``{"B26": value, ...}`` for a block of numbers laid out over ``area`` (a vector takes the area's shape)."""
    block = np.asarray(block, dtype=np.float64).reshape(area.shape)
    return {cell_ref(area.top + i, area.left + j): float(v) for (i, j), v in np.ndenumerate(block)}
