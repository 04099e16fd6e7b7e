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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlcf.actions.blocks import find_blocks, rmse_formula_understood, understand_predictions
from xlcf.errors import ConfigError, DataError, DivergenceError, TrainingError, WorkbookError
from xlcf.ooxml.package import ErrorValue, Package
from xlcf.ooxml.refs import Area, cell_ref, sheet_cell, split_ref

DEFAULT_SCALE = (0.5, 5.0)
FIT_LOG_SHEET = "fit_log"
# Settings a sheet may hold (sheet-scoped names) and the TrainConfig field each feeds.
SETTING_NAMES = {
    "optimizer": "optimizer",
    "lr": "lr",
    "epochs": "epochs",
    "seed": "seed",
    "device": "device",
    "wd": "weight_decay",
    "weight_decay": "weight_decay",
}
# Settings tied to one optimizer: dropped when the CLI picks a different optimizer than the sheet's.
OPTIMIZER_TIED = ("lr", "epochs", "weight_decay")


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
    out = {}
    for key, value in dict(settings).items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        out[SETTING_NAMES.get(key, key)] = value
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
    if ub is not None and (ub.shape[0] != n_users or mb.shape[0] != n_movies):
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
            raise DataError(f"{sheet_cell(sheet, top + i, left + j)}: rating {r[i, j]:g} {outside}")
    if init not in ("keep", "random"):
        raise ConfigError(f"init must be 'keep' or 'random'; got {init!r}")
    params_finite = all(np.isfinite(a).all() for a in (uf, mf) + ((ub, mb) if ub is not None else ()))
    if init == "keep" and not params_finite:
        raise DataError("the factor/bias blocks hold blank or non-finite values; fill them or use init='random'")

    model = "bias" if ub is not None else "dot"
    fields = _settings_to_config_fields(settings)
    base = TrainConfig(model=model, factors=int(uf.shape[1]), y_range=None, global_mean=False, valid_pct=0.0)
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

    started = time.perf_counter()
    user_cb = callback

    def _callback(stats):
        keep_going = True
        if user_cb is not None and user_cb(stats) is False:
            keep_going = False
        if time_limit is not None and time.perf_counter() - started > time_limit:
            keep_going = False
        return keep_going

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
            callback=_callback if (callback is not None or time_limit is not None) else None,
        )
    except DivergenceError as err:
        # The engine keeps the last finite parameters; the sheet gets none of them (nothing is written).
        msg = re.sub(r";?\s*the parameters of epoch \d+ were kept", "", str(err)).strip().rstrip(";")
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
    arrays = (new_uf, new_mf) + ((new_ub, new_mb) if new_ub is not None else ())
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
    if init == "keep" and rmse_before is not None and rmse_after > rmse_before:
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
    if result.stopped_reason == "callback":
        status += " (stopped early)"
    if not improved:
        status += " (no improvement: factors kept)"
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
    )


# ----------------------------------------------------------------------------------------------------------------
# Reading a sheet


def read_ratings(pkg: Package, sheet: str, area: Area, scale=DEFAULT_SCALE) -> np.ndarray:
    """The ratings block as floats with NaN for blank cells; text, booleans and errors are refused by cell."""
    out = np.full(area.shape, np.nan)
    for i, row in enumerate(pkg.read_range(sheet, area)):
        for j, cell in enumerate(row):
            v = cell.value
            where = sheet_cell(sheet, area.top + i, area.left + j)
            if v is None or (isinstance(v, str) and v == ""):
                continue
            if isinstance(v, ErrorValue):
                raise DataError(
                    f"{where}: the ratings block holds the error value {v.code}; expected a rating or a blank cell"
                )
            if isinstance(v, bool):
                raise DataError(
                    f"{where}: the ratings block holds the boolean {str(v).upper()}; expected a rating or a blank cell"
                )
            if isinstance(v, str):
                raise DataError(f"{where}: the ratings block holds the text {v!r}; expected a rating or a blank cell")
            if not math.isfinite(v):
                raise DataError(f"{where}: rating {v} is not a finite number")
            if scale is not None and not (scale[0] <= v <= scale[1]):
                raise DataError(f"{where}: rating {v:g} is outside the scale [{scale[0]:g}, {scale[1]:g}]")
            out[i, j] = v
    n = int((~np.isnan(out)).sum())
    if n < 2:
        raise DataError(
            f"{sheet}!{area.ref}: the ratings block has {n} rated cell{'s' if n != 1 else ''}; at least "
            f"2 are needed to fit"
        )
    return out


