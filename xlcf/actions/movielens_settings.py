"""The movielens settings schema: read the settings cells of a book (names first, fixed cells as fallback),
validate them (+ CLI overrides) into one dict, and turn that into a :class:`~xlcf.train.TrainConfig`. Every front
end (``xlcf fit``, ``xlcf train``, the Train button, the server) goes through :func:`parse_settings`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from xlcf import catalog
from xlcf.errors import ConfigError, DataError, WorkbookError, XlcfError, quote
from xlcf.lessons.movielens.layout import MAX_EPOCHS, MAX_FACTORS, SETTING_REF, SETTINGS, SHEET
from xlcf.ooxml.refs import cell_ref, parse_range

# ------------------------------------------------------------------------------------------------------------
# Settings


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_settings(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, refs: dict[str, str] | None = None
) -> dict[str, Any]:
    """Validate the settings cells (+ overrides, which win) into a clean dict. Messages name the cell."""
    refs = refs or {name: f"{SHEET}!{ref}" for name, ref in SETTING_REF.items()}
    aliases = {"ratings": "ratings_source", "weight_decay": "wd", "valid": "valid_pct", "user": "user_id"}
    values = {s.name: raw.get(s.name) for s in SETTINGS}
    origin = dict(refs)
    for key, value in (overrides or {}).items():
        key = aliases.get(key, key)
        # Sheet-fit options with no meaning here (restarts: multistart is for full-batch sheet fits; training
        # on MovieLens is a single mini-batch run).
        if key in ("init", "time_limit", "restarts") or value is None:
            continue
        if key not in values:
            raise ConfigError(f"unknown movielens setting '{key}' (settings: {', '.join(values)})")
        if value is not None:
            values[key] = value
            origin[key] = f"--{key.replace('_', '-')}"

    def where(name):
        return origin.get(name, name)

    def shown(v):  # 0.0 from a cell reads as 0 in a message; text cut to a quotable length
        if isinstance(v, str):
            return quote(v)[1:-1]
        return int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) else v

    def number(name, *, integer=False, blank_ok=False, lo=None, hi=None, lo_open=False, text=None):
        value = values[name]
        if _is_blank(value):
            if blank_ok:
                return None
            raise ConfigError(f"{text or name} is empty; expected a number", where=where(name))
        if isinstance(value, bool):
            raise ConfigError(f"{text or name} is {shown(value)}; expected a number", where=where(name))
        try:
            number_value = float(str(value).strip().rstrip("%")) / (100 if str(value).strip().endswith("%") else 1)
        except ValueError:
            raise ConfigError(f"{text or name} is '{shown(value)}'; expected a number", where=where(name)) from None
        if not math.isfinite(number_value):
            raise ConfigError(f"{text or name} is {shown(value)}; expected a finite number", where=where(name))
        if integer:
            if number_value != int(number_value):
                raise ConfigError(f"{text or name} is {shown(value)}; expected a whole number", where=where(name))
            number_value = int(number_value)
        if lo is not None and (number_value <= lo if lo_open else number_value < lo):
            raise ConfigError(
                f"{where(name)}: {text or name} is {shown(value)}; expected "
                f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
            )
        if hi is not None and number_value > hi:
            raise ConfigError(f"{text or name} is {shown(value)}; expected <= {hi}", where=where(name))
        return number_value

    def text(name, default):
        value = values[name]
        return default if _is_blank(value) else str(value).strip()

    out: dict[str, Any] = {}
    out["ratings_source"] = text("ratings_source", "")
    if not out["ratings_source"]:
        raise ConfigError(
            "ratings source is empty; expected a ratings.csv path, a GroupLens zip or ml-latest-small",
            where=where("ratings_source"),
        )
    out["model"] = text("model", catalog.FULL_RATINGS_DEFAULTS["model"]).lower()
    if out["model"] not in catalog.MODELS:
        raise ConfigError(
            f"model '{out['model']}' is not one of {', '.join(catalog.MODELS)}", where=where("model"), field="model"
        )
    out["optimizer"] = text("optimizer", catalog.FULL_RATINGS_DEFAULTS["optimizer"]).lower()
    out["epochs"] = number("epochs", integer=True, blank_ok=True, lo=1, hi=MAX_EPOCHS)
    out["lr"] = number("lr", blank_ok=True, lo=0, lo_open=True, text="learning rate")
    out["wd"] = number("wd", blank_ok=True, lo=0, text="weight decay")
    out["factors"] = number("factors", integer=True, lo=1, hi=MAX_FACTORS)
    valid_pct = number("valid_pct", text="validation %")
    if not (0 < valid_pct <= 0.9):
        raise ConfigError(
            f"validation % is {shown(values['valid_pct'])}; expected a share in (0, 0.9] (e.g. 0.2 = 20%)",
            where=where("valid_pct"),
        )
    out["valid_pct"] = valid_pct
    out["seed"] = number("seed", integer=True, lo=0)
    out["device"] = text("device", "auto").lower()
    out["user_id"] = number("user_id", integer=True, text="user id")
    out["hidden"] = number("hidden", integer=True, lo=1, hi=100_000, text="nn hidden size")
    for name in ("dropout_emb", "dropout_hidden"):
        out[name] = number(name, lo=0, hi=0.999999, text="dropout")
    out["min_ratings"] = number("min_ratings", integer=True, lo=1, text="min ratings N")
    out["_refs"] = {name: where(name) for name in values}
    return out


# TrainConfig field -> the movielens setting (cell) it comes from, to name the cell of an engine ConfigError.
_CONFIG_FIELD_SETTING = {
    "optimizer": "optimizer",
    "device": "device",
    "lr": "lr",
    "model": "model",
    "weight_decay": "wd",
    "epochs": "epochs",
    "hidden": "hidden",
    "dropout": "dropout_emb",
}


def train_config(settings: dict[str, Any]):
    """TrainConfig from parsed settings; engine ConfigErrors get the cell prefixed."""
    from xlcf.train import TrainConfig

    fields = {
        "model": settings["model"],
        "optimizer": settings["optimizer"],
        "epochs": settings["epochs"],
        "lr": settings["lr"],
        "weight_decay": settings["wd"],
        "factors": settings["factors"],
        "valid_pct": settings["valid_pct"],
        "seed": settings["seed"],
        "device": settings["device"],
        "hidden": settings["hidden"],
        "dropout": (settings["dropout_emb"], settings["dropout_hidden"]),
    }
    try:
        return TrainConfig.from_dict({k: v for k, v in fields.items() if v is not None})
    except XlcfError as err:
        refs = settings.get("_refs", {})
        name = _CONFIG_FIELD_SETTING.get(err.field or "")
        where = refs.get(name, name) if name is not None else SHEET
        raise type(err)(str(err), where=where, field=err.field) from None


def resolve_ratings_source(source: str, book: Path, ref: str) -> str:
    """Relative paths are relative to the workbook's folder; known names (ml-latest-small) pass through."""
    from xlcf.data.download import DATASETS

    path = Path(source).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise DataError(f"ratings source {source} not found", where=ref)
        return str(path)
    beside = book.resolve().parent / path
    if beside.exists():
        return str(beside)
    if source in DATASETS:
        return source
    raise DataError(
        f"ratings source '{source}' not found (relative paths are relative to the "
        f"workbook's folder {book.resolve().parent}; or use one of: {', '.join(sorted(DATASETS))})",
        where=ref,
    )


