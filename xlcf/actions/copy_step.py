"""``xlcf step --copy FROM=TO``: the "one step" button of a gradient-descent workbook, on any sheet.

A step button's macro copies the values of some cells into others (``Range("lastslope").Copy`` /
``Range("slope").PasteSpecial Paste:=xlPasteValues``). This does the same copies headless, pass after pass,
with the formula evaluator recalculating the workbook as Excel would:

- automatic calculation (Excel's default): every copy is followed by a recalculation, so a later copy of a
  pass sees the effect of the earlier ones;
- ``manual``: the copies of a pass read the values of one calculation (constant cells already copied into do
  show their new value, as on a sheet), and the workbook is recalculated once at the end of the pass
  (``ActiveSheet.Calculate``).

FROM and TO are defined names (the sheet's own first, then the workbook's) or ranges (``C2:C3``,
``'My sheet'!C2``), of the same shape; TO must hold values, not formulas. The file gets the new values of the
TO cells and the cached value of every formula cell that changed; nothing else changes, and nothing at all on any
error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from xlcf.errors import ConfigError, FormulaError, WorkbookError, quote
from xlcf.fileio import locked_writer
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area, cell_ref, parse_range, sheet_cell, split_areas
from xlcf.ooxml.values import CellValue, ErrorValue

if TYPE_CHECKING:
    from xlcf.formula.model import Recalculator

MAX_PASSES = 100_000


@dataclass(frozen=True)
class CopyPair:
    text: str  # as given: "lastslope=slope"
    source: Area
    target: Area

    def cells(self, area: Area) -> list[str]:
        sheet = cast(str, area.sheet)  # resolve() gives every area its sheet
        return [
            sheet_cell(sheet, r, c) for r in range(area.top, area.bottom + 1) for c in range(area.left, area.right + 1)
        ]


@dataclass
class CopyStepResult:
    sheet: str
    passes: int
    manual: bool
    copies: list[dict]
    values: dict[str, object]  # the TO cells after the last pass
    formulas_changed: int = 0
    cells_written: int = 0
    dry_run: bool = False
    saved: str | None = None
    backup: str | None = None
    history: list[dict] = field(default_factory=list)  # TO values after each pass

    def to_dict(self) -> dict:
        return {
            "sheet": self.sheet,
            "passes": self.passes,
            "mode": "manual" if self.manual else "automatic",
            "copies": self.copies,
            "values": self.values,
            "history": self.history,
            "formulas_changed": self.formulas_changed,
            "cells_written": self.cells_written,
            "dry_run": self.dry_run,
            "saved": self.saved,
            "backup": self.backup,
        }


def resolve(book, sheet: str, text: str, what: str) -> Area:
    """A defined name (sheet scope first) or a range, as an Area with its sheet."""
    from xlcf.actions.solve import names_seen_from

    names = {k.lower(): v for k, v in names_seen_from(book, sheet).items()}
    raw = text.strip()
    value = names.get(raw.lower())
    source = raw if value is None else value.lstrip("=")
    try:
        parts = split_areas(source)
        if len(parts) != 1:
            raise WorkbookError("several areas")
        area = parse_range(parts[0], sheet)
    except WorkbookError:
        shown = f"the name {raw} refers to {quote(value)}" if value is not None else f"{quote(raw)}"
        raise ConfigError(
            f"--copy {what} {shown}: expected a defined name or a range such as C2:C3 (one area)", field="--copy"
        ) from None
    if area.sheet not in book.sheet_names:
        raise ConfigError(f"--copy {what} {quote(raw)}: the workbook has no sheet {quote(area.sheet)}", field="--copy")
    return area


def parse_copies(book, sheet: str, specs: list[str]) -> list[CopyPair]:
    if sheet not in book.sheet_names:
        raise WorkbookError(
            f"the workbook has no sheet {quote(sheet)} (sheets: {', '.join(book.sheet_names)})", field="sheet"
        )
    pairs = []
    for spec in specs:
        left, sep, right = spec.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ConfigError(
                f"--copy {quote(spec)}: expected FROM=TO (names or ranges, e.g. lastslope=slope)", field="--copy"
            )
        src, dst = resolve(book, sheet, left, "FROM"), resolve(book, sheet, right, "TO")
        if src.shape != dst.shape:
            raise ConfigError(
                f"--copy {quote(spec)}: FROM is {src.shape[0]}x{src.shape[1]} "
                f"({src.qualified()}) but TO is {dst.shape[0]}x{dst.shape[1]} ({dst.qualified()})",
                field="--copy",
            )
        for r in range(dst.top, dst.bottom + 1):
            for c in range(dst.left, dst.right + 1):
                formula = book.formula(dst.sheet, cell_ref(r, c))
                if formula is not None:
                    raise WorkbookError(
                        f"--copy {spec}: this TO cell holds a formula ({formula}); pasting values would replace it",
                        where=sheet_cell(cast(str, dst.sheet), r, c),
                        field="--copy",
                    )
        pairs.append(CopyPair(spec, src, dst))
    if not pairs:
        raise ConfigError("give at least one --copy FROM=TO", field="--copy")
    return pairs


def run_copies(book, pairs: list[CopyPair], passes: int, *, manual: bool) -> tuple[Recalculator, list[dict]]:
    """Run the passes on a compiled recalculation of ``book``; (recalculator, TO values after each pass)."""
    if isinstance(passes, bool) or not isinstance(passes, int) or not 1 <= passes <= MAX_PASSES:
        raise ConfigError(
            f"--passes must be a whole number between 1 and {MAX_PASSES}, got {passes!r}", field="--passes"
        )
    rc = book.recalculator()
    if rc.problems:  # a formula the evaluator cannot compute would keep a stale value: refuse
        fc, err = rc.problems[0]
        raise err if isinstance(err, FormulaError) else FormulaError(str(err), where=getattr(fc, "where", None))
    rc.recalc()  # the state Excel shows when the button is pressed: a calculated workbook
    history = []
    for _ in range(passes):
        for pair in pairs:
            values = [rc.value(name) for name in pair.cells(pair.source)]
            rc.set(dict(zip(pair.cells(pair.target), [_pasted(v) for v in values])))
            if not manual:
                rc.recalc()
        if manual:
            rc.recalc()
        history.append({name: rc.value(name) for pair in pairs for name in pair.cells(pair.target)})
    return rc, history


def _pasted(value):
    """What Paste Values leaves in a cell: the value (a formula showing nothing pastes a blank)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ErrorValue("#NUM!")
    return value