def read_params(pkg: Package, sheet: str, area: Area, label: str, *, required: bool) -> np.ndarray:
    """A factor/bias block as floats (NaN where blank when not required). Formula cells are refused: the fit
    would overwrite them."""
    out = np.full(area.shape, np.nan)
    cells = pkg.read_range(sheet, area)
    for i, row in enumerate(cells):  # formulas first: the more important refusal
        for j, cell in enumerate(row):
            if cell.formula:
                raise WorkbookError(
                    f"{sheet_cell(sheet, area.top + i, area.left + j)} holds a formula ({cell.formula}) "
                    f"inside the {label} block the fit writes; xlcf will not overwrite a formula"
                )
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            where = sheet_cell(sheet, area.top + i, area.left + j)
            v = cell.value
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[i, j] = v
            elif required:
                shown = "blank" if v is None else repr(v.code if isinstance(v, ErrorValue) else v)
                raise DataError(
                    f"{where}: the {label} block holds {shown}; expected a number (or fit with --init random)"
                )
    return out


def _setting_number(value, where: str, name: str, *, integer: bool, lo: float, lo_open: bool):
    if isinstance(value, bool) or isinstance(value, ErrorValue):
        raise ConfigError(
            f"{where}: {name} must be {'a whole number' if integer else 'a number'}; got "
            f"{str(value).upper() if isinstance(value, bool) else value}"
        )
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(
                f"{where}: {name} must be {'a whole number' if integer else 'a number'}; got text {value!r}"
            ) from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite number; got {value}")
    if integer and value != int(value):
        raise ConfigError(f"{where}: {name} must be a whole number; got {value:g}")
    if (value <= lo) if lo_open else (value < lo):
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise ConfigError(f"{where}: {name} must be {bound}; got {value:g}")
    return int(value) if integer else float(value)