def read_settings(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of a movielens workbook (validated; overrides win). Names first, fixed cells as fallback."""
    from xlcf.ooxml.package import Package

    pkg = Package.open(path)
    if not pkg.has_sheet(SHEET):
        raise WorkbookError(f"has no '{SHEET}' sheet (make one with: xlcf new movielens -o BOOK.xlsx)", where=str(path))
    names = {k.lower(): v for k, v in pkg.defined_names(SHEET).items()}
    raw, refs = {}, {}
    for s in SETTINGS:
        area = None
        if s.name in names:
            try:
                area = parse_range(names[s.name], SHEET)
            except WorkbookError:
                area = None
        sheet = area.sheet if area is not None and area.sheet else SHEET
        ref = cell_ref(area.top, area.left) if area is not None else SETTING_REF[s.name]
        if not pkg.has_sheet(sheet):
            sheet, ref = SHEET, SETTING_REF[s.name]
        cell = pkg.read_cell(sheet, ref)
        if cell.value is not None and not isinstance(cell.value, (float, str, bool)):
            raise ConfigError(f"{s.label} holds the error {cell.value}", where=f"{sheet}!{ref}")
        raw[s.name] = cell.value
        refs[s.name] = f"{sheet}!{ref}"
    return parse_settings(raw, overrides, refs)
