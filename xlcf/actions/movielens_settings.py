"""The movielens settings schema: read the settings cells of a book through a
:class:`~xlcf.actions.sheetio.SheetIO` (names first, fixed cells as fallback), validate them (+ CLI overrides) into
one dict, turn that into a :class:`~xlcf.train.TrainConfig`, and resolve the ratings source it names. Every front
end (``xlcf fit``, ``xlcf train``, the Train button, the server) goes through :func:`read_settings` /
:func:`parse_settings` and :func:`resolve_ratings_source`."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from xlcf import catalog
from xlcf.actions.sheetio import SheetIO
from xlcf.errors import ConfigError, DataError, XlcfError, quote
from xlcf.lessons.movielens.layout import MAX_EPOCHS, MAX_FACTORS, SETTING_REF, SETTINGS, SHEET
from xlcf.ooxml.refs import Area, parse_range
from xlcf.ooxml.values import ErrorValue

logger = logging.getLogger("xlcf.server")  # a server's client never sees file details: they go to its log

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
    out["model"] = text("model", catalog.MOVIELENS_BOOK_DEFAULTS["model"]).lower()
    if out["model"] not in catalog.MODELS:
        raise ConfigError(
            f"model '{out['model']}' is not one of {', '.join(catalog.MODELS)}", where=where("model"), field="model"
        )
    out["optimizer"] = text("optimizer", catalog.MOVIELENS_BOOK_DEFAULTS["optimizer"]).lower()
    out["epochs"] = number("epochs", integer=True, blank_ok=True, lo=1, hi=MAX_EPOCHS)
    out["lr"] = number("lr", blank_ok=True, lo=0, lo_open=True, text="learning rate")
    out["wd"] = number("wd", blank_ok=True, lo=0, text="weight decay")
    out["factors"] = number("factors", integer=True, blank_ok=True, lo=1, hi=MAX_FACTORS)
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


def resolve_ratings_source(source: str, book: Path | None, ref: str, *, data_dir: str | None = None) -> str:
    """Where the ratings of a settings cell are. Without ``data_dir``: relative paths are relative to the
    workbook's folder; known names (ml-latest-small) pass through. With ``data_dir`` (``xlcf serve --data-dir``):
    a known name, or a path inside that folder, and messages never show the server's paths."""
    from xlcf.data.download import DATASETS

    if data_dir is not None:
        return _confined_source(source, data_dir, ref)
    path = Path(source).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise DataError(f"ratings source {source} not found", where=ref)
        return str(path)
    folder = (book.resolve().parent if book is not None else Path.cwd()).resolve()
    beside = folder / path
    if beside.exists():
        return str(beside)
    if source in DATASETS:
        return source
    raise DataError(
        f"ratings source '{source}' not found (relative paths are relative to the "
        f"workbook's folder {folder}; or use one of: {', '.join(sorted(DATASETS))})",
        where=ref,
    )


def _confined_source(source: str, data_dir: str, ref: str) -> str:
    """A ratings source allowed on the server: a known data set name, or a path inside ``data_dir``."""
    from xlcf.data.download import DATASETS

    if source in DATASETS:
        return source
    if not data_dir:
        raise DataError(
            f"this server reads no ratings files (it was started without --data-dir); "
            f"use one of: {', '.join(sorted(DATASETS))}",
            where=ref,
        )
    root = Path(data_dir).resolve()
    candidate = Path(source)
    if candidate.drive or "\\" in source:  # a Windows path from a desktop client means nothing here
        raise DataError(
            "give the ratings path relative to the server's data folder, e.g. ml-latest-small/ratings.csv", where=ref
        )
    try:
        resolved = (root / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
        inside = resolved.is_relative_to(root)
        exists = inside and resolved.exists()
    except (OSError, RuntimeError) as err:  # a name too long, a symlink loop...: the text holds server paths
        logger.warning("ratings path %r: %s", source[:200], err)
        raise DataError(
            "the ratings path cannot be opened in the server's data folder (details in the server log)", where=ref
        ) from None
    if not inside:
        raise DataError("the ratings path must lie inside the server's data folder (--data-dir)", where=ref)
    if not exists:
        raise DataError(
            f"{quote(str(resolved.relative_to(root)))} does not exist in the server's data folder", where=ref
        )
    return str(resolved)


def read_settings(io: SheetIO, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of a movielens sheet (validated; overrides win). Names first, the generated layout's fixed
    cells as fallback. The same reader for the zip path and xlwings: a setting acts the same everywhere."""
    raw: dict[str, Any] = {}
    refs: dict[str, str] = {}
    for s in SETTINGS:
        area = io.name_area(s.name) or parse_range(SETTING_REF[s.name], io.sheet)
        sheet = area.sheet or io.sheet
        corner = Area(sheet, area.top, area.left, area.top, area.left)
        value = io.read_values(corner)[0][0]
        where = f"{sheet}!{corner.ref}"
        if isinstance(value, ErrorValue):
            raise ConfigError(f"{s.label} holds the error {value}", where=where)
        raw[s.name] = value
        refs[s.name] = where
    return parse_settings(raw, overrides, refs)