def read_settings(pkg: Package, sheet: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from the sheet's named cells (optimizer, lr, epochs, seed, device, wd). Blank -> not set.
    Returns (settings keyed by TrainConfig field, field -> sheet!cell)."""
    from xlcf.train import OPTIMIZERS

    settings, refs = {}, {}
    for name, key in SETTING_NAMES.items():
        areas = pkg.name_areas(sheet, name)
        if not areas or len(areas) != 1 or areas[0].sheet != sheet or areas[0].shape != (1, 1):
            continue
        area = areas[0]
        where = f"{sheet}!{area.ref}"
        value = pkg.read_cell(sheet, area.ref).value
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key == "optimizer":
            if not isinstance(value, str):
                raise ConfigError(f"{where}: optimizer must be a name ({', '.join(sorted(OPTIMIZERS))}); got {value}")
            value = value.strip().lower()
            if value not in OPTIMIZERS:
                raise ConfigError(
                    f"{where}: unknown optimizer {value!r}; valid optimizers: {', '.join(sorted(OPTIMIZERS))}"
                )
        elif key == "device":
            if not isinstance(value, str):
                raise ConfigError(f"{where}: device must be a name such as auto, cpu, cuda, cuda:0 or mps; got {value}")
            value = value.strip().lower()
        elif key == "lr":
            value = _setting_number(value, where, "lr", integer=False, lo=0.0, lo_open=True)
        elif key == "weight_decay":
            value = _setting_number(value, where, name, integer=False, lo=0.0, lo_open=False)
        elif key == "epochs":
            value = _setting_number(value, where, "epochs", integer=True, lo=1, lo_open=False)
        elif key == "seed":
            value = _setting_number(value, where, "seed", integer=True, lo=0, lo_open=False)
        settings[key] = value
        refs[key] = where
    return settings, refs


def _is_movielens_sheet(pkg: Package, sheet: str) -> bool:
    if pkg.name_areas(sheet, "ratings") is not None and pkg.name_areas(sheet, "user_factors") is not None:
        return False
    scoped = {n.name.lower() for n in pkg.names() if n.sheet == sheet}
    return "ratings_source" in scoped or (sheet.lower() == "movielens" and "ratings" not in scoped)


# ----------------------------------------------------------------------------------------------------------------
# Fitting a workbook


def fit_workbook(
    path,
    sheet: str,
    *,
    overrides: dict[str, Any] | None = None,
    init: str = "keep",
    backup: bool = False,
    dry_run: bool = False,
    history: bool = False,
    ratings_ref: str | None = None,
    user_factors_ref: str | None = None,
    movie_factors_ref: str | None = None,
    user_bias_ref: str | None = None,
    movie_bias_ref: str | None = None,
    rmse_ref: str | None = None,
    scale: tuple[float, float] | None = DEFAULT_SCALE,
    progress: bool = False,
    callback: Callable | None = None,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Fit ``sheet`` of the workbook at ``path`` in place and return a JSON-ready summary.

    ``overrides``: TrainConfig fields (optimizer, epochs, lr, weight_decay, seed, device; None = not given) that win
    over the sheet's settings cells. When an override picks a different optimizer than the sheet's, the sheet's
    lr/epochs/weight decay (tuned for its optimizer) are not used. Nothing is written on any error or with
    ``dry_run``.
    """
    book = Path(path)
    pkg = Package.open(book)
    pkg.sheet_part(sheet)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if _is_movielens_sheet(pkg, sheet):
        from xlcf.actions.train_book import train_workbook

        ml_overrides = {("wd" if k == "weight_decay" else k): v for k, v in overrides.items()}
        return train_workbook(
            book, overrides=ml_overrides, progress=progress, callback=callback, backup=backup, dry_run=dry_run
        )
    if not dry_run:
        pkg.check_writable()  # fail before training, not after
    blocks = find_blocks(
        pkg,
        sheet,
        ratings=ratings_ref,
        user_factors=user_factors_ref,
        movie_factors=movie_factors_ref,
        user_bias=user_bias_ref,
        movie_bias=movie_bias_ref,
        rmse=rmse_ref,
    )
    ratings = read_ratings(pkg, sheet, blocks.ratings, scale)
    required = init == "keep"
    uf = read_params(pkg, sheet, blocks.user_factors, "user factors", required=required)
    mf = read_params(pkg, sheet, blocks.movie_factors, "movie factors", required=required)
    ub = mb = None
    if blocks.user_bias is not None:
        ub = read_params(pkg, sheet, blocks.user_bias, "user bias", required=required).reshape(-1)
        mb = read_params(pkg, sheet, blocks.movie_bias, "movie bias", required=required).reshape(-1)
    if init == "random":  # values are replaced by the engine's initialisation; blanks are fine
        uf, mf = np.nan_to_num(uf), np.nan_to_num(mf)
        ub = None if ub is None else np.nan_to_num(ub)
        mb = None if mb is None else np.nan_to_num(mb)

    sheet_settings, setting_refs = read_settings(pkg, sheet)
    notes = list(blocks.notes)
    settings = dict(sheet_settings)
    new_opt = overrides.get("optimizer")
    if new_opt is not None and str(new_opt).lower() != str(sheet_settings.get("optimizer", "")).lower():
        dropped = [k for k in OPTIMIZER_TIED if k in settings and k not in overrides]
        for k in dropped:
            del settings[k]
        if dropped:
            notes.append(
                f"sheet's {', '.join(dropped)} ignored: they are for optimizer "
                f"{sheet_settings.get('optimizer', 'adam')}, not {new_opt}"
            )
    settings.update(overrides)
    try:
        fitted = fit_sheet_arrays(
            ratings,
            uf,
            mf,
            ub,
            mb,
            settings,
            init=init,
            callback=callback,
            time_limit=time_limit,
            scale=None,
            progress=progress,
        )
    except ConfigError as err:
        # Name the cell when the bad value came from the sheet.
        msg = str(err)
        for key, where in setting_refs.items():
            if key not in overrides and re.search(rf"\b{key}\b", msg):
                raise type(err)(f"{where}: {msg}") from None
        raise

    # --- writes (values of owned cells; cached values of understood formulas)
    values: dict[str, float | str] = {}
    s = blocks.sheet
    values.update(_block_cells(blocks.user_factors, fitted.user_factors))
    values.update(_block_cells(blocks.movie_factors, fitted.movie_factors))
    if blocks.user_bias is not None:  # a bias block is a row or a column: shaped as its area
        values.update(_block_cells(blocks.user_bias, fitted.user_bias))
        values.update(_block_cells(blocks.movie_bias, fitted.movie_bias))
    cached: dict[str, float | str] = {}
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
    if rmse_cached:
        cached[blocks.rmse.ref] = fitted.rmse_after
    status_ref = None
    status_areas = pkg.name_areas(s, "status")
    if status_areas and len(status_areas) == 1 and status_areas[0].sheet == s and status_areas[0].shape == (1, 1):
        if not pkg.read_cell(s, status_areas[0].ref).formula:
            status_ref = status_areas[0].ref

    if not fitted.improved:
        notes.append(
            "training did not lower the RMSE of the sheet's factors; they were kept (try more epochs, "
            "another optimizer or --init random)"
        )
        values, cached = {}, {}
    pkg.write_values(s, values)
    if cached:
        pkg.set_cached_values(s, cached)
    if status_ref:
        pkg.write_values(s, {status_ref: fitted.status_text})
    history_rows = 0
    if history:
        history_rows = _write_fit_log(pkg, sheet, fitted)

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
        "rmse_before": fitted.rmse_before,
        "rmse_after": fitted.rmse_after,
        "fit_seconds": fitted.fit_seconds,
        "cells_written": len(values) + (1 if status_ref else 0),
        "cached_values_updated": len(cached),
        "rmse_cell": f"{s}!{blocks.rmse.ref}" if blocks.rmse is not None else None,
        "status": fitted.status_text,
        "stopped_reason": fitted.stopped_reason,
        "improved": fitted.improved,
        "runs": fitted.result.runs if fitted.result is not None else [],
        "best_run": fitted.result.best_run if fitted.result is not None else 0,
        "history_rows": history_rows,
        "settings_from_sheet": {k: setting_refs[k] for k in sheet_settings if k not in overrides and k in settings},
        "dry_run": dry_run,
        "saved": saved_to,
        "backup": backup_path,
        "notes": notes,
    }


