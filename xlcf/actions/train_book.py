"""Train from a movielens workbook and write every output: one code path for every front end.

:func:`train_in_book` reads the settings through a :class:`~xlcf.actions.sheetio.BookIO` (the zip ``Package`` of
``xlcf fit``, or xlwings for the Train button and the server), resolves the ratings, trains and computes the blocks
of :func:`~xlcf.actions.movielens_outputs.compute_outputs`; :func:`write_outputs` writes them through the same
interface, the status line last. The zip front end (:func:`train_workbook`) opens the book once and adds what only
a file allows: laying the embeddings sheet out again for another k (its formulas), pointing the history chart at
the new rows, an atomic save with every other zip member byte-identical. :func:`write_results` writes a finished
training into a book for ``xlcf train RATINGS --out BOOK``."""

from __future__ import annotations

import io
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlcf.actions.movielens_outputs import _clean, _optimizer_name, compute_outputs
from xlcf.actions.movielens_settings import read_settings, resolve_ratings_source, train_config
from xlcf.actions.sheetio import BookIO, SheetIO, ZipBookIO
from xlcf.errors import ConfigError, DataError, WorkbookError, XlcfError, quote
from xlcf.fileio import locked_writer
from xlcf.lessons.movielens.build import _fill_openpyxl, _new_workbook, build_movielens
from xlcf.lessons.movielens.layout import (
    EMB_FACTORS_REF,
    EMB_ROWS_REF,
    HISTORY_COUNT_REF,
    HISTORY_HEADER_ROW,
    HISTORY_TOP,
    OUTPUT_SHEETS,
    SETTING_REF,
    SETTINGS,
    SHEET,
    STATUS_REF,
    MovielensOutputs,
    Value,
)
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import cell_ref, parse_range, split_ref

logger = logging.getLogger("xlcf.server")

# ------------------------------------------------------------------------------------------------------------
# Writing into an existing workbook (zip Package: everything else byte-identical)

_CHART_REF_RE = re.compile(r"((?:'history'|history)!\$[A-Z]{1,3}\$(\d+):\$[A-Z]{1,3}\$)(\d+)")


def _history_chart_xml(data: bytes, n_rows: int) -> bytes:
    """Point every history range of a chart at rows HISTORY_TOP..HISTORY_TOP+n-1; drop stale caches."""
    from lxml import etree

    last = HISTORY_TOP + max(n_rows, 1) - 1
    root = etree.fromstring(data)
    ns = {"c": "http://schemas.openxmlformats.org/drawingml/2006/chart"}
    changed = False
    for f_el in root.iterfind(".//c:f", ns):
        text = f_el.text or ""

        def repl(m):
            first = int(m.group(2))
            return m.group(1) + str(last) if first in (HISTORY_TOP, HISTORY_HEADER_ROW) else m.group(0)

        new = _CHART_REF_RE.sub(repl, text)
        if new != text:
            f_el.text = new
            changed = True
            for cache in f_el.getparent().iterfind("c:numCache", ns):
                f_el.getparent().remove(cache)
            for cache in f_el.getparent().iterfind("c:strCache", ns):
                f_el.getparent().remove(cache)
    if not changed:
        return data
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _block_values(top_left: str, rows: list[list[Value]]) -> dict[str, Value]:
    """``{ref: value}`` of a block (one dict per sheet, so a sheet's cells are all checked before any is written)."""
    r0, c0 = split_ref(top_left)
    return {cell_ref(r0 + i, c0 + j): value for i, row in enumerate(rows) for j, value in enumerate(row)}