def _by_sheet(names) -> dict[str, list[str]]:
    """``["S!A1", ...]`` grouped as ``{"S": ["A1", ...]}``."""
    out: dict[str, list[str]] = {}
    for name in names:
        s, _, ref = name.rpartition("!")
        out.setdefault(s, []).append(ref)
    return out


@locked_writer
def step_copies(
    path,
    sheet: str,
    specs: list[str],
    *,
    passes: int = 1,
    manual: bool = False,
    backup: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> CopyStepResult:
    """``xlcf step BOOK --sheet S --copy FROM=TO ...``: nothing is written on any error or with ``dry_run``. The
    workbook's lock is held from the read to the save (keyword ``lock_timeout``); locked cells of a protected
    sheet are refused before calculating unless ``force``."""
    from xlcf.formula import FormulaBook

    pkg = Package.open(path)
    pkg.allow_protected = force
    if not dry_run:
        pkg.check_writable()
    book = FormulaBook.from_package(pkg)
    pairs = parse_copies(book, sheet, list(specs))
    for pair in pairs:
        for s, refs in _by_sheet(pair.cells(pair.target)).items():
            pkg.check_unprotected(s, refs)
    rc, history = run_copies(book, pairs, int(passes) if not isinstance(passes, bool) else passes, manual=manual)
    targets: dict[str, dict[str, CellValue]] = {}
    final = {}
    for pair in pairs:
        for name in pair.cells(pair.target):
            s, _, ref = name.rpartition("!")
            final[name] = rc.value(name)
            targets.setdefault(s, {})[ref] = final[name]
    cached: dict[str, dict[str, CellValue]] = {}
    for name, value in rc.recalc().items():
        s, _, ref = name.rpartition("!")
        old = book.value(s, ref)
        if isinstance(value, float) and not math.isfinite(value):
            value = ErrorValue("#NUM!")
        if type(old) is not type(value) or old != value:
            cached.setdefault(s, {})[ref] = cast(CellValue, value)  # the evaluator's values are cell values
    written = 0
    for s, cells in targets.items():
        written += pkg.write_values(
            s,
            {ref: v for ref, v in cells.items() if book.value(s, ref) != v or type(book.value(s, ref)) is not type(v)},
        )
    n_cached = sum(pkg.set_cached_values(s, cells) for s, cells in cached.items())
    result = CopyStepResult(
        sheet,
        int(passes),
        manual,
        [{"from": p.source.qualified(), "to": p.target.qualified()} for p in pairs],
        final,
        n_cached,
        written + n_cached,
        dry_run,
        history=history,
    )
    if not dry_run:
        result.saved = str(pkg.save(backup=backup))
        result.backup = None if pkg.backup_path is None else str(pkg.backup_path)
    return result
