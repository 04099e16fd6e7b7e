"""What a fit reads from a sheet, through any :class:`~xlcf.actions.sheetio.SheetIO`: the ratings block, the factor
and bias blocks, and the settings cells (one schema for ``xlcf fit``, the Fit button and the server). Every bad
cell is reported by its address (``sheet!cell``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlcf import catalog
from xlcf.actions.sheetio import SheetIO
from xlcf.errors import ConfigError, DataError, WorkbookError, quote
from xlcf.ooxml.refs import Area, sheet_cell
from xlcf.ooxml.values import ErrorValue

DEFAULT_SCALE = (0.5, 5.0)
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
BLOCK_NAMES = ("ratings", "user_factors", "movie_factors", "user_bias", "movie_bias")


def read_ratings(io: SheetIO, area: Area, scale: tuple[float, float] | None = DEFAULT_SCALE) -> np.ndarray:
    """The ratings block as floats with NaN for blank cells; text, booleans and errors are refused by cell."""
    sheet = area.sheet or io.sheet
    out = np.full(area.shape, np.nan)
    for i, row in enumerate(io.read_values(area)):
        for j, v in enumerate(row):
            where = sheet_cell(sheet, area.top + i, area.left + j)
            if v is None or (isinstance(v, str) and v == ""):
                continue
            if isinstance(v, ErrorValue):
                raise DataError(
                    f"the ratings block holds the error value {v.code}; expected a rating or a blank cell",
                    where=where,
                    field="ratings",
                )
            if isinstance(v, bool):
                raise DataError(
                    f"the ratings block holds the boolean {str(v).upper()}; expected a rating or a blank cell",
                    where=where,
                    field="ratings",
                )
            if isinstance(v, str):
                raise DataError(
                    f"the ratings block holds the text {quote(v)}; expected a rating or a blank cell",
                    where=where,
                    field="ratings",
                )
            if not math.isfinite(v):
                raise DataError(f"rating {v} is not a finite number", where=where, field="ratings")
            if scale is not None and not (scale[0] <= v <= scale[1]):
                raise DataError(
                    f"rating {v:g} is outside the scale [{scale[0]:g}, {scale[1]:g}]", where=where, field="ratings"
                )
            out[i, j] = v
    n = int((~np.isnan(out)).sum())
    if n < 2:
        raise DataError(
            f"the ratings block has {n} rated cell{'s' if n != 1 else ''}; at least 2 are needed to fit",
            where=f"{sheet}!{area.ref}",
            field="ratings",
        )
    return out


def read_params(io: SheetIO, area: Area, label: str, *, required: bool) -> np.ndarray:
    """A factor/bias block as floats (NaN where blank when not required). Formula cells are refused: the fit
    would overwrite them."""
    sheet = area.sheet or io.sheet
    out = np.full(area.shape, np.nan)
    for i, row in enumerate(io.read_formulas(area)):  # formulas first: the more important refusal
        for j, formula in enumerate(row):
            if formula:
                raise WorkbookError(
                    f"{sheet_cell(sheet, area.top + i, area.left + j)} holds a formula ({formula}) "
                    f"inside the {label} block the fit writes; xlcf will not overwrite a formula"
                )
    for i, values in enumerate(io.read_values(area)):
        for j, v in enumerate(values):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[i, j] = v
            elif required:
                shown = "blank" if v is None else quote(v.code if isinstance(v, ErrorValue) else v)
                raise DataError(
                    f"the {label} block holds {shown}; expected a number (or fit with --init random)",
                    where=sheet_cell(sheet, area.top + i, area.left + j),
                    field=label.replace(" ", "_"),
                )
    return out


def _setting_number(value, where: str, name: str, *, integer: bool, lo: float, lo_open: bool):
    kind = "a whole number" if integer else "a number"
    if isinstance(value, (bool, ErrorValue)):
        raise ConfigError(
            f"{name} must be {kind}; got {str(value).upper() if isinstance(value, bool) else value}",
            where=where,
            field=name,
        )
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be {kind}; got text {quote(value)}", where=where, field=name) from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value}", where=where, field=name)
    if integer and value != int(value):
        raise ConfigError(f"{name} must be a whole number; got {value:g}", where=where, field=name)
    if (value <= lo) if lo_open else (value < lo):
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise ConfigError(f"{name} must be {bound}; got {value:g}", where=where, field=name)
    return int(value) if integer else float(value)


def read_settings(io: SheetIO) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from the sheet's named cells (optimizer, lr, epochs, seed, device, wd). Blank -> not set.
    Returns (settings keyed by TrainConfig field, field -> sheet!cell)."""
    sheet = io.sheet
    settings: dict[str, Any] = {}
    refs: dict[str, str] = {}
    optimizers = ", ".join(sorted(catalog.optimizer_names()))
    for name, key in SETTING_NAMES.items():
        area = io.name_area(name)
        if area is None or (area.sheet or sheet) != sheet or area.shape != (1, 1):
            continue
        where = f"{sheet}!{area.ref}"
        value = io.read_values(area)[0][0]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key == "optimizer":
            if not isinstance(value, str):
                raise ConfigError(
                    f"optimizer must be a name ({optimizers}); got {quote(value)}", where=where, field=key
                )
            value = value.strip().lower()
            if value not in catalog.OPTIMIZERS:
                raise ConfigError(
                    f"unknown optimizer {quote(value)}; valid optimizers: {optimizers}", where=where, field=key
                )
        elif key == "device":
            if not isinstance(value, str):
                raise ConfigError(
                    f"device must be a name such as auto, cpu, cuda, cuda:0 or mps; got {quote(value)}",
                    where=where,
                    field=key,
                )
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