def _embeddings_sheet_xml(outputs: MovielensOutputs, target_styles: bytes | None) -> bytes:
    """The embeddings worksheet part for ``outputs.factors``, generated fresh (formulas + values).

    Used when a workbook's embeddings sheet was laid out for another k (or is missing): openpyxl writes it in a
    scratch workbook, strings become inline strings, and cell styles are kept only when the scratch
    workbook's styles part is identical to the target's (else the cells go unstyled rather than mis-styled)."""
    from lxml import etree

    wb = _new_workbook(
        {s.name: s.default for s in SETTINGS}, outputs.factors, max(outputs.history_rows, 1), outputs.embedding_rows
    )
    _fill_openpyxl(wb, outputs)
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        part = f"xl/worksheets/sheet{OUTPUT_SHEETS.index('embeddings') + 2}.xml"
        xml = zf.read(part)
        styles = zf.read("xl/styles.xml")
        shared = zf.read("xl/sharedStrings.xml") if "xl/sharedStrings.xml" in zf.namelist() else None
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    root = etree.fromstring(xml)
    strings = []
    if shared is not None:
        sroot = etree.fromstring(shared)
        strings = ["".join(t.text or "" for t in si.iter(f"{{{main}}}t")) for si in sroot.iter(f"{{{main}}}si")]
    keep_styles = target_styles is not None and target_styles == styles
    for c_el in root.iter(f"{{{main}}}c"):
        if c_el.get("t") == "s":
            v_el = c_el.find(f"{{{main}}}v")
            text = strings[int(v_el.text)]
            c_el.remove(v_el)
            c_el.set("t", "inlineStr")
            is_el = etree.SubElement(c_el, f"{{{main}}}is")
            etree.SubElement(is_el, f"{{{main}}}t").text = text
        if not keep_styles:
            c_el.attrib.pop("s", None)
    if not keep_styles:
        for el in list(root.iter(f"{{{main}}}col")):
            el.attrib.pop("style", None)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


# ------------------------------------------------------------------------------------------------------------
# The shared path: settings -> ratings -> training -> output blocks, and writing them (any BookIO)


@dataclass
class BookTraining:
    """A finished training of a movielens book: what it read, trained and will write."""

    book: Path | None
    settings: dict[str, Any]
    config: Any
    source: str
    train_df: pd.DataFrame
    valid_df: pd.DataFrame
    titles: dict[int, str]
    load_seconds: float
    result: Any  # the FitResult
    outputs: MovielensOutputs
    status: str  # the status line: the outputs' one plus notes (time cap, embeddings left alone)
    relayout: bool  # the embeddings sheet is laid out for another k: its blocks are not written as they are


def load_and_split(settings: dict[str, Any], source: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, str]]:
    """Load the ratings (+ titles) of a resolved source, check the user id, split. Errors name the cells."""
    from xlcf.data import load_ratings, load_titles, split_ratings

    refs = settings.get("_refs") or {name: f"{SHEET}!{ref}" for name, ref in SETTING_REF.items()}
    try:
        ratings = load_ratings(source)
        titles = load_titles(source)
    except DataError as err:
        raise DataError(str(err), where=refs["ratings_source"], field="ratings_source") from None
    user_id = settings["user_id"]
    if user_id not in set(ratings["userId"].unique().tolist()):
        raise ConfigError(
            f"user id {user_id} is not in {settings['ratings_source']} "
            f"(user ids {ratings['userId'].min()} to {ratings['userId'].max()})",
            where=refs["user_id"],
        )
    train_df, valid_df = split_ratings(ratings, settings["valid_pct"], settings["seed"])
    if user_id not in set(train_df["userId"].unique().tolist()):
        raise ConfigError(
            f"user id {user_id} has no ratings in the training part of the split; pick another user or seed",
            where=refs["user_id"],
        )
    return train_df, valid_df, titles


def check_device(settings: dict[str, Any]) -> None:
    """A missing GPU is a settings error: say so (naming the cell) before loading anything."""
    from xlcf.train import resolve_device

    refs = settings.get("_refs") or {}
    try:
        resolve_device(settings["device"])
    except XlcfError as err:
        raise type(err)(
            str(err), where=refs.get("device", SHEET + "!" + SETTING_REF["device"]), field="device"
        ) from None


def movielens_sheet(book: BookIO) -> SheetIO:
    io = book.sheet_io(SHEET)
    if io is None:
        raise WorkbookError(
            f"has no '{SHEET}' sheet (make one with: xlcf new movielens -o BOOK.xlsx)",
            where=str(book.path) if book.path is not None else None,
        )
    return io


