"""Train from a movielens workbook and write every output in place: read the settings once, train, write the
blocks of :func:`~xlcf.actions.movielens_outputs.compute_outputs` through the zip
:class:`~xlcf.ooxml.Package` (atomic, every other zip member byte-identical). Also writes a finished training
into a book for ``xlcf train RATINGS --out BOOK``."""

from __future__ import annotations

import io
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
from xlcf.errors import ConfigError, DataError, WorkbookError, XlcfError
from xlcf.fileio import locked_writer
from xlcf.lessons.movielens.build import _fill_openpyxl, _new_workbook, build_movielens
from xlcf.lessons.movielens.layout import (
    EMB_FACTORS_REF,
    EMB_ROWS_REF,
    HISTORY_COLUMNS,
    HISTORY_COUNT_REF,
    HISTORY_HEADER_ROW,
    HISTORY_TOP,
    OUTPUT_SHEETS,
    SETTING_REF,
    SETTINGS,
    SHEET,
    MovielensOutputs,
    Value,
)
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import cell_ref, split_ref

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


def _laid_out(pkg, path: Path, ref: str) -> float | None:
    """A number cell of the embeddings sheet, read WITHOUT parsing the sheet through ``pkg`` (the sheet may be
    replaced raw afterwards, which the Package refuses for parsed sheets; parsing ~60k cells also costs)."""
    from xlcf.ooxml.package import Package

    xml = pkg.read_member(pkg.sheet_part("embeddings"))
    m = re.search(rb'<c r="' + ref.encode() + rb'"(?: [^>]*)?>\s*<v>([^<]*)</v>', xml)
    if m is not None:
        try:
            return float(m.group(1))
        except ValueError:
            return None
    value = Package.open(path).read_cell("embeddings", ref).value  # unusual XML (prefixes, shared string...)
    return value if isinstance(value, float) else None


def _write_package(
    path: Path,
    outputs: MovielensOutputs,
    *,
    settings_values: dict[str, Any] | None = None,
    backup: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Write every block of ``outputs`` into the workbook at ``path`` in place (atomic)."""
    from xlcf.ooxml.package import Package

    pkg = Package.open(path)
    if not pkg.has_sheet(SHEET):
        raise WorkbookError(f"has no '{SHEET}' sheet (make one with: xlcf new movielens -o BOOK.xlsx)", where=str(path))
    pkg.check_writable()
    pkg.allow_protected = force  # --force: locked cells of protected sheets may change
    relayout = (
        not pkg.has_sheet("embeddings")
        or _laid_out(pkg, path, EMB_FACTORS_REF) != float(outputs.factors)
        or _laid_out(pkg, path, EMB_ROWS_REF) != float(outputs.embedding_rows)
    )
    old_history = 0
    if pkg.has_sheet("history"):
        count = pkg.read_cell("history", HISTORY_COUNT_REF).value
        old_history = int(count) if isinstance(count, float) and count > 0 else 0
    cells = 0
    for sheet, blocks in outputs.blocks.items():
        if sheet == "embeddings" and relayout:
            continue
        if not pkg.has_sheet(sheet):
            pkg.add_sheet(sheet)
        values: dict[str, Value] = {}
        for top_left, rows in blocks:
            values.update(_block_values(top_left, rows))
        if sheet == "history" and old_history > outputs.history_rows:
            for r in range(HISTORY_TOP + outputs.history_rows, HISTORY_TOP + old_history):
                for c in range(1, len(HISTORY_COLUMNS) + 1):
                    values[cell_ref(r, c)] = None
        if sheet == SHEET and settings_values:
            for name, value in settings_values.items():
                if name in SETTING_REF and value is not None:
                    values[SETTING_REF[name]] = _clean(value)
        cells += pkg.write_values(sheet, values)
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


# ------------------------------------------------------------------------------------------------------------
# Entry points


@dataclass
class Prepared:
    """Everything a movielens training needs, validated before anything is trained or written."""

    book: Path
    settings: dict[str, Any]
    config: Any
    source: str
    train_df: pd.DataFrame
    valid_df: pd.DataFrame
    titles: dict[int, str]
    load_seconds: float


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


def train_from_settings(
    settings: dict[str, Any], source: str, *, callback: Callable | None = None, progress: bool = False
):
    """Parsed settings + resolved source -> (result, train_df, valid_df, titles). Shared by the zip path
    (:func:`train_workbook`) and the xlwings path, which differ only in where the settings come from."""
    from xlcf.train import fit

    config = train_config(settings)
    check_device(settings)
    train_df, valid_df, titles = load_and_split(settings, source)
    result = fit(train_df, config, valid_df=valid_df, progress=progress, callback=callback)
    return result, train_df, valid_df, titles


def prepare_training(
    path: str | os.PathLike, overrides: dict[str, Any] | None = None, *, dry_run: bool = False
) -> Prepared:
    """Read and check the settings, load and split the ratings. Raises XlcfError naming the cell."""
    from xlcf.ooxml.package import Package

    book = Path(path)
    settings = read_settings(book, overrides)
    if not dry_run:
        Package.open(book).check_writable()  # fail before a long training, not after
    refs = settings["_refs"]
    source = resolve_ratings_source(settings["ratings_source"], book, refs["ratings_source"])
    config = train_config(settings)
    check_device(settings)
    t0 = time.perf_counter()
    train_df, valid_df, titles = load_and_split(settings, source)
    return Prepared(book, settings, config, source, train_df, valid_df, titles, time.perf_counter() - t0)


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
    """:func:`train_workbook` that also returns what it trained: (summary, result, prepared)."""
    from xlcf.train import fit

    started = time.perf_counter()
    prep = prepare_training(path, overrides, dry_run=dry_run)
    result = fit(prep.train_df, prep.config, valid_df=prep.valid_df, progress=progress, callback=callback)
    t1 = time.perf_counter()
    outputs = compute_outputs(result, prep.train_df, prep.valid_df, prep.titles, prep.settings)
    written = (
        {"cells_written": 0, "dry_run": True}
        if dry_run
        else _write_package(prep.book, outputs, backup=backup, force=force)
    )
    summary = {
        **outputs.summary,
        **written,
        "path": str(prep.book),
        "status": outputs.status,
        "load_seconds": round(prep.load_seconds, 3),
        "write_seconds": round(time.perf_counter() - t1, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return summary, result, prep


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
    outputs = compute_outputs(result, train_df, valid_df, titles, settings)
    run_settings["user_id"] = outputs.summary["user_id"]
    run_settings["min_ratings"] = settings.get("min_ratings")
    if not book.exists():
        build_movielens(book, settings=run_settings, outputs=outputs)
        return {**outputs.summary, "path": str(book), "created": True, "status": outputs.status}
    written = _write_package(book, outputs, settings_values=run_settings, force=force)
    return {**outputs.summary, **written, "path": str(book), "created": False, "status": outputs.status}
