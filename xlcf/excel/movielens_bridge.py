"""The movielens sheet through xlwings: read its settings cells, train on the full ratings, return the output
blocks of :func:`xlcf.actions.movielens_outputs.compute_outputs` (the zip writer writes the same blocks).

Ratings paths: on the desktop a relative path is relative to the workbook's folder (as ``xlcf fit`` does);
on the server (``data_dir`` given) every path must resolve inside ``--data-dir`` and errors about the file
never echo its contents (the details go to the server log only).
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xlcf.errors import DataError, quote
from xlcf.excel.sheetio import named_range, range_ref, read_scalar
from xlcf.lessons.movielens import layout as ml

logger = logging.getLogger("xlcf.server")


def read_raw_settings(sheet) -> tuple[dict[str, Any], dict[str, str]]:
    raw, refs = {}, {}
    for setting in ml.SETTINGS:
        rng = named_range(sheet, setting.name)
        if rng is None:  # fixed cell of the generated layout as fallback (like the zip reader)
            rng = sheet.range(ml.SETTING_REF[setting.name])
        raw[setting.name] = read_scalar(rng)
        refs[setting.name] = range_ref(rng)
    return raw, refs


def confined_source(source: str, data_dir: str, ref: str) -> str:
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


def compute(
    book, sheet, *, time_limit: float | None = None, data_dir: str | None = None, callback: Callable | None = None
) -> tuple[dict, str, dict]:
    """(blocks, status line, summary) of a training with the sheet's settings."""
    from xlcf.actions.movielens_outputs import compute_outputs
    from xlcf.actions.movielens_settings import parse_settings, resolve_ratings_source
    from xlcf.actions.train_book import train_from_settings

    raw, refs = read_raw_settings(sheet)
    settings = parse_settings(raw, None, refs)
    source_ref = settings["_refs"]["ratings_source"]
    if data_dir is None:
        source = resolve_ratings_source(settings["ratings_source"], Path(str(book.fullname)), source_ref)
    else:
        source = confined_source(settings["ratings_source"], data_dir, source_ref)
    try:  # the same settings -> load -> split -> fit as `xlcf fit BOOK --sheet movielens`
        result, train_df, valid_df, titles = train_from_settings(settings, source, callback=callback)
    except (DataError, OSError, zipfile.BadZipFile, EOFError) as err:
        if data_dir is None:
            raise
        # The server's client gets one line without the file's text or the server's paths.
        logger.warning("ratings load failed for %s: %s", source, err)
        raise DataError(
            f"{quote(settings['ratings_source'])} is not a readable ratings file (details in the server log)",
            where=source_ref,
        ) from None
    # Padding the history block down to the previous run's rows clears what a longer run left below.
    previous_rows = _number_at(_sheet(book, "history"), ml.HISTORY_COUNT_REF)
    outputs = compute_outputs(
        result, train_df, valid_df, titles, settings, previous_history_rows=int(previous_rows or 0)
    )
    blocks = {name: list(items) for name, items in outputs.blocks.items()}
    # The status cell is written once, last, by the macro (with the notes added below).
    blocks[ml.SHEET] = [
        (ref, rows)
        for ref, rows in blocks.get(ml.SHEET, [])
        if not (ref == ml.STATUS_REF and len(rows) == 1 and len(rows[0]) == 1)
    ]
    status = outputs.status
    status += _embeddings_layout(book, blocks, outputs)
    reason = getattr(result, "stopped_reason", None)
    if time_limit is not None and reason:
        status += f" (stopped after {time_limit:g} s, the server's time cap for training: {reason})"
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


def _embeddings_layout(book, blocks: dict, outputs) -> str:
    """Leave the embeddings sheet alone when its live formulas are laid out for another k / number of rated
    cells. Re-laying it needs formula and array-formula writes, which xlwings' remote clients (the VBA module
    and the Office Scripts/JS client: no setFormula/setFormulaArray callbacks) cannot carry out; only
    `xlcf fit BOOK --sheet movielens` re-lays it. Returns a status suffix."""
    embeddings = _sheet(book, "embeddings")
    laid_k = _number_at(embeddings, ml.EMB_FACTORS_REF)
    laid_rows = _number_at(embeddings, ml.EMB_ROWS_REF)
    if embeddings is not None and (laid_k != float(outputs.factors) or laid_rows != float(outputs.embedding_rows)):
        blocks.pop("embeddings", None)
        return (
            f"; embeddings sheet left as it was (laid out for {laid_k:g} factors; this model has "
            f"{outputs.factors}: run `xlcf fit BOOK --sheet movielens` to re-lay it)"
            if laid_k is not None
            else "; embeddings sheet left as it was"
        )
    return ""