def _number_at(book: BookIO, sheet: str, ref: str) -> float | None:
    io = book.sheet_io(sheet)
    if io is None:
        return None
    value = io.read_values(parse_range(ref, io.sheet))[0][0]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def previous_history_rows(book: BookIO) -> int:
    """How many history rows the book's last training wrote (``history!H2``): a shorter run clears the rest."""
    rows = _number_at(book, "history", HISTORY_COUNT_REF)
    return int(rows) if rows is not None and rows > 0 else 0


def _embeddings_note(book: BookIO, outputs: MovielensOutputs, can_relayout: bool) -> tuple[bool, str]:
    """(the embeddings sheet must be laid out again, a status note). Its live formulas depend on k and on the
    number of rated crosstab cells; laying it out again writes formulas and array formulas, which only the file
    path can (xlwings' remote clients carry values only): elsewhere the sheet is left alone, and the status says so."""
    laid_k = _number_at(book, "embeddings", EMB_FACTORS_REF)
    laid_rows = _number_at(book, "embeddings", EMB_ROWS_REF)
    fits = laid_k == float(outputs.factors) and laid_rows == float(outputs.embedding_rows)
    if fits:
        return False, ""
    if can_relayout:
        return True, ""
    if book.sheet_io("embeddings") is None:
        return False, ""  # nothing to leave alone: writing will name the missing sheet
    if laid_k is None:
        return True, "; embeddings sheet left as it was"
    return True, (
        f"; embeddings sheet left as it was (laid out for {laid_k:g} factors; this model has "
        f"{outputs.factors}: run `xlcf fit BOOK --sheet movielens` to re-lay it)"
    )


def train_in_book(
    book: BookIO,
    *,
    overrides: dict[str, Any] | None = None,
    data_dir: str | None = None,
    callback: Callable | None = None,
    progress: bool = False,
    time_limit: float | None = None,
    can_relayout: bool = False,
) -> BookTraining:
    """Read the movielens sheet's settings (``overrides`` win), load and split the ratings, train, compute every
    output block. Nothing is written. Errors name the cell (or the flag).

    ``data_dir``: the server's ``--data-dir``: the ratings path must lie inside it, and a file that cannot be read
    is reported without its text or the server's paths. ``time_limit``: the cap a front end put on the training
    (its callback stops it), said in the status. ``can_relayout``: the caller can lay the embeddings sheet out
    again (the file path); otherwise a mismatched embeddings sheet is left alone and the status says so."""
    from xlcf.train import fit

    settings = read_settings(movielens_sheet(book), overrides)
    source_ref = settings["_refs"]["ratings_source"]
    source = resolve_ratings_source(settings["ratings_source"], book.path, source_ref, data_dir=data_dir)
    config = train_config(settings)
    check_device(settings)
    t0 = time.perf_counter()
    try:
        train_df, valid_df, titles = load_and_split(settings, source)
    except (DataError, OSError, zipfile.BadZipFile, EOFError) as err:
        if data_dir is None:
            raise
        # The server's client gets one line without the file's text or the server's paths.
        logger.warning("ratings load failed for %s: %s", source, err)
        raise DataError(
            f"{quote(settings['ratings_source'])} is not a readable ratings file (details in the server log)",
            where=source_ref,
        ) from None
    load_seconds = time.perf_counter() - t0
    result = fit(train_df, config, valid_df=valid_df, progress=progress, callback=callback)
    outputs = compute_outputs(
        result, train_df, valid_df, titles, settings, previous_history_rows=previous_history_rows(book)
    )
    relayout, note = _embeddings_note(book, outputs, can_relayout)
    status = outputs.status + note
    reason = getattr(result, "stopped_reason", None)
    if time_limit is not None and reason:
        status += f" (stopped after {time_limit:g} s, the server's time cap for training: {reason})"
    return BookTraining(
        book.path, settings, config, source, train_df, valid_df, titles, load_seconds, result, outputs, status, relayout
    )