def _block_cells(area: Area, block: np.ndarray) -> dict[str, float]:
    """``{"B26": value, ...}`` for a block of numbers laid out over ``area`` (a vector takes the area's shape)."""
    block = np.asarray(block, dtype=np.float64).reshape(area.shape)
    return {cell_ref(area.top + i, area.left + j): float(v) for (i, j), v in np.ndenumerate(block)}


def _write_fit_log(pkg: Package, sheet: str, fitted: SheetFit) -> int:
    """A ``fit_log`` sheet: RMSE (and loss, seconds) per epoch with a native line chart; replaced on every fit."""
    from xlcf.ooxml.package import line_chart_xml

    hist = fitted.result.history if fitted.result is not None else []
    rows: list[list] = [["epoch", "rmse", "loss", "seconds"]]
    for st in hist:
        loss = st.train_loss if st.train_loss is not None and math.isfinite(st.train_loss) else None
        rmse = st.train_rmse if st.train_rmse is not None and math.isfinite(st.train_rmse) else None
        rows.append([int(st.epoch), rmse, loss, float(st.seconds)])
    summary = [
        ["sheet", sheet],
        ["optimizer", fitted.optimizer],
        ["device", fitted.device],
        ["rmse before", fitted.rmse_before],
        ["rmse after", fitted.rmse_after],
    ]
    if pkg.has_sheet(FIT_LOG_SHEET):
        if pkg.read_cell(FIT_LOG_SHEET, "A1").value != "epoch" or pkg.read_cell(FIT_LOG_SHEET, "F1").value != "sheet":
            raise WorkbookError(
                f"the workbook already has a sheet '{FIT_LOG_SHEET}' that xlcf did not write; rename "
                f"it or fit without --history"
            )
        pkg.clear_sheet(FIT_LOG_SHEET)
        charts = pkg.chart_parts(FIT_LOG_SHEET)
    else:
        pkg.add_sheet(FIT_LOG_SHEET)
        charts = []
    pkg.write_block(FIT_LOG_SHEET, "A1", rows)
    pkg.write_block(FIT_LOG_SHEET, "F1", summary)
    chart = line_chart_xml(
        FIT_LOG_SHEET, [r[:2] for r in rows], title=f"RMSE per epoch ({sheet})", x_title="epoch", y_title="RMSE"
    )
    pkg.add_chart(FIT_LOG_SHEET, chart, anchor=(5, 6, 14, 24), replace=charts[0] if charts else None)
    return len(rows) - 1
