"""The movielens sheet through xlwings: read its settings cells, train on the full ratings, return the output
blocks of :func:`xlcf.workbook.movielens.compute_outputs` (the zip writer writes the same blocks).

Ratings paths: on the desktop a relative path is relative to the workbook's folder (as ``xlcf fit`` does);
on the server (``data_dir`` given) every path must resolve inside ``--data-dir`` and errors about the file
never echo its contents (the details go to the server log only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from xlcf.errors import DataError, XlcfError
from xlcf.excel.sheetio import named_range, read_scalar

logger = logging.getLogger("xlcf.server")


def read_raw_settings(sheet) -> tuple[dict[str, Any], dict[str, str]]:
    from xlcf.workbook import movielens as ml

    raw, refs = {}, {}
    for setting in ml.SETTINGS:
        rng = named_range(sheet, setting.name)
        if rng is None:  # fixed cell of the generated layout as fallback (like the zip reader)
            rng = sheet.range(ml.SETTING_REF[setting.name])
        raw[setting.name] = read_scalar(rng)
        refs[setting.name] = f"{rng.sheet.name}!{rng.address.replace('$', '')}"
    return raw, refs


def confined_source(source: str, data_dir: str, ref: str) -> str:
    """A ratings source allowed on the server: a known data set name, or a path inside ``data_dir``."""
    from xlcf.data.download import DATASETS

    if source in DATASETS:
        return source
    if not data_dir:
        raise DataError(f"{ref}: this server reads no ratings files (it was started without --data-dir); "
                        f"use one of: {', '.join(sorted(DATASETS))}")
    root = Path(data_dir).resolve()
    candidate = Path(source)
    if candidate.drive or "\\" in source:  # a Windows path from a desktop client means nothing here
        raise DataError(f"{ref}: give the ratings path relative to the server's data folder, e.g. "
                        "ml-latest-small/ratings.csv")
    resolved = (root / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    if not resolved.is_relative_to(root):
        raise DataError(f"{ref}: the ratings path must lie inside the server's data folder (--data-dir)")
    if not resolved.exists():
        raise DataError(f"{ref}: {resolved.relative_to(root)} does not exist in the server's data folder")
    return str(resolved)


def compute(book, sheet, *, time_limit: float | None = None, data_dir: str | None = None,
            callback: Callable | None = None) -> tuple[dict, str, dict]:
    """(blocks, status line, summary) of a training with the sheet's settings."""
    from xlcf.data import load_ratings, load_titles, split_ratings
    from xlcf.errors import ConfigError
    from xlcf.workbook import movielens as ml

    raw, refs = read_raw_settings(sheet)
    settings = ml.parse_settings(raw, None, refs)
    source_ref = settings["_refs"]["ratings_source"]
    if data_dir is None:
        fullname = Path(str(book.fullname))
        source = ml.resolve_ratings_source(settings["ratings_source"], fullname, source_ref)
        server = False
    else:
        source = confined_source(settings["ratings_source"], data_dir, source_ref)
        server = True
    config = ml.train_config(settings)
    try:
        ratings = load_ratings(source)
        titles = load_titles(source)
    except XlcfError as err:
        if not server:
            raise
        logger.warning("ratings load failed for %s: %s", source, err)
        raise DataError(f"{source_ref}: {settings['ratings_source']} is not a readable ratings file "
                        "(details in the server log)") from None
    user_ids = set(ratings["userId"].unique().tolist())
    if settings["user_id"] not in user_ids:
        raise ConfigError(f"{settings['_refs']['user_id']}: user id {settings['user_id']} is not in the ratings "
                          f"(user ids {ratings['userId'].min()} to {ratings['userId'].max()})")
    train_df, valid_df = split_ratings(ratings, settings["valid_pct"], settings["seed"])
    if settings["user_id"] not in set(train_df["userId"].unique().tolist()):
        raise ConfigError(f"{settings['_refs']['user_id']}: user id {settings['user_id']} has no ratings in the "
                          "training part of the split; pick another user or seed")
    from xlcf.train import fit

    result = fit(train_df, config, valid_df=valid_df, callback=callback)
    outputs = ml.compute_outputs(result, train_df, valid_df, titles, settings)
    blocks = {name: list(items) for name, items in outputs.blocks.items()}
    # The status cell is written once, last, by the macro (with the notes added below).
    blocks[ml.SHEET] = [(ref, rows) for ref, rows in blocks.get(ml.SHEET, [])
                        if not (ref == ml.STATUS_REF and len(rows) == 1 and len(rows[0]) == 1)]
    status = outputs.status
    status += _fit_layout(book, blocks, outputs)
    reason = getattr(result, "stopped_reason", None)
    if time_limit is not None and reason:
        status += f" (stopped early at the server's {time_limit:g} s time cap: {reason})"
    return blocks, status, dict(outputs.summary)


def _sheet(book, name: str):
    for candidate in book.sheets:
        if candidate.name.casefold() == name.casefold():
            return candidate
    return None


def _number_at(sheet, ref: str):
    if sheet is None:
        return None
    value = read_scalar(sheet.range(ref))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fit_layout(book, blocks: dict, outputs) -> str:
    """What the zip writer does beyond the blocks, done with cell writes only: clear history rows a longer
    previous run left, and leave the embeddings sheet alone when its live formulas are laid out for another
    k / number of rated cells (only `xlcf fit BOOK --sheet movielens` can re-lay formulas). Returns a status
    suffix."""
    from xlcf.workbook import movielens as ml

    history = _sheet(book, "history")
    old_rows = _number_at(history, ml.HISTORY_COUNT_REF)
    if old_rows and old_rows > outputs.history_rows:
        stale = int(old_rows) - outputs.history_rows
        top = ml.HISTORY_TOP + outputs.history_rows
        blocks.setdefault("history", []).append((f"A{top}", [[None] * len(ml.HISTORY_COLUMNS)] * stale))
    embeddings = _sheet(book, "embeddings")
    laid_k = _number_at(embeddings, ml.EMB_FACTORS_REF)
    laid_rows = _number_at(embeddings, ml.EMB_ROWS_REF)
    if embeddings is not None and (laid_k != float(outputs.factors) or laid_rows != float(outputs.embedding_rows)):
        blocks.pop("embeddings", None)
        return (f"; embeddings sheet left as it was (laid out for {laid_k:g} factors; this model has "
                f"{outputs.factors}: run `xlcf fit BOOK --sheet movielens` to re-lay it)"
                if laid_k is not None else "; embeddings sheet left as it was")
    return ""