def write_outputs(book: BookIO, outputs: MovielensOutputs, status: str, *, skip_embeddings: bool = False) -> int:
    """Write every block of ``outputs`` (but the embeddings sheet's with ``skip_embeddings``) and then the status
    line into the ``status`` cell. Every sheet is found before anything is written. Returns the cells written."""
    writes: list[tuple[SheetIO, dict[str, Value]]] = []
    for sheet, blocks in outputs.blocks.items():
        if sheet == "embeddings" and skip_embeddings:
            continue
        io = book.sheet_io(sheet)
        if io is None:
            raise WorkbookError(
                f"the workbook has no sheet {sheet!r} for the training outputs: regenerate it with `xlcf new movielens`"
            )
        values: dict[str, Value] = {}
        for top_left, rows in blocks:
            if sheet == SHEET and top_left == STATUS_REF and len(rows) == 1 and len(rows[0]) == 1:
                continue  # the status line is written last, with the front end's notes
            values.update(_block_values(top_left, rows))
        writes.append((io, values))
    main = movielens_sheet(book)
    area = main.name_area("status")
    status_cell = cell_ref(area.top, area.left) if area is not None else STATUS_REF
    cells = 0
    for io, values in writes:
        io.write_values(values)
        cells += len(values)
    main.write_values({status_cell: status})
    return cells + 1


# ------------------------------------------------------------------------------------------------------------
# The file path: one Package, opened once; what only a file allows (embeddings layout, chart ranges)