@dataclass
class SheetSettings:
    """The settings a fit runs with: the sheet's cells overlaid by the overrides (CLI flags)."""

    settings: dict[str, Any]
    refs: dict[str, str]  # TrainConfig field -> sheet!cell, for settings read from the sheet
    from_sheet: dict[str, str] = field(default_factory=dict)  # those actually used
    notes: list[str] = field(default_factory=list)


def sheet_settings(io: SheetIO, overrides: dict[str, Any] | None = None) -> SheetSettings:
    """Read the settings cells and apply ``overrides`` (None values ignored). When an override picks another
    optimizer than the sheet's, the sheet's lr/epochs/weight decay (tuned for its optimizer) are not used."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_sheet, refs = read_settings(io)
    settings = dict(from_sheet)
    notes = []
    new_opt = overrides.get("optimizer")
    if new_opt is not None and str(new_opt).lower() != str(from_sheet.get("optimizer", "")).lower():
        dropped = [k for k in OPTIMIZER_TIED if k in settings and k not in overrides]
        for k in dropped:
            del settings[k]
        if dropped:
            notes.append(
                f"sheet's {', '.join(dropped)} ignored: they are for optimizer "
                f"{from_sheet.get('optimizer', catalog.SHEET_DEFAULTS['optimizer'])}, not {new_opt}"
            )
    settings.update(overrides)
    used = {k: refs[k] for k in from_sheet if k not in overrides and k in settings}
    return SheetSettings(settings, {k: v for k, v in refs.items() if k not in overrides}, used, notes)


@dataclass
class SheetBlocksData:
    """The numbers of a fitting sheet's blocks (movie factors k x movies, as on the sheet)."""

    ratings: np.ndarray
    user_factors: np.ndarray
    movie_factors: np.ndarray
    user_bias: np.ndarray | None
    movie_bias: np.ndarray | None


def read_blocks(
    io: SheetIO,
    ratings: Area,
    user_factors: Area,
    movie_factors: Area,
    user_bias: Area | None = None,
    movie_bias: Area | None = None,
    *,
    init: str = "keep",
    scale: tuple[float, float] | None = DEFAULT_SCALE,
) -> SheetBlocksData:
    """Read and validate every block. ``init="keep"`` (warm start) needs every factor cell to be a number;
    ``"random"`` accepts blanks (the engine initialises)."""
    r = read_ratings(io, ratings, scale)
    required = init == "keep"
    uf = read_params(io, user_factors, "user factors", required=required)
    mf = read_params(io, movie_factors, "movie factors", required=required)
    ub = mb = None
    if user_bias is not None and movie_bias is not None:
        ub = read_params(io, user_bias, "user bias", required=required).reshape(-1)
        mb = read_params(io, movie_bias, "movie bias", required=required).reshape(-1)
    if init == "random":  # values are replaced by the engine's initialisation; blanks are fine
        uf, mf = np.nan_to_num(uf), np.nan_to_num(mf)
        ub = None if ub is None else np.nan_to_num(ub)
        mb = None if mb is None else np.nan_to_num(mb)
    return SheetBlocksData(r, uf, mf, ub, mb)