def _write_package(
    pkg: Package,
    outputs: MovielensOutputs,
    status: str,
    *,
    relayout: bool,
    settings_values: dict[str, Any] | None = None,
    backup: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Write every block of ``outputs`` into the opened workbook and save it in place (atomic)."""
    movielens_sheet(ZipBookIO(pkg))
    pkg.check_writable()
    pkg.allow_protected = force  # --force: locked cells of protected sheets may change
    for sheet in outputs.blocks:
        if not pkg.has_sheet(sheet) and not (sheet == "embeddings" and relayout):
            pkg.add_sheet(sheet)
    cells = 0
    if settings_values:
        cells += pkg.write_values(
            SHEET,
            {SETTING_REF[n]: _clean(v) for n, v in settings_values.items() if n in SETTING_REF and v is not None},
        )
    cells += write_outputs(ZipBookIO(pkg), outputs, status, skip_embeddings=relayout)
    if relayout:
        styles = pkg.read_member("xl/styles.xml") if "xl/styles.xml" in pkg.member_names else None
        if not pkg.has_sheet("embeddings"):
            pkg.add_sheet("embeddings")
        pkg.replace_member(pkg.sheet_part("embeddings"), _embeddings_sheet_xml(outputs, styles))
        # Formula cells moved: a calculation chain naming the old ones makes Excel report a damaged file.
        # (Package drops it itself for sheets edited through its API; this sheet was replaced raw.)
        pkg.drop_calc_chain()
    for chart in pkg.chart_parts("history"):
        old = pkg.read_member(chart)
        new = _history_chart_xml(old, outputs.history_rows)
        if new != old:
            pkg.replace_member(chart, new)
    pkg.save(backup=backup)
    return {"cells_written": cells, "embeddings_relaid": relayout}


@locked_writer
def train_workbook_result(
    path: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    callback: Callable | None = None,
    backup: bool = False,
    dry_run: bool = False,
    force: bool = False,
):
    """:func:`train_workbook` that also returns what it trained: (summary, result, training)."""
    started = time.perf_counter()
    pkg = Package.open(path)
    movielens_sheet(ZipBookIO(pkg))
    if not dry_run:
        pkg.check_writable()  # fail before a long training, not after
    run = train_in_book(ZipBookIO(pkg), overrides=overrides, progress=progress, callback=callback, can_relayout=True)
    t1 = time.perf_counter()
    written = (
        {"cells_written": 0, "dry_run": True}
        if dry_run
        else _write_package(pkg, run.outputs, run.status, relayout=run.relayout, backup=backup, force=force)
    )
    summary = {
        **run.outputs.summary,
        **written,
        "path": str(path),
        "status": run.status,
        "load_seconds": round(run.load_seconds, 3),
        "write_seconds": round(time.perf_counter() - t1, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return summary, run.result, run


def train_workbook(
    path: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    callback: Callable | None = None,
    backup: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Train from the settings on the ``movielens`` sheet and write every output in place. Returns a JSON-ready
    summary (metrics, cells written, seconds per phase). Any error: nothing written.

    ``overrides`` (CLI flags) win over the cells: keys as in :data:`SETTINGS` (``weight_decay`` and
    ``ratings`` accepted as aliases); None values are ignored. ``dry_run`` trains and reports, writes nothing;
    ``backup`` keeps BOOK.bak; ``force`` lets it change locked cells of protected sheets."""
    return train_workbook_result(
        path, overrides=overrides, progress=progress, callback=callback, backup=backup, dry_run=dry_run, force=force
    )[0]


def _source_for_book(source: str, book: Path) -> str:
    """How the settings cell names a ratings source given on the command line: the sheet resolves relative paths
    against the workbook's folder, so an existing path is stored relative to it (absolute when on another
    drive); data-set names stay as they are."""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    try:
        relative = os.path.relpath(path.resolve(), book.resolve().parent)
    except ValueError:  # another drive on Windows
        return str(path.resolve())
    # beside the book, below it, or in a sibling folder (../data): relative; anywhere else: absolute
    return relative if Path(relative).parts[:2].count("..") <= 1 else str(path.resolve())


@locked_writer
def write_results(
    path: str | os.PathLike,
    result,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    titles: dict | None,
    settings: dict[str, Any] | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Write a finished training into BOOK (``xlcf train RATINGS --out BOOK``). A book that does not exist is
    generated first (with the run's settings filled in); an existing one is updated in place."""
    book = Path(path)
    settings = dict(settings or {})
    if "ratings" in settings and "ratings_source" not in settings:
        settings["ratings_source"] = settings.pop("ratings")
    config = result.config
    run_settings = {
        "model": config.model,
        "optimizer": _optimizer_name(result),
        "epochs": config.epochs,
        "lr": config.lr,
        "wd": getattr(config, "weight_decay", None),
        "factors": config.factors,
        "valid_pct": config.valid_pct or None,
        "seed": config.seed,
        "device": config.device,
        "hidden": getattr(config, "hidden", None),
    }
    dropout = getattr(config, "dropout", None)
    if isinstance(dropout, (tuple, list)) and len(dropout) == 2:
        run_settings["dropout_emb"], run_settings["dropout_hidden"] = dropout
    if settings.get("ratings_source") is not None:
        run_settings["ratings_source"] = _source_for_book(str(settings["ratings_source"]), book)
    if book.exists():
        # user id / min ratings not given: take them from the workbook's settings cells
        pkg = Package.open(book)
        if pkg.has_sheet(SHEET):
            for name in ("user_id", "min_ratings"):
                if settings.get(name) is None:
                    value = pkg.read_cell(SHEET, SETTING_REF[name]).value
                    if isinstance(value, float) and value == int(value):
                        settings[name] = int(value)
    if settings.get("user_id") is None:
        ids = np.asarray(result.users.ids)
        settings["user_id"] = 1 if 1 in set(ids.tolist()) else int(ids[0])
    if not book.exists():
        outputs = compute_outputs(result, train_df, valid_df, titles, settings)
        run_settings["user_id"] = outputs.summary["user_id"]
        run_settings["min_ratings"] = settings.get("min_ratings")
        build_movielens(book, settings=run_settings, outputs=outputs)
        return {**outputs.summary, "path": str(book), "created": True, "status": outputs.status}
    target = ZipBookIO(pkg)
    outputs = compute_outputs(
        result, train_df, valid_df, titles, settings, previous_history_rows=previous_history_rows(target)
    )
    run_settings["user_id"] = outputs.summary["user_id"]
    run_settings["min_ratings"] = settings.get("min_ratings")
    relayout = _embeddings_note(target, outputs, True)[0]
    written = _write_package(pkg, outputs, outputs.status, relayout=relayout, settings_values=run_settings, force=force)
    return {**outputs.summary, **written, "path": str(book), "created": False, "status": outputs.status}
